//! Size-limited file systems, for the tests that fill a disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A size-limited tmpfs, unmounted when dropped.
pub(crate) struct Tmpfs {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Tmpfs {
    pub(crate) fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_owned();
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"]).arg(&path).status();
        assert!(status.expect("mount").success(), "cannot mount a tmpfs (these tests run as root)");
        Tmpfs { dir: Some(dir), path }
    }

    /// A size-limited tmpfs on `path` (an empty directory the caller made), unmounted when
    /// dropped; the directory stays.
    pub(crate) fn mount_at(path: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"]).arg(path).status();
        assert!(status.expect("mount").success(), "cannot mount a tmpfs (these tests run as root)");
        Tmpfs { dir: None, path: path.to_owned() }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory, for a server to own; the mount stays until this guard drops.
    pub(crate) fn take_dir(&mut self) -> tempfile::TempDir {
        self.dir.take().expect("taken once")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Writes zeros into `path` until the file system is full, as a notebook can into `/run/jupyter`.
pub(crate) fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let block = vec![0u8; 1 << 20];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}
