//! `datasandbox home-sync`, run inside an instance as the workspace user: keeps
//! `DS_HOME_FOLDER` and the user's home prefix in storage the same, both ways, through the
//! endpoint — so every upload is an action of the instance, audited and notified like any
//! other. When both sides changed a file, the local version is kept beside it with a
//! `.conflict-<time>` suffix and both survive.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;

use crate::EndpointArgs;
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

pub async fn run() -> std::process::ExitCode {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let (endpoint, user, mode) = (env("DS_ENDPOINT"), env("DS_USER_NAME"), env("DS_USER_ACCESS_MODE"));
    let folder = PathBuf::from(std::env::var("DS_HOME_FOLDER").unwrap_or_else(|_| "/home/user/MyFiles/HomeFolder".into()));
    let (Ok(user), Some(mode)) = (model::UserId::new(user), model::AccessMode::parse(&mode)) else {
        eprintln!("home-sync: DS_USER_NAME and DS_USER_ACCESS_MODE must name the session's user");
        return std::process::ExitCode::from(2);
    };
    let prefix = model::HomeOwner::of(mode, &user).prefix();
    let _ = std::fs::create_dir_all(&folder);
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut last_listed: HashMap<String, String> = HashMap::new();
    for round in 0u64.. {
        // Local changes are looked for every 200 ms; the remote listing (an audited read) every
        // 600 ms, which keeps both directions within a second.
        let list_remote = round % 3 == 0;
        if let Err(err) = sync_once(&endpoint, &prefix, &folder, &mut known, &mut last_listed, list_remote).await {
            eprintln!("home-sync: {err}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::process::ExitCode::SUCCESS
}

async fn api(endpoint: &str, action: &str, input: serde_json::Value) -> Result<serde_json::Value, String> {
    let token = std::fs::read_to_string("/run/datasandbox/credential").map_err(|e| format!("cannot read the credential: {e}"))?;
    let args = EndpointArgs { endpoint: Some(endpoint.to_owned()), token: Some(token.trim().to_owned()) };
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

async fn sync_once(
    endpoint: &str,
    prefix: &str,
    folder: &Path,
    known: &mut HashMap<String, Known>,
    last_listed: &mut HashMap<String, String>,
    list_remote: bool,
) -> Result<(), String> {
    let engine = base64::engine::general_purpose::STANDARD;
    if list_remote {
        *last_listed = list(endpoint, prefix).await?;
    }
    let remote = last_listed;
    let mut local = HashMap::new();
    scan(folder, Path::new(""), &mut local);
    sync_lists(endpoint, prefix, folder, known, remote, &local, &engine).await
}

async fn list(endpoint: &str, prefix: &str) -> Result<HashMap<String, String>, String> {
    let mut remote: HashMap<String, String> = HashMap::new();
    let mut token: Option<String> = None;
    loop {
        let mut input = json!({ "Bucket": "datasandbox-home", "Prefix": prefix });
        if let Some(t) = &token {
            input["ContinuationToken"] = json!(t);
        }
        let page = api(endpoint, "storage:ListObjectsV2", input).await?;
        for item in page["Contents"].as_array().into_iter().flatten() {
            if let (Some(key), Some(etag)) = (item["Key"].as_str(), item["ETag"].as_str()) {
                remote.insert(key[prefix.len()..].to_owned(), etag.to_owned());
            }
        }
        match page["NextContinuationToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => return Ok(remote),
        }
    }
}

async fn sync_lists(
    endpoint: &str,
    prefix: &str,
    folder: &Path,
    known: &mut HashMap<String, Known>,
    remote: &mut HashMap<String, String>,
    local: &HashMap<String, Local>,
    engine: &base64::engine::GeneralPurpose,
) -> Result<(), String> {
    // Local changes go up; a remote change to the same file makes a conflict copy first.
    for (name, state) in local {
        let unchanged = known.get(name).is_some_and(|k| k.local == *state);
        if unchanged {
            continue;
        }
        let remote_changed = match (known.get(name), remote.get(name)) {
            (Some(k), Some(etag)) => k.etag != *etag,
            (None, Some(_)) => true,
            _ => false,
        };
        let path = folder.join(name);
        let target = if remote_changed {
            let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            format!("{name}.conflict-{stamp}")
        } else {
            name.clone()
        };
        let body = std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let out = api(
            endpoint,
            "storage:PutObject",
            json!({ "Bucket": "datasandbox-home", "Key": format!("{prefix}{target}"), "Body": engine.encode(&body) }),
        )
        .await?;
        if remote_changed {
            // Keep the local version beside the remote one, then take the remote one.
            std::fs::rename(&path, folder.join(&target)).map_err(|e| e.to_string())?;
            if let Some(moved) = local_of(&folder.join(&target)) {
                known.insert(target.clone(), Known { etag: out["ETag"].as_str().unwrap_or_default().to_owned(), local: moved });
            }
            known.remove(name);
        } else {
            known.insert(name.clone(), Known { etag: out["ETag"].as_str().unwrap_or_default().to_owned(), local: *state });
            remote.insert(name.clone(), out["ETag"].as_str().unwrap_or_default().to_owned());
        }
    }
    // Files deleted here are deleted there.
    let gone: Vec<String> =
        known.keys().filter(|name| !local.contains_key(*name) && folder.join(name).metadata().is_err()).cloned().collect();
    for name in gone {
        if remote.get(&name) == known.get(&name).map(|k| &k.etag) {
            api(endpoint, "storage:DeleteObject", json!({ "Bucket": "datasandbox-home", "Key": format!("{prefix}{name}") })).await?;
            remote.remove(&name);
        }
        known.remove(&name);
    }
    // Remote changes come down.
    for (name, etag) in remote.iter() {
        if known.get(name).is_some_and(|k| k.etag == *etag) {
            continue;
        }
        let out = api(endpoint, "storage:GetObject", json!({ "Bucket": "datasandbox-home", "Key": format!("{prefix}{name}") })).await?;
        let body = engine.decode(out["Body"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
        let path = folder.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let staging = path.with_file_name(format!("{}.home-sync.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
        std::fs::write(&staging, &body).map_err(|e| e.to_string())?;
        std::fs::rename(&staging, &path).map_err(|e| e.to_string())?;
        if let Some(state) = local_of(&path) {
            known.insert(name.clone(), Known { etag: etag.clone(), local: state });
        }
    }
    Ok(())
}
