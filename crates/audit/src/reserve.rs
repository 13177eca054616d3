//! The trail's reserve: room on disk that only the trail can use. Each file the writer
//! appends to (the open log file, the hour's checkpoint file) keeps `want` bytes allocated
//! past its end (`fallocate` with `FALLOC_FL_KEEP_SIZE`: the file's length does not change,
//! readers see only what was written). When the file system fills up — a notebook writing
//! zeros into a directory on the same disk — the next top-up fails, but the room already
//! allocated is the trail's: records keep being written into it, and the writer says it is
//! on its reserve, so the control plane refuses every action (recording the refusal) until
//! the operator frees space and the top-up succeeds again.
//!
//! Nothing is released for others to take: freeing a reserve file on ENOSPC would hand its
//! blocks to whoever writes next, which on a full disk is the process filling it.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};

/// The file system holding the trail, asked how much room it has left through a descriptor
/// of the trail's directory held open: asked at every gated call, and a path's lookup cost
/// as much again as the question. The writer has it follow the path (see `follow`).
#[derive(Clone)]
pub(crate) struct FreeSpace(Arc<RwLock<File>>);

impl FreeSpace {
    pub(crate) fn open(root: &Path) -> std::io::Result<FreeSpace> {
        File::open(root).map(|dir| FreeSpace(Arc::new(RwLock::new(dir))))
    }

    /// Whether the file system has less than `below` bytes available to others: the point
    /// from which the trail counts as writing on its reserve, since the rest of the control
    /// plane (its databases) can no longer count on writing.
    pub(crate) fn nearly_full(&self, below: u64) -> bool {
        let dir = self.0.read().unwrap_or_else(PoisonError::into_inner);
        match nix::sys::statvfs::fstatvfs(&*dir) {
            Ok(stats) => stats.blocks_available().saturating_mul(stats.fragment_size()) < below,
            Err(_) => false,
        }
    }

    /// Opens `root` again if it is no longer the directory held (a file system mounted over it,
    /// the trail moved): new log files are opened by path, and their file system is the one
    /// to ask.
    pub(crate) fn follow(&self, root: &Path) {
        use std::os::unix::fs::MetadataExt as _;
        let same = |held: &File| match (held.metadata(), std::fs::metadata(root)) {
            (Ok(held), Ok(now)) => (held.dev(), held.ino()) == (now.dev(), now.ino()),
            _ => true,
        };
        if same(&self.0.read().unwrap_or_else(PoisonError::into_inner)) {
            return;
        }
        if let Ok(dir) = File::open(root) {
            *self.0.write().unwrap_or_else(PoisonError::into_inner) = dir;
        }
    }
}

/// A file appended to with room allocated ahead of it.
pub(crate) struct Reserved {
    pub file: File,
    pub path: PathBuf,
    /// Bytes written (the file's length).
    pub size: u64,
    /// The end of the allocated room (`u64::MAX` where the file system cannot preallocate).
    allocated: u64,
    want: u64,
}

/// How the file is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Open {
    /// A new file (log files): it must not exist.
    New,
    /// Appended to if it exists (the hour's checkpoint file).
    Append,
}

impl Reserved {
    /// Opens `path` for appending and allocates its reserve. The second value says whether
    /// the whole reserve could be had.
    pub(crate) fn open(path: &Path, want: u64, how: Open) -> std::io::Result<(Reserved, bool)> {
        let mut options = OpenOptions::new();
        options.append(true);
        match how {
            Open::New => options.create_new(true),
            Open::Append => options.create(true),
        };
        let file = options.open(path)?;
        let size = file.metadata()?.len();
        let mut reserved = Reserved { file, path: path.to_owned(), size, allocated: size, want };
        let whole = reserved.top_up();
        Ok((reserved, whole))
    }

    /// Room allocated past the end of what is written.
    fn headroom(&self) -> u64 {
        self.allocated.saturating_sub(self.size)
    }

    /// Allocates the reserve again past the file's end; whether it is whole. A quarter of it
    /// may be used up before it is topped up, so most appends make no extra system call.
    pub(crate) fn top_up(&mut self) -> bool {
        if self.headroom() >= self.want - self.want / 4 {
            return true;
        }
        self.allocate(self.size + self.want)
    }

    /// Makes sure the file has blocks up to `end`.
    fn allocate(&mut self, end: u64) -> bool {
        if self.allocated >= end {
            return true;
        }
        let from = self.allocated.max(self.size);
        let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(end - from)) else { return false };
        match fallocate(&self.file, FallocateFlags::FALLOC_FL_KEEP_SIZE, offset, len) {
            Ok(()) => {
                self.allocated = end;
                true
            }
            Err(Errno::EOPNOTSUPP) => {
                tracing::warn!(path = %self.path.display(), "this file system cannot preallocate: the audit trail has no reserve on it");
                self.allocated = u64::MAX;
                true
            }
            Err(_) => false,
        }
    }

    /// Appends `bytes` and makes them durable.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write(bytes)?;
        self.sync()
    }

    /// Appends `bytes`, durable once `sync` returns. Once the file system is full, only what
    /// fits in the allocated room is written: a batch that does not fit is refused whole
    /// rather than left half-written.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let end = self.size + bytes.len() as u64;
        if end > self.allocated && !self.allocate(end) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "the file system is full and the trail's reserve ({} bytes left) cannot hold {} bytes more",
                    self.headroom(),
                    bytes.len()
                ),
            ));
        }
        self.file.write_all(bytes)?;
        self.size = end;
        Ok(())
    }

    /// Makes what was written durable.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if FAILING_SYNCS.lock().expect("lock").as_ref().is_some_and(|dir| self.path.starts_with(dir)) {
            return Err(std::io::Error::other("an fsync failed (injected by a test)"));
        }
        self.file.sync_data()
    }
}

/// Under this directory every fsync of a trail file fails (tests only: a disk that stops
/// taking writes cannot be had on demand).
#[cfg(test)]
pub(crate) static FAILING_SYNCS: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    /// The free space asked is the trail directory's as its path now names it: a directory
    /// moved away and another in its place (as a file system mounted over it) is followed.
    #[test]
    fn free_space_follows_the_trails_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("trail");
        std::fs::create_dir(&root).expect("trail dir");
        let free_space = FreeSpace::open(&root).expect("opened");
        let held = || free_space.0.read().expect("lock").metadata().expect("held").ino();
        let first = held();
        assert!(!free_space.nearly_full(1), "a file system with a byte free");
        assert!(free_space.nearly_full(u64::MAX));
        free_space.follow(&root);
        assert_eq!(held(), first, "the same directory is kept");
        std::fs::rename(&root, dir.path().join("moved")).expect("moved");
        std::fs::create_dir(&root).expect("another trail dir");
        free_space.follow(&root);
        assert_eq!(held(), std::fs::metadata(&root).expect("new").ino(), "the path's directory now");
        assert_ne!(held(), first);
    }
}
