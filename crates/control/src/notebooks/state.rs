//! The notebook service's state (the instances it runs Jupyter in, the running servers'
//! tokens, the notebook cookies' reused checks, the admission lock) and what every notebook
//! file shares: where a notebook lives on the host, its ARN, its volume's encryption context,
//! and what the gateway is handed for a notebook request (`NotebookTarget`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::core::pipeline::Pipeline;
use crate::core::platform::Platform;
use crate::instances::Instances;

/// The image notebook instances run.
pub(crate) const NOTEBOOK_IMAGE: &str = "datasandbox-notebook";

/// The notebook service: the instances it runs Jupyter in, and the tokens of the running
/// Jupyter servers, by notebook (never stored, never shown).
pub(crate) struct Notebooks {
    pub(super) pipeline: Pipeline,
    pub(super) instances: Arc<Instances>,
    pub(super) tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Notebook cookies whose checks passed a moment ago (see [`Grant`]).
    pub(super) grants: std::sync::Mutex<std::collections::HashMap<GrantKey, Grant>>,
    /// Held from a volume's admission until its row records its size (or its growth is
    /// recorded): two creates at once must not both count the same free space.
    pub(super) admission: tokio::sync::Mutex<()>,
    /// The notebooks this node is starting or stopping now: each is worked on once at a time.
    pub(super) busy: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Wakes the reconciler: another node asked this one to start or stop a notebook.
    pub(super) wake: tokio::sync::Notify,
}

/// Where a notebook's Jupyter is reached from this node.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// It runs here: its Unix socket, and Jupyter's token for the proxy to add.
    Local { socket: PathBuf, token: String },
    /// It runs on another node: that node's relay (`host:port`), reached over mutual TLS,
    /// which adds the token there.
    Relay { node: String, address: String },
}

/// What the gateway needs to reach a running notebook's Jupyter.
#[derive(Debug, Clone)]
pub struct NotebookTarget {
    pub upstream: Upstream,
    pub session_id: String,
    pub user_id: String,
    pub correlation_id: String,
    /// The session's `FILE_DOWNLOAD` and `FILE_UPLOAD` permissions.
    pub download: bool,
    pub upload: bool,
    /// The session's `TERMINAL` permission: Jupyter's terminals, each line typed recorded.
    pub terminal: bool,
    /// The session's `DEBUGGER` permission: the kernels' debugger, each request recorded.
    pub debugger: bool,
    /// Where the request came from: the user's browser, or the instance of a pixel session.
    pub source_ip: String,
}

/// A notebook cookie as one browser at one address presents it: its hash, the notebook and
/// the address.
pub(crate) type GrantKey = (String, String, String);

/// What a notebook cookie's checks found, reused by the next requests for a moment
/// ([`GRANT_REUSE`]) and only while no session changed anywhere meanwhile (the sessions'
/// epoch): a session ended on this node refuses the next request, one ended on another node
/// within the reuse or as soon as its change is heard. The cookie's own expiry is checked at
/// every request.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// What the checks found (where the notebook runs is looked up again at every request).
    pub target: NotebookTarget,
    pub expires: i64,
    pub epoch: u64,
    pub checked: std::time::Instant,
}

/// How long a cookie's checks are reused; and how many cookies are remembered at most.
const GRANT_REUSE: std::time::Duration = std::time::Duration::from_secs(1);
pub(super) const GRANT_LIMIT: usize = 10_000;

impl Grant {
    pub(super) fn fresh(&self, epoch: u64) -> bool {
        self.epoch == epoch && self.checked.elapsed() < GRANT_REUSE && self.expires > crate::core::store::now_millis()
    }
}

pub(super) fn notebook_dir(plane: &Platform, name: &str) -> PathBuf {
    plane.data_dir.join("notebooks").join(name)
}

pub(super) fn arn(plane: &Platform, name: &str) -> String {
    model::arn::regional("notebooks", &plane.spec.region, &plane.spec.account_id, &format!("notebook-instance/{name}"))
}

pub(super) fn volume_context(name: &str) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([("notebook".to_owned(), name.to_owned())])
}
