//! What an instance has on the host outside it (its directory, its mount sources, its log),
//! and what a session's user is shown in it: their datasets, listed for them and pushed to the
//! instance's dataset mount (`dataset_mount`), which reads each file only when it is opened;
//! and their released imports, copied (they are few and small, and approved one by one).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sandbox::dataset_fs::wire::{Dataset, DatasetFile};
use serde_json::{Value, json};

use super::dataset_mount::Mounted;
use crate::core::caller::Credentials;
use crate::core::pipeline::{Pipeline, Request};
use crate::core::platform::Platform;

/// The host directory that holds everything of one instance outside it.
pub(crate) fn instance_dir(plane: &Platform, id: &str) -> PathBuf {
    plane.data_dir.join("instances").join(id)
}

/// Makes `instances/` (0711: traversable, as the instance's setup must reach its own
/// directory, but not listable) and the instance's own directory (0700, owned by the
/// instance's root id).
pub(crate) fn make_instance_dir(plane: &Platform, id: &str, ids: sandbox::ids::IdRange) -> std::io::Result<PathBuf> {
    let parent = plane.data_dir.join("instances");
    std::fs::DirBuilder::new().recursive(true).mode(0o711).create(&parent)?;
    std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o711))?;
    let dir = instance_dir(plane, id);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    std::os::unix::fs::chown(&dir, Some(ids.root()), Some(ids.root()))?;
    Ok(dir)
}

/// A host directory bind-mounted read-only inside the instance (`data` at `/data`, `imports`
/// at `/imports`): the instance's workspace user may read it, nobody else.
pub(crate) fn mount_source(plane: &Platform, id: &str, ids: sandbox::ids::IdRange, name: &str) -> std::io::Result<PathBuf> {
    let dir = instance_dir(plane, id).join(name);
    std::fs::DirBuilder::new().mode(0o500).create(&dir)?;
    std::os::unix::fs::chown(&dir, Some(ids.workspace()), Some(ids.workspace()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500))?;
    Ok(dir)
}

/// Where the instance's sandbox helper and init write their errors: `logs/instances/<id>.log`,
/// for the operator only (kept after the instance ends).
pub(crate) fn log_path(plane: &Platform, id: &str) -> std::io::Result<PathBuf> {
    let dir = plane.data_dir.join("logs").join("instances");
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
    std::fs::set_permissions(plane.data_dir.join("logs"), std::fs::Permissions::from_mode(0o700))?;
    Ok(dir.join(format!("{id}.log")))
}

/// What one dataset became in one instance.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Shown: how many objects, how large in all, and (for a dataset) how long listing and
    /// mounting it took.
    Mounted {
        objects: usize,
        bytes: u64,
        millis: Option<u64>,
    },
    NotGranted,
    Failed(String),
}

/// A request to show a session's datasets in one instance, and where to send the outcomes.
pub(crate) struct Job {
    pub id: String,
    pub credential: String,
    pub private_address: String,
    /// The host id of the instance's workspace user, who alone may read the imports.
    pub owner: u32,
    /// The stack of the session it serves, whose released imports it shows.
    pub workspace: Option<String>,
    /// The session it serves.
    pub session: Option<String>,
    /// The instance's dataset mount, when it has one.
    pub mount: Option<Arc<Mounted>>,
    pub done: tokio::sync::oneshot::Sender<Vec<(String, Outcome)>>,
}

/// Starts the task that lays out datasets. It is a task of its own because it calls the
/// pipeline, and `CreateInstance`, which asks for it, runs inside the pipeline.
pub(crate) fn start_worker(control: Pipeline) -> tokio::sync::mpsc::UnboundedSender<Job> {
    let (jobs, mut queue) = tokio::sync::mpsc::unbounded_channel::<Job>();
    tokio::spawn(async move {
        while let Some(job) = queue.recv().await {
            let control = control.clone();
            tokio::spawn(async move {
                let mut outcomes = match &job.mount {
                    Some(mount) => show_datasets(&control, mount, job.session.clone()).await,
                    None => Vec::new(),
                };
                if let Some(workspace) = &job.workspace {
                    let credentials = Credentials::Instance { token: job.credential.clone(), source_ip: job.private_address.clone() };
                    let caller = Caller { control: &control, credentials, private_address: &job.private_address };
                    let root = instance_dir(&control.platform, &job.id);
                    let outcome = match copy_imports(&caller, &root, workspace, job.owner).await {
                        Ok((objects, bytes)) => Outcome::Mounted { objects, bytes, millis: None },
                        Err(message) => Outcome::Failed(message),
                    };
                    if let Outcome::Failed(message) = &outcome {
                        tracing::warn!(instance = %job.id, message, "imports not mounted");
                    }
                    outcomes.push(("imports".to_owned(), outcome));
                }
                let _ = job.done.send(outcomes);
            });
        }
    });
    jobs
}

/// Lists every dataset as the instance (for its user, so the policies decide what appears)
/// and shows the listings in its mount: nothing is copied, and a file is read only when a
/// process opens it.
async fn show_datasets(control: &Pipeline, mount: &Mounted, session: Option<String>) -> Vec<(String, Outcome)> {
    let plane = &control.platform;
    let (mut outcomes, mut shown) = (Vec::new(), Vec::new());
    let started = std::time::Instant::now();
    for dataset in &plane.current().datasets {
        let caller = Caller { control, credentials: mount.credentials(), private_address: mount.private_address() };
        let outcome = match list_dataset(&caller, dataset).await {
            Ok(Some(listed)) => {
                let (objects, bytes) = (listed.files.len(), listed.files.iter().map(|f| f.size).sum());
                let outcome = Outcome::Mounted { objects, bytes, millis: None };
                shown.push(listed);
                outcome
            }
            Ok(None) => Outcome::NotGranted,
            Err(message) => Outcome::Failed(message),
        };
        outcomes.push((dataset.name.clone(), outcome));
    }
    let shown = mount.show(session, shown);
    let elapsed = started.elapsed().as_millis() as u64;
    for (_, outcome) in &mut outcomes {
        match (outcome, &shown) {
            (outcome @ Outcome::Mounted { .. }, Err(message)) => *outcome = Outcome::Failed(message.clone()),
            (Outcome::Mounted { millis, .. }, Ok(())) => *millis = Some(elapsed),
            _ => {}
        }
    }
    for (name, outcome) in &outcomes {
        if let Outcome::Failed(message) = outcome {
            tracing::warn!(dataset = name, message, "dataset not mounted");
        }
    }
    outcomes
}

struct Caller<'a> {
    control: &'a Pipeline,
    credentials: Credentials,
    private_address: &'a str,
}

impl Caller<'_> {
    async fn call(&self, action: &str, input: Value) -> Result<Value, crate::core::error::ActionError> {
        let request = Request {
            credentials: self.credentials.clone(),
            source_ip: self.private_address.to_owned(),
            user_agent: "datasandbox-dataset-mount".into(),
            action: action.to_owned(),
            body: Ok(Bytes::from(input.to_string())),
        };
        self.control.call(request).await.result
    }
}

/// The dataset's objects as files (`Ok(None)` when the user may not list it). A key that
/// cannot be a path under `/data` is left out.
async fn list_dataset(caller: &Caller<'_>, dataset: &model::spec::DatasetSpec) -> Result<Option<Dataset>, String> {
    let mut token: Option<String> = None;
    let mut files = Vec::new();
    loop {
        let mut input = json!({ "Bucket": dataset.bucket.as_str(), "Prefix": dataset.prefix });
        if let Some(t) = &token {
            input["ContinuationToken"] = json!(t);
        }
        let page = match caller.call("storage:ListObjectsV2", input).await {
            Ok(page) => page,
            Err(err) if err.status == 403 => return Ok(None),
            Err(err) => return Err(err.message),
        };
        for item in page["Contents"].as_array().into_iter().flatten() {
            let Some(key) = item["Key"].as_str() else { continue };
            let Some(relative) = safe_relative(&key[dataset.prefix.len().min(key.len())..]) else {
                tracing::warn!(key, dataset = dataset.name, "object key cannot be a path under /data; skipped");
                continue;
            };
            let modified = item["LastModified"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            files.push(DatasetFile {
                key: key.to_owned(),
                path: relative.to_string_lossy().into_owned(),
                size: item["Size"].as_u64().unwrap_or(0),
                modified_ms: modified.map_or(0, |t| t.timestamp_millis()),
            });
        }
        match page["NextContinuationToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    let passthrough = dataset.read_audit == model::spec::ReadAudit::Opens;
    Ok(Some(Dataset { name: dataset.name.clone(), files, passthrough }))
}

/// Writes a body that came back as base64 (`what` names it in the error) read-only at `path`;
/// its size.
fn lay_out(path: &Path, body: &Value, what: &str, owner: u32) -> Result<u64, String> {
    let body = crate::core::codec::decode_base64("Body", body.as_str().unwrap_or_default())
        .map_err(|e| format!("{what} came back unreadable: {}", e.message))?;
    write_read_only(path, &body, owner)?;
    Ok(body.len() as u64)
}

/// The user's released imports into `workspace`, read as the instance (`airlock:GetImports`),
/// laid out read-only as `<request>/<path>` under `/imports`.
async fn copy_imports(caller: &Caller<'_>, root: &Path, workspace: &str, owner: u32) -> Result<(usize, u64), String> {
    let imports = caller.call("airlock:GetImports", json!({ "Workspace": workspace })).await.map_err(|e| e.message)?;
    let staging = root.join("staging-imports");
    fresh_staging(&staging)?;
    let (mut objects, mut bytes) = (0usize, 0u64);
    for file in imports["Files"].as_array().into_iter().flatten() {
        let (Some(request), Some(path)) = (file["RequestId"].as_str(), file["Path"].as_str()) else { continue };
        let Some(relative) = safe_relative(&format!("{request}/{path}")) else { continue };
        bytes += lay_out(&staging.join(&relative), &file["Body"], &format!("import `{request}/{path}`"), owner)?;
        objects += 1;
    }
    protect_tree(&staging, owner)?;
    let target = root.join("imports");
    // The bind mount's source stays; what it shows is replaced inside it.
    for entry in std::fs::read_dir(&staging).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let place = target.join(entry.file_name());
        let _ = std::fs::remove_dir_all(&place);
        std::fs::rename(entry.path(), &place).map_err(|e| format!("cannot move an import into place: {e}"))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok((objects, bytes))
}

/// An empty staging directory, owner-only, where copies are laid out before they appear.
fn fresh_staging(staging: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(staging);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(staging).map_err(|e| format!("cannot make `{}`: {e}", staging.display()))
}

/// A key's remainder as a relative path with only normal components (no `..`, no root).
fn safe_relative(rest: &str) -> Option<PathBuf> {
    let path = Path::new(rest.trim_start_matches('/'));
    let normal = path.components().all(|c| matches!(c, Component::Normal(_)));
    (normal && !rest.is_empty() && !rest.ends_with('/')).then(|| path.to_path_buf())
}

/// Writes one object's copy: created 0400 (never readable by others, not even for a moment),
/// owned by the workspace user.
fn write_read_only(path: &Path, body: &[u8], owner: u32) -> Result<(), String> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| format!("cannot make `{}`: {e}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(path)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    file.write_all(body).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    std::os::unix::fs::fchown(&file, Some(owner), Some(owner)).map_err(|e| format!("cannot give `{}` to the instance: {e}", path.display()))
}

/// Gives a staged dataset's directories to the workspace user, read and enter only (0500).
fn protect_tree(dir: &Path, owner: u32) -> Result<(), String> {
    let protect = |path: &Path| -> Result<(), String> {
        std::os::unix::fs::chown(path, Some(owner), Some(owner))
            .map_err(|e| format!("cannot give `{}` to the instance: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o500))
            .map_err(|e| format!("cannot protect `{}`: {e}", path.display()))
    };
    for entry in std::fs::read_dir(dir).map_err(|e| format!("cannot read `{}`: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("cannot read `{}`: {e}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            protect_tree(&entry.path(), owner)?;
        }
    }
    protect(dir)
}

/// Removes what the host kept for an instance.
pub(crate) fn remove(plane: &Platform, id: &str) {
    let dir = instance_dir(plane, id);
    // The bounded directories and the dataset mount are file systems of their own: detached
    // first (the dataset mount's daemon is gone by now, or ends when it is detached).
    for bounded in ["data", "display", "print"] {
        sandbox::release_dir(&dir.join(bounded));
    }
    if let Err(err) = std::fs::remove_dir_all(&dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(instance = id, error = %err, "cannot remove the instance's host directory");
    }
}
