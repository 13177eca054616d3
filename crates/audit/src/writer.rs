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
use crate::files::Checkpoint;
use crate::layout::{self, Kind, Layout};
use crate::record::Record;
use crate::reserve::{Open, Reserved};
use crate::resume::{chain_position, last_checkpoint, write_public_key};
use crate::seal_job::{DigestRef, SealJob};
use crate::sealer;
use crate::signing::{self, Signer};

/// At most this many records share one fsync.
const MAX_BATCH: usize = 8192;

/// Records this close after the last write find the writer busy; a batch begun by a patient
/// one then waits `LINGER` for more (see `append_batch`). The upkeep checks the reserve only
/// `RECHECK` after a write (which checks it).
const BUSY: Duration = Duration::from_millis(1);
const LINGER: Duration = Duration::from_micros(500);
const RECHECK: Duration = Duration::from_millis(10);

/// How often the trail checkpoints, rotates and digests.
#[derive(Debug, Clone)]
pub struct TrailOptions {
    /// How long the writer may wait for more records before an fsync (0: never waits).
    pub max_batch_delay: Duration,
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

struct Pending {
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
    /// Its caller has other work under way meanwhile (see [`Trail::append_alongside`]).
    patient: bool,
}

enum Message {
    Append(Pending),
    /// Rotate and write a digest now (at shutdown, and for tests).
    Digest(std::sync::mpsc::Sender<()>),
    Close(std::sync::mpsc::Sender<()>),
    /// A backup's consistent cut: see [`Trail::hold`].
    Hold(Cut, std::sync::mpsc::Sender<()>),
}

/// What runs while the trail holds still (see [`Trail::hold`]), or why it could not be cut.
type Cut = Box<dyn FnOnce(Result<Vec<(PathBuf, u64)>, String>) + Send>;

/// A record as the index receives it: its sequence number and its exact line.
pub type IndexBatch = Vec<(u64, Vec<u8>)>;

/// A handle to the trail; cheap to clone.
#[derive(Clone)]
pub struct Trail {
    layout: Layout,
    sender: mpsc::Sender<Message>,
    durable: Arc<std::sync::atomic::AtomicU64>,
    on_reserve: Arc<AtomicBool>,
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
        let sealer = sealer::start(layout.clone(), signer.clone(), last_digest.clone(), options.witness.clone())?;
        for path in open_files {
            let _ = sealer.send(SealJob::Seal(path));
        }
        let now = Utc::now();
        let (sender, receiver) = mpsc::channel::<Message>();
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
            next_digest_at: next_boundary(now, options.digest_interval),
            layout: layout.clone(),
            signer,
            options,
            active: None,
            sequence,
            last_hash,
            checkpointed,
            last_checkpoint_at: Instant::now(),
            checkpoint_signature,
            checkpoint_file: None,
            sealer,
            last_digest,
            index,
            last_write: Instant::now(),
        };
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || state.run(&receiver)).map_err(io(&layout.root))?;
        Ok(Trail { layout, sender, durable, on_reserve, full_below, uploader })
    }

    /// Whether the trail is on its reserve: its file system is full (or nearly: less than a
    /// quarter of the reserve is free besides it), or the reserve could not be topped up. The
    /// control plane then carries nothing out and records only refusals and ends. Asked at
    /// every call, so the first action after the disk fills is already refused.
    pub fn on_reserve(&self) -> bool {
        self.on_reserve.load(Ordering::Acquire) || crate::reserve::nearly_full(&self.layout.root, self.full_below)
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
        self.send(record, false).await
    }

    /// The same, for a caller that does other work while the record is written (the notebook
    /// proxy has Jupyter answer a read meanwhile, and holds the answer until the record is
    /// durable): while the writer is busy, it may wait a moment to write the record with
    /// others, one fsync for several.
    pub async fn append_alongside(&self, record: &Record) -> Result<(), TrailError> {
        self.send(record, true).await
    }

    async fn send(&self, record: &Record, patient: bool) -> Result<(), TrailError> {
        let line = crate::bound::bounded_line(record);
        let (done, wait) = oneshot::channel();
        self.sender.send(Message::Append(Pending { line, done, patient })).map_err(|_| TrailError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(TrailError::Io { path: self.layout.root.clone(), source: std::io::Error::other(message) }),
            Err(_) => Err(TrailError::Stopped),
        }
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

/// The first multiple of `interval` (since the Unix epoch) after `now`.
fn next_boundary(now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let step = interval.as_millis().max(1) as i64;
    let next = (now.timestamp_millis() / step + 1) * step;
    DateTime::from_timestamp_millis(next).unwrap_or(now)
}

struct ActiveFile {
    log: Reserved,
    opened: Instant,
}

struct WriterState {
    durable: Arc<std::sync::atomic::AtomicU64>,
    on_reserve: Arc<AtomicBool>,
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
    sealer: mpsc::Sender<SealJob>,
    last_digest: Arc<Mutex<Option<DigestRef>>>,
    index: Option<tokio::sync::mpsc::UnboundedSender<IndexBatch>>,
    /// When the last batch was durable.
    last_write: Instant,
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
            match message {
                Some(Message::Append(first)) => self.append_batch(first, receiver),
                Some(Message::Digest(done)) => {
                    self.log_errors(|s| s.digest());
                    let _ = done.send(());
                }
                Some(Message::Close(done)) => {
                    self.finish();
                    let _ = done.send(());
                    return;
                }
                Some(Message::Hold(cut, done)) => self.hold(cut, &done),
                None => {}
            }
            self.log_errors(|s| s.maintain());
        }
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
        let to_digest = (self.next_digest_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        wake.min(to_digest).max(Duration::from_millis(1))
    }

    fn append_batch(&mut self, first: Pending, receiver: &mpsc::Receiver<Message>) {
        let mut batch = vec![first];
        let mut deferred = Vec::new();
        // A patient record, while records come faster than one a millisecond, waits a moment
        // for others: one fsync for several. Any other is written at once, and a batch's linger
        // (not a configured batch delay) ends as soon as one that is not patient joins it.
        let lingers = batch[0].patient && self.last_write.elapsed() < BUSY;
        let (started, delay) = (Instant::now(), self.options.max_batch_delay.max(if lingers { LINGER } else { Duration::ZERO }));
        let mut deadline = started + delay;
        while batch.len() < MAX_BATCH {
            let next = match receiver.try_recv() {
                Ok(message) => message,
                Err(mpsc::TryRecvError::Empty) if !delay.is_zero() => {
                    match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(message) => message,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            match next {
                Message::Append(pending) => {
                    if !pending.patient && lingers {
                        deadline = deadline.min(started + self.options.max_batch_delay);
                    }
                    batch.push(pending);
                }
                other => {
                    deferred.push(other);
                    break;
                }
            }
        }
        let result = self.write_batch(&mut batch);
        if let Err(err) = &result {
            tracing::error!(error = %err, "audit write failed; actions are refused until it recovers");
            // A batch the reserve could not hold left nothing behind: the file and what is left
            // of its reserve stay. Any other failure may have left half a line: a new file.
            let refused_whole = matches!(err, TrailError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull);
            if !refused_whole {
                self.active = None;
            }
        }
        let result = result.map_err(|err| err.to_string());
        for pending in batch {
            let _ = pending.done.send(result.clone());
        }
        for message in deferred {
            match message {
                Message::Digest(done) => {
                    self.log_errors(|s| s.digest());
                    let _ = done.send(());
                }
                Message::Close(done) => {
                    // Handled by the next loop turn: re-queueing is not possible, so finish here.
                    self.finish();
                    let _ = done.send(());
                }
                Message::Hold(cut, done) => self.hold(cut, &done),
                Message::Append(_) => unreachable!("appends are batched above"),
            }
        }
    }

    /// A new log file for the next record, with its reserve allocated; the second value
    /// says whether the whole reserve could be had.
    fn open_log(&self) -> Result<(ActiveFile, bool), TrailError> {
        let path = self.layout.log_file(&Utc::now(), self.sequence + 1);
        layout::create_parent(&path).map_err(io(&path))?;
        let (log, whole) = Reserved::open(&path, self.options.reserve_bytes, Open::New).map_err(io(&path))?;
        layout::sync_dir(&path).map_err(io(&path))?;
        Ok((ActiveFile { log, opened: Instant::now() }, whole))
    }

    /// Tops up the reserves and says whether the trail is on its reserve.
    fn check_reserve(&mut self) {
        let log = self.active.as_mut().is_none_or(|a| a.log.top_up());
        let checkpoints = self.checkpoint_file.as_mut().is_none_or(Reserved::top_up);
        let full = crate::reserve::nearly_full(&self.layout.root, self.options.reserve_bytes / 4);
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

    fn write_batch(&mut self, batch: &mut [Pending]) -> Result<(), TrailError> {
        if self.active.is_none() {
            // The first file of a run takes what it can get: without it nothing can be written.
            let (active, _) = self.open_log()?;
            self.active = Some(active);
        }
        let mut buffer = Vec::with_capacity(batch.iter().map(|p| p.line.len() + 110).sum());
        let mut sequence = self.sequence;
        let mut last_hash = self.last_hash.clone();
        let mut indexed = Vec::with_capacity(if self.index.is_some() { batch.len() } else { 0 });
        for pending in batch.iter() {
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
        active.log.append(&buffer).map_err(io(&active.log.path))?;
        self.last_write = Instant::now();
        self.sequence = sequence;
        self.last_hash = last_hash;
        self.durable.store(sequence, std::sync::atomic::Ordering::Release);
        if let Some(index) = &self.index {
            let _ = index.send(indexed);
        }
        // Before the batch is acknowledged: a gated action after it sees a disk it filled.
        self.check_reserve();
        Ok(())
    }

    fn maintain(&mut self) -> Result<(), TrailError> {
        // The disk may have filled, or space been freed, since the last write (which checked).
        if self.last_write.elapsed() >= RECHECK {
            self.check_reserve();
        }
        let pending = self.sequence - self.checkpointed;
        if pending > 0
            && (pending >= self.options.checkpoint_records || self.last_checkpoint_at.elapsed() >= self.options.checkpoint_interval)
        {
            self.checkpoint()?;
        }
        if Utc::now() >= self.next_digest_at {
            self.digest()?;
        } else if self.active.as_ref().is_some_and(|a| {
            a.log.size >= self.options.rotate_bytes || (a.log.size > 0 && a.opened.elapsed() >= self.options.rotate_interval)
        }) {
            self.rotate();
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), TrailError> {
        let now = Utc::now();
        let time = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let log_file = self.active.as_ref().map(|a| self.layout.object_key(&a.log.path)).unwrap_or_default();
        let last_digest = self.last_digest.lock().expect("digest lock").clone();
        let digest_signature = last_digest.as_ref().map_or("null", |d| d.signature.as_str()).to_owned();
        let message = signing::checkpoint_string_to_sign(
            &time,
            self.sequence,
            &self.last_hash,
            &log_file,
            &digest_signature,
            &self.checkpoint_signature,
        );
        let signature = self.signer.sign(message.as_bytes());
        let checkpoint = Checkpoint {
            checkpoint_time: time,
            sequence_number: self.sequence,
            record_hash: self.last_hash.clone(),
            log_file,
            last_digest_s3_object: last_digest.as_ref().map(|d| d.object.clone()),
            last_digest_signature: last_digest.map(|d| d.signature),
            public_key_fingerprint: self.signer.fingerprint(),
            signature_algorithm: signing::ALGORITHM.into(),
            previous_checkpoint_signature: self.checkpoint_signature.clone(),
            signature: signature.clone(),
        };
        let path = self.layout.checkpoint_file(&now);
        if self.checkpoint_file.as_ref().is_none_or(|c| c.path != path) {
            let opened = layout::create_parent(&path)
                .and_then(|()| Reserved::open(&path, (self.options.reserve_bytes / 16).max(64 * 1024), Open::Append))
                .and_then(|opened| layout::sync_dir(&path).map(|()| opened));
            match opened {
                Ok((file, whole)) if whole || self.checkpoint_file.is_none() => self.checkpoint_file = Some(file),
                // On a full disk, the new hour's checkpoints go on in the last hour's file
                // (validation reads checkpoint files in order, whatever hour they name).
                Ok((file, _)) => {
                    if file.size == 0 {
                        let _ = std::fs::remove_file(&file.path);
                    }
                }
                Err(_) if self.checkpoint_file.is_some() => {}
                Err(err) => return Err(io(&path)(err)),
            }
        }
        let file = self.checkpoint_file.as_mut().expect("opened above");
        let mut line = serde_json::to_vec(&checkpoint).expect("a checkpoint serializes");
        line.push(b'\n');
        let written = file.path.clone();
        file.append(&line).map_err(io(&written))?;
        if let Some(witness) = &self.options.witness {
            let copy = witness.join(self.layout.object_key(&written));
            if let Err(err) = crate::files::append_durably(&copy, &line) {
                tracing::error!(error = %err, path = %copy.display(), "cannot write a checkpoint to the trail's witness");
            }
        }
        self.checkpoint_signature = signature;
        self.checkpointed = self.sequence;
        self.last_checkpoint_at = Instant::now();
        Ok(())
    }

    /// Hands the open log file to the sealer and opens the next one with its reserve. On a
    /// full disk (no whole reserve for a new file) the open file goes on.
    fn rotate(&mut self) {
        if self.active.as_ref().is_none_or(|a| a.log.size == 0) || self.on_reserve.load(Ordering::Acquire) {
            return;
        }
        match self.open_log() {
            Ok((next, true)) => {
                // A sealed file ends at a checkpoint: the bucket receives checkpoints only as
                // far as its sealed files reach, and so still has every record signed.
                if self.sequence > self.checkpointed {
                    self.log_errors(WriterState::checkpoint);
                }
                if let Some(old) = self.active.replace(next) {
                    let _ = self.sealer.send(SealJob::Seal(old.log.path));
                }
            }
            Ok((next, false)) => {
                let _ = std::fs::remove_file(&next.log.path);
                tracing::warn!("no room for a new audit log file with its reserve; the open one goes on");
            }
            Err(err) => tracing::warn!(error = %err, "cannot open a new audit log file; the open one goes on"),
        }
    }

    fn digest(&mut self) -> Result<(), TrailError> {
        if self.sequence > self.checkpointed {
            self.checkpoint()?;
        }
        self.rotate();
        let now = Utc::now();
        let (done, wait) = std::sync::mpsc::channel();
        let _ = self.sealer.send(SealJob::Digest { end: now, done });
        let _ = wait.recv();
        self.next_digest_at = next_boundary(now, self.options.digest_interval);
        // A checkpoint after the digest names it, so deleting the newest digest is noticed.
        self.checkpoint()
    }

    fn hold(&mut self, cut: Cut, done: &std::sync::mpsc::Sender<()>) {
        let signed = if self.sequence > self.checkpointed { self.checkpoint().map_err(|e| e.to_string()) } else { Ok(()) };
        let open = [self.active.as_ref().map(|a| &a.log), self.checkpoint_file.as_ref()];
        cut(signed.map(|()| open.into_iter().flatten().map(|file| (file.path.clone(), file.size)).collect()));
        let _ = done.send(());
    }

    fn finish(&mut self) {
        self.log_errors(|s| s.digest());
        // The file the last rotation opened, if nothing was written to it.
        if let Some(active) = self.active.take_if(|a| a.log.size == 0) {
            let path = active.log.path.clone();
            drop(active);
            let _ = std::fs::remove_file(&path).and_then(|()| layout::sync_dir(&path));
        }
        let (done, wait) = std::sync::mpsc::channel();
        let _ = self.sealer.send(SealJob::Stop(done));
        let _ = wait.recv();
    }
}
