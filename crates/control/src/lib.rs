//! The control plane: the action pipeline and the services behind it.
//!
//! Every operation is a named action `service:Action`. [`ControlPlane::call`] is the one path
//! every call takes — authenticate → authorize (Cedar) → execute → audit — whether it comes
//! from the operator's socket, a remote client, an instance or a built-in function.

mod actions;
mod blobs;
mod error;
mod functions;
mod identity;
mod instances;
mod metrics;
mod pipeline;
mod recorded;
mod services;
mod store;

pub use actions::{ACTIONS, ActionSpec};
pub use error::ActionError;
pub use identity::{Credentials, OidcCallback, Secret};
pub use instances::EndpointServer;
pub use pipeline::{ControlPlane, Request, Response, StartError, check_policies};
pub use services::notebooks::NotebookTarget;
pub use services::streaming::files::FileClient;
pub use services::streaming::sessions::SessionConnection;
pub use services::streaming::stream::StreamTarget;
pub use store::{Store, now_millis, rfc3339_to_millis};
