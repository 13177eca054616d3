//! `datasandbox restore`: a backup into a new data directory, checked before it is one.
//!
//! A backup is taken for hostile until it checks: it may have been changed anywhere it was
//! kept. Nothing is overwritten: the target must not exist (or be empty), and the restore is
//! built in a new sibling directory that becomes the data directory only once everything
//! checks, in this order:
//! - the manifest is authentic: its SHA-256 is the one sealed with the keys (the passphrase
//!   opens them), or, for a backup without its keys, its HMAC under `master.key` (which the
//!   restore must be given);
//! - every entry is a plain relative path, listed once, inside a directory listed before it
//!   (so nothing is ever written through a link), and is created new; modes lose their set-id
//!   bits and owners are not taken from the manifest;
//! - every file is a regular file of exactly its size and SHA-256;
//! - this binary opens the store (a newer schema is refused; an older one is migrated forward,
//!   as `serve` would), and every object's blob is there with its checksum;
//! - the trail validates against the signing key the store holds (wrapped by `master.key`),
//!   not against a key the backup brings along.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::files::{self, Kind, Manifest, Progress};
use super::keys;
use crate::core::store::Store;

/// What a restore put in place.
pub struct Restored {
    pub files: u64,
    pub objects: u64,
    /// The trail's verdict lines, as `audit validate` prints them.
    pub trail: Vec<String>,
}

/// What proves a backup's manifest authentic: the passphrase its keys are sealed under, or,
/// for a backup made without its keys, `master.key` (which the restore then puts in place).
pub enum Proof {
    Passphrase(String),
    MasterKey(Vec<u8>),
}

/// Restores the backup in `from` into `data_dir`, which must not exist or be empty.
pub async fn restore(from: &Path, data_dir: &Path, proof: &Proof, progress: Progress<'_>) -> Result<Restored, String> {
    let manifest_path = from.join(files::MANIFEST);
    let text = std::fs::read(&manifest_path).map_err(|e| {
        format!("`{}` is not a DataSandbox backup (no readable {}: {e}); a backup cut off has no manifest", from.display(), files::MANIFEST)
    })?;
    // The keys open, and the manifest is the one they vouch for, before anything is written.
    let opened = authenticate(from, &text, proof)?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("`{}` is not a backup's manifest: {e}", manifest_path.display()))?;
    if manifest.format != files::FORMAT {
        return Err(format!("the backup's format `{}` is not one this version reads (`{}`)", manifest.format, files::FORMAT));
    }
    check_entries(&manifest)?;
    let staging = files::staging_for(data_dir, "restoring")?;
    let result = build(from, &staging, &manifest, &opened, progress).await;
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

/// The key files the backup's manifest is authenticated with (to put in place).
fn authenticate(from: &Path, manifest: &[u8], proof: &Proof) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(manifest));
    match proof {
        Proof::Passphrase(passphrase) => {
            let sealed = std::fs::read(from.join(keys::SEALED)).map_err(|e| {
                format!("cannot read the backup's `{}` ({e}): a backup made --without-keys is restored with --master-key", keys::SEALED)
            })?;
            keys::open(&sealed, &sha256, passphrase)
        }
        Proof::MasterKey(master) => {
            let mac = std::fs::read_to_string(from.join(keys::MANIFEST_MAC)).map_err(|e| {
                format!(
                    "cannot read the backup's `{}` ({e}): a backup with sealed keys is restored with --passphrase-file",
                    keys::MANIFEST_MAC
                )
            })?;
            if mac.trim() != keys::manifest_mac(master, manifest) {
                return Err(
                    "the backup's manifest does not match master.key: it was changed, or the key is another; nothing was restored".into()
                );
            }
            Ok(BTreeMap::from([("master.key".to_owned(), master.clone())]))
        }
    }
}

/// Every entry a plain relative path, listed once, inside a directory listed before it.
fn check_entries(manifest: &Manifest) -> Result<(), String> {
    let mut directories: HashSet<&str> = HashSet::from([""]);
    let mut seen = HashSet::new();
    for entry in &manifest.entries {
        safe_relative(&entry.path)?;
        if !seen.insert(entry.path.as_str()) {
            return Err(format!("the manifest lists `{}` twice; nothing was restored", entry.path));
        }
        let parent = entry.path.rsplit_once('/').map_or("", |(parent, _)| parent);
        if !directories.contains(parent) {
            return Err(format!("the manifest puts `{}` in no directory it lists before; nothing was restored", entry.path));
        }
        if matches!(entry.kind, Kind::Directory) {
            directories.insert(&entry.path);
        }
    }
    Ok(())
}

async fn build(
    from: &Path,
    staging: &Path,
    manifest: &Manifest,
    opened: &BTreeMap<String, Vec<u8>>,
    progress: Progress<'_>,
) -> Result<Restored, String> {
    let files = copy_entries(from, staging, manifest, progress)?;
    for (name, bytes) in opened {
        let path = staging.join(safe_relative(name)?);
        if let Some(parent) = path.parent().filter(|p| !p.exists()) {
            files::private_dir(parent).map_err(|e| e.to_string())?;
        }
        files::write_private(&path, bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    }
    progress("metadata: opening the store with this version");
    let (objects, key) = check_store(staging, progress).await?;
    progress("trail: validating it against the store's signing key");
    let root = staging.join("trail");
    let report = tokio::task::spawn_blocking(move || audit::validate_nodes(&root, Some(&key), None, &audit::ValidateOptions::default()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("the backup's trail cannot be validated: {e}"))?;
    if !report.valid {
        return Err(format!("the backup's trail does not validate; nothing was restored:\n{}", report.lines.join("\n")));
    }
    Ok(Restored { files, objects, trail: report.lines })
}

/// Creates every directory and link and copies every file of the manifest, each a regular
/// file of its size and SHA-256; then gives each its mode (directories last, deepest first, so
/// that a read-only one is filled first).
fn copy_entries(from: &Path, staging: &Path, manifest: &Manifest, progress: Progress<'_>) -> Result<u64, String> {
    let total: u64 = manifest.entries.iter().map(|e| if let Kind::File { size, .. } = e.kind { size } else { 0 }).sum();
    let (mut done, mut files, mut said) = (0u64, 0u64, std::time::Instant::now());
    for entry in &manifest.entries {
        let target = staging.join(&entry.path);
        match &entry.kind {
            Kind::Directory => {
                std::fs::DirBuilder::new().create(&target).map_err(|e| format!("cannot create `{}`: {e}", target.display()))?;
            }
            Kind::Link { target: to } => {
                std::os::unix::fs::symlink(to, &target).map_err(|e| format!("cannot link `{}`: {e}", target.display()))?
            }
            Kind::File { size, sha256, sparse } => {
                let source = from.join(&entry.path);
                let changed = || {
                    format!(
                        "`{}` in the backup is not the file its manifest names (changed or truncated); nothing was restored",
                        entry.path
                    )
                };
                let (copied, hash) = files::copy_hashed(&source, &target, Some(size.saturating_add(1)), *sparse).map_err(|_| changed())?;
                if copied != *size || hash != *sha256 {
                    return Err(changed());
                }
                (done, files) = (done + copied, files + 1);
                if said.elapsed().as_secs() >= 1 {
                    progress(&format!("files: {files} restored, {} of {} MiB", done >> 20, total >> 20));
                    said = std::time::Instant::now();
                }
            }
        }
    }
    let mut ordered: Vec<_> = manifest.entries.iter().collect();
    ordered.sort_by_key(|e| (matches!(e.kind, Kind::Directory), std::cmp::Reverse(e.path.len())));
    for entry in ordered {
        let path = staging.join(&entry.path);
        files::apply_mode(&path, entry).map_err(|e| format!("cannot set the mode of `{}`: {e}", path.display()))?;
    }
    Ok(files)
}

/// A manifest's path, relative and without `..`: a changed manifest cannot write elsewhere.
fn safe_relative(path: &str) -> Result<PathBuf, String> {
    let relative = PathBuf::from(path);
    let plain = relative.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || path.is_empty() || path.ends_with('/') {
        return Err(format!("the manifest names `{path}`, which is not a path inside the data directory"));
    }
    Ok(relative)
}

/// Opens the restored store with this binary (refusing a newer schema), checks that every
/// object's blob is there, of its size and checksum, and returns how many there are and the
/// trail's public key as the store holds it.
async fn check_store(staging: &Path, progress: Progress<'_>) -> Result<(u64, ed25519_dalek::VerifyingKey), String> {
    let store = Store::open(None, staging).await.map_err(|e| format!("cannot open the backup's metadata store: {e}"))?;
    let checked = check_opened(&store, staging, progress).await;
    // Closed either way, before the staged directory is moved into place or removed.
    store.close().await;
    checked
}

async fn check_opened(store: &Store, staging: &Path, progress: Progress<'_>) -> Result<(u64, ed25519_dalek::VerifyingKey), String> {
    let ring = crate::core::keyring::KeyRing::open(staging).map_err(|e| format!("cannot read the restored master.key: {e}"))?;
    let secret =
        crate::keys::trail_signing_secret(store, &ring, None).await.map_err(|e| format!("the store's trail key: {}", e.message))?;
    let key = audit::parse_public_key(&audit::Signer::from_bytes(&secret).public_key_hex())?;
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
    let count = rows.len() as u64;
    for (index, (bucket, key, blob, etag, size)) in rows.into_iter().enumerate() {
        let missing = |what: String| format!("the object `{bucket}/{key}` {what}; nothing was restored");
        let (length, digest) = if crate::core::blobs::is_inline(&blob) {
            let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM small_blobs WHERE name = $1")
                .bind(&blob)
                .fetch_optional(&store.pool)
                .await
                .map_err(|e| format!("cannot read the backup's small bodies: {e}"))?;
            let body = body.ok_or_else(|| missing("has no body in the backup's metadata store".into()))?;
            (Some(body.len() as u64), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)))
        } else {
            if !is_blob_name(&blob) {
                return Err(missing(format!("names a blob `{blob}` that no server makes")));
            }
            let path = staging.join("objects").join(crate::core::blobs::relative_path(&blob));
            let length = std::fs::symlink_metadata(&path).ok().filter(std::fs::Metadata::is_file).map(|m| m.len());
            (length, files::sha256_of(&path).map_err(|e| missing(format!("has no blob in the backup ({e})")))?)
        };
        // Every ETag this platform makes is the body's SHA-256, cut to 32 hex digits.
        if length.and_then(|l| i64::try_from(l).ok()) != Some(size) || !etag.trim_matches('"').eq_ignore_ascii_case(&digest[..32]) {
            return Err(missing("does not match its checksum".into()));
        }
        if index % 1000 == 999 {
            progress(&format!("objects: {}/{count} checked", index + 1));
        }
    }
    Ok((count, key))
}

/// `<32 hex digits>` and, since nodes, `-<node>`: the names `Blobs::put` gives.
fn is_blob_name(name: &str) -> bool {
    let (id, node) = name.split_at(name.len().min(32));
    id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && (node.is_empty()
            || node.strip_prefix('-').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::files::Entry;

    fn manifest(entries: Vec<(&str, Kind)>) -> Manifest {
        let entries = entries.into_iter().map(|(path, kind)| Entry { path: path.into(), mode: 0o644, uid: 0, gid: 0, kind }).collect();
        Manifest {
            format: files::FORMAT.into(),
            software_version: "0".into(),
            schema_version: 0,
            created: String::new(),
            keys: "sealed".into(),
            entries,
            skipped: Vec::new(),
        }
    }

    fn file() -> Kind {
        Kind::File { size: 0, sha256: String::new(), sparse: false }
    }

    #[test]
    fn entries_go_only_into_directories_listed_before_them_once_each() {
        let good = manifest(vec![
            ("trail", Kind::Directory),
            ("trail/a", file()),
            ("images", Kind::Directory),
            ("images/l", Kind::Link { target: "/usr".into() }),
        ]);
        assert!(check_entries(&good).is_ok());
        let through_link = manifest(vec![("escape", Kind::Link { target: "/etc/cron.d".into() }), ("escape/x", file())]);
        assert!(check_entries(&through_link).is_err_and(|e| e.contains("no directory it lists before")));
        let twice = manifest(vec![("escape", Kind::Link { target: "/etc".into() }), ("escape", Kind::Directory)]);
        assert!(check_entries(&twice).is_err_and(|e| e.contains("twice")));
        for path in ["../x", "/etc/passwd", "a/../../x", "", "trail/"] {
            assert!(check_entries(&manifest(vec![(path, file())])).is_err(), "{path}");
        }
        assert!(is_blob_name("5c3a81d18bc2469385a2c384dd180071-vm") && is_blob_name("5c3a81d18bc2469385a2c384dd180071"));
        assert!(!is_blob_name("../../etc/passwd") && !is_blob_name("5c3a81d18bc2469385a2c384dd180071-../x"));
    }
}
