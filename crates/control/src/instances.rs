//! Sandbox instances as the control plane sees them: created through `streaming:` actions
//! (`streaming:CreateInstance` and friends), recorded in the metadata store before they are
//! made, each with a short-lived credential and its own endpoint listener on its link's host
//! address, and reconciled after a crash.
//!
//! The endpoint listener is bound through `Sandbox::create_with`, once the link is up and
//! before the instance's command runs, so the instance's first request finds it. Everything an
//! instance has on the host lives in `<data-dir>/instances/<id>/` (0700, owned by the
//! instance's root id) inside `instances/` (0711, not listable); its log is
//! `<data-dir>/logs/instances/<id>.log`.

mod actions;
mod credentials;
mod dataset_mount;
mod datasets;
mod host_dirs;
mod images;
mod launch;
mod repo;
mod state;
mod teardown;

pub(crate) use actions::{create, describe, exec, terminate};
pub(crate) use host_dirs::{display_socket, print_dir};
pub(crate) use images::{catalog, ensure_image, find_image, instance_type};
pub(crate) use launch::{Assignment, Launch, Program, assign, launch_instance};
pub use state::EndpointServer;
pub(crate) use state::{Instances, lease_ids};
pub(crate) use teardown::stop_instance;
