//! `up` and `serve`: load the spec, start the control plane, listen, print `ready`, and stop
//! cleanly on Ctrl-C or SIGTERM.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use model::spec::{Spec, default_spec_text};

use crate::cli::SpecArgs;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write the default spec on a fresh host, then serve.
    Up,
    /// Serve only; the spec must exist.
    Serve,
}

pub async fn run(data_dir: &Path, args: &SpecArgs, mode: Mode) -> ExitCode {
    match serve(data_dir, args, mode).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let invalid_spec = err.downcast_ref::<model::spec::SpecError>().is_some()
                || err.chain().any(|e| e.to_string().contains("policies are invalid"));
            eprintln!("error: {err:#}");
            ExitCode::from(if invalid_spec { 1 } else { 2 })
        }
    }
}

pub fn validate(data_dir: &Path, args: &SpecArgs) -> ExitCode {
    match load_spec(data_dir, args) {
        Ok((spec, _)) => {
            let path = spec_path(data_dir, args);
            if let Err(err) = control::check_policies(&spec) {
                eprintln!("error: {err}");
                return ExitCode::from(1);
            }
            println!(
                "{}: valid (environment `{}`, {} bucket(s), {} policy(ies))",
                path.display(),
                spec.environment_name,
                spec.buckets.len(),
                spec.policies.len()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn spec_path(data_dir: &Path, args: &SpecArgs) -> PathBuf {
    args.spec.clone().unwrap_or_else(|| data_dir.join("datasandbox.toml"))
}

fn load_spec(data_dir: &Path, args: &SpecArgs) -> anyhow::Result<(Spec, String)> {
    let path = spec_path(data_dir, args);
    let text = fs::read_to_string(&path).with_context(|| {
        format!("cannot read the spec `{}`; run `datasandbox up` once to write the defaults, or pass --spec", path.display())
    })?;
    let spec = Spec::parse(&text, &args.all_overrides()).map_err(anyhow::Error::new).with_context(|| format!("in `{}`", path.display()))?;
    Ok((spec, text))
}

async fn serve(data_dir: &Path, args: &SpecArgs, mode: Mode) -> anyhow::Result<()> {
    let (spec, spec_text, fresh) = judge_spec(data_dir, args, mode)?;
    let lock = claim_data_dir(data_dir, &spec_path(data_dir, args), fresh)?;
    let tls = listener_tls(data_dir, &spec)?;
    let owner = fs::metadata("/proc/self").context("cannot read /proc/self")?.uid();
    let listen = spec.api_listen;
    let notebook_listen = spec.notebook_listen;
    let image_cache = std::env::var_os("DATASANDBOX_CACHE_DIR").map_or_else(|| sandbox::image::DEFAULT_CACHE.into(), PathBuf::from);
    let control = control::ControlPlane::start(spec, data_dir, owner, &image_cache).await.context("cannot start the control plane")?;
    control.set_endpoint_server(gateway::endpoint_server(control.clone()));
    if mode == Mode::Up {
        deploy_before_serving(&control, &spec_text, &args.all_overrides()).await?;
    }
    let listeners = Listeners::bind(data_dir, listen, notebook_listen, tls.clone()).await?;
    // Before `ready`: a SIGHUP (a service manager's reload) never stops the server.
    tokio::spawn(reload_on_hangup(tls).context("cannot listen for SIGHUP")?);
    // Signal handlers are in place before `ready`, so a stop request right after it is clean.
    let shutdown = shutdown_signal().context("cannot listen for SIGINT and SIGTERM")?;
    let api = listeners.tcp.local_addr().context("listener has no address")?;
    control.set_listening_address(api).await;
    // Other nodes reach the notebooks this one runs through its relay (mutual TLS).
    if control.shares_store() {
        let (relay, relay_address) = gateway::bind_relay(&control, api)
            .await
            .context("cannot listen for other nodes' notebook requests; change cluster.relay_listen")?;
        tracing::info!(relay = %relay_address, "notebook relay listening for other nodes");
        control.set_relay_address(relay_address).await;
        tokio::spawn(gateway::serve_relay(control.clone(), relay));
    }
    {
        let mut stdout = std::io::stdout().lock();
        let scheme = if matches!(listeners.tcp, gateway::Listener::Tls(..)) { "https" } else { "http" };
        writeln!(stdout, "ready api={scheme}://{api} socket={}", listeners.socket.display())?;
        stdout.flush()?;
    }
    let notebook_address = listeners.notebooks.local_addr().context("listener has no address")?;
    let Listeners { tcp, notebooks, unix, socket } = listeners;
    tracing::info!(%api, notebooks = %notebook_address, socket = %socket.display(), "serving; open a session with `datasandbox streaming-url --user <name>`");
    gateway::serve(control.clone(), tcp, notebooks, unix, shutdown).await.context("server failed")?;
    control.shutdown().await;
    let _ = fs::remove_file(&socket);
    tracing::info!("stopped");
    drop(lock);
    Ok(())
}

/// The spec (with its overrides), judged before anything is written: an invalid one leaves
/// the host as it was. On a fresh host `up` takes the default spec, and says so (`fresh`).
fn judge_spec(data_dir: &Path, args: &SpecArgs, mode: Mode) -> anyhow::Result<(Spec, String, bool)> {
    let fresh = mode == Mode::Up && !spec_path(data_dir, args).exists();
    let (spec, spec_text) = if fresh {
        let text = default_spec_text();
        (Spec::parse(&text, &args.all_overrides()).map_err(anyhow::Error::new).context("in the default spec")?, text)
    } else {
        if mode == Mode::Serve && !data_dir.is_dir() {
            bail!("the data directory `{}` does not exist; run `datasandbox up` once to create it", data_dir.display());
        }
        load_spec(data_dir, args)?
    };
    control::check_policies(&spec).context("the spec cannot be used")?;
    let mut spec = spec;
    spec.cluster.node.get_or_insert_with(host_node_name);
    Ok((spec, spec_text, fresh))
}

/// The node's name when neither `--node` nor `cluster.node` gives one: the host's name, made
/// a valid node name (lower case, `-` for anything else), or `local` when nothing is left.
fn host_node_name() -> String {
    let host = host_name();
    let name: String = host.trim().to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(63).collect();
    let name = name.trim_matches('-');
    if model::spec::is_node_name(name) { name.to_owned() } else { "local".to_owned() }
}

/// This host's name, as the kernel has it (empty if it cannot be read).
fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned()
}

/// Creates the data directory (and on a fresh host writes the default spec to `spec_path`),
/// protects it, and takes its lock: the returned file, held while serving, keeps a second
/// server off the same directory.
fn claim_data_dir(data_dir: &Path, spec_path: &Path, fresh: bool) -> anyhow::Result<fs::File> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create the data directory `{}`", data_dir.display()))?;
    if fresh {
        fs::write(spec_path, default_spec_text()).with_context(|| format!("cannot write the default spec `{}`", spec_path.display()))?;
        tracing::info!(path = %spec_path.display(), "wrote the default spec");
    }
    protect_data_dir(data_dir)?;
    let lock_path = data_dir.join("lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open `{}`", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!("another datasandbox is serving `{}`; stop it first", data_dir.display());
    }
    Ok(lock)
}

/// `up` deploys the spec, like `datasandbox deploy`, before it accepts requests; a failed
/// deploy stops the control plane and ends `up`.
async fn deploy_before_serving(control: &control::ControlPlane, spec_text: &str, overrides: &[String]) -> anyhow::Result<()> {
    let deployed = control.deploy_spec(spec_text, overrides).await;
    match deployed.result {
        Ok(answer) => {
            for event in answer["Events"].as_array().into_iter().flatten() {
                tracing::debug!(
                    stack = event["StackName"].as_str().unwrap_or_default(),
                    resource = event["LogicalResourceId"].as_str().unwrap_or_default(),
                    status = event["ResourceStatus"].as_str().unwrap_or_default(),
                    "deploy"
                );
            }
            let changes = answer["Changes"].as_array().map_or(0, Vec::len);
            tracing::info!(changes, "deployed the spec");
            // The images the spec declares, built now (the notebook's Python environment comes
            // from PyPI the first time) rather than by the first session.
            if let Err(err) = control.prepare_images().await {
                control.shutdown().await;
                bail!("preparing the spec's images failed: {}", err.message);
            }
            Ok(())
        }
        Err(err) => {
            control.shutdown().await;
            bail!("deploying the spec failed: {}", err.message);
        }
    }
}

/// What the server listens on: the API, the notebook origin, and the control socket that the
/// CLI talks to (owner-only).
struct Listeners {
    tcp: gateway::Listener,
    notebooks: gateway::Listener,
    unix: tokio::net::UnixListener,
    socket: PathBuf,
}

impl Listeners {
    async fn bind(
        data_dir: &Path,
        listen: std::net::SocketAddr,
        notebook_listen: std::net::SocketAddr,
        tls: Option<gateway::ServerTls>,
    ) -> anyhow::Result<Listeners> {
        let tcp = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}; change server.api_listen or pass -c server.api_listen=127.0.0.1:0"))?;
        let notebooks = tokio::net::TcpListener::bind(notebook_listen).await.with_context(|| {
            format!(
                "cannot listen on {notebook_listen} for notebooks; change server.notebook_listen or pass -c server.notebook_listen=127.0.0.1:0"
            )
        })?;
        let socket = data_dir.join("control.sock");
        match fs::remove_file(&socket) {
            Ok(()) => tracing::info!(path = %socket.display(), "removed a stale control socket"),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("cannot remove the stale socket `{}`", socket.display())),
        }
        let unix = tokio::net::UnixListener::bind(&socket).with_context(|| format!("cannot listen on `{}`", socket.display()))?;
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict `{}`", socket.display()))?;
        let (tcp, notebooks) = match tls {
            Some(tls) => (gateway::Listener::Tls(tcp, tls.clone()), gateway::Listener::Tls(notebooks, tls)),
            None => (gateway::Listener::Plain(tcp), gateway::Listener::Plain(notebooks)),
        };
        Ok(Listeners { tcp, notebooks, unix, socket })
    }
}

/// The listeners' certificate, read (or issued by the data directory's local authority) before
/// anything starts, so that a wrong file stops `serve` with the file's name.
fn listener_tls(data_dir: &Path, spec: &Spec) -> anyhow::Result<Option<gateway::ServerTls>> {
    let (cert, key) = match &spec.tls {
        model::spec::ServerTls::Off => return Ok(None),
        model::spec::ServerTls::Files { cert, key } => (cert.clone(), key.clone()),
        model::spec::ServerTls::LocalAuthority => {
            let issued = gateway::local_authority(&data_dir.join("tls"), &certificate_hosts(spec)).map_err(anyhow::Error::msg)?;
            tracing::info!(
                authority = %issued.authority.display(),
                "serving HTTPS with a certificate of this data directory's local authority: have browsers trust it \
                 (and pass it to curl --cacert), or give server.tls_cert and server.tls_key"
            );
            (issued.cert, issued.key)
        }
    };
    Ok(Some(gateway::ServerTls::load(&cert, &key).map_err(anyhow::Error::msg)?))
}

/// The names and addresses a local authority's certificate is for: the public and notebook
/// URLs' hosts, this host's name, the listeners' addresses and loopback.
fn certificate_hosts(spec: &Spec) -> Vec<String> {
    let mut hosts = Vec::new();
    for url in [&spec.public_url, &spec.notebook_url].into_iter().flatten() {
        let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest).split('/').next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
        };
        hosts.push(host.to_owned());
    }
    hosts.push(host_name());
    hosts.extend([spec.api_listen, spec.notebook_listen].iter().map(|a| a.ip()).filter(|ip| !ip.is_unspecified()).map(|ip| ip.to_string()));
    hosts.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| !h.is_empty() && seen.insert(h.clone()));
    hosts
}

/// SIGHUP reads the certificate files again; connections already open keep theirs. The
/// handler is in place when this returns.
fn reload_on_hangup(tls: Option<gateway::ServerTls>) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(async move {
        while hangup.recv().await.is_some() {
            let Some(tls) = &tls else {
                tracing::info!("SIGHUP: nothing to read again (plain HTTP)");
                continue;
            };
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: read the certificate again; new connections use it"),
                Err(err) => tracing::error!(error = %err, "SIGHUP: the certificate in use stays; mend the file and send SIGHUP again"),
            }
        }
    })
}

/// Instances run in user namespaces whose ids are not the host's, yet their image roots and
/// per-instance directories live under the data directory: the directory is traversable
/// (0711, not listable) and everything private in it is owner-only. SQLite gives its `-wal`
/// and `-shm` files the database file's mode, so the databases are made 0600 before they open.
fn protect_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    let chmod = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| format!("cannot set the mode of `{}`", path.display()))
    };
    chmod(data_dir, 0o711)?;
    for name in ["objects", "trail"] {
        let dir = data_dir.join(name);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        chmod(&dir, 0o700)?;
    }
    for name in ["metadata.db", "audit-index.db"] {
        for suffix in ["", "-wal", "-shm"] {
            let file = data_dir.join(format!("{name}{suffix}"));
            if suffix.is_empty() && !file.exists() {
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&file)
                    .with_context(|| format!("cannot create `{}`", file.display()))?;
            }
            if file.exists() {
                chmod(&file, 0o600)?;
            }
        }
    }
    let spec = data_dir.join("datasandbox.toml");
    if spec.exists() {
        chmod(&spec, 0o600)?;
    }
    Ok(())
}

fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping");
    })
}
