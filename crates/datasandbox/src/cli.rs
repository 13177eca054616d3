//! The command line, as clap reads it: every command, its arguments and their help. `main.rs`
//! dispatches on it; the command modules take their own arguments from here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "datasandbox", version, about = "Isolated, audited workspaces for sensitive data")]
pub(crate) struct Cli {
    /// The data directory: spec, metadata, objects, audit trail and the control socket.
    #[arg(long, global = true, env = "DATASANDBOX_DATA_DIR", default_value = ".datasandbox")]
    pub(crate) data_dir: PathBuf,
    /// Log format on stderr; by default text, but JSON for `serve` when stderr is not a
    /// terminal (a service manager's journal).
    #[arg(long, global = true, value_enum)]
    pub(crate) log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args, Clone)]
pub(crate) struct SpecArgs {
    /// The environment spec; default `<data-dir>/datasandbox.toml`.
    #[arg(long)]
    pub(crate) spec: Option<PathBuf>,
    /// Overrides a spec parameter for this run, like `cdk -c` (repeatable): `-c fleet_type=ALWAYS_ON`.
    #[arg(short = 'c', long = "context", value_name = "KEY=VALUE")]
    pub(crate) overrides: Vec<String>,
    /// This node's name among the nodes sharing one metadata store (`cluster.node`; default
    /// the host's name).
    #[arg(long, value_name = "NAME")]
    pub(crate) node: Option<String>,
}

impl SpecArgs {
    /// The `-c` overrides, with `--node` as `cluster.node=…` after them.
    pub(crate) fn all_overrides(&self) -> Vec<String> {
        self.overrides.iter().cloned().chain(self.node.as_ref().map(|n| format!("cluster.node={n}"))).collect()
    }
}

#[derive(clap::Args, Clone)]
pub(crate) struct EndpointArgs {
    /// Call a remote API (`https://host:port`, or `http://` on loopback) instead of the local
    /// control socket.
    #[arg(long, env = "DATASANDBOX_ENDPOINT")]
    pub(crate) endpoint: Option<String>,
    /// A CA certificate (PEM) to trust for `--endpoint https://…` besides the system's: a local
    /// authority's `tls/authority.pem`.
    #[arg(long, env = "DATASANDBOX_CA_CERT", value_name = "FILE")]
    pub(crate) ca_cert: Option<std::path::PathBuf>,
    /// The endpoint is an instance's own, over its private link (inside an instance only):
    /// plain HTTP is right there.
    #[arg(skip)]
    pub(crate) instance_link: bool,
    /// Bearer token for `--endpoint` (from `identity:CreateSessionToken`).
    #[arg(long, env = "DATASANDBOX_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

impl EndpointArgs {
    /// The local control socket.
    pub(crate) const LOCAL: EndpointArgs = EndpointArgs { endpoint: None, token: None, ca_cert: None, instance_link: false };
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Deploy the spec (writing the defaults on a fresh host) and serve in the foreground.
    Up(SpecArgs),
    /// Serve an existing data directory in the foreground, for service managers.
    Serve(SpecArgs),
    /// Back up the data directory (while it serves, or not): the metadata, the objects, the
    /// trail with its signatures, the spec, the images, stopped notebooks' volumes and the keys,
    /// into a new directory, with progress on stderr.
    Backup {
        /// The new directory the backup goes in (it must not exist, or be empty).
        #[arg(long)]
        to: PathBuf,
        /// A file holding the passphrase (12 characters or more) the keys are sealed under.
        #[arg(long, value_name = "FILE", conflicts_with = "without_keys")]
        passphrase_file: Option<PathBuf>,
        /// Leave the keys out: keep master.key apart (nothing in the backup is readable without it).
        #[arg(long)]
        without_keys: bool,
        /// The spec and overrides the server runs with (when nothing serves the directory:
        /// which backends it uses).
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Restore a backup into a new data directory (`--data-dir`, which must not exist or be
    /// empty), checking every file, object and the trail before it is put in place.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// The file holding the passphrase the backup's keys were sealed under.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// For a backup made --without-keys: the data directory's master.key, which proves the
        /// backup unchanged and is put in place.
        #[arg(long, value_name = "FILE", conflicts_with = "passphrase_file")]
        master_key: Option<PathBuf>,
    },
    /// The service manager's unit for `serve`.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Check a spec and print every problem, without starting anything.
    Validate(SpecArgs),
    /// Compare the spec with the running environment: each resource's create, update,
    /// replace (with the immutable fields that force it) or delete, by stack.
    Diff(SpecArgs),
    /// Apply the spec to the running environment, stack by stack, printing stack events; a
    /// failure rolls every change back.
    Deploy(SpecArgs),
    /// Delete the environment's resources in reverse order, keeping (and naming) the retained
    /// ones: keys, buckets that hold data, the policies.
    Destroy {
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Call any action: `datasandbox call storage:ListBuckets --input '{}'`.
    Call {
        /// The action, `service:Action`.
        action: String,
        /// The request as JSON, with AWS's member names.
        #[arg(long, default_value = "{}")]
        input: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Copy files to and from storage: `datasandbox storage cp ./data.csv ds://bucket/key`.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// A single-use streaming URL that opens a session for a user (prints the URL).
    StreamingUrl {
        /// The user, 2..=32 characters.
        #[arg(long)]
        user: String,
        /// The stack; by default the only one there is.
        #[arg(long)]
        stack: Option<String>,
        /// How long the URL can be opened, in seconds (1..=604800).
        #[arg(long, default_value_t = 300)]
        validity: u32,
        #[arg(long)]
        application: Option<String>,
    },
    /// The sessions of a stack (PENDING and ACTIVE).
    Sessions {
        /// The stack; by default the only one there is.
        #[arg(long)]
        stack: Option<String>,
    },
    /// The nodes sharing the metadata store: state, address, lease, instances and capacity.
    Nodes,
    /// The airlock: requests that move files out of or into workspaces.
    Airlock {
        #[command(subcommand)]
        command: AirlockCommand,
    },
    /// Sandbox instances.
    Instances {
        #[command(subcommand)]
        command: InstancesCommand,
    },
    /// Images: a read-only root filesystem and an application catalog.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// AppStream-style usage reports.
    Reports {
        #[command(subcommand)]
        command: ReportsCommand,
    },
    /// Inside an instance: keep the home folder and the user's home prefix the same.
    #[command(hide = true)]
    HomeSync,
    /// Inside a streaming instance: ask for the session's notebook (writes `session.json`,
    /// waits for `session_url.txt` or `session_error.json`).
    Launcher,
    /// Inside a pixel-streamed instance: draw the user, the session and the time into the display.
    #[command(hide = true)]
    Watermark,
    /// Read the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Session recordings: list and export (auditors only), verify an export offline.
    Recordings {
        #[command(subcommand)]
        command: RecordingsCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum RecordingsCommand {
    /// A session's stored segments: times, sizes, whether complete, SHA-256.
    List {
        session: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Write a session's segments, as stored (encrypted), into a directory (recorded, with the
    /// justification, in the trail).
    Export {
        session: String,
        /// The directory the segments go in (`<segment>.dsrec`).
        #[arg(long)]
        to: PathBuf,
        /// Why you export this recording (10 to 1000 characters), kept in the trail.
        #[arg(long)]
        justification: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Check exported segments offline: each one's hash chain and signature, their order, and
    /// the hashes the trail recorded when each was sealed. Exits 1 naming every bad segment.
    Verify {
        session: String,
        /// The directory of an export.
        #[arg(long)]
        from: PathBuf,
        /// A copy of the trail (the data directory's `trail/` by default): its nodes' public
        /// keys and `RecordingSegmentSealed` records, used once the trail itself validates.
        #[arg(long)]
        trail_dir: Option<PathBuf>,
        /// Check the segments with the trail's public keys only, not against its records (a
        /// segment cut off the end then goes unnoticed).
        #[arg(long)]
        no_trail: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ServiceCommand {
    /// Write a systemd unit that runs `serve` on the data directory (with the spec options given
    /// here), restarts it on failure and reloads its certificate on `systemctl reload`.
    Install {
        /// Where the unit goes.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
        /// The binary the unit runs; by default this one.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Replace a unit that differs.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        spec: SpecArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum StorageCommand {
    /// Copy a local file to `ds://bucket/key`, or an object to a local file (`-` is stdout).
    Cp {
        source: String,
        destination: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum InstancesCommand {
    /// The instances that have not ended.
    List,
    /// Start an instance (fleets do this for sessions; this is for operators and tests).
    Create {
        #[arg(long)]
        user: Option<String>,
        #[arg(long = "type")]
        instance_type: Option<String>,
        #[arg(long)]
        image: Option<String>,
    },
    /// Stop an instance and remove everything it had on the host.
    Terminate { instance_id: String },
    /// Run a command inside an instance as its workspace user (audited as you).
    Exec {
        instance_id: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum ImageCommand {
    /// Build an image from a recipe: `base` (a root on the host's own packages), `desktop` (adds
    /// the display and a kiosk browser for pixel streaming) or `notebook` (adds JupyterLab from
    /// PyPI). What the image adds comes from the spec's `[images.<name>]`.
    Build {
        recipe: String,
        /// The image's name; by default the spec's `image_name` for `base` and `desktop`,
        /// `datasandbox-notebook` for `notebook`.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum ReportsCommand {
    /// Write one day's session and application reports to the `<env>-reports` bucket.
    Generate {
        /// The UTC day, like 2026-11-28.
        #[arg(long)]
        day: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// The newest records matching every given filter, one JSON record per line.
    Lookup {
        #[arg(long)]
        event_name: Option<String>,
        #[arg(long)]
        event_source: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        request_id: Option<String>,
        #[arg(long)]
        correlation_id: Option<String>,
        #[arg(long)]
        resource: Option<String>,
        /// RFC 3339 time, like 2026-11-29T00:00:00Z.
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        #[arg(long, default_value_t = 50)]
        max: u32,
        /// Continue from the token a previous page printed.
        #[arg(long)]
        next_token: Option<String>,
    },
    /// Check the trail's integrity offline, like `aws cloudtrail validate-logs`.
    Validate {
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        #[arg(long)]
        verbose: bool,
        /// A copy of the trail; default `<data-dir>/trail`.
        #[arg(long)]
        trail_dir: Option<PathBuf>,
        /// The trail's public key (64 hex digits in a file); default: the key the trail holds.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// The trail's witness (`audit.witness`: copies of its checkpoints and digests on
        /// another file system); shows a deleted tail the trail alone cannot.
        #[arg(long)]
        witness: Option<PathBuf>,
        /// Without --trail-dir, the spec says where the trail is: with S3 storage (in the
        /// spec or its `-c` overrides, as given to `serve`), every node's chain is read from
        /// the bucket's `trail/` prefix; `--node` checks one node's chain only.
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Run one read-only SQL SELECT over the audit index (tables `events`, `event_resources`).
    Query {
        sql: String,
        #[arg(long)]
        json: bool,
    },
    /// One timeline: a person's, a session's or a correlation id's actions, in order.
    Trace {
        #[arg(long, group = "who")]
        user: Option<String>,
        #[arg(long, group = "who")]
        session: Option<String>,
        #[arg(long, group = "who")]
        correlation_id: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        json: bool,
        /// Every record: runs of identical read-only calls (a sync's listings, a page's status
        /// polls) are otherwise one line with their count.
        #[arg(long)]
        all: bool,
    },
    /// Rebuild the audit index from the trail's files.
    Reindex,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AirlockCommand {
    /// Inside a session's workspace: asks for files to leave it, with why. The request is
    /// checked at once, then waits for its reviewers; `airlock:DescribeRequests` follows it.
    Submit {
        /// The files, as they are now.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        justification: String,
        /// The workspace (stack); by default the session's.
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Checks a signed release record (from `airlock:GetReleaseRecord`) offline: its signature
    /// by this platform's release key, read from `<data-dir>/airlock-release.pub` unless given.
    Verify {
        /// The release record, as JSON.
        record: PathBuf,
        /// The platform's release public key (hex), or a file holding it.
        #[arg(long)]
        public_key: Option<String>,
    },
}
