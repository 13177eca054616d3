//! The trail writer. One thread owns the open log file: callers hand it records and wait for
//! the fsync that covers them (group commit). The same thread chains each record to the
//! previous one, signs a checkpoint every N records or T milliseconds, rotates log files by
//! size and age, and hands closed files to the sealer (compression and hourly digests).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::chain::hash_line;
use crate::error::{TrailError, io};
use crate::layout::{self, Kind, Layout};
use crate::record::Record;
use crate::reserve::{FreeSpace, Open, Reserved};
use crate::resume::{chain_position, last_checkpoint, write_public_key};
use crate::seal_job::{DigestRef, SealJob};
use crate::sealer;
use crate::signing::Signer;

mod handoff;
mod upkeep;

pub use handoff::Durable;
use handoff::{Cut, Handed, Message, Pending, Queued};

/// At most this many records share one fsync.
const MAX_BATCH: usize = 8192;

/// How often the writer looks whether the digest it asked for is written (see `upkeep`).
const DIGEST_POLL: Duration = Duration::from_millis(10);

/// The upkeep checks the reserve only `RECHECK` after a write (which checks it).
const RECHECK: Duration = Duration::from_millis(10);

/// How often the trail checkpoints, rotates and digests.
#[derive(Debug, Clone)]
pub struct TrailOptions {
    /// How long the writer may wait for more records before an fsync (0: never waits).
    pub max_batch_delay: Duration,
    /// A record written alongside its caller's work is written and made durable when its
    /// caller waits for it, when a record whose caller already waits comes, or this long after
    /// it came, whichever comes first.
    pub unsynced_at_most: Duration,
    pub checkpoint_records: u64,
    pub checkpoint_interval: Duration,
    pub rotate_bytes: u64,
    pub rotate_interval: Duration,
    /// Digests are written at multiples of this interval (an hour, as in CloudTrail).
    pub digest_interval: Duration,
    /// Room kept allocated ahead of the open log file (a sixteenth of it, at least 64 KiB,
    /// ahead of the checkpoint file): what the trail can still write once the disk is full.
    pub reserve_bytes: u64,
    /// A second directory, on another file system, that receives a copy of every checkpoint
    /// and digest, so that deleting the trail's tail shows (`validate` with a witness).
    pub witness: Option<PathBuf>,
    /// Where the trail's files are copied as objects (scale-out mode); `None`: the trail's
    /// directory is the bucket.
    pub bucket: Option<crate::bucket::TrailBucket>,
    /// How often the uploader copies what changed to the bucket.
    pub upload_interval: Duration,
}

impl Default for TrailOptions {
    fn default() -> TrailOptions {
        TrailOptions {
            max_batch_delay: Duration::ZERO,
            unsynced_at_most: Duration::from_millis(5),
            checkpoint_records: 1000,
            checkpoint_interval: Duration::from_millis(500),
            rotate_bytes: 32 * 1024 * 1024,
            rotate_interval: Duration::from_secs(300),
            digest_interval: Duration::from_secs(3600),
            reserve_bytes: 16 * 1024 * 1024,
            witness: None,
            bucket: None,
            upload_interval: Duration::from_secs(1),
        }
    }
}

/// A record as the index receives it: its sequence number and its exact line.
pub type IndexBatch = Vec<(u64, Vec<u8>)>;

/// A handle to the trail; cheap to clone.
#[derive(Clone)]
pub struct Trail {
    layout: Layout,
    sender: mpsc::Sender<Message>,
    handed: Handed,
    durable: Arc<std::sync::atomic::AtomicU64>,
    on_reserve: Arc<AtomicBool>,
    free_space: FreeSpace,
    /// Below this much free space the file system counts as full.
    full_below: u64,
    uploader: Option<Arc<crate::bucket::Uploader>>,
}

impl Trail {
    /// Opens the trail: recovers the chain position from the newest log file, seals files a
    /// previous run left open, and starts the writer and sealer threads.
    pub fn open(
        layout: Layout,
        signer: Signer,
        options: TrailOptions,
        index: Option<tokio::sync::mpsc::UnboundedSender<IndexBatch>>,
    ) -> Result<Trail, TrailError> {
        let signer = Arc::new(signer);
        write_public_key(&layout, &signer)?;
        let logs = layout.files(Kind::Log, &[".jsonl", ".json.gz"]).map_err(io(&layout.root))?;
        let mut open_files = Vec::new();
        for path in &logs {
            if path.extension().is_some_and(|e| e == "jsonl") {
                if layout::sealed_name(path).exists() {
                    // Sealed before a crash that came before the delete.
                    std::fs::remove_file(path).map_err(io(path))?;
                } else {
                    open_files.push(path.clone());
                }
            }
        }
        let (sequence, last_hash) = chain_position(&layout)?;
        let (checkpoint_signature, checkpointed) = last_checkpoint(&layout)?;
        let last_digest = Arc::new(Mutex::new(None::<DigestRef>));
        let free_space = FreeSpace::open(&layout.root).map_err(io(&layout.root))?;
        let sealer = sealer::start(layout.clone(), signer.clone(), last_digest.clone(), options.witness.clone())?;
        for path in open_files {
            let _ = sealer.send(SealJob::Seal(path));
        }
        let now = Utc::now();
        let (sender, receiver) = mpsc::channel::<Message>();
        let handed = Handed::default();
        let durable = Arc::new(std::sync::atomic::AtomicU64::new(sequence));
        let on_reserve = Arc::new(AtomicBool::new(false));
        let full_below = options.reserve_bytes / 4;
        let uploader = match &options.bucket {
            Some(bucket) => Some(Arc::new(
                crate::bucket::Uploader::start(layout.clone(), bucket.clone(), options.upload_interval).map_err(io(&layout.root))?,
            )),
            None => None,
        };
        let mut state = WriterState {
            durable: durable.clone(),
            on_reserve: on_reserve.clone(),
            free_space: free_space.clone(),
            next_digest_at: next_boundary(now, options.digest_interval),
            digest_pending: None,
            layout: layout.clone(),
            signer,
            options,
            active: None,
            sequence,
            durable_hash: last_hash.clone(),
            last_hash,
            checkpointed,
            last_checkpoint_at: Instant::now(),
            checkpoint_signature,
            checkpoint_file: None,
            sealer,
            last_digest,
            index,
            last_write: Instant::now(),
            unsynced: Vec::new(),
            unindexed: Vec::new(),
            unsynced_since: None,
            handed: handed.clone(),
        };
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || state.run(&receiver)).map_err(io(&layout.root))?;
        Ok(Trail { layout, sender, handed, durable, on_reserve, free_space, full_below, uploader })
    }

    /// Whether the trail is on its reserve: its file system is full (or nearly: less than a
    /// quarter of the reserve is free besides it), or the reserve could not be topped up. The
    /// control plane then carries nothing out and records only refusals and ends. Asked at
    /// every call, so the first action after the disk fills is already refused.
    pub fn on_reserve(&self) -> bool {
        self.on_reserve.load(Ordering::Acquire) || self.free_space.nearly_full(self.full_below)
    }

    /// The sequence number of the newest durable record.
    pub fn last_sequence(&self) -> u64 {
        self.durable.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Appends one record and returns once it is durable.
    pub async fn append(&self, record: &Record) -> Result<(), TrailError> {
        self.send(record, false)?.answered().await
    }

    /// The same in two steps, for a caller that does other work while the record is written
    /// (the notebook proxy has Jupyter answer a read meanwhile, and holds the answer until the
    /// record is durable): the record is handed to the writer now, and [`Durable::wait`] returns
    /// once it is durable. The writer holds it, unwritten, until a caller waits (this one, or
    /// any whose record came later), or for a few milliseconds at most: under load one write
    /// and one fsync cover every record whose caller was still at work.
    pub fn append_alongside(&self, record: &Record) -> Result<Durable, TrailError> {
        self.send(record, true)
    }

    /// Hands a record to the writer: on its channel, or, `patient`, in the handed queue (only
    /// the first record there wakes the writer).
    fn send(&self, record: &Record, patient: bool) -> Result<Durable, TrailError> {
        let line = crate::bound::bounded_line(record);
        let (done, answer) = oneshot::channel();
        let pending = Pending { line, done };
        let sent = if patient {
            match self.handed.push(pending) {
                Queued::First => self.sender.send(Message::Handed).is_ok(),
                Queued::Behind => true,
                Queued::Closed => false,
            }
        } else {
            self.sender.send(Message::Append(pending)).is_ok()
        };
        if !sent {
            return Err(TrailError::Stopped);
        }
        Ok(Durable { answer, sender: self.sender.clone(), root: self.layout.root.clone() })
    }

    /// Seals the open log file and writes a digest now; returns when both are on disk.
    pub fn digest_now(&self) -> Result<(), TrailError> {
        let (done, wait) = std::sync::mpsc::channel();
        self.sender.send(Message::Digest(done)).map_err(|_| TrailError::Stopped)?;
        wait.recv().map_err(|_| TrailError::Stopped)
    }

    /// Runs `cut` on the writer's thread once every record is checkpointed, appends waiting till
    /// it returns (so it must be quick: hard links), with the files still appended to and the
    /// length written in each: what lies beyond (later records, the reserve) is not in the cut.
    pub fn hold(&self, cut: impl FnOnce(Result<Vec<(PathBuf, u64)>, String>) + Send + 'static) -> Result<(), TrailError> {
        let (done, wait) = std::sync::mpsc::channel();
        self.sender.send(Message::Hold(Box::new(cut), done)).map_err(|_| TrailError::Stopped)?;
        wait.recv().map_err(|_| TrailError::Stopped)
    }

    /// Checkpoints, seals, digests and stops the writer; later appends fail. With a bucket,
    /// then uploads what is left (for a few seconds at most: what is still not uploaded is
    /// the next start's to upload, since the files stay).
    pub fn close(&self) -> Result<(), TrailError> {
        let (done, wait) = std::sync::mpsc::channel();
        self.sender.send(Message::Close(done)).map_err(|_| TrailError::Stopped)?;
        wait.recv().map_err(|_| TrailError::Stopped)?;
        if let Err(err) = self.flush_uploads(Duration::from_secs(5)) {
            tracing::error!(error = %err, "the audit trail's last files are not all in its bucket; they are uploaded at the next start");
        }
        Ok(())
    }

    /// Copies to the bucket, now, every file of the trail it does not hold as it is, trying
    /// again for up to `patience`; nothing to do without a bucket.
    pub fn flush_uploads(&self, patience: Duration) -> Result<(), String> {
        match &self.uploader {
            Some(uploader) => uploader.flush(patience),
            None => Ok(()),
        }
    }
}

/// Tells each caller of a batch that could not be written why; the error, for the log.
fn answer_all(batch: Vec<Pending>, err: TrailError) -> TrailError {
    let message = err.to_string();
    for pending in batch {
        let _ = pending.done.send(Err(message.clone()));
    }
    err
}

/// The first multiple of `interval` (since the Unix epoch) after `now`.
fn next_boundary(now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let step = interval.as_millis().max(1) as i64;
    let next = (now.timestamp_millis() / step + 1) * step;
    DateTime::from_timestamp_millis(next).unwrap_or(now)
}

struct ActiveFile {
    log: Reserved,
    opened: Instant,
    /// How much of it is durable: a failed fsync cuts it back to this.
    durable_size: u64,
}

struct WriterState {
    durable: Arc<std::sync::atomic::AtomicU64>,
    on_reserve: Arc<AtomicBool>,
    free_space: FreeSpace,
    layout: Layout,
    signer: Arc<Signer>,
    options: TrailOptions,
    active: Option<ActiveFile>,
    sequence: u64,
    last_hash: String,
    checkpointed: u64,
    last_checkpoint_at: Instant,
    checkpoint_signature: String,
    checkpoint_file: Option<Reserved>,
    next_digest_at: DateTime<Utc>,
    /// Answered once the sealer has written the digest the writer asked for last.
    digest_pending: Option<mpsc::Receiver<()>>,
    sealer: mpsc::Sender<SealJob>,
    last_digest: Arc<Mutex<Option<DigestRef>>>,
    index: Option<tokio::sync::mpsc::UnboundedSender<IndexBatch>>,
    /// When the last batch was written.
    last_write: Instant,
    /// The hash of the newest durable record (the chain goes on from it after a failed fsync).
    durable_hash: String,
    /// The callers of the records written but not yet durable, what the index gets once they
    /// are, and when the first of them was written (or handed, see `handoff`).
    unsynced: Vec<oneshot::Sender<Result<(), String>>>,
    unindexed: IndexBatch,
    unsynced_since: Option<Instant>,
    /// Records written alongside their callers' work, waiting to be written.
    handed: Handed,
}

/// A writer that stops without finishing (it panicked) answers the records still handed:
/// their callers learn the trail stopped instead of waiting for ever, and later ones are refused.
impl Drop for WriterState {
    fn drop(&mut self) {
        self.handed.close();
        drop(self.handed.take());
    }
}

impl WriterState {
    fn run(&mut self, receiver: &mpsc::Receiver<Message>) {
        loop {
            let message = match receiver.recv_timeout(self.next_wake()) {
                Ok(message) => Some(message),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return;
                }
            };
            if let Some(message) = message
                && self.handle(message, receiver)
            {
                return;
            }
            self.log_errors(|s| s.maintain());
        }
    }

    /// Carries out one message (an append, with those queued behind it); true once the trail
    /// is closed.
    fn handle(&mut self, message: Message, receiver: &mpsc::Receiver<Message>) -> bool {
        match message {
            Message::Append(first) => {
                if let Some(next) = self.append_batch(first, receiver) {
                    return self.handle(next, receiver);
                }
            }
            // Written `unsynced_at_most` from now at the latest.
            Message::Handed => _ = self.unsynced_since.get_or_insert_with(Instant::now),
            Message::Sync => self.log_errors(WriterState::sync),
            Message::Digest(done) => {
                self.log_errors(|s| s.digest());
                let _ = done.send(());
            }
            Message::Close(done) => {
                self.finish();
                let _ = done.send(());
                return true;
            }
            Message::Hold(cut, done) => self.hold(cut, &done),
        }
        false
    }

    fn log_errors(&mut self, step: impl FnOnce(&mut WriterState) -> Result<(), TrailError>) {
        if let Err(err) = step(self) {
            tracing::error!(error = %err, "audit trail maintenance failed");
        }
    }

    fn next_wake(&self) -> Duration {
        let mut wake = Duration::from_secs(1);
        if self.sequence > self.checkpointed {
            wake = wake.min(self.options.checkpoint_interval.saturating_sub(self.last_checkpoint_at.elapsed()));
        }
        if let Some(since) = self.unsynced_since {
            wake = wake.min(self.options.unsynced_at_most.saturating_sub(since.elapsed()));
        }
        if self.digest_pending.is_some() {
            wake = wake.min(DIGEST_POLL);
        }
        let to_digest = (self.next_digest_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        wake.min(to_digest).max(Duration::from_millis(1))
    }

    /// Writes the records queued now, and makes them durable; the message that ended the
    /// batch, if it was none of an append, a sync or a record handed.
    fn append_batch(&mut self, first: Pending, receiver: &mpsc::Receiver<Message>) -> Option<Message> {
        let mut batch = vec![first];
        let mut next_message = None;
        let (delay, started) = (self.options.max_batch_delay, Instant::now());
        while batch.len() < MAX_BATCH {
            let next = match receiver.try_recv() {
                Ok(message) => message,
                Err(mpsc::TryRecvError::Empty) if !delay.is_zero() => {
                    match receiver.recv_timeout((started + delay).saturating_duration_since(Instant::now())) {
                        Ok(message) => message,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            match next {
                Message::Append(pending) => batch.push(pending),
                // The batch's fsync covers what a caller waits for, and what was handed.
                Message::Sync | Message::Handed => {}
                other => {
                    next_message = Some(other);
                    break;
                }
            }
        }
        // Durable at once: their callers wait. The records handed alongside their callers'
        // work go with them, first.
        self.write_handed();
        if self.write(batch) {
            self.log_errors(WriterState::sync);
        }
        next_message
    }

    /// Writes the records handed alongside their callers' work, if any, in writes of their
    /// own: no write holds more than `MAX_BATCH`, and a record written on the reserve is never
    /// refused for the size of those before it.
    fn write_handed(&mut self) {
        let mut handed = self.handed.take();
        while !handed.is_empty() {
            let rest = handed.split_off(handed.len().min(MAX_BATCH));
            self.write(handed);
            handed = rest;
        }
    }

    /// Writes a batch (see `write_batch`); false if it could not be, its callers told why.
    fn write(&mut self, batch: Vec<Pending>) -> bool {
        match self.write_batch(batch) {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error = %err, "audit write failed; actions are refused until it recovers");
                // A batch the reserve could not hold left nothing behind: the file and what is
                // left of its reserve stay. Any other failure may have left half a line: a new
                // file, once what was written before it is durable.
                let refused_whole = matches!(&err, TrailError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull);
                // Only what was written before: records handed meanwhile go to the new file.
                self.log_errors(WriterState::sync_written);
                if !refused_whole {
                    self.active = None;
                }
                false
            }
        }
    }

    /// A new log file for the next record, with its reserve allocated; the second value
    /// says whether the whole reserve could be had.
    fn open_log(&self) -> Result<(ActiveFile, bool), TrailError> {
        let path = self.layout.log_file(&Utc::now(), self.sequence + 1);
        layout::create_parent(&path).map_err(io(&path))?;
        // The file system the new file is on is the one to ask from now on.
        self.free_space.follow(&self.layout.root);
        let (log, whole) = Reserved::open(&path, self.options.reserve_bytes, Open::New).map_err(io(&path))?;
        layout::sync_dir(&path).map_err(io(&path))?;
        Ok((ActiveFile { durable_size: log.size, log, opened: Instant::now() }, whole))
    }

    /// Tops up the reserves and says whether the trail is on its reserve.
    fn check_reserve(&mut self) {
        let log = self.active.as_mut().is_none_or(|a| a.log.top_up());
        let checkpoints = self.checkpoint_file.as_mut().is_none_or(Reserved::top_up);
        let full = self.free_space.nearly_full(self.options.reserve_bytes / 4);
        let on_reserve = full || !(log && checkpoints);
        if self.on_reserve.swap(on_reserve, Ordering::AcqRel) != on_reserve {
            if on_reserve {
                tracing::error!(
                    "the audit trail's file system is full: the trail writes on its reserve and every action is refused until space is freed"
                );
            } else {
                tracing::warn!("the audit trail has its whole reserve again: actions are carried out again");
            }
        }
    }

    /// Writes a batch, chained, without making it durable (see `sync`); a batch that could
    /// not be written is answered with why.
    fn write_batch(&mut self, batch: Vec<Pending>) -> Result<(), TrailError> {
        if self.active.is_none() {
            // The first file of a run takes what it can get: without it nothing can be written.
            match self.open_log() {
                Ok((active, _)) => self.active = Some(active),
                Err(err) => return Err(answer_all(batch, err)),
            }
        }
        let mut buffer = Vec::with_capacity(batch.iter().map(|p| p.line.len() + 110).sum());
        let mut sequence = self.sequence;
        let mut last_hash = self.last_hash.clone();
        let mut indexed = Vec::with_capacity(if self.index.is_some() { batch.len() } else { 0 });
        for pending in &batch {
            sequence += 1;
            let start = buffer.len();
            write!(buffer, "{{\"sequenceNumber\":{sequence},\"previousRecordHash\":\"{last_hash}\",")
                .expect("writing to a Vec cannot fail");
            buffer.extend_from_slice(&pending.line[1..]);
            last_hash = hash_line(&buffer[start..]);
            if self.index.is_some() {
                indexed.push((sequence, buffer[start..].to_vec()));
            }
            buffer.push(b'\n');
        }
        let active = self.active.as_mut().expect("opened above");
        if let Err(err) = active.log.write(&buffer) {
            return Err(answer_all(batch, io(&active.log.path)(err)));
        }
        self.last_write = Instant::now();
        self.sequence = sequence;
        self.last_hash = last_hash;
        self.unsynced.extend(batch.into_iter().map(|pending| pending.done));
        self.unindexed.extend(indexed);
        self.unsynced_since.get_or_insert(self.last_write);
        // Before the batch is acknowledged: a gated action after it sees a disk it filled.
        self.check_reserve();
        Ok(())
    }

    /// Writes the records handed alongside their callers' work, then makes every record
    /// written so far durable (see `sync_written`).
    fn sync(&mut self) -> Result<(), TrailError> {
        self.write_handed();
        self.sync_written()
    }

    /// Makes every record written so far durable, then answers their callers and hands the
    /// records to the index. If that fails, the records are not in the trail: the open file is
    /// cut back to its durable end and left, and the chain goes on from the last durable
    /// record in a new file (nothing signs, seals or indexes the failed records).
    fn sync_written(&mut self) -> Result<(), TrailError> {
        if self.unsynced.is_empty() {
            self.unsynced_since = None;
            return Ok(());
        }
        let synced = match self.active.as_mut() {
            Some(active) => active.log.sync().map(|()| active.durable_size = active.log.size).map_err(io(&active.log.path)),
            None => Err(io(&self.layout.root)(std::io::Error::other("the file the records were written to is gone"))),
        };
        let answer = synced.as_ref().map(drop).map_err(ToString::to_string);
        match &synced {
            Ok(()) => {
                self.durable.store(self.sequence, std::sync::atomic::Ordering::Release);
                self.durable_hash.clone_from(&self.last_hash);
                if let Some(index) = &self.index {
                    let _ = index.send(std::mem::take(&mut self.unindexed));
                }
            }
            Err(_) => {
                // A file with nothing durable goes: the next file, named by the same first
                // sequence number, may be opened in the same millisecond.
                if let Some(active) = self.active.take()
                    && let Err(err) = match active.durable_size {
                        0 => std::fs::remove_file(&active.log.path),
                        size => active.log.file.set_len(size).and_then(|()| active.log.file.sync_all()),
                    }
                {
                    tracing::error!(error = %err, path = %active.log.path.display(), "cannot cut an audit log file back to its durable records");
                }
                self.sequence = self.durable.load(std::sync::atomic::Ordering::Acquire);
                self.last_hash.clone_from(&self.durable_hash);
                self.unindexed.clear();
            }
        }
        for done in self.unsynced.drain(..) {
            let _ = done.send(answer.clone());
        }
        self.unsynced_since = None;
        synced
    }
}
