//! What an instance is made of, as the host hands it to the helper (serialized over its stdin).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::network;

/// The workspace user inside every instance (on the host, an id of the instance's own range:
/// see [`crate::ids`]).
pub const WORKSPACE_UID: u32 = 1000;

/// The group of the programs the platform runs inside an instance for the user (a notebook's
/// Jupyter server), kept from what the user's own code runs as (the workspace group): see
/// [`InstanceSpec::service_group`].
pub const SERVICE_GID: u32 = 1001;

/// The loopback address where a service-group instance's internal servers listen (a Jupyter
/// kernel's ports): inside the instance, nothing but the service group may connect to it.
pub const SERVICE_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

/// Resource limits, from the instance type.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub pids: u32,
}

/// What an instance is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub id: String,
    /// The image's root filesystem, mounted read-only as `/`.
    pub rootfs: PathBuf,
    /// Host directories bind-mounted read-only into the root (for images built on the host's
    /// packages, `/usr`).
    pub read_only_binds: Vec<(PathBuf, PathBuf)>,
    /// Host directories bind-mounted writable (no suid, no devices), after the tmpfs mounts
    /// so that they may lie inside them: a notebook's volume, its server's socket directory.
    /// The host makes them writable for the workspace user.
    #[serde(default)]
    pub writable_binds: Vec<(PathBuf, PathBuf)>,
    /// Folders made in the home directory (`/home/user`, a tmpfs) before the command starts,
    /// relative to it and the workspace user's: a session's `MyFiles/HomeFolder`, there as
    /// soon as the session is ACTIVE, before its sync has started.
    #[serde(default)]
    pub home_folders: Vec<PathBuf>,
    pub hostname: String,
    pub limits: Limits,
    /// The command run as the workspace user, under the instance's own init.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub link: network::Link,
    /// This binary, bind-mounted read-only at `/run/datasandbox/datasandbox` inside.
    pub self_exe: PathBuf,
    /// Files placed in `/run/datasandbox/` inside, owned by the workspace user, mode 0400 (with
    /// a service group, root's and readable by the service group alone, mode 0440).
    /// They reach the helper over its stdin with the rest of the spec, never in its argv or
    /// environment (which other host users can read through `/proc`).
    pub files: Vec<(String, Vec<u8>)>,
    /// Where the helper and the instance's init write their own errors: a host file the
    /// operator reads (created 0600). `None`: nowhere. Never the server's standard streams,
    /// which may be the operator's terminal.
    #[serde(default)]
    pub log: Option<PathBuf>,
    /// Pseudo-terminals of the instance's own (a private `devpts`): a notebook whose stack lets
    /// its sessions use Jupyter's terminals. None otherwise: nothing in an instance has a
    /// terminal it does not need.
    #[serde(default)]
    pub terminals: bool,
    /// The command runs in the service group ([`SERVICE_GID`], effective and saved; the
    /// workspace group is its real group), and what it starts through `sandbox-workspace`
    /// (Jupyter's kernels and terminals: the user's code) runs in the workspace group alone.
    /// That code cannot read what belongs to the service group (the instance's files,
    /// directories the host gives the group), trace or read the memory of the command (whose
    /// group differs from its own), or connect to [`SERVICE_ADDRESS`]: the instance's network
    /// refuses every connection there from a socket not of the service group.
    #[serde(default)]
    pub service_group: bool,
    /// For a service: a directory of the instance (`.0`, a writable bind: the user's files)
    /// bound again at `.1` where no symbolic link is followed. The service works on the user's
    /// files there, so a link the user's code planted cannot lead it to what only the service
    /// group may read or write.
    #[serde(default)]
    pub service_view: Option<(PathBuf, PathBuf)>,
}

impl InstanceSpec {
    /// Why a home folder of the spec cannot be made: one that is not a relative path below the
    /// home directory (`..`, `/`, `.`, or nothing).
    pub(crate) fn home_folder_refused(&self) -> Option<String> {
        use std::path::Component;
        let outside = |folder: &PathBuf| folder.as_os_str().is_empty() || folder.components().any(|c| !matches!(c, Component::Normal(_)));
        self.home_folders
            .iter()
            .find(|folder| outside(folder))
            .map(|folder| format!("{} is not a path inside the home directory", folder.display()))
    }
}
