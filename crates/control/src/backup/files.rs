//! The files of a backup: what the manifest says of each, and copying one while hashing it.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's name in a backup directory; written last, so a backup without it is not one.
pub(crate) const MANIFEST: &str = "manifest.json";
/// What `format` says: the layout of a backup directory this version writes and reads.
pub(crate) const FORMAT: &str = "datasandbox-backup-1";
const CHUNK: usize = 1024 * 1024;

/// Where a long backup or restore says how far it is, a line at a time.
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

/// A backup's table of contents: every file with its hash, and what was left out and why.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Manifest {
    pub format: String,
    /// The version of DataSandbox that wrote the backup.
    pub software_version: String,
    /// The newest migration applied to the metadata store it holds.
    pub schema_version: i64,
    pub created: String,
    /// `sealed` (under a passphrase, in `keys.sealed`) or `left out`.
    pub keys: String,
    pub entries: Vec<Entry>,
    /// What was not backed up, with the reason (a running notebook's volume).
    pub skipped: Vec<String>,
}

/// One file, directory or link, by its path relative to the data directory.
#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Entry {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(flatten)]
    pub kind: Kind,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(tag = "Kind", rename_all = "PascalCase")]
pub(crate) enum Kind {
    Directory,
    File {
        size: u64,
        sha256: String,
        /// Runs of zeros were left as holes (a notebook's disk image).
        #[serde(default)]
        sparse: bool,
    },
    Link {
        target: String,
    },
}

/// Copies `from` to `to` (created new, owner-only until its mode is set), at most `limit`
/// bytes of it; with `sparse`, runs of zeros become holes. Returns the bytes copied and their
/// SHA-256 (hex).
pub(crate) fn copy_hashed(from: &Path, to: &Path, limit: Option<u64>, sparse: bool) -> std::io::Result<(u64, String)> {
    // A regular file, not followed through a link (a changed backup must not read elsewhere).
    let mut source = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(from)?;
    if !source.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut target = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut copied = 0u64;
    let limit = limit.unwrap_or(u64::MAX);
    while copied < limit {
        let want = usize::try_from((limit - copied).min(CHUNK as u64)).unwrap_or(CHUNK);
        let read = source.read(&mut buffer[..want])?;
        if read == 0 {
            break;
        }
        let piece = &buffer[..read];
        hasher.update(piece);
        if sparse && piece.iter().all(|b| *b == 0) {
            target.seek(SeekFrom::Current(read as i64))?;
        } else {
            target.write_all(piece)?;
        }
        copied += read as u64;
    }
    target.set_len(copied)?;
    target.sync_all()?;
    Ok((copied, hex::encode(hasher.finalize())))
}

/// The SHA-256 (hex) of a whole file.
pub(crate) fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

/// The sibling of `target` a backup or restore is written in before it is renamed to it: a
/// new directory of an unguessable name, made by this call alone (an existing one is never
/// used, so nobody can have prepared it). The target must not exist, or be an empty directory
/// (replaced at the rename), and its parent must not be writable by others unless it is sticky.
pub(crate) fn staging_for(target: &Path, what: &str) -> Result<PathBuf, String> {
    match fs::read_dir(target).map(|mut entries| entries.next().is_none()) {
        Ok(false) => return Err(format!("`{}` exists and is not empty; give a new directory (nothing was changed)", target.display())),
        Ok(true) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => return Err(format!("`{}` exists and is not a directory; give a new directory (nothing was changed)", target.display())),
    }
    let name = target.file_name().ok_or_else(|| format!("`{}` names no directory", target.display()))?;
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mode = fs::metadata(parent).map_err(|e| format!("cannot use `{}`: {e}", parent.display()))?.permissions().mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(format!("`{}` is writable by every user: give a directory only its owner can write in", parent.display()));
    }
    let staging = parent.join(format!(".{}.{what}-{}", name.to_string_lossy(), uuid::Uuid::new_v4().simple()));
    fs::DirBuilder::new().mode(0o700).create(&staging).map_err(|e| format!("cannot create `{}`: {e}", staging.display()))?;
    Ok(staging)
}

/// Writes a new file, owner-only from the start, and syncs it.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A directory owner-only, with its parents.
pub(crate) fn private_dir(path: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Every file, directory and link under `root` (not following links), parents first, as
/// paths relative to `root`, skipping what `skip` says.
pub(crate) fn walk(root: &Path, skip: &dyn Fn(&Path) -> bool) -> std::io::Result<Vec<(PathBuf, fs::Metadata)>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut entries: Vec<_> = fs::read_dir(root.join(&relative))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries.into_iter().rev() {
            let path = relative.join(entry.file_name());
            if skip(&path) {
                continue;
            }
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(path.clone());
            }
            found.push((path, metadata));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// A file the trail is still writing under a temporary name (`.tmp`, renamed whole when done):
/// never part of a backup.
pub(crate) fn in_the_making(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tmp")
}

/// The manifest entry of a directory or link found by [`walk`] (files are hashed as copied).
pub(crate) fn entry_of(path: &Path, metadata: &fs::Metadata, kind: Kind) -> Entry {
    Entry {
        path: path.to_string_lossy().into_owned(),
        mode: metadata.permissions().mode() & 0o7777,
        uid: metadata.uid(),
        gid: metadata.gid(),
        kind,
    }
}

/// Gives `path` the mode its entry records, without set-id bits (a restore never makes a
/// set-id file) and without following a link. Owners are not restored: everything belongs to
/// the user restoring, as it did to the server that wrote it.
pub(crate) fn apply_mode(path: &Path, entry: &Entry) -> std::io::Result<()> {
    if matches!(entry.kind, Kind::Link { .. }) {
        return Ok(());
    }
    fs::set_permissions(path, fs::Permissions::from_mode(entry.mode & 0o1777))
}

/// Syncs a directory, so that a rename in it is durable.
pub(crate) fn sync_dir(path: &Path) -> std::io::Result<()> {
    fs::File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_hashed_bounded_and_keeps_its_holes() {
        let dir = std::env::temp_dir().join(format!("backup-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        private_dir(&dir).expect("dir");
        let source = dir.join("disk.img");
        let mut file = fs::File::create(&source).expect("create");
        file.write_all(b"head").expect("write");
        file.set_len(8 * CHUNK as u64).expect("grow");
        file.seek(SeekFrom::End(0)).expect("seek");
        file.write_all(b"tail").expect("write");
        drop(file);
        let (size, hash) = copy_hashed(&source, &dir.join("copy.img"), None, true).expect("copy");
        assert_eq!((size, hash.as_str()), (8 * CHUNK as u64 + 4, sha256_of(&source).expect("hash").as_str()));
        assert_eq!(fs::read(dir.join("copy.img")).expect("read"), fs::read(&source).expect("read"));
        let allocated = fs::metadata(dir.join("copy.img")).expect("meta").blocks() * 512;
        assert!(allocated < 4 * CHUNK as u64, "the holes were written out: {allocated} bytes allocated");
        let (size, _) = copy_hashed(&source, &dir.join("head"), Some(3), false).expect("copy");
        assert_eq!((size, fs::read(dir.join("head")).expect("read")), (3, b"hea".to_vec()));
        let _ = fs::remove_dir_all(&dir);
    }
}
