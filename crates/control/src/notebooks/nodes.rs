//! Notebooks across nodes. A notebook's volume is a disk image on the disk of the node that
//! made it (the row's `node`), so that node alone mounts it and runs the notebook's Jupyter.
//! Any node answers the notebook actions: a start or stop asked of another node becomes the
//! row's state (`Pending`, `Stopping`, a conditional update) and a `pg_notify` of the name on
//! [`CHANNEL`]; the notebook's node carries it out in its reconciler, which also looks at its
//! rows every heartbeat in case a notification was missed. A deleted notebook's volume is
//! removed by its node's reconciler (a directory no row names). A session on another node
//! reaches the notebook through its node's relay (`gateway::relay`, mutual TLS).

use std::sync::Arc;

use super::repo::{self, NotebookState};
use super::server::{run_notebook, stop_notebook};
use super::state::{Notebooks, notebook_dir};
use super::volume::Volume;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::feed;

/// Where nodes ask each other to look at a notebook (its name).
pub(super) const CHANNEL: &str = "datasandbox_notebooks";

/// What a node does to one of its notebooks.
#[derive(Clone, Copy, Debug)]
pub(super) enum Work {
    Start,
    Stop,
}

/// Marks a notebook busy on this node until dropped.
struct Busy {
    notebooks: Arc<Notebooks>,
    name: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.notebooks.busy.lock().expect("busy lock").remove(&self.name);
    }
}

impl Notebooks {
    /// Starts or stops one of this node's notebooks in the background, unless this node is
    /// already working on it.
    pub(super) fn spawn_work(self: &Arc<Self>, name: &str, work: Work) {
        if !self.busy.lock().expect("busy lock").insert(name.to_owned()) {
            return;
        }
        let busy = Busy { notebooks: self.clone(), name: name.to_owned() };
        tokio::spawn(async move {
            let notebooks = busy.notebooks.clone();
            match work {
                Work::Start => run_notebook(&notebooks, &busy.name).await,
                Work::Stop => {
                    if let Err(err) = stop_notebook(&notebooks, &busy.name).await {
                        tracing::warn!(notebook = %busy.name, error = %err, "cannot stop a notebook");
                    }
                }
            }
            drop(busy);
        });
    }

    /// Stops one of this node's notebooks now, unless this node is busy with it (a start in
    /// progress): then the stop is asked for, and the reconciler carries it out once the
    /// start is done.
    pub(super) async fn stop_here(self: &Arc<Self>, name: &str) -> Result<(), ActionError> {
        if !self.busy.lock().expect("busy lock").insert(name.to_owned()) {
            let plane = &*self.pipeline.platform;
            repo::request_state(plane, name, &[NotebookState::Pending, NotebookState::InService], NotebookState::Stopping).await?;
            repo::delete_access(plane, name).await?;
            return Ok(());
        }
        let busy = Busy { notebooks: self.clone(), name: name.to_owned() };
        let stopped = stop_notebook(self, name).await;
        drop(busy);
        stopped
    }

    /// Whether this node's Jupyter for `name` is serving.
    pub(super) fn is_running(&self, name: &str) -> bool {
        self.tokens.lock().expect("tokens lock").contains_key(name)
    }

    /// Hands a notebook's change to the node that holds it: at once when that is this node,
    /// else through the store.
    pub(super) async fn ask(self: &Arc<Self>, node: Option<&str>, name: &str, work: Work) {
        let plane = &*self.pipeline.platform;
        if node.is_none_or(|n| n == plane.node.name) {
            self.spawn_work(name, work);
        } else {
            self.tell(name).await;
        }
    }

    /// Tells the other nodes to look at a notebook's row (ids only: the row is the truth).
    pub(super) async fn tell(&self, name: &str) {
        if let Err(err) = feed::notify(&self.pipeline.platform.store, CHANNEL, name).await {
            // Its node's reconciler finds the row at its next heartbeat anyway.
            tracing::warn!(notebook = name, error = %err, "cannot tell a notebook's node of a change; it will see it within a heartbeat");
        }
    }

    /// Carries out what this node's notebook rows ask for, and removes the volumes of
    /// notebooks deleted elsewhere.
    pub(super) async fn reconcile(self: &Arc<Self>) {
        let plane = &*self.pipeline.platform;
        if plane.node.is_leaving() {
            return;
        }
        match repo::on_this_node(plane).await {
            Ok(rows) => {
                for (name, state) in rows {
                    match state {
                        NotebookState::Pending if !self.is_running(&name) => self.spawn_work(&name, Work::Start),
                        NotebookState::Stopping => self.spawn_work(&name, Work::Stop),
                        _ => {}
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot read this node's notebooks"),
        }
        self.remove_deleted_volumes().await;
    }

    /// Volumes on this node's disk that no notebook names any more (deleted on another node).
    async fn remove_deleted_volumes(&self) {
        let plane = &*self.pipeline.platform;
        let Ok(entries) = std::fs::read_dir(plane.data_dir.join("notebooks")) else { return };
        let on_disk: Vec<String> = entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        if on_disk.is_empty() {
            return;
        }
        // A create holds the admission lock from its volume's making until its row exists.
        let _admission = self.admission.lock().await;
        let Ok(named) = repo::all_names(plane).await else { return };
        for name in on_disk.into_iter().filter(|n| !named.contains(n)) {
            let volume = Volume::new(notebook_dir(plane, &name));
            match tokio::task::spawn_blocking(move || volume.remove()).await.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(()) => tracing::info!(notebook = %name, "removed the volume of a notebook deleted on another node"),
                Err(err) => tracing::warn!(notebook = %name, error = %err, "cannot remove a deleted notebook's volume"),
            }
        }
    }

    /// Runs the reconciler for as long as the server runs: at each notification from another
    /// node, and every heartbeat.
    pub(crate) fn start_reconciler(self: &Arc<Self>) {
        let plane = &*self.pipeline.platform;
        let mut heard = feed::subscribe(plane.spec.metadata_url.as_deref(), CHANNEL);
        let notebooks = self.clone();
        tokio::spawn(async move {
            // A name, or a reconnection after which anything may have been missed: either way,
            // the reconciler looks at every row of this node.
            while heard.recv().await.is_some() {
                notebooks.wake.notify_one();
            }
        });
        let notebooks = self.clone();
        tokio::spawn(async move {
            let every = crate::cluster::heartbeat_interval(&notebooks.pipeline.platform);
            loop {
                tokio::select! {
                    () = notebooks.wake.notified() => {}
                    () = tokio::time::sleep(every) => {}
                }
                if notebooks.pipeline.platform.node.is_leaving() {
                    return;
                }
                notebooks.reconcile().await;
            }
        });
    }

    /// Refuses a change that only a notebook's node can make while that node is not live.
    pub(super) async fn require_live_node(&self, node: Option<&str>, name: &str) -> Result<(), ActionError> {
        let plane = &*self.pipeline.platform;
        let Some(node) = node.filter(|n| *n != plane.node.name) else { return Ok(()) };
        if crate::cluster::is_live(plane, node).await? {
            return Ok(());
        }
        Err(ActionError::new(
            409,
            ErrorCode::ConflictException,
            format!(
                "notebook instance `{name}` has its volume on node `{node}`, which is not running; start the notebook once that node is back"
            ),
        ))
    }
}
