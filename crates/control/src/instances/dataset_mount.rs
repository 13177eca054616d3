//! The control plane's side of an instance's dataset mount (`sandbox::dataset_fs`): the daemon
//! is started before the instance (its `/data` binds the mount), shows nothing until a session
//! is given the instance, and asks here for every open, read of a remote body, summary and
//! refused change. Each becomes a pipeline call as the instance, for its user
//! (`Credentials::DatasetMount`), so the policies decide each open and every event is in the
//! trail before the daemon is answered.
//!
//! Bodies that are local files (the embedded default) are handed to the daemon as a
//! descriptor; the daemon reads them itself. Bodies in an S3 bucket are read here in 1 MiB
//! pieces through one bounded cache for the whole host ([`CACHE_BYTES`]).
//!
//! One thread per instance serves the daemon's socket. When the socket ends without a stop,
//! the daemon died: its mount now fails every access (`ENOTCONN`), and a
//! `DatasetAuditUnavailable` record says so.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sandbox::dataset_fs::DatasetDaemon;
use sandbox::dataset_fs::wire::{Answer, Ask, Dataset, Down, Frame, Process, ReadSummary, Up};
use serde_json::{Value, json};

use crate::core::caller::Credentials;
use crate::core::error::ActionError;
use crate::core::pipeline::{Pipeline, Request};
use crate::core::platform::{Platform, ServiceEvent};

/// The remote bodies' cache, for the whole host, and the piece it holds them in.
const CACHE_BYTES: usize = 256 << 20;
const PIECE: u64 = 1 << 20;

/// One instance's mount, shared by its serving thread and the instance's live parts.
pub(crate) struct Mounted {
    daemon: DatasetDaemon,
    instance_id: String,
    /// The instance's current credential (it rotates while the instance runs).
    credential: Mutex<String>,
    private_address: String,
    /// The session the instance serves, once it is given one.
    session: Mutex<Option<String>>,
    open: Mutex<HashMap<u64, OpenObject>>,
    next: AtomicU64,
}

struct OpenObject {
    dataset: String,
    bucket: String,
    key: String,
    blob: String,
    size: u64,
    opened_by: String,
}

/// Starts the daemon on `mountpoint` and the thread that serves it; returns once mounted.
pub(crate) async fn start(
    pipeline: &Pipeline,
    instance_id: &str,
    credential: &str,
    private_address: &str,
    mountpoint: &Path,
    ids: sandbox::ids::IdRange,
    log: &Path,
) -> Result<Arc<Mounted>, ActionError> {
    let exe = std::env::current_exe().map_err(ActionError::internal)?;
    let (id, mountpoint, log) = (instance_id.to_owned(), mountpoint.to_owned(), log.to_owned());
    let daemon = tokio::task::spawn_blocking(move || DatasetDaemon::spawn(&exe, &id, &mountpoint, ids.workspace(), ids.root(), &log))
        .await
        .map_err(ActionError::internal)?
        .map_err(|e| ActionError::internal(format_args!("the dataset mount of {instance_id} did not start: {e}")))?;
    let mounted = Arc::new(Mounted {
        daemon,
        instance_id: instance_id.to_owned(),
        credential: Mutex::new(credential.to_owned()),
        private_address: private_address.to_owned(),
        session: Mutex::new(None),
        open: Mutex::new(HashMap::new()),
        next: AtomicU64::new(1),
    });
    let (serving, pipeline, runtime) = (mounted.clone(), pipeline.clone(), tokio::runtime::Handle::current());
    std::thread::Builder::new()
        .name(format!("datasets-{instance_id}"))
        .spawn(move || serve(&serving, &pipeline, &runtime))
        .map_err(ActionError::internal)?;
    Ok(mounted)
}

impl Mounted {
    /// Shows `datasets` (the user's, as listed for them) for the session `session`.
    pub(crate) fn show(&self, session: Option<String>, datasets: Vec<Dataset>) -> Result<(), String> {
        *self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = session;
        let push = Down::Datasets(datasets);
        let size = serde_json::to_vec(&push).map_or(usize::MAX, |v| v.len());
        if size > sandbox::dataset_fs::wire::MAX_JSON {
            return Err(format!("the listing is {size} bytes, more than a mount takes: narrow the dataset's prefix"));
        }
        self.daemon.channel.send(&push, &[], None).map_err(|e| format!("the dataset mount is gone: {e}"))
    }

    /// Detaches the mount and ends the daemon (the instance is ending).
    pub(crate) fn stop(&self) {
        self.daemon.stop();
    }

    pub(crate) fn credentials(&self) -> Credentials {
        let token = self.credential.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        Credentials::DatasetMount { token, source_ip: self.private_address.clone() }
    }

    /// The instance's credential was rotated: the mount acts with the new one.
    pub(crate) fn rotated(&self, credential: &str) {
        *self.credential.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = credential.to_owned();
    }

    pub(crate) fn private_address(&self) -> &str {
        &self.private_address
    }

    fn session(&self) -> Option<String> {
        self.session.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn call(&self, pipeline: &Pipeline, action: &str, input: Value) -> (String, Result<Value, ActionError>) {
        let request = Request {
            credentials: self.credentials(),
            source_ip: self.private_address.clone(),
            user_agent: "datasandbox-dataset-mount".into(),
            action: action.to_owned(),
            body: Ok(Bytes::from(input.to_string())),
        };
        let response = pipeline.call(request).await;
        (response.request_id, response.result)
    }
}

/// Stops a mount when dropped, unless disarmed: a launch or a teardown that returns early
/// (a `?`) must not leave a mount serving without its instance.
pub(crate) struct StopOnDrop(pub Option<Arc<Mounted>>);

impl StopOnDrop {
    /// The instance took the mount over: it stops the mount when it ends.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(mounted) = &self.0 {
            mounted.stop();
        }
    }
}

/// Answers the daemon's asks until its socket ends.
fn serve(mounted: &Mounted, pipeline: &Pipeline, runtime: &tokio::runtime::Handle) {
    loop {
        let (id, ask) = match mounted.daemon.channel.recv::<Up>() {
            Ok(Some(Frame { message: Up::Ask { id, ask }, .. })) => (id, ask),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        };
        let (answer, data, file) = runtime.block_on(answer(mounted, pipeline, ask));
        use std::os::fd::AsFd;
        if mounted.daemon.channel.send(&Down::Answer { id, answer }, &data, file.as_ref().map(|f| f.as_fd())).is_err() {
            break;
        }
    }
    if mounted.daemon.stopping() {
        return;
    }
    let status = mounted.daemon.reap();
    tracing::error!(instance = mounted.instance_id, status, "the dataset mount's daemon ended: its files can no longer be read");
    let event = ServiceEvent {
        source: "storage",
        name: "DatasetAuditUnavailable",
        parameters: json!({
            "InstanceId": mounted.instance_id,
            "SessionId": mounted.session(),
            "Reason": format!("the dataset mount's daemon ended ({status}); every access to /data now fails"),
        }),
        management_event: false,
        ..ServiceEvent::default()
    };
    if let Err(err) = runtime.block_on(pipeline.record_service_event(event)) {
        tracing::error!(instance = mounted.instance_id, error = %err.message, "the dataset mount's end was not recorded");
    }
}

type Answered = (Answer, Vec<u8>, Option<std::fs::File>);

async fn answer(mounted: &Mounted, pipeline: &Pipeline, ask: Ask) -> Answered {
    let plane = &*pipeline.platform;
    match ask {
        Ask::Open { dataset, key, process } => open(mounted, pipeline, dataset, key, &process).await,
        Ask::Read { handle, offset, size } => {
            let blob =
                mounted.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&handle).map(|o| (o.blob.clone(), o.size));
            let Some((blob, object_size)) = blob else { return refused(libc_errno::EBADF) };
            let end = (offset + u64::from(size)).min(object_size);
            match read_cached(plane, &blob, object_size, offset..end).await {
                Ok(data) => (Answer::Data, data, None),
                Err(err) => {
                    tracing::warn!(instance = mounted.instance_id, error = %err, "a dataset read failed");
                    refused(libc_errno::EIO)
                }
            }
        }
        Ask::Release { handle, summary } => {
            let opened = mounted.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&handle);
            if let Some(opened) = opened {
                close(mounted, pipeline, opened, summary).await;
            }
            (Answer::Done, Vec::new(), None)
        }
        Ask::Refused { dataset, key, operation, process } => {
            let bucket =
                dataset.as_ref().and_then(|d| plane.current().datasets.iter().find(|s| &s.name == d).map(|s| s.bucket.to_string()));
            let input = json!({
                "Dataset": dataset, "Bucket": bucket, "Key": key, "Operation": operation,
                "InstanceId": mounted.instance_id, "SessionId": mounted.session(), "Process": process_input(&process),
            });
            let _ = mounted.call(pipeline, "storage:DatasetWriteRefused", input).await;
            refused(libc_errno::EROFS)
        }
    }
}

/// The errors the daemon passes on (Linux's numbers).
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EBADF: i32 = 9;
    pub const EACCES: i32 = 13;
    pub const EROFS: i32 = 30;
}

fn refused(errno: i32) -> Answered {
    (Answer::Refused { errno }, Vec::new(), None)
}

fn process_input(process: &Process) -> Value {
    json!({ "Executable": process.executable, "Pid": process.pid, "HostPid": process.host_pid })
}

async fn open(mounted: &Mounted, pipeline: &Pipeline, dataset: String, key: String, process: &Process) -> Answered {
    let plane = &*pipeline.platform;
    let Some(spec) = plane.current().datasets.iter().find(|d| d.name == dataset).cloned() else { return refused(libc_errno::ENOENT) };
    let input = json!({
        "Dataset": dataset, "Bucket": spec.bucket.as_str(), "Key": key,
        "InstanceId": mounted.instance_id, "SessionId": mounted.session(), "Process": process_input(process),
    });
    let (request_id, result) = mounted.call(pipeline, "storage:DatasetFileOpened", input).await;
    let object = match result {
        Ok(object) => object,
        Err(err) if err.status == 403 => return refused(libc_errno::EACCES),
        Err(err) if err.status == 404 => return refused(libc_errno::ENOENT),
        Err(_) => return refused(libc_errno::EIO),
    };
    let (Some(blob), Some(size)) = (object["Blob"].as_str(), object["Size"].as_u64()) else { return refused(libc_errno::EIO) };
    let file = match plane.blobs.local_file(blob).map(std::fs::File::open) {
        Some(Ok(file)) => Some(file),
        Some(Err(err)) => {
            tracing::warn!(instance = mounted.instance_id, error = %err, "a dataset file's body cannot be opened");
            return refused(libc_errno::EIO);
        }
        None => None,
    };
    let handle = mounted.next.fetch_add(1, Ordering::Relaxed);
    let opened = OpenObject { dataset, bucket: spec.bucket.to_string(), key, blob: blob.to_owned(), size, opened_by: request_id };
    mounted.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(handle, opened);
    (Answer::Opened { handle, size }, Vec::new(), file)
}

async fn close(mounted: &Mounted, pipeline: &Pipeline, opened: OpenObject, summary: ReadSummary) {
    let input = json!({
        "Dataset": opened.dataset, "Bucket": opened.bucket, "Key": opened.key,
        "InstanceId": mounted.instance_id, "SessionId": mounted.session(), "OpenedBy": opened.opened_by,
        "Granularity": if summary.passthrough { "open" } else { "ranges" },
        "ReadBy": summary.readers.iter().map(process_input).collect::<Vec<_>>(),
        "BytesRead": (!summary.passthrough).then_some(summary.bytes), "Ranges": summary.ranges, "Sparse": summary.sparse,
    });
    let (_, result) = mounted.call(pipeline, "storage:DatasetFileClosed", input).await;
    if let Err(err) = result {
        tracing::warn!(instance = mounted.instance_id, error = %err.message, "a dataset file's summary was not recorded");
    }
}

/// Pieces of remote bodies by (blob, index), the order they came in, and the bytes held.
#[derive(Default)]
struct Pieces {
    pieces: HashMap<(String, u64), Bytes>,
    order: VecDeque<(String, u64)>,
    held: usize,
}

/// The host's cache of remote pieces, within [`CACHE_BYTES`] (the oldest go first).
static CACHE: std::sync::LazyLock<Mutex<Pieces>> = std::sync::LazyLock::new(Default::default);

/// Reads `range` of a remote blob of `size` bytes through the cache, a piece at a time.
async fn read_cached(plane: &Platform, blob: &str, size: u64, range: std::ops::Range<u64>) -> Result<Vec<u8>, object_store::Error> {
    let mut data = Vec::with_capacity(usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(0));
    let mut at = range.start;
    while at < range.end {
        let index = at / PIECE;
        let cached = CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pieces.get(&(blob.to_owned(), index)).cloned();
        let piece = match cached {
            Some(piece) => piece,
            None => {
                let piece = plane.blobs.get(blob, Some(index * PIECE..((index + 1) * PIECE).min(size))).await?;
                let mut cache = CACHE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let Pieces { pieces, order, held } = &mut *cache;
                if pieces.insert((blob.to_owned(), index), piece.clone()).is_none() {
                    order.push_back((blob.to_owned(), index));
                    *held += piece.len();
                }
                while *held > CACHE_BYTES {
                    let Some(oldest) = order.pop_front() else { break };
                    *held -= pieces.remove(&oldest).map_or(0, |p| p.len());
                }
                piece
            }
        };
        let from = usize::try_from(at - index * PIECE).unwrap_or(usize::MAX);
        let to = usize::try_from((range.end - index * PIECE).min(piece.len() as u64)).unwrap_or(0);
        if from >= to {
            break;
        }
        data.extend_from_slice(&piece[from..to]);
        at = index * PIECE + to as u64;
    }
    Ok(data)
}
