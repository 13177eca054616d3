//! The control plane: the action pipeline and the services behind it.
//!
//! Every operation is a named action `service:Action`. [`ControlPlane::call`] is the one path
//! every call takes — authenticate → authorize (Cedar) → execute → audit — whether it comes
//! from the operator's socket, a remote client, an instance or a built-in function.

mod airlock;
mod audit_log;
pub mod backup;
mod cluster;
mod core;
mod deploy;
mod functions;
mod identity;
mod instances;
mod keys;
mod notebooks;
mod opening;
mod parameters;
mod plane;
mod recordings;
mod storage;
mod streaming;

pub use crate::airlock::verify_record as verify_release_record;
pub use crate::core::actions::{ACTIONS, ActionSpec};
pub use crate::core::caller::{Credentials, OidcCallback, Secret};
pub use crate::core::codec::hex_unescaped;
pub use crate::core::error::{ActionError, ErrorCode};
pub use crate::core::node::{NodeTls, server_name as node_server_name};
pub use crate::core::pipeline::{Request, Response};
pub use crate::core::platform::{Alongside, EVERYONE_CHANGED};
pub use crate::core::store::{Store, now_millis, rfc3339_to_millis};
pub use instances::EndpointServer;
pub use notebooks::{
    KernelAnswer, KernelAudit, KernelFrame, KernelPassage, KernelRefusal, NotebookRecord, NotebookTarget, Upstream, V1_PROTOCOL, v1_frame,
};
pub use opening::StartError;
pub use plane::{ControlPlane, check_policies};
pub use recordings::{Recording, verify as recordings_verify};
pub use streaming::SessionConnection;
pub use streaming::files::FileClient;
pub use streaming::stream::StreamTarget;
