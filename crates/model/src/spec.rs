//! The environment spec, `datasandbox.toml`: the seed's deployment parameters (its `cdk.json`
//! context) and the resources built from them.
//!
//! Parsing goes raw TOML → `-c key=value` overrides → a validating walk that reports every
//! problem at once, each with its path and the allowed range or values → [`Spec`].

mod defaults;
mod walk;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub use defaults::default_spec_text;

use crate::ids::BucketName;
use walk::{Problems, Table};

/// One problem found in a spec, at a dotted path such as `fleets.analysts.disconnect_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Every problem found in one pass; nothing is deployed when there is any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(f, "the spec has {count} problem{}:", if count == 1 { "" } else { "s" })?;
        for problem in &self.problems {
            write!(f, "\n  {}: {}", problem.path, problem.message)?;
        }
        Ok(())
    }
}

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
    /// How many milliseconds one second of a session timeout lasts: 1000, except in tests that
    /// need an idle or maximum-duration timeout to pass quickly.
    pub timeout_scale_ms: u32,
    /// `None` means SQLite in the data directory.
    pub metadata_url: Option<String>,
    pub storage: StorageBackend,
    pub max_object_size: u64,
    pub audit: AuditSpec,
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
}

/// AppStream's user-setting actions, in AWS's spelling.
pub const USER_SETTING_ACTIONS: &[&str] =
    &["CLIPBOARD_COPY_FROM_LOCAL_DEVICE", "CLIPBOARD_COPY_TO_LOCAL_DEVICE", "FILE_UPLOAD", "FILE_DOWNLOAD", "PRINTING_TO_LOCAL_DEVICE"];

impl Spec {
    /// Parses spec text, applies `key=value` overrides and validates the result.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Spec, SpecError> {
        let mut root: toml::Table = text.parse().map_err(|err: toml::de::Error| SpecError {
            problems: vec![Problem { path: "datasandbox.toml".into(), message: err.message().to_owned() + &location(text, err.span()) }],
        })?;
        let mut problems = Vec::new();
        for item in overrides {
            if let Err(problem) = apply_override(&mut root, item) {
                problems.push(problem);
            }
        }
        let problems = Problems::new(problems);
        let spec = read_spec(&Table::root(&root, &problems));
        let problems = problems.into_inner();
        if problems.is_empty() { Ok(spec) } else { Err(SpecError { problems }) }
    }

    pub fn home_bucket(&self) -> Option<&BucketSpec> {
        self.buckets.iter().find(|b| b.home_folders)
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!(" (line {line})")
}

/// `-c a.b=value`: the value is read as TOML when it parses as one (numbers, booleans, arrays),
/// otherwise as a plain string, like `cdk -c`.
fn apply_override(root: &mut toml::Table, item: &str) -> Result<(), Problem> {
    let (path, raw) = item
        .split_once('=')
        .ok_or_else(|| Problem { path: item.to_owned(), message: "an override must have the form key=value".into() })?;
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(Problem {
            path: path.to_owned(),
            message: "an override key must be a dotted path like storage.max_object_size".into(),
        });
    }
    let (last, parents) = segments.split_last().expect("split of a non-empty path has a last segment");
    let mut table = root;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = table.entry(segment.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| Problem {
            path: segments[..=depth].join("."),
            message: "is not a table, so it cannot hold the overridden key".into(),
        })?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

fn read_spec(root: &Table) -> Spec {
    let environment_name = root
        .parsed("environment_name", "datasandbox", |v| {
            let ok = (1..=40).contains(&v.len())
                && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !v.starts_with('-')
                && !v.ends_with('-');
            if ok {
                Ok(v.to_owned())
            } else {
                Err(format!("`{v}` must be 1..=40 lower-case letters, digits or inner `-` (it names buckets)"))
            }
        })
        .unwrap_or_else(|| "datasandbox".into());
    let vpc_cidr = root.parsed("vpc_cidr", "10.10.0.0/16", Ipv4Cidr::parse_private);
    let image_name = root.string("image_name", "datasandbox-image");
    let fleet_type = match root.choice("fleet_type", "ON_DEMAND", &["ALWAYS_ON", "ON_DEMAND"]) {
        "ALWAYS_ON" => FleetType::AlwaysOn,
        _ => FleetType::OnDemand,
    };
    let stream_view = match root.choice("stream_view", "DESKTOP", &["DESKTOP", "APP", "DIRECT"]) {
        "APP" => StreamView::App,
        "DIRECT" => StreamView::Direct,
        _ => StreamView::Desktop,
    };
    let idp_name = root.string("idp_name", "idp_sample");
    let idp_metadata = root.opt_string("idp_metadata").filter(|v| !v.is_empty());
    let account_id = root
        .parsed("account_id", "000000000000", |v| {
            if v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()) { Ok(v.to_owned()) } else { Err(format!("`{v}` must be 12 digits")) }
        })
        .unwrap_or_default();
    let region = root.string("region", "local");

    let oidc_table = root.table("oidc");
    let issuer = oidc_table.string("issuer", "");
    let oidc = if issuer.is_empty() {
        for key in ["client_id", "client_secret", "scopes", "user_claim", "roles_claim", "session_seconds"] {
            oidc_table.has(key);
        }
        None
    } else {
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) || issuer.ends_with('/') {
            oidc_table.problem("issuer", format!("`{issuer}` must be an https:// URL without a trailing `/`"));
        }
        let client_id = oidc_table.string("client_id", "");
        if client_id.is_empty() {
            oidc_table.problem("client_id", "is required when oidc.issuer is set");
        }
        let scopes = oidc_table.string("scopes", "openid email");
        if !scopes.split_whitespace().any(|s| s == "openid") {
            oidc_table.problem("scopes", format!("`{scopes}` must include `openid`"));
        }
        Some(OidcSpec {
            issuer,
            client_id,
            client_secret: oidc_table.opt_string("client_secret").filter(|v| !v.is_empty()),
            scopes,
            user_claim: oidc_table.string("user_claim", "sub"),
            roles_claim: oidc_table.string("roles_claim", "roles"),
            session_seconds: oidc_table.integer("session_seconds", 3600, 900..=43_200),
        })
    };
    oidc_table.finish();

    let server = root.table("server");
    let api_listen =
        server.parsed("api_listen", "127.0.0.1:8750", |v| v.parse::<SocketAddr>().map_err(|_| format!("`{v}` is not an address:port")));
    let public_url = server.opt_string("public_url").filter(|v| !v.is_empty());
    if let Some(url) = public_url.as_ref().filter(|u| !(u.starts_with("http://") || u.starts_with("https://")) || u.ends_with('/')) {
        server.problem("public_url", format!("`{url}` must be an http:// or https:// URL without a trailing `/`"));
    }
    let notebook_listen = server.opt_string("notebook_listen").filter(|v| !v.is_empty()).and_then(|v| match v.parse::<SocketAddr>() {
        Ok(address) => Some(address),
        Err(_) => {
            server.problem("notebook_listen", format!("`{v}` is not an address:port"));
            None
        }
    });
    let notebook_url = server.opt_string("notebook_url").filter(|v| !v.is_empty());
    if let Some(url) = notebook_url.as_ref().filter(|u| !(u.starts_with("http://") || u.starts_with("https://")) || u.ends_with('/')) {
        server.problem("notebook_url", format!("`{url}` must be an http:// or https:// URL without a trailing `/`"));
    }
    if notebook_url.is_some() && notebook_url == public_url {
        server.problem("notebook_url", "must differ from public_url: notebooks are served from an origin of their own");
    }
    if public_url.is_some() && notebook_url.is_none() {
        server.problem("notebook_url", "is required with public_url: the URL (another host name or port) where notebook_listen is reached");
    }
    server.finish();
    let streaming = root.table("streaming");
    let timeout_scale_ms = streaming.integer("timeout_scale_ms", 1000, 1..=1000) as u32;
    streaming.finish();

    let metadata = root.table("metadata");
    let metadata_url = metadata.opt_string("url").filter(|v| !v.is_empty());
    if let Some(url) =
        metadata_url.as_ref().filter(|u| !(u.starts_with("sqlite:") || u.starts_with("postgres://") || u.starts_with("postgresql://")))
    {
        metadata.problem("url", format!("`{url}` must start with sqlite:, postgres:// or postgresql://"));
    }
    metadata.finish();

    let storage = root.table("storage");
    let backend = storage.choice("backend", "local", &["local", "s3"]);
    let max_object_size = storage.integer("max_object_size", 32 * 1024 * 1024, 1..=5 * 1024 * 1024 * 1024) as u64;
    let s3 = storage.table("s3");
    let storage_backend = if backend == "s3" {
        let endpoint = s3.string("endpoint", "");
        let bucket = s3.string("bucket", "");
        if endpoint.is_empty() {
            s3.problem("endpoint", "is required when storage.backend = \"s3\"");
        }
        if bucket.is_empty() {
            s3.problem("bucket", "is required when storage.backend = \"s3\"");
        }
        StorageBackend::S3 { endpoint, bucket, region: s3.string("region", "us-east-1"), allow_http: s3.boolean("allow_http", false) }
    } else {
        for key in ["endpoint", "bucket", "region", "allow_http"] {
            s3.has(key);
        }
        StorageBackend::Local
    };
    s3.finish();
    storage.finish();

    let audit = root.table("audit");
    let audit_spec = AuditSpec {
        max_batch_delay_ms: audit.integer("max_batch_delay_ms", 0, 0..=1000) as u64,
        checkpoint_records: audit.integer("checkpoint_records", 1000, 1..=1_000_000) as u64,
        checkpoint_interval_ms: audit.integer("checkpoint_interval_ms", 500, 10..=1000) as u64,
        rotate_bytes: audit.integer("rotate_bytes", 32 * 1024 * 1024, 64 * 1024..=1024 * 1024 * 1024) as u64,
        rotate_interval_seconds: audit.integer("rotate_interval_seconds", 300, 1..=3600) as u64,
        digest_interval_seconds: audit.integer("digest_interval_seconds", 3600, 1..=3600) as u64,
        reserve_bytes: audit.integer("reserve_bytes", 16 * 1024 * 1024, 1024 * 1024..=1024 * 1024 * 1024) as u64,
        witness: audit.opt_string("witness").filter(|w| !w.is_empty()).map(PathBuf::from),
    };
    if let Some(witness) = &audit_spec.witness {
        if !witness.is_absolute() {
            audit.problem("witness", format!("`{}` must be an absolute path (a directory on another file system)", witness.display()));
        } else if witness.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            audit.problem("witness", format!("`{}` must not contain `..`", witness.display()));
        }
    }
    audit.finish();

    let sandbox = root.table("sandbox");
    let endpoint_port = sandbox.integer("endpoint_port", 8751, 1024..=65535) as u16;
    let credential_lifetime_seconds = sandbox.integer("credential_lifetime_seconds", 3600, 3..=86_400) as u64;
    // The pool ends 65536 ids below 2^31: gocryptfs (notebook volumes) takes a file owner below
    // 2^31 only, and the last ids are image builds' own.
    let id_base = sandbox.integer("id_base", 1 << 30, 65_536..=(1 << 31) - 131_072) as u32;
    let id_slots = sandbox.integer("id_slots", 16_383, 1..=32_766) as u32;
    if u64::from(id_base) + u64::from(id_slots) * 65_536 > (1 << 31) - 65_536 {
        sandbox.problem(
            "id_slots",
            format!(
                "{id_slots} ranges of 65536 ids from id_base {id_base} end past host id 2147418111 (the ids above are a notebook volume's limit and image builds' own)"
            ),
        );
    }
    sandbox.finish();

    let instance_types = read_instance_types(root);
    let buckets = read_buckets(root, &environment_name);
    let datasets = read_datasets(root, &buckets);
    let images = read_images(root, &image_name, stream_view);
    let policies = read_policies(root);
    let fleets = read_fleets(root, &environment_name, &image_name, fleet_type, &instance_types);
    let stacks = read_stacks(root, &environment_name, stream_view, &fleets, &buckets);
    let notebooks = read_notebooks(root, &instance_types);
    let launcher_table = root.table("launcher");
    let launcher = LauncherSpec {
        timeout_seconds: launcher_table.integer("timeout_seconds", 300, 1..=3600) as u64,
        poll_milliseconds: launcher_table.integer("poll_milliseconds", 10, 10..=10_000) as u64,
    };
    launcher_table.finish();
    root.finish();

    Spec {
        vpc_cidr: vpc_cidr.unwrap_or(Ipv4Cidr { address: Ipv4Addr::new(10, 10, 0, 0), prefix_len: 16 }),
        image_name,
        instance_type: root.string("instance_type", "stream.standard.small"),
        environment_name,
        fleet_type,
        stream_view,
        idp_name,
        idp_metadata,
        oidc,
        account_id,
        region,
        notebook_listen: notebook_listen.unwrap_or_else(|| {
            let api = api_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8750)));
            SocketAddr::new(api.ip(), if api.port() == 0 { 0 } else { api.port().checked_add(1).unwrap_or(0) })
        }),
        notebook_url,
        api_listen: api_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8750))),
        public_url,
        timeout_scale_ms,
        metadata_url,
        storage: storage_backend,
        max_object_size,
        audit: audit_spec,
        endpoint_port,
        credential_lifetime_seconds,
        id_base,
        id_slots,
        instance_types,
        buckets,
        datasets,
        images,
        policies,
        fleets,
        stacks,
        notebooks,
        launcher,
    }
}

fn read_instance_types(root: &Table) -> Vec<InstanceType> {
    let mut types: Vec<InstanceType> = defaults::INSTANCE_TYPES
        .iter()
        .map(|(name, vcpus, memory_mib)| InstanceType { name: (*name).into(), vcpus: *vcpus, memory_mib: *memory_mib, pids: 1024 })
        .collect();
    for (name, table) in root.named_tables("instance_types").unwrap_or_default() {
        let defined = InstanceType {
            name: name.clone(),
            vcpus: table.integer("vcpus", 2, 1..=256) as u32,
            memory_mib: table.integer("memory_mib", 4096, 64..=1024 * 1024) as u64,
            pids: table.integer("pids", 1024, 16..=1_000_000) as u32,
        };
        table.finish();
        match types.iter_mut().find(|t| t.name == name) {
            Some(existing) => *existing = defined,
            None => types.push(defined),
        }
    }
    types
}

fn read_buckets(root: &Table, environment_name: &str) -> Vec<BucketSpec> {
    let Some(tables) = root.array_of_tables("buckets") else {
        let name = BucketName::new(format!("{environment_name}-home")).expect("a valid environment name makes a valid bucket name");
        return vec![BucketSpec { name, home_folders: true, notifications: Vec::new() }];
    };
    let mut buckets: Vec<BucketSpec> = Vec::new();
    for table in tables {
        let name = table.parsed("name", "", |v| BucketName::new(v).map_err(|e| e.to_string()));
        let home_folders = table.boolean("home_folders", false);
        let mut notifications = Vec::new();
        for n in table.array_of_tables("notifications").unwrap_or_default() {
            let events = n.strings("events", &["ObjectCreated:*"]);
            for (index, event) in events.iter().enumerate() {
                if !crate::spec::is_event_type(event) {
                    n.problem(&format!("events[{index}]"), format!("`{event}` is not an event type; use ObjectCreated:*, ObjectCreated:Put, ObjectCreated:Copy, ObjectRemoved:* or ObjectRemoved:Delete"));
                }
            }
            notifications.push(NotificationSpec {
                id: n.string("id", ""),
                events,
                prefix: n.string("prefix", ""),
                suffix: n.string("suffix", ""),
                function: n.string("function", ""),
            });
            n.finish();
        }
        table.finish();
        if let Some(name) = name {
            if buckets.iter().any(|b| b.name == name) {
                table.problem("name", format!("bucket `{name}` is defined twice"));
            }
            buckets.push(BucketSpec { name, home_folders, notifications });
        }
    }
    buckets
}

fn read_images(root: &Table, image_name: &str, stream_view: StreamView) -> Vec<ImageSpec> {
    let mut images: Vec<ImageSpec> = root
        .named_tables("images")
        .unwrap_or_default()
        .into_iter()
        .map(|(name, t)| {
            let recipe = t.choice("recipe", "base", &["base", "desktop", "notebook"]).to_owned();
            let default: &[&str] = if recipe == "notebook" { &["jupyterlab", "ipykernel"] } else { &[] };
            let python_packages = t.strings("python_packages", default);
            for (index, package) in python_packages.iter().enumerate() {
                let ok = !package.is_empty()
                    && !package.starts_with('-')
                    && package.chars().all(|c| c.is_ascii_alphanumeric() || "._-=<>!~[],".contains(c));
                if !ok {
                    t.problem(
                        &format!("python_packages[{index}]"),
                        format!("`{package}` is not a package requirement such as `jupyterlab>=4`"),
                    );
                }
            }
            if recipe != "notebook" && !python_packages.is_empty() {
                t.problem("python_packages", "only the `notebook` recipe installs Python packages");
            }
            t.finish();
            ImageSpec { name, recipe, python_packages }
        })
        .collect();
    // The fleets' image and the notebooks' image exist unless declared otherwise; pixel
    // streaming needs the fleets' image to have a display and a browser.
    let fleet_recipe = if stream_view == StreamView::Direct { "base" } else { "desktop" };
    for (name, recipe, packages) in
        [(image_name, fleet_recipe, &[][..]), ("datasandbox-notebook", "notebook", &["jupyterlab", "ipykernel"][..])]
    {
        if !images.iter().any(|i| i.name == name) {
            images.push(ImageSpec {
                name: name.to_owned(),
                recipe: recipe.into(),
                python_packages: packages.iter().map(|p| (*p).to_owned()).collect(),
            });
        }
    }
    images
}

fn read_datasets(root: &Table, buckets: &[BucketSpec]) -> Vec<DatasetSpec> {
    let mut datasets = Vec::new();
    for (name, table) in root.named_tables("datasets").unwrap_or_default() {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            root.problem(
                &format!("datasets.{name}"),
                format!("`{name}` cannot name a directory under /data; use up to 64 letters, digits, `-`, `_` or `.`"),
            );
        }
        let bucket = table.parsed("bucket", "", |v| BucketName::new(v).map_err(|e| e.to_string()));
        let prefix = table.string("prefix", "");
        if prefix.starts_with('/') || prefix.split('/').any(|part| part == "..") {
            table.problem("prefix", format!("`{prefix}` must be a key prefix such as `trials/2026/`"));
        }
        table.finish();
        let Some(bucket) = bucket else { continue };
        match buckets.iter().find(|b| b.name == bucket) {
            None => table.problem("bucket", format!("`{bucket}` is not a bucket defined in this spec")),
            Some(b) if b.home_folders => table.problem("bucket", format!("`{bucket}` holds home folders, which are never datasets")),
            Some(_) if valid_name => datasets.push(DatasetSpec { name, bucket, prefix }),
            Some(_) => {}
        }
    }
    datasets
}

/// The S3 event types that notifications may name.
pub fn is_event_type(event: &str) -> bool {
    ["ObjectCreated:*", "ObjectCreated:Put", "ObjectCreated:Copy", "ObjectRemoved:*", "ObjectRemoved:Delete"].contains(&event)
}

fn read_policies(root: &Table) -> Vec<PolicySpec> {
    let Some(tables) = root.array_of_tables("policies") else {
        return defaults::POLICIES.iter().map(|(name, text)| PolicySpec { name: (*name).into(), text: (*text).into() }).collect();
    };
    tables
        .into_iter()
        .map(|table| {
            let policy = PolicySpec { name: table.string("name", ""), text: table.string("text", "") };
            if policy.name.is_empty() {
                table.problem("name", "is required");
            }
            table.finish();
            policy
        })
        .collect()
}

fn check_instance_type(table: &Table, key: &'static str, value: &str, types: &[InstanceType]) {
    if !types.iter().any(|t| t.name == value) {
        let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
        table.problem(key, format!("`{value}` is not a defined instance type ({})", names.join(", ")));
    }
}

fn read_fleets(root: &Table, env: &str, image: &str, fleet_type: FleetType, types: &[InstanceType]) -> Vec<FleetSpec> {
    let instance_type = root.string("instance_type", "stream.standard.small");
    check_instance_type(root, "instance_type", &instance_type, types);
    let default_type = match fleet_type {
        FleetType::AlwaysOn => "ALWAYS_ON",
        FleetType::OnDemand => "ON_DEMAND",
    };
    let named = root.named_tables("fleets").unwrap_or_else(|| vec![(format!("{env}-fleet"), root.absent(&format!("fleets.{env}-fleet")))]);
    named
        .into_iter()
        .map(|(name, t)| {
            let fleet = FleetSpec {
                image_name: t.string("image_name", image),
                instance_type: t.string("instance_type", &instance_type),
                fleet_type: if t.choice("fleet_type", default_type, &["ALWAYS_ON", "ON_DEMAND"]) == "ALWAYS_ON" {
                    FleetType::AlwaysOn
                } else {
                    FleetType::OnDemand
                },
                desired_instances: t.integer("desired_instances", 2, 0..=1000) as u32,
                max_user_duration_seconds: t.integer("max_user_duration", 57_600, 600..=432_000) as u32,
                disconnect_timeout_seconds: t.integer("disconnect_timeout", 900, 60..=36_000) as u32,
                idle_disconnect_timeout_seconds: {
                    let idle = t.integer("idle_disconnect_timeout", 900, 0..=36_000);
                    if (1..60).contains(&idle) {
                        t.problem("idle_disconnect_timeout", format!("{idle} must be 0 (off) or within 60..=36000"));
                    }
                    idle as u32
                },
                max_queue: t.integer("max_queue", 100, 0..=10_000) as u32,
                queue_timeout_seconds: t.integer("queue_timeout", 300, 1..=3600) as u32,
                max_sessions_per_user: t.integer("max_sessions_per_user", 5, 1..=100) as u32,
                name,
            };
            check_instance_type(&t, "instance_type", &fleet.instance_type, types);
            t.finish();
            fleet
        })
        .collect()
}

fn read_stacks(root: &Table, env: &str, view: StreamView, fleets: &[FleetSpec], buckets: &[BucketSpec]) -> Vec<StackSpec> {
    let default_view = match view {
        StreamView::Desktop => "DESKTOP",
        StreamView::App => "APP",
        StreamView::Direct => "DIRECT",
    };
    let home = buckets.iter().find(|b| b.home_folders).map(|b| b.name.to_string());
    let default_fleet = fleets.first().map(|f| f.name.clone()).unwrap_or_default();
    let named = root.named_tables("stacks").unwrap_or_else(|| vec![(format!("{env}-stack"), root.absent(&format!("stacks.{env}-stack")))]);
    named
        .into_iter()
        .map(|(name, t)| {
            let fleet = t.string("fleet", &default_fleet);
            if !fleets.iter().any(|f| f.name == fleet) {
                t.problem("fleet", format!("`{fleet}` is not a fleet defined in this spec"));
            }
            let stream_view = match t.choice("stream_view", default_view, &["DESKTOP", "APP", "DIRECT"]) {
                "APP" => StreamView::App,
                "DIRECT" => StreamView::Direct,
                _ => StreamView::Desktop,
            };
            let home_folders_bucket = t.opt_string("home_folders_bucket").or_else(|| home.clone());
            let settings = t.table("user_settings");
            let user_settings = USER_SETTING_ACTIONS
                .iter()
                .map(|action| {
                    // The seed's stack: copy out, download and printing disabled; paste in and upload enabled.
                    let default = matches!(*action, "CLIPBOARD_COPY_FROM_LOCAL_DEVICE" | "FILE_UPLOAD");
                    let enabled =
                        settings.choice(action, if default { "ENABLED" } else { "DISABLED" }, &["ENABLED", "DISABLED"]) == "ENABLED";
                    UserSetting { action, enabled, maximum_length: None }
                })
                .collect::<Vec<_>>();
            let clipboard_max = settings.integer("CLIPBOARD_MAXIMUM_LENGTH", 20_971_520, 1..=20_971_520) as u32;
            let user_settings: Vec<UserSetting> = user_settings
                .into_iter()
                .map(|mut s| {
                    if s.action.starts_with("CLIPBOARD") {
                        s.maximum_length = Some(clipboard_max);
                    }
                    s
                })
                .collect();
            settings.finish();
            let redirect_url = t.opt_string("redirect_url").filter(|v| !v.is_empty());
            if let Some(url) = redirect_url.as_ref().filter(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
                t.problem("redirect_url", format!("`{url}` must be an http:// or https:// URL"));
            }
            let application = t.string("application", "notebook");
            // The notebook in the user's own browser: file transfer settings cannot hold there.
            let disabled: Vec<&str> = user_settings
                .iter()
                .filter(|s| matches!(s.action, "FILE_UPLOAD" | "FILE_DOWNLOAD") && !s.enabled)
                .map(|s| s.action)
                .collect();
            if stream_view == StreamView::Direct && application == "notebook" && !disabled.is_empty() {
                t.problem(
                    "stream_view",
                    format!(
                        "DIRECT hands the notebook to the user's browser, where {} cannot hold: enable it in user_settings, or stream the session (DESKTOP or APP)",
                        disabled.join(" and ")
                    ),
                );
            }
            let watermark = t.boolean("watermark", true);
            t.finish();
            StackSpec { name, fleet, stream_view, home_folders_bucket, user_settings, redirect_url, application, watermark }
        })
        .collect()
}

fn read_notebooks(root: &Table, types: &[InstanceType]) -> Vec<NotebookSpec> {
    let named = root
        .named_tables("notebooks")
        .unwrap_or_else(|| vec![("Data-Sandbox-Notebook".to_owned(), root.absent("notebooks.Data-Sandbox-Notebook"))]);
    named
        .into_iter()
        .map(|(name, t)| {
            let notebook = NotebookSpec {
                instance_type: t.string("instance_type", "stream.standard.medium"),
                volume_size_gb: t.integer("volume_size_gb", 20, 5..=16_384) as u32,
                kms_key_alias: t.string("kms_key_alias", "notebook-kms"),
                root_access: t.choice("root_access", "Disabled", &["Enabled", "Disabled"]) == "Enabled",
                direct_internet_access: t.choice("direct_internet_access", "Disabled", &["Enabled", "Disabled"]) == "Enabled",
                owner: t.opt_string("owner").filter(|v| !v.is_empty()),
                name,
            };
            check_instance_type(&t, "instance_type", &notebook.instance_type, types);
            if let Some(Err(err)) = notebook.owner.as_ref().map(|o| crate::UserId::new(o.clone())) {
                t.problem("owner", err.to_string());
            }
            t.finish();
            notebook
        })
        .collect()
}

#[cfg(test)]
mod tests;
