//! Sandbox instances as the control plane sees them: created through `streaming:` actions,
//! recorded in the metadata store before they are made, each with its own endpoint listener
//! on its link's host address and a short-lived credential, and reconciled after a crash.

mod actions;
mod credentials;
mod datasets;
mod host_dirs;
mod images;
mod launch;
mod repo;
mod state;
mod teardown;

pub(crate) use actions::{create, describe, exec, terminate};
pub(crate) use host_dirs::{display_socket, print_dir};
pub(crate) use images::{catalog, ensure_image, instance_type};
pub(crate) use launch::{Assignment, Launch, Program, assign, launch_instance};
pub use state::EndpointServer;
pub(crate) use state::{Instances, lease_ids};
pub(crate) use teardown::stop_instance;
