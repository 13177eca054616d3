//! The trail writer. One thread owns the open log file: callers hand it records and wait for
//! the fsync that covers them (group commit). The same thread chains each record to the
//! previous one, signs a checkpoint every N records or T milliseconds, rotates log files by
//! size and age, and hands closed files to the sealer (compression and hourly digests).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::chain::{self, hash_line};
use crate::files::Checkpoint;
use crate::layout::{self, GENESIS_HASH, Kind, Layout};
use crate::record::Record;
use crate::sealer::{self, DigestRef, SealJob};
use crate::signing::{self, Signer};

/// At most this many records share one fsync.
const MAX_BATCH: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("audit trail at `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the audit trail writer has stopped")]
    Stopped,
    #[error("audit trail file `{path}` is damaged: {message}; run `datasandbox audit validate` for details")]
    Damaged { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrailError + '_ {
    move |source| TrailError::Io { path: path.to_owned(), source }
}

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
        }
    }
}

struct Pending {
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

enum Message {
    Append(Pending),
    /// Rotate and write a digest now (at shutdown, and for tests).
    Digest(std::sync::mpsc::Sender<()>),
    Close(std::sync::mpsc::Sender<()>),
}

/// A record as the index receives it: its sequence number and its exact line.
pub type IndexBatch = Vec<(u64, Vec<u8>)>;

/// A handle to the trail; cheap to clone.
#[derive(Clone)]
pub struct Trail {
    layout: Layout,
    sender: mpsc::Sender<Message>,
    durable: Arc<std::sync::atomic::AtomicU64>,
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
        let sealer = sealer::start(layout.clone(), signer.clone(), last_digest.clone())?;
        for path in open_files {
            let _ = sealer.send(SealJob::Seal(path));
        }
        let now = Utc::now();
        let (sender, receiver) = mpsc::channel::<Message>();
        let durable = Arc::new(std::sync::atomic::AtomicU64::new(sequence));
        let mut state = WriterState {
            durable: durable.clone(),
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
        };
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || state.run(&receiver)).map_err(io(&layout.root))?;
        Ok(Trail { layout, sender, durable })
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
        let line = serde_json::to_vec(record).expect("a record always serializes");
        let (done, wait) = oneshot::channel();
        self.sender.send(Message::Append(Pending { line, done })).map_err(|_| TrailError::Stopped)?;
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

    /// Checkpoints, seals, digests and stops the writer; later appends fail.
    pub fn close(&self) -> Result<(), TrailError> {
        let (done, wait) = std::sync::mpsc::channel();
        self.sender.send(Message::Close(done)).map_err(|_| TrailError::Stopped)?;
        wait.recv().map_err(|_| TrailError::Stopped)
    }
}

fn write_public_key(layout: &Layout, signer: &Signer) -> Result<(), TrailError> {
    let path = layout.public_keys().join(format!("{}.pub", signer.fingerprint()));
    if !path.exists() {
        crate::files::write_durably(&path, format!("{}\n", signer.public_key_hex()).as_bytes()).map_err(io(&path))?;
    }
    Ok(())
}

/// The sequence number and hash of the newest complete record on disk.
fn chain_position(layout: &Layout) -> Result<(u64, String), TrailError> {
    let logs = layout.files(Kind::Log, &[".jsonl", ".json.gz"]).map_err(io(&layout.root))?;
    for path in logs.iter().rev() {
        let content = read_log(path)?;
        let sealed = path.extension().is_some_and(|e| e == "gz");
        let (lines, _) = chain::record_lines(&content, sealed)
            .map_err(|()| TrailError::Damaged { path: path.clone(), message: "it is not a sealed log file".into() })?;
        if let Some(last) = lines.last() {
            let link = chain::parse_link(last)
                .ok_or_else(|| TrailError::Damaged { path: path.clone(), message: "its last record has no chain prefix".into() })?;
            return Ok((link.sequence, hash_line(last)));
        }
    }
    Ok((0, GENESIS_HASH.to_owned()))
}

pub(crate) fn read_log(path: &Path) -> Result<Vec<u8>, TrailError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    if path.extension().is_some_and(|e| e == "gz") { crate::files::gunzip(&bytes).map_err(io(path)) } else { Ok(bytes) }
}

fn last_checkpoint(layout: &Layout) -> Result<(String, u64), TrailError> {
    let files = layout.files(Kind::Checkpoint, &[".jsonl"]).map_err(io(&layout.root))?;
    for path in files.iter().rev() {
        let content = std::fs::read(path).map_err(io(path))?;
        let (lines, _) = chain::record_lines(&content, false).expect("open files always split");
        if let Some(last) = lines.last() {
            let checkpoint: Checkpoint = serde_json::from_slice(last)
                .map_err(|e| TrailError::Damaged { path: path.clone(), message: format!("its last checkpoint is not valid: {e}") })?;
            return Ok((checkpoint.signature, checkpoint.sequence_number));
        }
    }
    Ok(("null".to_owned(), 0))
}

/// The first multiple of `interval` (since the Unix epoch) after `now`.
fn next_boundary(now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let step = interval.as_millis().max(1) as i64;
    let next = (now.timestamp_millis() / step + 1) * step;
    DateTime::from_timestamp_millis(next).unwrap_or(now)
}

struct ActiveFile {
    file: File,
    path: PathBuf,
    size: u64,
    opened: Instant,
}

struct WriterState {
    durable: Arc<std::sync::atomic::AtomicU64>,
    layout: Layout,
    signer: Arc<Signer>,
    options: TrailOptions,
    active: Option<ActiveFile>,
    sequence: u64,
    last_hash: String,
    checkpointed: u64,
    last_checkpoint_at: Instant,
    checkpoint_signature: String,
    checkpoint_file: Option<(PathBuf, File)>,
    next_digest_at: DateTime<Utc>,
    sealer: mpsc::Sender<SealJob>,
    last_digest: Arc<Mutex<Option<DigestRef>>>,
    index: Option<tokio::sync::mpsc::UnboundedSender<IndexBatch>>,
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
        let deadline = Instant::now() + self.options.max_batch_delay;
        while batch.len() < MAX_BATCH {
            let next = match receiver.try_recv() {
                Ok(message) => message,
                Err(mpsc::TryRecvError::Empty) if !self.options.max_batch_delay.is_zero() => {
                    match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(message) => message,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            match next {
                Message::Append(pending) => batch.push(pending),
                other => {
                    deferred.push(other);
                    break;
                }
            }
        }
        let result = self.write_batch(&mut batch).map_err(|err| err.to_string());
        if let Err(message) = &result {
            tracing::error!(error = %message, "audit write failed; actions are refused until it recovers");
            self.active = None;
        }
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
                Message::Append(_) => unreachable!("appends are batched above"),
            }
        }
    }

    fn write_batch(&mut self, batch: &mut [Pending]) -> Result<(), TrailError> {
        if self.active.is_none() {
            let path = self.layout.log_file(&Utc::now(), self.sequence + 1);
            layout::create_parent(&path).map_err(io(&path))?;
            let file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(io(&path))?;
            layout::sync_dir(&path).map_err(io(&path))?;
            self.active = Some(ActiveFile { file, path, size: 0, opened: Instant::now() });
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
        active.file.write_all(&buffer).map_err(io(&active.path))?;
        active.file.sync_data().map_err(io(&active.path))?;
        active.size += buffer.len() as u64;
        self.sequence = sequence;
        self.last_hash = last_hash;
        self.durable.store(sequence, std::sync::atomic::Ordering::Release);
        if let Some(index) = &self.index {
            let _ = index.send(indexed);
        }
        Ok(())
    }

    fn maintain(&mut self) -> Result<(), TrailError> {
        let pending = self.sequence - self.checkpointed;
        if pending > 0
            && (pending >= self.options.checkpoint_records || self.last_checkpoint_at.elapsed() >= self.options.checkpoint_interval)
        {
            self.checkpoint()?;
        }
        if Utc::now() >= self.next_digest_at {
            self.digest()?;
        } else if self
            .active
            .as_ref()
            .is_some_and(|a| a.size >= self.options.rotate_bytes || a.opened.elapsed() >= self.options.rotate_interval)
        {
            self.rotate();
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), TrailError> {
        let now = Utc::now();
        let time = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let log_file = self.active.as_ref().map(|a| self.layout.object_key(&a.path)).unwrap_or_default();
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
        if self.checkpoint_file.as_ref().is_none_or(|(p, _)| *p != path) {
            layout::create_parent(&path).map_err(io(&path))?;
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
            layout::sync_dir(&path).map_err(io(&path))?;
            self.checkpoint_file = Some((path.clone(), file));
        }
        let (_, file) = self.checkpoint_file.as_mut().expect("opened above");
        let mut line = serde_json::to_vec(&checkpoint).expect("a checkpoint serializes");
        line.push(b'\n');
        file.write_all(&line).and_then(|()| file.sync_data()).map_err(io(&path))?;
        self.checkpoint_signature = signature;
        self.checkpointed = self.sequence;
        self.last_checkpoint_at = Instant::now();
        Ok(())
    }

    fn rotate(&mut self) {
        if let Some(active) = self.active.take() {
            let _ = self.sealer.send(SealJob::Seal(active.path));
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

    fn finish(&mut self) {
        self.log_errors(|s| s.digest());
        let (done, wait) = std::sync::mpsc::channel();
        let _ = self.sealer.send(SealJob::Stop(done));
        let _ = wait.recv();
    }
}
