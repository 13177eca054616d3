//! The trail writer: one thread owns the active log file; callers hand it records and wait
//! for the fsync that covers them. Records that arrive while a sync is running are written
//! and synced together (group commit).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::record::Record;

/// Log files are rotated past this size.
const ROTATE_BYTES: u64 = 64 * 1024 * 1024;
/// At most this many records share one fsync.
const MAX_BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("audit trail at `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the audit trail writer has stopped")]
    Stopped,
    #[error("audit record in `{path}` line {line} is not valid JSON: {message}")]
    Corrupt { path: PathBuf, line: usize, message: String },
}

struct Pending {
    line: Vec<u8>,
    time: DateTime<Utc>,
    done: oneshot::Sender<Result<(), String>>,
}

/// A handle to the trail; cheap to clone.
#[derive(Clone)]
pub struct Trail {
    root: PathBuf,
    sender: mpsc::Sender<Pending>,
}

/// Which records a lookup returns; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct LookupFilter {
    pub event_name: Option<String>,
    pub event_source: Option<String>,
    pub user_name: Option<String>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub resource_name: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
}

impl Trail {
    /// Opens the trail under `root` (`AWSLogs/<account>/DataSandbox/<region>/YYYY/MM/DD/`).
    pub fn open(root: &Path, account_id: &str, region: &str, max_batch_delay: Duration) -> Result<Trail, TrailError> {
        let base = root.join("AWSLogs").join(account_id).join("DataSandbox").join(region);
        fs::create_dir_all(&base).map_err(|source| TrailError::Io { path: base.clone(), source })?;
        let (sender, receiver) = mpsc::channel::<Pending>();
        let mut state = WriterState { base, account_id: account_id.to_owned(), region: region.to_owned(), file: None };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || state.run(&receiver, max_batch_delay))
            .map_err(|source| TrailError::Io { path: root.to_owned(), source })?;
        Ok(Trail { root: root.to_owned(), sender })
    }

    /// Appends one record and returns once it is durable.
    pub async fn append(&self, record: &Record) -> Result<(), TrailError> {
        let mut line = serde_json::to_vec(record).expect("a record always serializes");
        line.push(b'\n');
        let time = DateTime::parse_from_rfc3339(&record.event_time).map_or_else(|_| Utc::now(), |t| t.with_timezone(&Utc));
        let (done, wait) = oneshot::channel();
        self.sender.send(Pending { line, time, done }).map_err(|_| TrailError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(TrailError::Io { path: self.root.clone(), source: std::io::Error::other(message) }),
            Err(_) => Err(TrailError::Stopped),
        }
    }

    /// Every log file of the trail, oldest first.
    pub fn log_files(&self) -> Result<Vec<PathBuf>, TrailError> {
        let mut files = Vec::new();
        collect_files(&self.root, &mut files)?;
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        Ok(files)
    }

    /// Records matching `filter`, newest first, at most `limit`. A torn last line (a record
    /// whose write was interrupted and so was never acknowledged) is skipped.
    pub fn lookup(&self, filter: &LookupFilter, limit: usize) -> Result<Vec<Record>, TrailError> {
        let mut found = Vec::new();
        for path in self.log_files()?.iter().rev() {
            let file = File::open(path).map_err(|source| TrailError::Io { path: path.clone(), source })?;
            let lines: Vec<String> =
                BufReader::new(file).lines().collect::<Result<_, _>>().map_err(|source| TrailError::Io { path: path.clone(), source })?;
            let count = lines.len();
            for (index, line) in lines.iter().enumerate().rev() {
                let record: Record = match serde_json::from_str(line) {
                    Ok(record) => record,
                    Err(_) if index + 1 == count => continue,
                    Err(err) => return Err(TrailError::Corrupt { path: path.clone(), line: index + 1, message: err.to_string() }),
                };
                if filter.matches(&record) {
                    found.push(record);
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
        }
        Ok(found)
    }
}

impl LookupFilter {
    fn matches(&self, record: &Record) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let time = DateTime::parse_from_rfc3339(&record.event_time).ok().map(|t| t.with_timezone(&Utc));
        eq(&self.event_name, &record.event_name)
            && eq(&self.event_source, &record.event_source)
            && self.user_name.as_deref().is_none_or(|w| record.user_identity.user_name.as_deref() == Some(w))
            && eq(&self.request_id, &record.request_id)
            && self.correlation_id.as_deref().is_none_or(|w| record.correlation_id.as_deref() == Some(w))
            && self.resource_name.as_deref().is_none_or(|w| record.resources.iter().any(|r| r.arn.ends_with(w)))
            && self.start_time.is_none_or(|start| time.is_some_and(|t| t >= start))
            && self.end_time.is_none_or(|end| time.is_some_and(|t| t <= end))
    }
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), TrailError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(TrailError::Io { path: dir.to_owned(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| TrailError::Io { path: dir.to_owned(), source })?;
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "jsonl") {
            files.push(path);
        }
    }
    Ok(())
}

struct ActiveFile {
    file: File,
    path: PathBuf,
    day: String,
    size: u64,
}

struct WriterState {
    base: PathBuf,
    account_id: String,
    region: String,
    file: Option<ActiveFile>,
}

impl WriterState {
    fn run(&mut self, receiver: &mpsc::Receiver<Pending>, max_batch_delay: Duration) {
        while let Ok(first) = receiver.recv() {
            let mut batch = vec![first];
            // Whatever queued up while the previous fsync ran joins this one; optionally wait a
            // little for more, trading a bounded delay for fewer syncs under load.
            let deadline = std::time::Instant::now() + max_batch_delay;
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(mpsc::TryRecvError::Empty) if !max_batch_delay.is_zero() => {
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        match receiver.recv_timeout(left) {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    Err(_) => break,
                }
            }
            let result = self.write_batch(&batch).map_err(|err| err.to_string());
            if let Err(message) = &result {
                tracing::error!(error = %message, "audit write failed; actions are refused until it recovers");
                // Start a fresh file next time, in case this one is damaged.
                self.file = None;
            }
            for pending in batch {
                let _ = pending.done.send(result.clone());
            }
        }
    }

    fn write_batch(&mut self, batch: &[Pending]) -> Result<(), TrailError> {
        let day = batch[0].time.format("%Y/%m/%d").to_string();
        let needs_new = self.file.as_ref().is_none_or(|f| f.day != day || f.size >= ROTATE_BYTES);
        if needs_new {
            self.file = Some(self.open_file(&batch[0].time, day)?);
        }
        let active = self.file.as_mut().expect("opened just above");
        let mut buffer = Vec::with_capacity(batch.iter().map(|p| p.line.len()).sum());
        for pending in batch {
            buffer.extend_from_slice(&pending.line);
        }
        let io = |source| TrailError::Io { path: active.path.clone(), source };
        active.file.write_all(&buffer).map_err(io)?;
        active.file.sync_data().map_err(|source| TrailError::Io { path: active.path.clone(), source })?;
        active.size += buffer.len() as u64;
        Ok(())
    }

    fn open_file(&self, time: &DateTime<Utc>, day: String) -> Result<ActiveFile, TrailError> {
        let dir = self.base.join(&day);
        fs::create_dir_all(&dir).map_err(|source| TrailError::Io { path: dir.clone(), source })?;
        let name = format!(
            "{}_DataSandbox_{}_{}_{}.jsonl",
            self.account_id,
            self.region,
            time.format("%Y%m%dT%H%M%S%.3fZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let path = dir.join(name);
        let file =
            OpenOptions::new().create_new(true).append(true).open(&path).map_err(|source| TrailError::Io { path: path.clone(), source })?;
        // The new directory entry must itself survive a crash.
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|source| TrailError::Io { path: dir.clone(), source })?;
        Ok(ActiveFile { file, path, day, size: 0 })
    }
}
