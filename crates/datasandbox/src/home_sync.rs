//! `datasandbox home-sync`, run inside an instance as the workspace user: keeps
//! `DS_HOME_FOLDER` and the user's home prefix in storage the same, both ways, through the
//! endpoint — so every upload is an action of the instance, audited and notified like any
//! other. Writes are conditional on the ETag the sync last saw; when both sides changed a
//! file, the local version is kept beside it with a `.conflict-<time>` suffix and both
//! survive. When the instance stops, the init passes SIGTERM on and the sync flushes once more.
//!
//! `home-sync` is also what starts the rest of a session inside the instance. It is reached
//! through `session-agent`, which waits for `/run/datasandbox/session.env` (placed when an
//! instance starts for a user, or when a warm ALWAYS_ON fleet instance is assigned) and
//! becomes `home-sync` with the session's `DS_*` variables. When the session's application is
//! `notebook` (the stack's `application`, or the URL's `ApplicationId`), it starts the
//! `launcher`. For DESKTOP and APP sessions it starts the display (Xvnc on a Unix socket in
//! `/run/display`), the session's printer (`printing.rs`) and, when the stack asks, the
//! watermark (`watermark.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;

use crate::cli::EndpointArgs;
use crate::client::call;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Local {
    size: u64,
    modified: SystemTime,
}

struct Known {
    etag: String,
    local: Local,
}

/// `datasandbox session-agent`, the first program of a user or fleet instance: waits until the
/// control plane places the session's variables in `/run/datasandbox/session.env` (at once for
/// an instance started for a user; on assignment for a warm fleet instance), then becomes the
/// home-folder sync with those variables.
pub fn session_agent() -> std::process::ExitCode {
    let path = Path::new("/run/datasandbox/session.env");
    let text = loop {
        match std::fs::read_to_string(path) {
            Ok(text) => break text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => {
                eprintln!("session-agent: cannot read {}: {err}", path.display());
                return std::process::ExitCode::from(2);
            }
        }
    };
    let variables = text.lines().filter_map(|line| line.split_once('=')).filter(|(name, _)| name.starts_with("DS_"));
    let error = std::os::unix::process::CommandExt::exec(
        std::process::Command::new("/run/datasandbox/datasandbox").arg("home-sync").envs(variables),
    );
    eprintln!("session-agent: cannot start the home-folder sync: {error}");
    std::process::ExitCode::from(2)
}

/// The session's home prefix: `DS_HOME_PREFIX` as the platform placed it (a federated user's
/// folder depends on their identity provider, which the instance does not know), or, for an
/// instance made with a local or custom user only, the one their name and mode give.
pub(crate) fn home_prefix(user: &model::UserId, mode: model::AccessMode) -> Option<String> {
    if let Ok(given) = std::env::var("DS_HOME_PREFIX") {
        return model::HomeOwner::of_key(&given).filter(|home| home.prefix() == given && home.mode == mode).map(|home| home.prefix());
    }
    model::UserRef::from_parts(mode, None, user.as_str()).ok().map(|user| user.home().prefix())
}

pub async fn run() -> std::process::ExitCode {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let (endpoint, user, mode) = (env("DS_ENDPOINT"), env("DS_USER_NAME"), env("DS_USER_ACCESS_MODE"));
    let folder = PathBuf::from(std::env::var("DS_HOME_FOLDER").unwrap_or_else(|_| "/home/user/MyFiles/HomeFolder".into()));
    let (Ok(user), Some(mode)) = (model::UserId::new(user), model::AccessMode::parse(&mode)) else {
        eprintln!("home-sync: DS_USER_NAME and DS_USER_ACCESS_MODE must name the session's user");
        return std::process::ExitCode::from(2);
    };
    let Some(prefix) = home_prefix(&user, mode) else {
        eprintln!("home-sync: DS_HOME_PREFIX must be the session's home folder (`user/<mode>/<sha256>/`)");
        return std::process::ExitCode::from(2);
    };
    let Ok(mut stop) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        eprintln!("home-sync: cannot watch for the stop signal");
        return std::process::ExitCode::from(2);
    };
    let _ = std::fs::create_dir_all(&folder);
    start_display();
    // The session's application, when it is the notebook: the launcher asks for the notebook.
    if std::env::var("DS_APPLICATION_ID").is_ok_and(|a| a == "notebook") {
        match std::process::Command::new("/run/datasandbox/datasandbox").arg("launcher").stdout(std::process::Stdio::null()).spawn() {
            Ok(mut launcher) => {
                // Reaped when it ends.
                std::thread::spawn(move || launcher.wait());
            }
            Err(err) => eprintln!("home-sync: cannot start the launcher: {err}"),
        }
    }
    let mut sync = HomeSync {
        endpoint,
        bucket: std::env::var("DS_HOME_BUCKET").unwrap_or_else(|_| "datasandbox-home".into()),
        prefix,
        folder,
        known: HashMap::new(),
        listed: HashMap::new(),
    };
    // Local changes are looked for every 200 ms (no call); the remote side is listed (an
    // audited read) when the endpoint says something under the prefix changed, which it says
    // as it happens (a long poll: an idle session writes one record a minute).
    let mut remote_changed = watch_remote(&sync).await;
    let mut list = true;
    loop {
        if let Err(err) = sync.round(list).await {
            eprintln!("home-sync: {err}");
        }
        list = false;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = remote_changed.changed() => list = true,
            _ = stop.recv() => {
                // The instance is stopping: a last full round, so that nothing written in the
                // final moments is lost.
                return match sync.round(true).await {
                    Ok(()) => std::process::ExitCode::SUCCESS,
                    Err(err) => {
                        eprintln!("home-sync: final flush: {err}");
                        std::process::ExitCode::FAILURE
                    }
                };
            }
        }
    }
}

/// Starts the long poll on the session's prefix and returns what it signals on: a change
/// under the prefix. Its first token is taken before the first listing, so that no change
/// falls between the two. A failed poll is signalled too (the next round lists), unless the
/// server refused it as it stops, then tried again a few seconds later.
async fn watch_remote(sync: &HomeSync) -> tokio::sync::watch::Receiver<u64> {
    let (changed, receiver) = tokio::sync::watch::channel(0u64);
    let (endpoint, base) = (sync.endpoint.clone(), json!({ "Bucket": sync.bucket, "Prefix": sync.prefix }));
    let mut token =
        api(&endpoint, "storage:WaitForChanges", base.clone()).await.ok().and_then(|out| out["Token"].as_str().map(str::to_owned));
    tokio::spawn(async move {
        loop {
            let mut input = base.clone();
            input["Token"] = json!(token);
            input["WaitSeconds"] = json!(60);
            let asked = std::time::Instant::now();
            match api(&endpoint, "storage:WaitForChanges", input).await {
                Ok(out) => {
                    if out["Changed"] == json!(true) {
                        changed.send_modify(|n| *n += 1);
                    } else if asked.elapsed() < Duration::from_secs(1) {
                        // Unchanged, yet answered at once: an endpoint that cannot wait now
                        // is not asked again and again.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    token = out["Token"].as_str().map(str::to_owned);
                }
                Err(err) => {
                    eprintln!("home-sync: waiting for changes: {err}");
                    // A stopping server's refusal is no news; any other failure may hide a
                    // change, so the next round lists.
                    if !err.contains("\"ServiceUnavailable\"") {
                        changed.send_modify(|n| *n += 1);
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    });
    receiver
}

/// The X server with VNC of a pixel-streaming session (`DS_STREAM_VIEW` DESKTOP or APP), when
/// the image has one: display `:1`, its RFB server only on `/run/display/rfb.sock` (bound from
/// the host, where only the gateway reaches it; no TCP port), without authentication because
/// nothing else can connect. The gateway enforces the session's clipboard settings on RFB.
fn start_display() {
    const XVNC: &str = "/usr/bin/Xtigervnc";
    let view = std::env::var("DS_STREAM_VIEW").unwrap_or_default();
    if !(view == "DESKTOP" || view == "APP") || !Path::new(XVNC).exists() || !Path::new("/run/display").is_dir() {
        return;
    }
    let (width, height) = sandbox::image::DISPLAY_SIZE;
    let spawned = std::process::Command::new(XVNC)
        .args([":1", "-rfbunixpath", "/run/display/rfb.sock", "-rfbunixmode", "0600", "-rfbport", "-1", "-nolisten", "tcp"])
        .args(["-SecurityTypes", "None", "-AlwaysShared", "-depth", "24", "-desktop", "DataSandbox"])
        .arg("-geometry")
        .arg(format!("{width}x{height}"))
        // Every connection comes from the gateway: a client that drops during the handshake
        // must not get the display refused to the session's next connections.
        .args(["-UseBlacklist=0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Its log stays in the instance, for an operator's `instances exec`.
        .stderr(log_file("/tmp/display.log"))
        .spawn();
    match spawned {
        // Reaped when it ends.
        Ok(mut display) => drop(std::thread::spawn(move || display.wait())),
        Err(err) => {
            eprintln!("home-sync: cannot start the display: {err}");
            return;
        }
    }
    if std::env::var("DS_WATERMARK").as_deref() == Ok("ENABLED") {
        std::thread::spawn(start_watermark);
    }
    crate::printing::start_printer();
}

/// An instance-local log file for a child's output, or nowhere if it cannot be made.
pub(crate) fn log_file(path: &str) -> std::process::Stdio {
    std::fs::OpenOptions::new().create(true).append(true).open(path).map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from)
}

/// The watermark, once the display accepts clients; restarted if it ends while the display
/// lives (it is the session's, not the user's, to stop).
fn start_watermark() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !Path::new("/tmp/.X11-unix/X1").exists() {
        if std::time::Instant::now() > deadline {
            eprintln!("home-sync: the display did not start; no watermark");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let Ok(program) = std::env::current_exe() else { return };
    for _ in 0..10 {
        let ran = std::process::Command::new(&program)
            .arg("watermark")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status();
        if ran.is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The state of one instance's sync: what each file was when last in step with storage.
struct HomeSync {
    endpoint: String,
    bucket: String,
    prefix: String,
    folder: PathBuf,
    known: HashMap<String, Known>,
    /// The latest remote listing: name under the prefix → ETag.
    listed: HashMap<String, String>,
}

pub(crate) async fn api(endpoint: &str, action: &str, input: serde_json::Value) -> Result<serde_json::Value, String> {
    let token = std::fs::read_to_string("/run/datasandbox/credential").map_err(|e| format!("cannot read the credential: {e}"))?;
    let args =
        EndpointArgs { endpoint: Some(endpoint.to_owned()), token: Some(token.trim().to_owned()), ca_cert: None, instance_link: true };
    call(Path::new("/"), &args, action, Bytes::from(input.to_string())).await.map_err(|e| e.document.to_string())
}

fn scan(folder: &Path, relative: &Path, out: &mut HashMap<String, Local>) {
    let Ok(entries) = std::fs::read_dir(folder.join(relative)) else { return };
    for entry in entries.flatten() {
        let rel = relative.join(entry.file_name());
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            scan(folder, &rel, out);
        } else if meta.is_file() {
            let name = rel.to_string_lossy().into_owned();
            if !name.ends_with(".home-sync.tmp") {
                out.insert(name, Local { size: meta.len(), modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH) });
            }
        }
    }
}

fn local_of(path: &Path) -> Option<Local> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Local { size: meta.len(), modified: meta.modified().ok()? })
}

impl HomeSync {
    async fn round(&mut self, list_remote: bool) -> Result<(), String> {
        if list_remote {
            self.listed = self.list().await?;
        }
        let mut local = HashMap::new();
        scan(&self.folder, Path::new(""), &mut local);
        self.push_local(&local).await?;
        self.pull_remote().await
    }

    async fn call(&self, action: &str, input: serde_json::Value) -> Result<serde_json::Value, String> {
        api(&self.endpoint, action, input).await
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn list(&self) -> Result<HashMap<String, String>, String> {
        let mut remote: HashMap<String, String> = HashMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut input = json!({ "Bucket": self.bucket, "Prefix": self.prefix });
            if let Some(t) = &token {
                input["ContinuationToken"] = json!(t);
            }
            let page = self.call("storage:ListObjectsV2", input).await?;
            for item in page["Contents"].as_array().into_iter().flatten() {
                let (Some(key), Some(etag)) = (item["Key"].as_str(), item["ETag"].as_str()) else { continue };
                let name = &key[self.prefix.len().min(key.len())..];
                // Only keys that name a file inside the folder come down (no `..`, no `/` at either end).
                if Path::new(name).components().all(|c| matches!(c, std::path::Component::Normal(_)))
                    && !name.is_empty()
                    && !name.ends_with('/')
                {
                    remote.insert(name.to_owned(), etag.to_owned());
                }
            }
            match page["NextContinuationToken"].as_str() {
                Some(next) => token = Some(next.to_owned()),
                None => return Ok(remote),
            }
        }
    }

    /// Local changes go up; when the remote side changed the same file, the local version is
    /// kept beside it as a conflict copy (here and in storage) and the remote one comes down.
    async fn push_local(&mut self, local: &HashMap<String, Local>) -> Result<(), String> {
        let engine = base64::engine::general_purpose::STANDARD;
        for (name, state) in local {
            if self.known.get(name).is_some_and(|k| k.local == *state) {
                continue;
            }
            let remote_changed = match (self.known.get(name), self.listed.get(name)) {
                (Some(k), Some(etag)) => k.etag != *etag,
                (None, Some(_)) => true,
                _ => false,
            };
            let path = self.folder.join(name);
            let body = std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            if !remote_changed {
                // Conditional on the version this file was last in step with, so that a change
                // made in storage since then is never overwritten unseen.
                let mut input = json!({ "Bucket": self.bucket, "Key": self.key(name), "Body": engine.encode(&body) });
                match self.known.get(name) {
                    Some(k) => input["IfMatch"] = json!(k.etag),
                    None => input["IfNoneMatch"] = json!("*"),
                }
                match self.call("storage:PutObject", input).await {
                    Ok(out) => {
                        let etag = out["ETag"].as_str().unwrap_or_default().to_owned();
                        self.known.insert(name.clone(), Known { etag: etag.clone(), local: *state });
                        self.listed.insert(name.clone(), etag);
                        continue;
                    }
                    Err(err) if err.contains("PreconditionFailed") => {}
                    Err(err) => return Err(err),
                }
            }
            // Both sides changed: the local version goes beside the remote one, under a name
            // of its own, and the remote one comes down in the next listing.
            let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let target = format!("{name}.conflict-{stamp}");
            let out = self
                .call("storage:PutObject", json!({ "Bucket": self.bucket, "Key": self.key(&target), "Body": engine.encode(&body) }))
                .await?;
            let etag = out["ETag"].as_str().unwrap_or_default().to_owned();
            std::fs::rename(&path, self.folder.join(&target)).map_err(|e| e.to_string())?;
            if let Some(moved) = local_of(&self.folder.join(&target)) {
                self.known.insert(target.clone(), Known { etag: etag.clone(), local: moved });
            }
            self.listed.insert(target, etag);
            self.known.remove(name);
            self.listed = self.list().await?;
        }
        // Files deleted here are deleted there, unless they changed there meanwhile.
        let gone: Vec<String> =
            self.known.keys().filter(|name| !local.contains_key(*name) && self.folder.join(name).metadata().is_err()).cloned().collect();
        for name in gone {
            if self.listed.get(&name) == self.known.get(&name).map(|k| &k.etag) {
                self.call("storage:DeleteObject", json!({ "Bucket": self.bucket, "Key": self.key(&name) })).await?;
                self.listed.remove(&name);
            }
            self.known.remove(&name);
        }
        Ok(())
    }

    /// Remote changes come down, each file replaced whole.
    async fn pull_remote(&mut self) -> Result<(), String> {
        let engine = base64::engine::general_purpose::STANDARD;
        let changed: Vec<(String, String)> = self
            .listed
            .iter()
            .filter(|(name, etag)| self.known.get(*name).is_none_or(|k| k.etag != **etag))
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        for (name, etag) in changed {
            let out = self.call("storage:GetObject", json!({ "Bucket": self.bucket, "Key": self.key(&name) })).await?;
            let body = engine.decode(out["Body"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
            let path = self.folder.join(&name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            let staging = path.with_file_name(format!("{}.home-sync.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
            std::fs::write(&staging, &body).map_err(|e| e.to_string())?;
            std::fs::rename(&staging, &path).map_err(|e| e.to_string())?;
            if let Some(state) = local_of(&path) {
                self.known.insert(name, Known { etag, local: state });
            }
        }
        Ok(())
    }
}

/// A variable of the session this instance serves: from the environment, else the session's
/// file, else the instance's first process (which the control plane started with it).
fn session_var(name: &str) -> Option<String> {
    if let Ok(value) = std::env::var(name) {
        return Some(value);
    }
    let prefix = format!("{name}=");
    let session = std::fs::read_to_string("/run/datasandbox/session.env").unwrap_or_default();
    if let Some(value) = session.lines().find_map(|l| l.strip_prefix(&prefix)) {
        return Some(value.to_owned());
    }
    let first = std::fs::read("/proc/1/environ").unwrap_or_default();
    first.split(|b| *b == 0).find_map(|v| std::str::from_utf8(v).ok()?.strip_prefix(prefix.as_str()).map(str::to_owned))
}

/// `datasandbox airlock submit`: a request with these files, from inside the workspace,
/// submitted and checked; prints its id, state and what failed.
pub async fn airlock_submit(files: &[PathBuf], justification: &str, workspace: Option<&str>) -> std::process::ExitCode {
    let fail = |why: String| {
        eprintln!("{why}");
        std::process::ExitCode::FAILURE
    };
    let Some(endpoint) = session_var("DS_ENDPOINT") else {
        return fail(
            "`airlock submit` runs inside a session's workspace (no DS_ENDPOINT here); elsewhere, use airlock:CreateRequest".into(),
        );
    };
    let Some(workspace) = workspace.map(str::to_owned).or_else(|| session_var("DS_STACK_NAME")) else {
        return fail("this instance serves no session yet: pass --workspace".into());
    };
    let mut bodies = Vec::new();
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match std::fs::read(file) {
            Ok(body) => bodies.push((name, body)),
            Err(err) => return fail(format!("cannot read {}: {err}", file.display())),
        }
    }
    let input = json!({ "Direction": "EXPORT", "Workspace": workspace, "Justification": justification });
    let id = match api(&endpoint, "airlock:CreateRequest", input).await {
        Ok(created) => created["RequestId"].as_str().unwrap_or_default().to_owned(),
        Err(err) => return fail(err),
    };
    let engine = base64::engine::general_purpose::STANDARD;
    for (name, body) in bodies {
        let input = json!({ "RequestId": id, "Path": name, "Body": engine.encode(&body) });
        if let Err(err) = api(&endpoint, "airlock:AddFile", input).await {
            return fail(err);
        }
    }
    match api(&endpoint, "airlock:SubmitRequest", json!({ "RequestId": id })).await {
        Ok(submitted) => {
            println!("{submitted}");
            if submitted["State"] == "blocked" { std::process::ExitCode::FAILURE } else { std::process::ExitCode::SUCCESS }
        }
        Err(err) => fail(err),
    }
}
