//! `datasandbox backup` and `restore` on the embedded defaults (SQLite, objects on disk).
//!
//! A backup is a directory: the metadata store (SQLite's `VACUUM INTO`, a consistent snapshot
//! taken while the server writes), the blobs that snapshot points at, the trail with its
//! signatures, the spec, the images, the volumes of notebooks that are stopped, and the keys
//! (sealed under a passphrase, or left out on request), with a manifest of every file's
//! SHA-256 written last. It is made in a sibling `.<name>.partial` and renamed whole, so a
//! backup that was cut off never looks like one.
//!
//! While serving, three things keep the copy consistent:
//! - blobs are never reused and, while a backup runs, released ones are not deleted (they go
//!   when it ends), so every blob the snapshot names is still there to copy;
//! - the trail is cut by its writer: it checkpoints (every record signed), and while appends
//!   wait the backup hard-links every file and notes how far the files still being appended
//!   to reach; what is appended after is not part of the backup;
//! - a running notebook's volume is mounted and changing: it is left out and named.
//!
//! What is not copied is derived or ephemeral: the audit index (the server indexes the trail
//! at its start), instances, logs, the lock and socket, the TLS certificate a local authority
//! issues at each start.

mod files;
mod keys;
mod restore;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use model::spec::{Spec, StorageBackend};
use serde_json::json;
use sqlx::Connection as _;

pub use self::files::Progress;
use self::files::{Entry, Kind, Manifest, staging_for};
pub use self::keys::{Keys, MIN_PASSPHRASE};
pub use self::restore::{Proof, Restored, restore};
use crate::core::platform::{Effect, Platform, ServiceEvent};

/// What a backup wrote.
pub struct Written {
    pub dir: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub objects: u64,
    pub skipped: Vec<String>,
    pub keys: &'static str,
}

/// Files of the data directory a backup copies as they are, when they exist.
const PLAIN_FILES: [&str; 2] = ["datasandbox.toml", "airlock-release.pub"];

/// A backup while the server runs: see the module's notes. Recorded in the trail before it
/// starts (`datasandbox:CreateBackup`; refused if the trail cannot record it) and when it ends.
/// Only the operator (root, or the user the server runs as) may ask, over the control socket.
pub(crate) async fn live(plane: &Platform, to: &Path, keys: Keys, uid: Option<u32>, progress: Progress<'_>) -> Result<Written, String> {
    let parameters = json!({ "To": to.display().to_string(), "Keys": keys.label(), "OperatorUid": uid });
    let refusal = if uid.is_none_or(|uid| uid != 0 && uid != plane.socket_owner) {
        Some("only the operator (root, or the user the server runs as) may take a backup".to_owned())
    } else {
        scale_out_refused(&plane.spec).err()
    };
    if let Some(message) = refusal {
        let error = crate::core::error::ActionError::new(403, crate::core::error::ErrorCode::AccessDeniedException, message.clone());
        let refused = ServiceEvent {
            source: "datasandbox",
            name: "CreateBackup",
            parameters,
            error: Some(&error),
            source_ip: Some("control socket".into()),
            ..ServiceEvent::default()
        };
        let _ = plane.record_service_event(refused).await;
        return Err(message);
    }
    let started = ServiceEvent {
        source: "datasandbox",
        name: "CreateBackup",
        parameters: parameters.clone(),
        source_ip: Some("control socket".into()),
        ..ServiceEvent::default()
    };
    if plane.backups.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return Err("a backup is already under way; wait for it to end".into());
    }
    let result = match plane.record_service_event(started).await {
        Ok(()) => run(Some(plane), &plane.data_dir, to, keys, progress).await,
        Err(err) => Err(format!("the backup was not started: {}", err.message)),
    };
    plane.backups.store(0, Ordering::Release);
    if let Err(err) = crate::storage::release_listed_blobs(plane).await {
        tracing::warn!(error = %err.message, "blobs released during the backup are deleted at the next start");
    }
    let error = result.as_ref().err().map(|message| crate::core::error::ActionError::internal(message.clone()));
    let mut parameters = parameters;
    if let Ok(written) = &result {
        parameters["Files"] = written.files.into();
        parameters["Bytes"] = written.bytes.into();
        parameters["Skipped"] = written.skipped.clone().into();
    }
    let ended = ServiceEvent {
        source: "datasandbox",
        name: "BackupFinished",
        parameters,
        error: error.as_ref(),
        source_ip: Some("control socket".into()),
        effect: Effect::Recorded,
        ..ServiceEvent::default()
    };
    let _ = plane.record_service_event(ended).await;
    result
}

/// A backup of a data directory nothing serves (the caller holds its lock).
pub async fn offline(data_dir: &Path, spec: &Spec, to: &Path, keys: Keys, progress: Progress<'_>) -> Result<Written, String> {
    scale_out_refused(spec)?;
    run(None, data_dir, to, keys, progress).await
}

fn scale_out_refused(spec: &Spec) -> Result<(), String> {
    let postgres = spec.metadata_url.as_deref().is_some_and(|u| u.starts_with("postgres"));
    if postgres || !matches!(spec.storage, StorageBackend::Local) {
        return Err("this server keeps its metadata in PostgreSQL or its objects in S3: back those up with their own tools \
                    (PostgreSQL's base backups with WAL archiving, or pg_dump; the bucket's versioning or replication, \
                    trail/ included), and keep master.key apart; `backup` copies the embedded defaults"
            .into());
    }
    Ok(())
}

impl Keys {
    fn label(&self) -> &'static str {
        match self {
            Keys::Sealed(_) => "sealed",
            Keys::LeftOut => "left out",
        }
    }
}

/// A backup being written into its staging directory.
struct Copier<'a> {
    data_dir: PathBuf,
    staging: PathBuf,
    entries: Vec<Entry>,
    skipped: Vec<String>,
    bytes: u64,
    progress: Progress<'a>,
    said: Instant,
}

async fn run(live: Option<&Platform>, data_dir: &Path, to: &Path, keys: Keys, progress: Progress<'_>) -> Result<Written, String> {
    let staging = staging_for(to, "partial")?;
    let mut copier = Copier {
        data_dir: data_dir.to_owned(),
        staging: staging.clone(),
        entries: Vec::new(),
        skipped: Vec::new(),
        bytes: 0,
        progress,
        said: Instant::now(),
    };
    let result = copier.everything(live).await;
    match result {
        Ok((schema_version, objects)) => {
            let keys_label = keys.label();
            let manifest = Manifest {
                format: files::FORMAT.into(),
                software_version: env!("CARGO_PKG_VERSION").into(),
                schema_version,
                created: crate::core::store::millis_to_rfc3339(crate::core::store::now_millis()),
                keys: keys_label.into(),
                entries: std::mem::take(&mut copier.entries),
                skipped: copier.skipped.clone(),
            };
            let files = manifest.entries.iter().filter(|e| matches!(e.kind, Kind::File { .. })).count() as u64;
            let mut finish = || -> Result<(), String> {
                let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
                let failed = |e: std::io::Error| e.to_string();
                files::write_private(&staging.join(files::MANIFEST), &text).map_err(failed)?;
                // What vouches for the manifest: the sealed keys, or an HMAC under master.key.
                copier.authenticate(&keys, &text)?;
                files::sync_dir(&staging).map_err(failed)?;
                std::fs::rename(&staging, to).map_err(failed)?;
                files::sync_dir(to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))).map_err(failed)
            };
            finish().map_err(|e| {
                let _ = std::fs::remove_dir_all(&staging);
                format!("cannot finish the backup in `{}`: {e}", to.display())
            })?;
            (copier.progress)(&format!("backup complete: {files} files, {} MiB, {objects} objects", copier.bytes >> 20));
            Ok(Written { dir: to.to_owned(), files, bytes: copier.bytes, objects, skipped: copier.skipped, keys: keys_label })
        }
        Err(message) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(message)
        }
    }
}

impl Copier<'_> {
    /// Copies everything; returns the store's schema version and how many objects it holds.
    async fn everything(&mut self, live: Option<&Platform>) -> Result<(i64, u64), String> {
        (self.progress)("metadata: taking a snapshot");
        let (schema_version, blobs) = self.snapshot_metadata().await?;
        (self.progress)("trail: cutting it");
        self.copy_trail(live).await?;
        let objects = blobs.len() as u64;
        for (index, blob) in blobs.iter().enumerate() {
            // A small body is in the store's snapshot itself.
            if crate::core::blobs::is_inline(blob) {
                continue;
            }
            let relative = Path::new("objects").join(crate::core::blobs::relative_path(blob));
            self.copy_file(&relative, None, false)?;
            self.report(false, &format!("objects: {}/{objects} copied, {} MiB in all", index + 1, self.bytes >> 20));
        }
        for name in PLAIN_FILES {
            if self.data_dir.join(name).exists() {
                self.copy_file(Path::new(name), None, false)?;
            }
        }
        (self.progress)("images: copying");
        self.copy_tree(Path::new("images"), &HashMap::new())?;
        self.copy_tree(Path::new("identity-providers"), &HashMap::new())?;
        self.copy_notebook_volumes()?;
        Ok((schema_version, objects))
    }

    /// Says `line` if a second has passed since the last (or always, with `now`).
    fn report(&mut self, now: bool, line: &str) {
        if now || self.said.elapsed().as_secs() >= 1 {
            (self.progress)(line);
            self.said = Instant::now();
        }
    }

    /// `VACUUM INTO` the backup, then the snapshot's schema version and the blobs it names.
    async fn snapshot_metadata(&mut self) -> Result<(i64, Vec<String>), String> {
        let source = self.data_dir.join("metadata.db");
        let target = self.staging.join("metadata.db");
        let failed = |e: sqlx::Error| format!("cannot snapshot the metadata store `{}`: {e}", source.display());
        sqlx::any::install_default_drivers();
        // Owner-only from the start: SQLite would create it with the default mode.
        files::write_private(&target, b"").map_err(|e| format!("cannot create `{}`: {e}", target.display()))?;
        let mut connection = sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=ro", source.display())).await.map_err(failed)?;
        sqlx::query("VACUUM INTO $1").bind(target.display().to_string()).execute(&mut connection).await.map_err(failed)?;
        connection.close().await.map_err(failed)?;
        let read = |e: sqlx::Error| format!("cannot read the snapshot `{}`: {e}", target.display());
        let mut snapshot = sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=ro", target.display())).await.map_err(read)?;
        let schema: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(&mut snapshot).await.map_err(read)?;
        let blobs: Vec<String> =
            sqlx::query_scalar("SELECT blob FROM objects ORDER BY blob").fetch_all(&mut snapshot).await.map_err(read)?;
        snapshot.close().await.map_err(read)?;
        self.add_written(Path::new("metadata.db"))?;
        Ok((schema.unwrap_or(0), blobs))
    }

    /// The trail: cut by its writer while serving (hard links, and how far the open files
    /// reach), copied as it is otherwise.
    async fn copy_trail(&mut self, live: Option<&Platform>) -> Result<(), String> {
        let Some(plane) = live else { return self.copy_tree(Path::new("trail"), &HashMap::new()) };
        let root = plane.trail.layout().root.clone();
        // Links a backup cut off by a crash left behind.
        for stale in std::fs::read_dir(&self.data_dir).map_err(|e| e.to_string())?.flatten() {
            if stale.file_name().to_string_lossy().starts_with(".backup-trail-") {
                let _ = std::fs::remove_dir_all(stale.path());
            }
        }
        let links = self.data_dir.join(format!(".backup-trail-{}", uuid::Uuid::new_v4().simple()));
        let (trail, cut_root, cut_links) = (plane.trail.clone(), root.clone(), links.clone());
        let cut = tokio::task::spawn_blocking(move || {
            let (tx, rx) = std::sync::mpsc::channel();
            let linked_root = cut_root.clone();
            trail.hold(move |open| {
                let linked = open.map_err(std::io::Error::other).and_then(|open| link_tree(&linked_root, &cut_links).map(|()| open));
                let _ = tx.send(linked);
            })?;
            rx.recv().map_err(|_| audit::TrailError::Stopped)?.map_err(|e| audit::TrailError::Io { path: cut_root, source: e })
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|held| held.map_err(|e| format!("cannot cut the trail: {e}")));
        let result = cut.and_then(|open| {
            let limits = open.into_iter().filter_map(|(path, len)| Some((path.strip_prefix(&root).ok()?.to_owned(), len))).collect();
            self.copy_tree_from(&links, Path::new("trail"), &limits)
        });
        let _ = std::fs::remove_dir_all(&links);
        result
    }

    /// Copies the tree at `relative` in the data directory.
    fn copy_tree(&mut self, relative: &Path, limits: &HashMap<PathBuf, u64>) -> Result<(), String> {
        let source = self.data_dir.join(relative);
        if !source.exists() {
            return Ok(());
        }
        self.copy_tree_from(&source, relative, limits)
    }

    /// Copies the tree at `source` to `relative` in the backup; a file named in `limits` only
    /// as far as its length there.
    fn copy_tree_from(&mut self, source: &Path, relative: &Path, limits: &HashMap<PathBuf, u64>) -> Result<(), String> {
        let found = files::walk(source, &files::in_the_making).map_err(|e| format!("cannot read `{}`: {e}", source.display()))?;
        let top = std::fs::metadata(source).map_err(|e| format!("cannot read `{}`: {e}", source.display()))?;
        self.add_directory(relative, &top)?;
        for (path, metadata) in found {
            let inside = relative.join(&path);
            if metadata.is_dir() {
                self.add_directory(&inside, &metadata)?;
            } else if metadata.is_symlink() {
                let target = std::fs::read_link(source.join(&path)).map_err(|e| e.to_string())?;
                self.entries.push(files::entry_of(&inside, &metadata, Kind::Link { target: target.to_string_lossy().into_owned() }));
            } else if metadata.is_file() {
                self.copy_from(&source.join(&path), &inside, &metadata, limits.get(&path).copied(), false)?;
                self.report(false, &format!("{}: {} MiB copied", relative.display(), self.bytes >> 20));
            }
        }
        Ok(())
    }

    fn add_directory(&mut self, relative: &Path, metadata: &std::fs::Metadata) -> Result<(), String> {
        files::private_dir(&self.staging.join(relative)).map_err(|e| format!("cannot create `{}`: {e}", relative.display()))?;
        self.entries.push(files::entry_of(relative, metadata, Kind::Directory));
        Ok(())
    }

    /// Copies the data directory's file at `relative` (its parents are made as directories).
    fn copy_file(&mut self, relative: &Path, limit: Option<u64>, sparse: bool) -> Result<(), String> {
        let source = self.data_dir.join(relative);
        let metadata = std::fs::metadata(&source).map_err(|e| format!("cannot read `{}`: {e}", source.display()))?;
        if let Some(parent) = relative.parent().filter(|p| !p.as_os_str().is_empty())
            && !self.staging.join(parent).is_dir()
        {
            let mut made = PathBuf::new();
            for part in parent.components() {
                made.push(part);
                if !self.staging.join(&made).is_dir() {
                    let meta = std::fs::metadata(self.data_dir.join(&made)).map_err(|e| e.to_string())?;
                    self.add_directory(&made, &meta)?;
                }
            }
        }
        self.copy_from(&source, relative, &metadata, limit, sparse)
    }

    fn copy_from(
        &mut self,
        source: &Path,
        relative: &Path,
        metadata: &std::fs::Metadata,
        limit: Option<u64>,
        sparse: bool,
    ) -> Result<(), String> {
        let (size, sha256) = files::copy_hashed(source, &self.staging.join(relative), limit, sparse)
            .map_err(|e| format!("cannot copy `{}`: {e}", source.display()))?;
        self.bytes += size;
        self.entries.push(files::entry_of(relative, metadata, Kind::File { size, sha256, sparse }));
        Ok(())
    }

    /// The disk images of notebooks that are stopped; a running one's is mounted and changing,
    /// and is named as skipped.
    fn copy_notebook_volumes(&mut self) -> Result<(), String> {
        let Ok(entries) = std::fs::read_dir(self.data_dir.join("notebooks")) else { return Ok(()) };
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_owned)).collect();
        names.sort();
        for name in names {
            let dir = PathBuf::from("notebooks").join(&name);
            let image = dir.join("volume.img");
            if !self.data_dir.join(&image).is_file() {
                continue;
            }
            let disk = self.data_dir.join(&dir).join("disk");
            if mounts.lines().any(|line| line.split(' ').nth(4) == Some(&*disk.to_string_lossy())) {
                self.skipped.push(format!("notebook `{name}`: it is running (stop it and back up again to include its volume)"));
                continue;
            }
            (self.progress)(&format!("notebooks: copying the volume of `{name}`"));
            self.copy_file(&image, None, true)?;
        }
        Ok(())
    }

    /// Seals the keys with the manifest's hash (`keys.sealed`), or, when they are left out,
    /// writes the manifest's HMAC under master.key (`manifest.mac`).
    fn authenticate(&mut self, keys: &Keys, manifest: &[u8]) -> Result<(), String> {
        let read = |name: &str| std::fs::read(self.data_dir.join(name)).map_err(|e| format!("cannot read the key `{name}`: {e}"));
        let (name, bytes) = match keys {
            Keys::Sealed(passphrase) => {
                let mut found = BTreeMap::new();
                for name in keys::KEY_FILES.into_iter().filter(|name| self.data_dir.join(name).exists()) {
                    found.insert(name.to_owned(), read(name)?);
                }
                (self.progress)("keys: sealing them under the passphrase");
                let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(manifest));
                (keys::SEALED, keys::seal(&found, &sha256, passphrase)?)
            }
            Keys::LeftOut => (keys::MANIFEST_MAC, keys::manifest_mac(&read("master.key")?, manifest).into_bytes()),
        };
        let path = self.staging.join(name);
        files::write_private(&path, &bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
    }

    /// Adds a file the backup wrote itself (not a copy) to the manifest.
    fn add_written(&mut self, relative: &Path) -> Result<(), String> {
        let path = self.staging.join(relative);
        let failed = |e: std::io::Error| format!("cannot read `{}`: {e}", path.display());
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(failed)?;
        let metadata = std::fs::metadata(&path).map_err(failed)?;
        let sha256 = files::sha256_of(&path).map_err(failed)?;
        self.bytes += metadata.len();
        self.entries.push(files::entry_of(relative, &metadata, Kind::File { size: metadata.len(), sha256, sparse: false }));
        Ok(())
    }
}

/// Hard-links every file under `root` into the same places under `links` (same file system).
/// The sealer may replace an open log file by its sealed one meanwhile (a rename, then a
/// delete): a file gone before its link is looked for again in a new walk.
fn link_tree(root: &Path, links: &Path) -> std::io::Result<()> {
    files::private_dir(links)?;
    for _ in 0..10 {
        let mut vanished = false;
        for (path, metadata) in files::walk(root, &files::in_the_making)? {
            let result = if metadata.is_dir() {
                files::private_dir(&links.join(&path))
            } else if metadata.is_file() {
                std::fs::hard_link(root.join(&path), links.join(&path))
            } else {
                Ok(())
            };
            match result {
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => vanished = true,
                Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => return Err(err),
                _ => {}
            }
        }
        if !vanished {
            // An open log file the sealer has just sealed (its sealed copy is in place, the open
            // one not yet deleted): the sealed one is the file.
            for (path, _) in files::walk(links, &|_| false)? {
                if path.extension().is_some_and(|e| e == "jsonl") && links.join(audit::sealed_name(&path)).exists() {
                    std::fs::remove_file(links.join(&path))?;
                }
            }
            return Ok(());
        }
    }
    Err(std::io::Error::other("the trail's files kept changing while it was cut"))
}
