//! The FUSE file system the daemon serves: lookups and listings from its [`Tree`], every open
//! asked of the control plane (which decides and records it) with the process behind it
//! resolved first, reads from the body it was given, counted for the summary at release, and
//! every change refused with `EROFS` and recorded.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::tree::{Kind, ROOT, Tree};
use super::wire::{Answer, Ask, Channel, Frame, Process, ReadSummary, Up};

/// How long the kernel may keep names and attributes: the tree changes only when a session
/// is given the instance.
const TTL: Duration = Duration::from_secs(1);

/// How long an ask may wait for its answer: past it the process gets `EIO`, rather than
/// waiting on a control plane that has stalled (its audit trail, an S3 server).
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks go one at a time, each with an id; the reader thread hands the answers over, and one
/// that comes after its ask gave up is dropped.
pub(super) struct Link {
    pub channel: Arc<Channel>,
    asking: Mutex<u64>,
    answers: Mutex<mpsc::Receiver<(u64, Frame<Answer>)>>,
}

impl Link {
    pub fn new(channel: Arc<Channel>, answers: mpsc::Receiver<(u64, Frame<Answer>)>) -> Link {
        Link { channel, asking: Mutex::new(0), answers: Mutex::new(answers) }
    }

    fn ask(&self, ask: Ask) -> std::io::Result<Frame<Answer>> {
        let mut last = self.asking.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *last += 1;
        let id = *last;
        self.channel.send(&Up::Ask { id, ask }, &[], None)?;
        let answers = self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let deadline = std::time::Instant::now() + ASK_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match answers.recv_timeout(left) {
                Ok((answered, frame)) if answered == id => return Ok(frame),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the control plane did not answer in time"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the control plane is gone"));
                }
            }
        }
    }
}

/// A body's device and inode: which file a backing is of.
type FileIdentity = (u64, u64);

struct OpenFile {
    /// The last thread seen reading, so the readers are resolved only when it changes.
    last_reader: u32,
    /// The object's body as a local file, or `None` when reads are asked for.
    body: Option<Arc<std::fs::File>>,
    /// Held while the file is open through passthrough (the kernel reads the body itself):
    /// dropping the last one closes the kernel's backing.
    _backing: Option<Arc<BackingId>>,
    handle: u64,
    size: u64,
    summary: ReadSummary,
}

pub(super) struct DatasetFs {
    pub tree: Arc<RwLock<Arc<Tree>>>,
    link: Link,
    /// The host ids that may use the mount: the instance's workspace user (who owns what it
    /// shows) and the instance's root (its setup binds the mount). Not the host's root: a
    /// root process walking the data directory (a backup, a scanner) must not read datasets in
    /// the analyst's name.
    owner: u32,
    instance_root: u32,
    open: Mutex<HashMap<u64, OpenFile>>,
    next: AtomicU64,
    /// Passthrough's backing files by inode: the kernel wants one per inode while any is open.
    backings: Mutex<HashMap<u64, (Weak<BackingId>, FileIdentity)>>,
    passthrough: bool,
}

impl DatasetFs {
    pub fn new(tree: Arc<RwLock<Arc<Tree>>>, link: Link, owner: u32, instance_root: u32) -> DatasetFs {
        DatasetFs {
            tree,
            link,
            owner,
            instance_root,
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            backings: Mutex::new(HashMap::new()),
            passthrough: false,
        }
    }

    fn allowed(&self, req: &Request) -> bool {
        let uid = req.uid();
        uid == self.owner || uid == self.instance_root
    }

    fn tree(&self) -> Arc<Tree> {
        self.tree.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The backing of inode `ino` for passthrough: the one already open for it when it is the
    /// same body, else a new one; `None` (reads come here) when the kernel refuses it or
    /// another body of the inode is still open.
    fn backing(&self, reply: &ReplyOpen, ino: u64, body: &std::fs::File) -> Option<Arc<BackingId>> {
        use std::os::unix::fs::MetadataExt;
        let identity = body.metadata().ok().map(|m| (m.dev(), m.ino()))?;
        let mut backings = self.backings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((held, of)) = backings.get(&ino)
            && let Some(held) = held.upgrade()
        {
            return (*of == identity).then_some(held);
        }
        match reply.open_backing(body) {
            Ok(backing) => {
                let backing = Arc::new(backing);
                backings.insert(ino, (Arc::downgrade(&backing), identity));
                Some(backing)
            }
            Err(err) => {
                eprintln!("dataset mount: passthrough refused, reading through the daemon: {err}");
                None
            }
        }
    }

    /// Adds a read to its open file's summary, and its process to the readers when it is not
    /// the opener (a descriptor inherited, passed or shared).
    fn count(&self, fh: u64, tid: u32, offset: u64, len: usize) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(file) = open.get_mut(&fh) else { return };
        file.summary.add(offset, len as u64);
        if file.last_reader != tid {
            file.last_reader = tid;
            file.summary.read_by(process_of(tid));
        }
    }

    fn attr(&self, ino: u64, tree: &Tree) -> Option<FileAttr> {
        let node = tree.get(ino)?;
        let (kind, perm, size, modified) = match &node.kind {
            Kind::Dir(_) => (FileType::Directory, 0o555, 0, UNIX_EPOCH),
            Kind::File(f) => {
                (FileType::RegularFile, 0o444, f.size, UNIX_EPOCH + Duration::from_millis(u64::try_from(f.modified_ms).unwrap_or(0)))
            }
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: modified,
            mtime: modified,
            ctime: modified,
            crtime: modified,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.owner,
            gid: self.owner,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        })
    }

    /// Records a refused change (what was named, by which process) and answers `EROFS`.
    fn refuse_change(&self, req: &Request, ino: u64, name: Option<&OsStr>, operation: &str) -> Errno {
        let tree = self.tree();
        let (dataset, key) = match tree.get(ino).map(|n| &n.kind) {
            Some(Kind::File(f)) => (Some(f.dataset.clone()), Some(f.key.clone())),
            _ => (dataset_of(&tree, ino), name.map(|n| n.to_string_lossy().into_owned())),
        };
        let process = process_of(req.pid());
        if let Err(err) = self.link.ask(Ask::Refused { dataset, key, operation: operation.to_owned(), process }) {
            eprintln!("dataset mount: a refused {operation} was not recorded: {err}");
        }
        Errno::EROFS
    }
}

/// The dataset a node is in (the name of its top directory), if any.
fn dataset_of(tree: &Tree, mut ino: u64) -> Option<String> {
    loop {
        let node = tree.get(ino)?;
        if node.parent == ROOT && ino != ROOT {
            let Kind::Dir(children) = &tree.get(ROOT)?.kind else { return None };
            return children.iter().find(|(_, i)| **i == ino).map(|(name, _)| name.to_string_lossy().into_owned());
        }
        if ino == ROOT {
            return None;
        }
        ino = node.parent;
    }
}

/// The process a request came from: FUSE gives the calling thread's id in the daemon's pid
/// namespace (the host's), so the thread group, the pid inside the instance and the
/// executable are read now — a short-lived process is gone by the time its file is released.
pub(super) fn process_of(tid: u32) -> Process {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_owned();
    let host_pid = field("Tgid:").parse().unwrap_or(tid as i32);
    // `NStgid:` lists the process's id in each pid namespace from the host's inwards: the last
    // is the instance's (`NSpid:` would be the thread's).
    let pid = field("NStgid:").split_whitespace().last().and_then(|p| p.parse().ok());
    let executable = std::fs::read_link(format!("/proc/{host_pid}/exe")).ok().map(|exe| inside_path(host_pid, &exe));
    Process { host_pid, pid, executable }
}

/// An executable's path as the instance sees it: the host shows a path under the instance's
/// root when it can reach it, the path inside otherwise.
fn inside_path(pid: i32, exe: &Path) -> String {
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
    match exe.strip_prefix(&root) {
        Ok(rest) if root != Path::new("/") && !root.as_os_str().is_empty() => format!("/{}", rest.display()),
        _ => exe.display().to_string(),
    }
}

fn errno(code: i32) -> Errno {
    Errno::from_i32(code)
}

impl Filesystem for DatasetFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Reads of up to 1 MiB in one request (the kernel's max_pages follows max_write).
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // Passthrough (Linux 6.9 on), for datasets whose reads are not counted.
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() && config.set_max_stack_depth(1).is_ok() {
            self.passthrough = true;
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if !self.allowed(req) {
            return reply.error(Errno::EACCES);
        }
        let tree = self.tree();
        match tree.lookup(parent.0, name).and_then(|ino| self.attr(ino, &tree)) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if !self.allowed(req) {
            return reply.error(Errno::EACCES);
        }
        match self.attr(ino.0, &self.tree()) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if !self.allowed(req) || self.tree().get(ino.0).is_none() {
            return reply.error(Errno::EACCES);
        }
        if mask.contains(AccessFlags::W_OK) { reply.error(Errno::EROFS) } else { reply.ok() }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree().get(ino.0).map(|n| &n.kind) {
            _ if !self.allowed(req) => reply.error(Errno::EACCES),
            Some(Kind::Dir(_)) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(Kind::File(_)) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if !self.allowed(req) {
            return reply.error(Errno::EACCES);
        }
        let tree = self.tree();
        let Some(node) = tree.get(ino.0) else { return reply.error(Errno::ENOENT) };
        let Kind::Dir(children) = &node.kind else { return reply.error(Errno::ENOTDIR) };
        let dots = [(ino.0, FileType::Directory, OsStr::new(".")), (node.parent, FileType::Directory, OsStr::new(".."))];
        let entries = dots.into_iter().chain(children.iter().map(|(name, child)| {
            let kind =
                if matches!(tree.get(*child).map(|n| &n.kind), Some(Kind::Dir(_))) { FileType::Directory } else { FileType::RegularFile };
            (*child, kind, name.as_os_str())
        }));
        for (i, (child, kind, name)) in entries.enumerate().skip(usize::try_from(offset).unwrap_or(usize::MAX)) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if !self.allowed(req) {
            return reply.error(Errno::EACCES);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return reply.error(self.refuse_change(req, ino.0, None, "open for writing"));
        }
        let tree = self.tree();
        let Some(Kind::File(file)) = tree.get(ino.0).map(|n| &n.kind) else { return reply.error(Errno::EISDIR) };
        let process = process_of(req.pid());
        let answer = self.link.ask(Ask::Open { dataset: file.dataset.clone(), key: file.key.clone(), process });
        match answer {
            Ok(Frame { message: Answer::Opened { handle, size }, fd, .. }) => {
                let fh = self.next.fetch_add(1, Ordering::Relaxed);
                let body = fd.map(|fd| Arc::new(std::fs::File::from(fd)));
                let backing = match &body {
                    Some(body) if file.passthrough && self.passthrough => self.backing(&reply, ino.0, body),
                    _ => None,
                };
                let summary = ReadSummary { passthrough: backing.is_some(), ..ReadSummary::default() };
                let opened = OpenFile { last_reader: req.pid(), body, _backing: backing.clone(), handle, size, summary };
                self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(fh, opened);
                match backing {
                    Some(backing) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing),
                    // Every read comes here, so that the summary counts every byte read.
                    None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
                }
            }
            Ok(Frame { message: Answer::Refused { errno: code }, .. }) => reply.error(errno(code)),
            Ok(_) => reply.error(Errno::EIO),
            Err(err) => {
                eprintln!("dataset mount: an open could not be asked: {err}");
                reply.error(Errno::EIO)
            }
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (body, handle, file_size) = {
            let open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(file) = open.get(&fh.0) else { return reply.error(Errno::EBADF) };
            (file.body.clone(), file.handle, file.size)
        };
        let wanted = u64::from(size).min(file_size.saturating_sub(offset)) as usize;
        let data = match body {
            Some(body) => return reply_read(&body, offset, wanted, |got| self.count(fh.0, req.pid(), offset, got), reply),
            None if wanted == 0 => Ok(Vec::new()),
            None => match self.link.ask(Ask::Read { handle, offset, size: wanted as u32 }) {
                Ok(Frame { message: Answer::Data, data, .. }) => Ok(data),
                Ok(Frame { message: Answer::Refused { errno: code }, .. }) => Err(std::io::Error::from_raw_os_error(code)),
                Ok(_) => Err(std::io::Error::other("an unexpected answer to a read")),
                Err(err) => Err(err),
            },
        };
        match data {
            Ok(data) => {
                self.count(fh.0, req.pid(), offset, data.len());
                reply.data(&data);
            }
            Err(err) => reply.error(err.raw_os_error().map_or(Errno::EIO, errno)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
        let Some(file) = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&fh.0) else { return };
        if let Err(err) = self.link.ask(Ask::Release { handle: file.handle, summary: file.summary }) {
            eprintln!("dataset mount: a summary was not recorded: {err}");
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let tree = self.tree();
        reply.statfs(0, 0, 0, tree.len() as u64, 0, 1 << 20, 255, 1 << 20);
    }

    // Every change: refused with EROFS, and recorded.

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(self.refuse_change(req, ino.0, None, "write"));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let operation = match (mode, uid.or(gid), size) {
            (Some(_), _, _) => "chmod",
            (_, Some(_), _) => "chown",
            (_, _, Some(_)) => "truncate",
            _ => "set times",
        };
        reply.error(self.refuse_change(req, ino.0, None, operation));
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, _rdev: u32, reply: ReplyEntry) {
        reply.error(self.refuse_change(req, parent.0, Some(name), "mknod"));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        reply.error(self.refuse_change(req, parent.0, Some(name), "mkdir"));
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let target = self.tree().lookup(parent.0, name);
        reply.error(match target {
            Some(ino) => self.refuse_change(req, ino, None, "unlink"),
            None => self.refuse_change(req, parent.0, Some(name), "unlink"),
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse_change(req, parent.0, Some(name), "rmdir"));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, _target: &Path, reply: ReplyEntry) {
        reply.error(self.refuse_change(req, parent.0, Some(link_name), "symlink"));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse_change(req, parent.0, Some(name), "rename"));
    }

    fn link(&self, req: &Request, ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(self.refuse_change(req, ino.0, None, "link"));
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, _flags: i32, reply: ReplyCreate) {
        reply.error(self.refuse_change(req, parent.0, Some(name), "create"));
    }

    fn setxattr(&self, req: &Request, ino: INodeNo, _name: &OsStr, _value: &[u8], _flags: i32, _position: u32, reply: ReplyEmpty) {
        reply.error(self.refuse_change(req, ino.0, None, "setxattr"));
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse_change(req, ino.0, None, "removexattr"));
    }
}

thread_local! {
    /// Each FUSE thread's read buffer, grown to the largest read and kept.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Answers a read of up to `len` bytes at `offset` from a local body (fewer only at its end),
/// counting what was read before the data goes out.
fn reply_read(file: &std::fs::File, offset: u64, len: usize, count: impl FnOnce(usize), reply: ReplyData) {
    BUFFER.with_borrow_mut(|buffer| {
        if buffer.len() < len {
            buffer.resize(len, 0);
        }
        let mut got = 0;
        while got < len {
            match file.read_at(&mut buffer[got..len], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return reply.error(err.raw_os_error().map_or(Errno::EIO, errno)),
            }
        }
        count(got);
        reply.data(&buffer[..got]);
    });
}
