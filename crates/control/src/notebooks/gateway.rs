//! What the gateway asks of the notebook service: where a request with a notebook cookie goes,
//! if anywhere, and the audit record of each proxied request.

use std::time::Instant;

use super::repo;
use super::state::{GRANT_LIMIT, Grant, GrantKey, NotebookTarget, Notebooks, Upstream, notebook_dir};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Alongside;
use crate::core::store::now_millis;
use crate::streaming::repo::SessionState;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What becomes of the proxied request a record is written for.
#[derive(Debug, Clone, Copy)]
pub enum NotebookRecord<'a> {
    /// Refused, for this reason.
    Refused(&'a str),
    /// Forwarded once its record is durable.
    Forwarded,
}

impl Notebooks {
    /// Where a notebook request goes, if its cookie still grants access: the cookie is the
    /// notebook's, unexpired, its streaming session is still ACTIVE, and, for a pixel session,
    /// the request comes from that session's instance (`source_ip`).
    pub(crate) async fn notebook_target(&self, name: &str, cookie: &str, source_ip: &str) -> Result<NotebookTarget, ActionError> {
        let key = (hex::encode(Sha256::digest(cookie.as_bytes())), name.to_owned(), source_ip.to_owned());
        let changes = &self.pipeline.platform.changes;
        let cached = self.grants.lock().expect("grants lock").get(&key).filter(|grant| grant.fresh(changes.epoch())).cloned();
        if let Some(grant) = cached {
            // Where the notebook runs is looked up at every request.
            return Ok(NotebookTarget { upstream: self.upstream(name).await?, ..grant.target });
        }
        // Read before the checks: a change during them leaves the grant stale.
        let epoch = changes.epoch();
        let grant = self.check_grant(&key, epoch).await?;
        let target = grant.target.clone();
        let mut grants = self.grants.lock().expect("grants lock");
        if grants.len() >= GRANT_LIMIT {
            grants.clear();
        }
        grants.insert(key, grant);
        Ok(target)
    }

    /// A notebook cookie's checks, made against the store.
    async fn check_grant(&self, (cookie_hash, name, source_ip): &GrantKey, epoch: u64) -> Result<Grant, ActionError> {
        let plane = &*self.pipeline.platform;
        let denied = |why: &str| ActionError::new(403, ErrorCode::AccessDeniedException, why.to_owned());
        let access = repo::find_access(plane, cookie_hash, name)
            .await?
            .ok_or_else(|| denied("no access to this notebook; open it from your session"))?;
        if access.expires <= now_millis() {
            return Err(denied("your notebook access has expired; open it again from your session"));
        }
        if access.instance_address.as_ref().is_some_and(|address| address != source_ip) {
            return Err(denied("this notebook opens only in the browser of its session's workspace"));
        }
        let session = crate::streaming::sessions::session(plane, &access.session_id).await?;
        if session.state != SessionState::Active {
            return Err(denied("your streaming session has ended, and notebook access with it"));
        }
        // A pixel session's instance is known by its address on this node's links. Nodes on
        // different hosts hand out the same addresses, and a lost instance's address goes to
        // the next workspace: the caller must be this node's RUNNING instance that serves this
        // very session, not another workspace at the same address (review findings).
        if access.instance_address.is_some() {
            let caller = crate::streaming::repo::find_session_served_from(&plane.store, &plane.node.name, source_ip).await?;
            if caller.is_none_or(|c| c.session_id != access.session_id) {
                return Err(denied("this notebook opens only in the browser of its session's workspace"));
            }
        }
        let settings: Value = serde_json::from_str(&session.settings).map_err(ActionError::internal)?;
        let permission = |action: &str| {
            settings["UserSettings"].as_array().into_iter().flatten().find(|s| s["Action"] == action).map(|s| s["Permission"].clone())
        };
        let target = NotebookTarget {
            upstream: self.upstream(name).await?,
            session_id: access.session_id,
            user_id: session.user_id,
            correlation_id: session.correlation_id,
            download: permission("FILE_DOWNLOAD").is_none_or(|p| p != "DISABLED"),
            upload: permission("FILE_UPLOAD").is_none_or(|p| p != "DISABLED"),
            // Off unless the stack enabled it (a stack from before the setting has it off).
            terminal: permission("TERMINAL").is_some_and(|p| p == "ENABLED"),
            debugger: permission("DEBUGGER").is_some_and(|p| p == "ENABLED"),
            source_ip: source_ip.clone(),
        };
        Ok(Grant { target, expires: access.expires, epoch, checked: Instant::now() })
    }

    /// Where `name`'s Jupyter is: here, or through the relay of the node that runs it.
    async fn upstream(&self, name: &str) -> Result<Upstream, ActionError> {
        // A notebook running here is known by its token (taken away first when it stops): no
        // read of the store on every proxied request.
        if let Some(local) = self.local_upstream(name) {
            return Ok(local);
        }
        let plane = &*self.pipeline.platform;
        let not_running = || ActionError::new(403, ErrorCode::AccessDeniedException, "the notebook is not running");
        let row = repo::find(plane, name).await?;
        if row.state != super::repo::NotebookState::InService {
            return Err(not_running());
        }
        match row.node {
            Some(node) if node != plane.node.name => {
                let address = crate::cluster::relay_of(plane, &node).await?.ok_or_else(|| {
                    ActionError::new(
                        503,
                        ErrorCode::ServiceUnavailable,
                        format!("the notebook runs on node `{node}`, which cannot be reached now; try again shortly"),
                    )
                })?;
                Ok(Upstream::Relay { node, address })
            }
            _ => Err(not_running()),
        }
    }

    /// The socket and token of `name`'s Jupyter if it runs on this node (for requests other
    /// nodes relay here).
    pub(crate) fn local_upstream(&self, name: &str) -> Option<Upstream> {
        let token = self.tokens.lock().expect("tokens lock").get(name).cloned()?;
        Some(Upstream::Local { socket: notebook_dir(&self.pipeline.platform, name).join("run/jupyter.sock"), token })
    }

    /// One audit record per proxied notebook request or kernel connection, under the
    /// session's correlation id; refusals carry their reason. A request is forwarded only
    /// once its record is durable (a read's answer is held until then): on an error, refuse
    /// it with that error.
    pub(crate) async fn record_notebook_access(
        &self,
        target: &NotebookTarget,
        name: &str,
        method: &str,
        path: &str,
        how: NotebookRecord<'_>,
    ) -> Result<(), ActionError> {
        let error = match how {
            NotebookRecord::Refused(why) => Some(ActionError::new(403, ErrorCode::AccessDeniedException, why.to_owned())),
            NotebookRecord::Forwarded => None,
        };
        self.pipeline.record_service_event(notebook_event(target, name, method, path, error.as_ref())).await
    }

    /// The record of a read sent to Jupyter while the record is written: its answer goes to
    /// the browser only once [`Alongside::durable`] returns.
    pub(crate) async fn record_notebook_read(
        &self,
        target: &NotebookTarget,
        name: &str,
        method: &str,
        path: &str,
    ) -> Result<Alongside, ActionError> {
        self.pipeline.platform.record_alongside(notebook_event(target, name, method, path, None)).await
    }
}

/// A proxied request's record (`NotebookRequest`), refused with `error` if there is one.
fn notebook_event<'a>(
    target: &NotebookTarget,
    name: &str,
    method: &str,
    path: &str,
    error: Option<&'a ActionError>,
) -> crate::core::platform::ServiceEvent<'a> {
    crate::core::platform::ServiceEvent {
        source: "notebooks",
        name: "NotebookRequest",
        principal: "gateway.datasandbox",
        parameters: json!({ "NotebookInstanceName": name, "UserId": target.user_id, "SessionId": target.session_id, "Method": method, "Path": path }),
        error,
        correlation_id: Some(target.correlation_id.clone()),
        source_ip: Some(target.source_ip.clone()),
        ..crate::core::platform::ServiceEvent::default()
    }
}
