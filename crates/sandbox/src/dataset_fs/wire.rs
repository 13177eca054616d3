//! The dataset mount's one socket between the control plane and its daemon: frames of a JSON
//! message, raw bytes (a read's data) and at most one file descriptor (an opened object's
//! body), over a Unix stream socket pair made close-on-exec.
//!
//! A frame is `u32 BE json length | u32 BE data length | json | data`, sent in one `sendmsg`
//! with the descriptor, if any, attached to its first byte; the receiver takes the header with
//! `recvmsg` (so the descriptor comes with it) and the rest with plain reads.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

/// The largest JSON message and data either side accepts (a listing of 100,000 keys fits).
pub const MAX_JSON: usize = 64 << 20;
const MAX_DATA: usize = 8 << 20;

/// What the daemon sends: first whether it mounted, then asks, each answered by one [`Answer`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Up {
    Mounted,
    MountFailed(String),
    /// An ask and its id, which its answer carries back.
    Ask {
        id: u64,
        ask: Ask,
    },
}

/// What the daemon asks of the control plane.
#[derive(Debug, Serialize, Deserialize)]
pub enum Ask {
    /// A process opens a file for reading: decide it, record it, give its body.
    Open { dataset: String, key: String, process: Process },
    /// A read of an object whose body is not a local file.
    Read { handle: u64, offset: u64, size: u32 },
    /// The last descriptor of an open file closed: what was read through it.
    Release { handle: u64, summary: ReadSummary },
    /// A change was tried (a write, a create, an unlink, an attribute change): it is refused.
    Refused { dataset: Option<String>, key: Option<String>, operation: String, process: Process },
}

/// What the control plane sends: answers, in the order of the asks, and the datasets to show.
#[derive(Debug, Serialize, Deserialize)]
pub enum Down {
    /// The answer to the ask of this id.
    Answer { id: u64, answer: Answer },
    /// The datasets the instance's user may list, whole: they replace what was shown.
    Datasets(Vec<Dataset>),
}

/// The control plane's answer to one [`Ask`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    /// The open was allowed and recorded. The body comes as the frame's descriptor, or, when
    /// there is none, through [`Ask::Read`] with this handle.
    Opened {
        handle: u64,
        size: u64,
    },
    /// Bytes of a read follow as the frame's data.
    Data,
    /// Refused or failed, with the error number the process gets.
    Refused {
        errno: i32,
    },
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    pub name: String,
    pub files: Vec<DatasetFile>,
    /// Reads of a local body go straight to it in the kernel (FUSE passthrough), uncounted.
    #[serde(default)]
    pub passthrough: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetFile {
    /// The object's key.
    pub key: String,
    /// Where it appears under the dataset's directory: plain components only.
    pub path: String,
    pub size: u64,
    pub modified_ms: i64,
}

/// The process behind a file operation, as the host sees it, resolved when it happened.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Process {
    /// The thread group id on the host.
    pub host_pid: i32,
    /// Its pid inside the instance's pid namespace.
    pub pid: Option<i32>,
    /// Its executable, as a path inside the instance.
    pub executable: Option<String>,
}

/// What was read through one open file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReadSummary {
    pub bytes: u64,
    /// Byte ranges read, `[start, end)`, merged and in order, up to [`MAX_RANGES`].
    pub ranges: Vec<(u64, u64)>,
    /// More than [`MAX_RANGES`] disjoint ranges were read: `ranges` is cleared.
    pub sparse: bool,
    /// The file was read through passthrough: the daemon saw the open, not the reads.
    #[serde(default)]
    pub passthrough: bool,
    /// Processes other than the opener that read through it (a descriptor inherited, passed
    /// or shared), up to [`MAX_READERS`].
    #[serde(default)]
    pub readers: Vec<Process>,
}

/// The most readers a summary names.
pub const MAX_READERS: usize = 8;

/// Beyond this many disjoint ranges a summary says only "sparse".
pub const MAX_RANGES: usize = 64;

impl ReadSummary {
    /// Names a process that read, once.
    pub fn read_by(&mut self, process: Process) {
        if self.readers.len() < MAX_READERS && !self.readers.iter().any(|p| p.host_pid == process.host_pid) {
            self.readers.push(process);
        }
    }

    pub fn add(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.bytes += len;
        if self.sparse {
            return;
        }
        let end = start + len;
        // Merge with every range it touches, keeping the list sorted.
        let at = self.ranges.partition_point(|r| r.1 < start);
        let mut merged = (start, end);
        while at < self.ranges.len() && self.ranges[at].0 <= merged.1 {
            let r = self.ranges.remove(at);
            merged = (merged.0.min(r.0), merged.1.max(r.1));
        }
        self.ranges.insert(at, merged);
        if self.ranges.len() > MAX_RANGES {
            self.ranges.clear();
            self.sparse = true;
        }
    }
}

/// One end of the socket pair. Writes are whole frames under a lock; one thread reads.
pub struct Channel {
    socket: UnixStream,
    writing: Mutex<()>,
}

/// A received frame.
pub struct Frame<T> {
    pub message: T,
    pub data: Vec<u8>,
    pub fd: Option<OwnedFd>,
}

impl Channel {
    /// A connected pair, both ends close-on-exec: the control plane's end and the daemon's
    /// (which the spawn places at a fixed descriptor).
    pub fn pair() -> std::io::Result<(Channel, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        Ok((Channel::new(ours), theirs))
    }

    pub fn new(socket: UnixStream) -> Channel {
        Channel { socket, writing: Mutex::new(()) }
    }

    pub fn send<T: Serialize>(&self, message: &T, data: &[u8], fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
        let json = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&(json.len() as u32).to_be_bytes());
        header[4..].copy_from_slice(&(data.len() as u32).to_be_bytes());
        let _writing = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let raw = fd.map(|fd| [fd.as_raw_fd()]);
        let control: Vec<ControlMessage<'_>> = raw.iter().map(|fds| ControlMessage::ScmRights(fds)).collect();
        let parts = [IoSlice::new(&header), IoSlice::new(&json), IoSlice::new(data)];
        let total = header.len() + json.len() + data.len();
        let sent = sendmsg::<()>(self.socket.as_raw_fd(), &parts, &control, MsgFlags::MSG_NOSIGNAL, None)?;
        // The descriptor went with the first byte; what the socket did not take goes plainly.
        if sent < total {
            let mut rest = Vec::with_capacity(total - sent);
            for part in [&header[..], &json, data] {
                rest.extend_from_slice(part);
            }
            (&self.socket).write_all(&rest[sent..])?;
        }
        Ok(())
    }

    /// The next frame; `None` when the other end has closed.
    pub fn recv<T: for<'de> Deserialize<'de>>(&self) -> std::io::Result<Option<Frame<T>>> {
        let mut header = [0u8; 8];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let (got, fd) = {
            let mut parts = [IoSliceMut::new(&mut header)];
            let message = recvmsg::<()>(self.socket.as_raw_fd(), &mut parts, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
            let mut fd = None;
            for control in message.cmsgs()? {
                if let ControlMessageOwned::ScmRights(fds) = control {
                    for raw in fds {
                        // SAFETY: the kernel just installed `raw` in this process for this
                        // message; nothing else owns it.
                        #[allow(unsafe_code, reason = "a descriptor received with SCM_RIGHTS")]
                        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                        fd.get_or_insert(owned);
                    }
                }
            }
            (message.bytes, fd)
        };
        if got == 0 {
            return Ok(None);
        }
        (&self.socket).read_exact(&mut header[got..])?;
        let json_len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let data_len = u32::from_be_bytes(header[4..].try_into().expect("4 bytes")) as usize;
        if json_len > MAX_JSON || data_len > MAX_DATA {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "a frame larger than the protocol allows"));
        }
        let mut json = vec![0u8; json_len];
        (&self.socket).read_exact(&mut json)?;
        let mut data = vec![0u8; data_len];
        (&self.socket).read_exact(&mut data)?;
        let message = serde_json::from_slice(&json).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(Some(Frame { message, data, fd }))
    }

    /// Ends both directions: the reader on the other side sees the end at once.
    pub fn shut_down(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn ranges_merge_in_order_and_turn_sparse_past_the_limit() {
        let mut summary = ReadSummary::default();
        summary.add(100, 50);
        summary.add(0, 10);
        summary.add(10, 90);
        assert_eq!(summary.ranges, vec![(0, 150)]);
        assert_eq!(summary.bytes, 150);
        summary.add(1000, 1);
        summary.add(500, 1);
        assert_eq!(summary.ranges, vec![(0, 150), (500, 501), (1000, 1001)]);
        for i in 0..MAX_RANGES as u64 {
            summary.add(10_000 + i * 10, 1);
        }
        assert!(summary.sparse && summary.ranges.is_empty());
        assert_eq!(summary.bytes, 150 + 2 + MAX_RANGES as u64);
    }

    #[test]
    fn frames_carry_a_message_data_and_a_descriptor() {
        let (left, right) = Channel::pair().expect("pair");
        let right = Channel::new(right);
        let file = tempfile::tempfile().expect("file");
        left.send(&Answer::Opened { handle: 7, size: 3 }, b"abc", Some(file.as_fd())).expect("send");
        left.send(&Answer::Done, &[], None).expect("send");
        let frame: Frame<Answer> = right.recv().expect("recv").expect("a frame");
        assert!(matches!(frame.message, Answer::Opened { handle: 7, size: 3 }));
        assert_eq!(frame.data, b"abc");
        assert!(frame.fd.is_some());
        let frame: Frame<Answer> = right.recv().expect("recv").expect("a frame");
        assert!(matches!(frame.message, Answer::Done) && frame.fd.is_none());
        drop(left);
        assert!(right.recv::<Answer>().expect("recv").is_none());
    }
}
