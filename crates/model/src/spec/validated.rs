//! The validated spec: the types the rest of the project reads, every value already checked.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::ids::BucketName;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FleetType {
    AlwaysOn,
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamView {
    Desktop,
    App,
    Direct,
}

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// Parses a private (RFC 1918) network with a prefix of /8 to /28, as a VPC allows.
    pub fn parse_private(value: &str) -> Result<Ipv4Cidr, String> {
        let (address, prefix) = value.split_once('/').ok_or_else(|| format!("`{value}` is not in CIDR notation (like 10.10.0.0/16)"))?;
        let address: Ipv4Addr = address.parse().map_err(|_| format!("`{address}` is not an IPv4 address"))?;
        let prefix_len: u8 = prefix.parse().map_err(|_| format!("`{prefix}` is not a prefix length"))?;
        if !(8..=28).contains(&prefix_len) {
            return Err(format!("prefix length {prefix_len} is outside 8..=28"));
        }
        if !address.is_private() {
            return Err(format!("`{value}` is not a private (RFC 1918) range"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        if u32::from(address) & !mask != 0 {
            return Err(format!("`{value}` has host bits set; the network is {}/{prefix_len}", Ipv4Addr::from(u32::from(address) & mask)));
        }
        Ok(Ipv4Cidr { address, prefix_len })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// Where object bodies live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageBackend {
    /// A directory under the data directory (the embedded default).
    Local,
    /// Any S3-compatible server; all DataSandbox buckets live under one real bucket.
    S3 { endpoint: String, bucket: String, region: String, allow_http: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceType {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub pids: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationSpec {
    pub id: String,
    pub events: Vec<String>,
    pub prefix: String,
    pub suffix: String,
    pub function: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub name: BucketName,
    /// Holds AppStream-style home folders: each user reaches only their own prefix.
    pub home_folders: bool,
    pub notifications: Vec<NotificationSpec>,
}

/// What an image is built from: its recipe and what it adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub name: String,
    /// `base`, `desktop` (base + display + kiosk browser) or `notebook`.
    pub recipe: String,
    /// For `notebook`: the PyPI packages of its `/opt/jupyter` environment.
    pub python_packages: Vec<String>,
}

/// A bucket or a prefix of one that appears read-only under `/data/<name>` in the instances
/// of users whom the policies let read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    pub name: String,
    pub bucket: BucketName,
    pub prefix: String,
    /// What the record of each file a process opened says it read (`read_audit`).
    pub read_audit: ReadAudit,
}

/// How closely a dataset's reads are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAudit {
    /// Every read goes through the mount's daemon, which counts bytes and ranges for the
    /// summary at close (the default).
    Ranges,
    /// Opens are decided and recorded as ever, but reads of a local body go straight to it in
    /// the kernel (FUSE passthrough): near-native speed, and a summary that says only that
    /// the file was open.
    Opens,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub name: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSpec {
    pub name: String,
    pub image_name: String,
    pub instance_type: String,
    pub fleet_type: FleetType,
    pub desired_instances: u32,
    pub max_user_duration_seconds: u32,
    pub disconnect_timeout_seconds: u32,
    pub idle_disconnect_timeout_seconds: u32,
    /// How many users may wait for an instance before new ones are turned away.
    pub max_queue: u32,
    /// How long a user waits in the queue before being told that no instance became free.
    pub queue_timeout_seconds: u32,
    /// How many sessions (waiting or active) one user may hold on this fleet at once, so that
    /// one user cannot take the fleet's capacity or its queue from everyone else.
    pub max_sessions_per_user: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSetting {
    pub action: &'static str,
    pub enabled: bool,
    pub maximum_length: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSpec {
    pub name: String,
    pub fleet: String,
    pub stream_view: StreamView,
    pub home_folders_bucket: Option<String>,
    pub user_settings: Vec<UserSetting>,
    pub redirect_url: Option<String>,
    /// The catalog application a session starts when its URL names none: the seed's stack
    /// starts the launcher that opens the user's notebook (`notebook`).
    pub application: String,
    /// Whether the user, the session and the time are drawn into the display's pixels.
    pub watermark: bool,
    /// Whether what each session's display shows is recorded, for auditors (`SessionRecording`).
    pub session_recording: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotebookSpec {
    pub name: String,
    pub instance_type: String,
    pub volume_size_gb: u32,
    pub kms_key_alias: String,
    pub root_access: bool,
    pub direct_internet_access: bool,
    /// A notebook named for a user is deployed with the spec; one without an owner is the
    /// template for the notebooks made on demand, one per user.
    pub owner: Option<String>,
}

/// The launcher's settings, deployed as `/datasandbox/launcher/config` in the parameter store
/// and read by every launcher at each session start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LauncherSpec {
    pub timeout_seconds: u64,
    pub poll_milliseconds: u64,
}

/// How the audit trail batches, checkpoints, rotates and digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSpec {
    pub max_batch_delay_ms: u64,
    pub checkpoint_records: u64,
    pub checkpoint_interval_ms: u64,
    pub rotate_bytes: u64,
    pub rotate_interval_seconds: u64,
    pub digest_interval_seconds: u64,
    /// Room the trail keeps allocated ahead of its open files, to go on recording refusals
    /// and ends once the disk is full.
    pub reserve_bytes: u64,
    /// A directory on another file system that receives a copy of every checkpoint and
    /// digest (`audit validate --witness`).
    pub witness: Option<PathBuf>,
}

/// `[recording]`: the bounds of session recordings, past which a recorded session ends (its
/// recording cannot go on) rather than fill the node's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSpec {
    /// What one session's recording may hold.
    pub max_session_bytes: u64,
    /// What one user's recordings may hold, over every session of theirs whose segments ended
    /// in the last 24 hours: one user's sessions cannot bring the node down to its free-space
    /// floor, which ends everyone's recorded sessions.
    pub max_user_bytes_per_day: u64,
    /// The room recordings leave free on the node's disk (the spool's file system).
    pub min_free_bytes: u64,
}

/// `[cluster]`: this node's name and the lease timing nodes keep in the shared metadata store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// The node's name: 1..=63 lower-case letters, digits and inner `-`. `None` means the
    /// host's name (`serve --node` overrides both). It names the node's trail chain, so two
    /// nodes on one metadata store never share one.
    pub node: Option<String>,
    /// How often a node renews its lease.
    pub heartbeat_ms: u64,
    /// How long a lease lasts unrenewed before other nodes take the node for lost.
    pub lease_ms: u64,
    /// Where the node's notebook relay listens for other nodes (mutual TLS), on a PostgreSQL
    /// store only. `None`: the API's address, any free port.
    pub relay_listen: Option<std::net::SocketAddr>,
    /// The `host:port` other nodes reach the relay at, when it is not the address it listens
    /// on (behind NAT, or listening on every address). `None`: the bound address, or the
    /// host's name and the bound port when it listens on every address.
    pub relay_address: Option<String>,
}

/// `[airlock]`: how many reviewers each direction needs, the checks' settings and how long
/// releases and their download links last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AirlockSpec {
    pub export_reviewers: u32,
    pub import_reviewers: u32,
    /// Counts from 1 to this − 1 in a released table fail the `table.small-count` check.
    pub small_count_threshold: u64,
    /// The file types (by content) a request may carry: csv, tsv, text, markdown, json, png
    /// and pdf by default; zip, whose members are checked one by one, when added.
    pub allowed_types: Vec<String>,
    /// A file larger than this is blocked: the checks read every byte or none passes.
    pub max_file_bytes: u64,
    /// What one researcher may add to requests in a day, replaced and removed files included
    /// (the airlock bucket keeps every file added).
    pub max_bytes_per_day: u64,
    pub link_hours: u32,
    pub release_hours: u32,
    /// Whether files are scanned for malware (ClamAV), and where its signatures are. Off
    /// only when the operator says so: then no file is scanned, and the policy version says
    /// so too.
    pub malware_scan: bool,
    pub clamav_database: String,
}

impl AirlockSpec {
    /// The version of this policy that check results and release records name: a hash of
    /// the settings, so a change to any of them is a new version.
    pub fn version(&self) -> String {
        // FNV-1a over the settings as written: the same settings give the same version on
        // every node and every run.
        let text = format!("{self:?}");
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
        format!("{hash:016x}")
    }
}

/// An OpenID Connect provider users may sign in with (authorization code with PKCE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSpec {
    /// The issuer URL; its discovery document is `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// Only for a confidential client; a public client relies on PKCE alone.
    pub client_secret: Option<String>,
    /// Space-separated; always includes `openid`.
    pub scopes: String,
    /// The ID token claim that becomes the user id (`sub` unless the provider's are too long).
    pub user_claim: String,
    /// The ID token claim listing the user's roles.
    pub roles_claim: String,
    /// How long a sign-in (its token, and the streaming sessions it launches) lasts.
    pub session_seconds: i64,
}

/// A validated environment spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub vpc_cidr: Ipv4Cidr,
    pub image_name: String,
    pub environment_name: String,
    pub instance_type: String,
    pub fleet_type: FleetType,
    pub stream_view: StreamView,
    pub idp_name: String,
    pub idp_metadata: Option<String>,
    pub oidc: Option<OidcSpec>,
    pub account_id: String,
    pub region: String,
    pub api_listen: SocketAddr,
    /// The base of the URLs handed to users (streaming URLs); by default `http://<api_listen>`.
    pub public_url: Option<String>,
    /// Where notebooks are served: an origin of their own, so that a notebook's pages cannot
    /// act on the portal's, console's or session's; by default `api_listen`'s address with the
    /// next port (port 0 stays 0).
    pub notebook_listen: SocketAddr,
    /// The base of the notebook origin's URLs as browsers reach it (a host name or port of its
    /// own, same site as `public_url`); by default the host the browser used with
    /// `notebook_listen`'s port. Required with `public_url`.
    pub notebook_url: Option<String>,
    /// Whether the API and notebook listeners speak TLS, and with which certificate.
    pub tls: ServerTls,
    /// The proxies in front of the listeners (addresses or networks) whose `X-Forwarded-For`
    /// names the client: its address is then the one recorded and the one sign-in limits
    /// count. Empty: the peer's address, whatever a request's headers say.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How many milliseconds one second of a session timeout lasts: 1000, except in tests that
    /// need an idle or maximum-duration timeout to pass quickly.
    pub timeout_scale_ms: u32,
    /// `None` means SQLite in the data directory.
    pub metadata_url: Option<String>,
    pub storage: StorageBackend,
    pub max_object_size: u64,
    pub audit: AuditSpec,
    pub recording: RecordingSpec,
    pub cluster: ClusterSpec,
    /// The port of the endpoint on each instance link's host address.
    pub endpoint_port: u16,
    /// How long an instance credential is valid; it is rotated after two thirds of it.
    pub credential_lifetime_seconds: u64,
    /// The pool of host ids instances map theirs to: `id_slots` ranges of 65536 ids from
    /// `id_base`, one range per running instance; it must overlap no `/etc/subuid` or
    /// `/etc/subgid` entry (checked when the sandbox starts).
    pub id_base: u32,
    pub id_slots: u32,
    pub instance_types: Vec<InstanceType>,
    pub buckets: Vec<BucketSpec>,
    pub datasets: Vec<DatasetSpec>,
    pub images: Vec<ImageSpec>,
    pub policies: Vec<PolicySpec>,
    pub fleets: Vec<FleetSpec>,
    pub stacks: Vec<StackSpec>,
    pub notebooks: Vec<NotebookSpec>,
    pub launcher: LauncherSpec,
    pub airlock: AirlockSpec,
}

/// AppStream's user-setting actions, in AWS's spelling.
/// AppStream's user settings, and DataSandbox's own, off unless a stack enables them:
/// `TERMINAL` (Jupyter's terminals in the session's notebook, each line typed in them
/// recorded) and `DEBUGGER` (the kernels' debugger, each request recorded; its debugpy listens
/// on the notebook instance's loopback, where the notebook's other kernels can reach it).
pub const USER_SETTING_ACTIONS: &[&str] = &[
    "CLIPBOARD_COPY_FROM_LOCAL_DEVICE",
    "CLIPBOARD_COPY_TO_LOCAL_DEVICE",
    "FILE_UPLOAD",
    "FILE_DOWNLOAD",
    "PRINTING_TO_LOCAL_DEVICE",
    "TERMINAL",
    "DEBUGGER",
];

/// The user settings a stack has off unless it says otherwise, even through the API (where
/// AppStream's unlisted settings are on).
pub const USER_SETTINGS_OFF_UNLESS_ENABLED: &[&str] = &["TERMINAL", "DEBUGGER"];

impl Spec {
    /// This node's name: `cluster.node`, which the server fills in from `--node` or the host's
    /// name before it starts; `local` for a spec built in process.
    pub fn node_name(&self) -> &str {
        self.cluster.node.as_deref().unwrap_or("local")
    }

    pub fn home_bucket(&self) -> Option<&BucketSpec> {
        self.buckets.iter().find(|b| b.home_folders)
    }
}

/// The S3 event types that notifications may name.
pub fn is_event_type(event: &str) -> bool {
    ["ObjectCreated:*", "ObjectCreated:Put", "ObjectCreated:Copy", "ObjectRemoved:*", "ObjectRemoved:Delete"].contains(&event)
}

/// TLS on the API's and the notebooks' listeners (`[server] tls_cert`, `tls_key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerTls {
    /// Plain HTTP: on loopback, or behind a proxy that terminates TLS (`allow_plain_http`).
    Off,
    /// The operator's certificate chain and key (PEM), read again on SIGHUP.
    Files { cert: PathBuf, key: PathBuf },
    /// An `https://` public URL without a certificate: a local authority in the data directory
    /// issues one for the URLs' host names, and browsers are told to trust the authority.
    LocalAuthority,
}
