//! This server as a node: its name and the epoch of its lease in the `nodes` table. Every
//! row a node owns (its instances) carries the epoch it was written under, and every write a
//! node makes on what it owns is fenced with [`fence`]: once other nodes have taken this one
//! for lost (its lease ran out while it was stopped or cut off), its old epoch no longer holds
//! the lease and such a write changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use rustls::pki_types::ServerName;

pub(crate) struct Node {
    pub name: String,
    epoch: AtomicI64,
    /// Set at a clean stop: the heartbeat ends rather than take the ended lease for lost.
    leaving: AtomicBool,
}

/// The condition a fenced write adds to its `WHERE`: the node (`$n`) still holds its lease
/// under the epoch (`$e`) it believes it has. Callers bind both with [`Node::name`] and
/// [`Node::epoch`]; the placeholders are numbered by the caller.
pub(crate) fn fence(name_param: usize, epoch_param: usize) -> String {
    format!("EXISTS (SELECT 1 FROM nodes WHERE name = ${name_param} AND epoch = ${epoch_param} AND state = 'ACTIVE')")
}

impl Node {
    pub fn new(name: &str) -> Node {
        Node { name: name.to_owned(), epoch: AtomicI64::new(0), leaving: AtomicBool::new(false) }
    }

    /// The epoch of the lease this node holds (0 before it joined).
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub(crate) fn set_epoch(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    pub(crate) fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }
}

/// This node's TLS configurations (made by `cluster::tls`): as the server other nodes reach,
/// and as their client. Both ends must hold a certificate of the cluster's authority.
pub struct NodeTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

/// The name a node's certificate is made for, which a client reaching it checks.
pub fn server_name(node: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(format!("{node}.nodes.datasandbox")).map_err(|e| format!("node `{node}` has no usable TLS name: {e}"))
}
