//! `datasandbox restore`: a backup into a new data directory, checked before it is one.
//!
//! Nothing is overwritten: the target must not exist (or be empty), and the restore is built in
//! a sibling `.<name>.restoring` that becomes the data directory only once everything checks:
//! every file's SHA-256 against the manifest, the keys opened with the passphrase, the store
//! opened by this binary (a newer schema is refused; an older one is migrated forward, as
//! `serve` would), every object's blob against its checksum, and the trail as `audit validate`
//! checks it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::files::{self, Entry, Kind, Manifest, Progress};
use super::keys;
use crate::core::store::Store;

/// What a restore put in place.
pub struct Restored {
    pub files: u64,
    pub objects: u64,
    /// The trail's verdict lines, as `audit validate` prints them.
    pub trail: Vec<String>,
    /// What the operator must still do (keys left out of the backup).
    pub notes: Vec<String>,
}

/// Restores the backup in `from` into `data_dir`, which must not exist or be empty.
pub async fn restore(from: &Path, data_dir: &Path, passphrase: Option<&str>, progress: Progress<'_>) -> Result<Restored, String> {
    let manifest_path = from.join(files::MANIFEST);
    let text = std::fs::read(&manifest_path).map_err(|e| {
        format!("`{}` is not a DataSandbox backup (no readable {}: {e}); a backup cut off has no manifest", from.display(), files::MANIFEST)
    })?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("`{}` is not a backup's manifest: {e}", manifest_path.display()))?;
    if manifest.format != files::FORMAT {
        return Err(format!("the backup's format `{}` is not one this version reads (`{}`)", manifest.format, files::FORMAT));
    }
    // The keys open (or the restore stops) before anything is written.
    let opened = match (manifest.keys.as_str(), passphrase) {
        ("sealed", Some(passphrase)) => {
            let sealed = std::fs::read(from.join(keys::SEALED)).map_err(|e| format!("cannot read the backup's `{}`: {e}", keys::SEALED))?;
            Some(keys::open(&sealed, passphrase)?)
        }
        ("sealed", None) => return Err("this backup's keys are sealed: give the passphrase it was made with (--passphrase-file)".into()),
        _ => None,
    };
    let staging = files::staging_for(data_dir, "restoring")?;
    let result = build(from, &staging, &manifest, opened.as_ref(), progress).await;
    let finished = result.and_then(|restored| {
        std::fs::rename(&staging, data_dir).map_err(|e| format!("cannot move the restore into `{}`: {e}", data_dir.display()))?;
        let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        files::sync_dir(parent).map_err(|e| e.to_string())?;
        Ok(restored)
    });
    if finished.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    finished
}

async fn build(
    from: &Path,
    staging: &Path,
    manifest: &Manifest,
    opened: Option<&BTreeMap<String, Vec<u8>>>,
    progress: Progress<'_>,
) -> Result<Restored, String> {
    let files = copy_entries(from, staging, manifest, progress)?;
    let mut notes = Vec::new();
    match opened {
        Some(opened) => {
            for (name, bytes) in opened {
                let path = staging.join(name);
                files::private_dir(path.parent().unwrap_or(staging)).map_err(|e| e.to_string())?;
                files::write_private(&path, bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
            }
        }
        None => notes.push(
            "the backup's keys were left out: copy master.key and streaming-url.key (and tls/authority.*, if browsers trust it) \
             into the data directory before `serve`"
                .to_owned(),
        ),
    }
    progress("metadata: opening the store with this version");
    let objects = check_objects(staging, progress).await?;
    progress("trail: validating it");
    let root = staging.join("trail");
    let report = tokio::task::spawn_blocking(move || audit::validate_nodes(&root, None, None, &audit::ValidateOptions::default()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the backup's trail cannot be validated: {e}"))?;
    if !report.valid {
        return Err(format!("the backup's trail does not validate; nothing was restored:\n{}", report.lines.join("\n")));
    }
    Ok(Restored { files, objects, trail: report.lines, notes })
}

/// Creates every directory and link and copies every file of the manifest, each file's
/// SHA-256 checked against it; then gives each its owner and mode (directories last, so a
/// read-only one is filled first).
fn copy_entries(from: &Path, staging: &Path, manifest: &Manifest, progress: Progress<'_>) -> Result<u64, String> {
    let total: u64 = manifest.entries.iter().map(|e| if let Kind::File { size, .. } = e.kind { size } else { 0 }).sum();
    let (mut done, mut files, mut said) = (0u64, 0u64, std::time::Instant::now());
    for entry in manifest.entries.iter().filter(|e| e.path != keys::SEALED) {
        let relative = safe_relative(&entry.path)?;
        let target = staging.join(&relative);
        match &entry.kind {
            Kind::Directory => files::private_dir(&target).map_err(|e| format!("cannot create `{}`: {e}", target.display()))?,
            Kind::Link { target: to } => {
                std::os::unix::fs::symlink(to, &target).map_err(|e| format!("cannot link `{}`: {e}", target.display()))?
            }
            Kind::File { size, sha256, sparse } => {
                let source = from.join(&relative);
                let (copied, hash) =
                    files::copy_hashed(&source, &target, None, *sparse).map_err(|e| format!("cannot copy `{}`: {e}", source.display()))?;
                if copied != *size || hash != *sha256 {
                    return Err(format!(
                        "`{}` in the backup is not the file its manifest names (changed or truncated); nothing was restored",
                        entry.path
                    ));
                }
                (done, files) = (done + copied, files + 1);
                if said.elapsed().as_secs() >= 1 {
                    progress(&format!("files: {files} restored, {} of {} MiB", done >> 20, total >> 20));
                    said = std::time::Instant::now();
                }
            }
        }
    }
    let mut ordered: Vec<&Entry> = manifest.entries.iter().filter(|e| e.path != keys::SEALED).collect();
    ordered.sort_by_key(|e| (matches!(e.kind, Kind::Directory), std::cmp::Reverse(e.path.len())));
    for entry in ordered {
        let path = staging.join(safe_relative(&entry.path)?);
        files::apply_owner_and_mode(&path, entry).map_err(|e| format!("cannot set the owner and mode of `{}`: {e}", path.display()))?;
    }
    Ok(files)
}

/// A manifest's path, relative and without `..`: a changed manifest cannot write elsewhere.
fn safe_relative(path: &str) -> Result<PathBuf, String> {
    let relative = PathBuf::from(path);
    let plain = relative.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || path.is_empty() {
        return Err(format!("the manifest names `{path}`, which is not a path inside the data directory"));
    }
    Ok(relative)
}

/// Opens the restored store with this binary (refusing a newer schema) and checks that every
/// object's blob is there, of its size and checksum.
async fn check_objects(staging: &Path, progress: Progress<'_>) -> Result<u64, String> {
    let store = Store::open(None, staging).await.map_err(|e| format!("cannot open the backup's metadata store: {e}"))?;
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as("SELECT bucket, key, blob, etag, size FROM objects")
        .fetch_all(&store.pool)
        .await
        .map_err(|e| format!("cannot read the backup's objects: {e}"))?;
    // The snapshot was taken from a serving node, whose lease it still holds: over now, so that
    // `serve` on the restored directory starts (and ends what the snapshot had running, as
    // after a crash).
    sqlx::query("UPDATE nodes SET lease_expires = 0")
        .execute(&store.pool)
        .await
        .map_err(|e| format!("cannot end the backup's node leases: {e}"))?;
    store.pool.close().await;
    let count = rows.len() as u64;
    for (index, (bucket, key, blob, etag, size)) in rows.into_iter().enumerate() {
        let path = staging.join("objects").join(crate::core::blobs::relative_path(&blob));
        let missing = |e: std::io::Error| format!("the object `{bucket}/{key}` has no blob in the backup ({e}); nothing was restored");
        let length = std::fs::metadata(&path).map_err(missing)?.len();
        let digest = files::sha256_of(&path).map_err(missing)?;
        // Every ETag this platform makes is the body's SHA-256, cut to 32 hex digits.
        if i64::try_from(length).ok() != Some(size) || !etag.trim_matches('"').eq_ignore_ascii_case(&digest[..32]) {
            return Err(format!("the object `{bucket}/{key}` does not match its checksum; nothing was restored"));
        }
        if index % 1000 == 999 {
            progress(&format!("objects: {}/{count} checked", index + 1));
        }
    }
    Ok(count)
}
