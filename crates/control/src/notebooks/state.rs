//! The notebook service's state (the instances it runs Jupyter in, the running servers'
//! tokens, the admission lock) and what every notebook file shares: where a notebook lives on
//! the host, its ARN and its volume's encryption context.

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
    /// Notebook cookies whose checks passed a moment ago (see `gateway.rs`).
    pub(super) grants: std::sync::Mutex<std::collections::HashMap<super::gateway::GrantKey, super::gateway::Grant>>,
    /// Held from a volume's admission until its row records its size (or its growth is
    /// recorded): two creates at once must not both count the same free space.
    pub(super) admission: tokio::sync::Mutex<()>,
    /// The notebooks this node is starting or stopping now: each is worked on once at a time.
    pub(super) busy: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Wakes the reconciler: another node asked this one to start or stop a notebook.
    pub(super) wake: tokio::sync::Notify,
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
