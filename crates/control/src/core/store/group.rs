//! Group commit for SQLite's writes. SQLite has one writer: every write transaction holds its
//! lock from `BEGIN IMMEDIATE` to `COMMIT`. Through sqlx each statement is a round trip to the
//! connection's worker thread, and from the server's busy runtime the transaction waits behind
//! every other task at each of them, the lock held all the while (measured: about 0.5 ms a
//! transaction, under 2,000 writes a second with the machine a third idle).
//!
//! Here, writes are queued to a thread of their own with a connection of its own, on which their
//! statements run in place (`statements::InPlace`). It takes every queued write at once, runs
//! each under a savepoint of one transaction (a write that fails is rolled back alone), commits
//! once, and only then answers each: a write's answer never comes before its commit, as with a
//! transaction of its own. The store's durability is unchanged (WAL, `synchronous = NORMAL`).
//!
//! The WAL is copied into the database by a thread of its own (`Checkpointer`), not at the
//! commit that crosses SQLite's threshold: there, every write queued meanwhile waited for the
//! copy and its fsync (the commits' slowest hundredth). That copy never quite catches up with
//! a stream of commits, and SQLite starts the WAL over only at a write that finds it all
//! copied; so every half second, right after a copy and when no write is under way, the
//! checkpointer takes the writers' turn while it copies what was committed during that copy,
//! and the WAL stays small. (Taking the turn for the whole tenth of a second's copy held every
//! writer for 20–40 ms under a stream of PutObjects.) No connection of the store checkpoints at
//! its own commits: `SQLITE_SETTINGS`.
//!
//! Between copies, while writes commit in a stream, the same thread writes the WAL to disk
//! every `WRITE_BACK_EVERY` (`WalWriteBack`). A copy begins by syncing the WAL: left to it, a
//! tenth of a second's commits (about 12 MB under a stream of 4 KiB PutObjects) went to the
//! disk at once, the audit trail's fsyncs queued behind them, and every action waited 10–25 ms
//! about eight times a second (PutObject's p99 with 8 clients: 10–12 ms, against 6–7 ms since).

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::statements::{BoxFuture, InPlace, Statements, Work, from_sqlite};

/// A queued write, its types erased.
trait Queued: Send {
    /// Runs the write's statements and keeps their result; says whether they succeeded.
    fn run<'c>(&'c mut self, statements: &'c mut dyn Statements) -> BoxFuture<'c, bool>;
    /// Answers the caller once the batch has ended: `failed` is why it did not commit.
    fn finish(self: Box<Self>, failed: Option<&sqlx::Error>);
}

struct Write<T, E> {
    work: Option<Work<T, E>>,
    result: Option<Result<T, E>>,
    answer: oneshot::Sender<Result<T, E>>,
}

impl<T: Send + 'static, E: From<sqlx::Error> + Send + 'static> Queued for Write<T, E> {
    fn run<'c>(&'c mut self, statements: &'c mut dyn Statements) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let Some(work) = self.work.take() else { return false };
            let result = work(statements).await;
            let succeeded = result.is_ok();
            self.result = Some(result);
            succeeded
        })
    }

    fn finish(self: Box<Self>, failed: Option<&sqlx::Error>) {
        let result = match (self.result, failed) {
            (Some(Err(err)), _) => Err(err),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(err)) => Err(E::from(copy(err))),
            // It panicked, and was rolled back.
            (None, None) => Err(E::from(sqlx::Error::WorkerCrashed)),
        };
        let _ = self.answer.send(result);
    }
}

type Job = Box<dyn Queued>;

enum Message {
    Write(Job),
    /// Closes the connection, then says so.
    Close(oneshot::Sender<()>),
}

/// At most this many writes share a commit; more wait for the next.
const MAX_BATCH: usize = 256;

/// How often the checkpointer copies what the WAL holds into the database, and after how many
/// copies it completes one in the writers' turn (when it can have it at once), so that the WAL
/// starts over.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
const WHOLE_EVERY: u32 = 5;

/// How often, while writes commit in a stream, the WAL's newest pages are written to disk; and
/// how many writes each of those intervals must have committed on average for a stream (fewer
/// leave the copy's sync too little to stall on, and an fsync each would cost more than it
/// spares). Writes, not batches: under a heavier load, fewer and larger batches.
const WRITE_BACK_EVERY: Duration = Duration::from_millis(10);
const WRITE_BACK_FROM: u64 = 4;

/// The queue to the writing thread.
#[derive(Clone)]
pub(super) struct Group {
    queue: mpsc::UnboundedSender<Message>,
}

impl Group {
    /// Opens a connection to the SQLite file at `path` (already migrated) and starts the
    /// thread that writes through it.
    /// `settings` are the store's SQL for each connection.
    pub(super) fn start(path: &Path, settings: &str, turns: Arc<Semaphore>) -> Result<Group, sqlx::Error> {
        // The file is there, migrated: never created here.
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open = || -> Result<rusqlite::Connection, sqlx::Error> {
            let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(from_sqlite)?;
            // As the store's other connections; the busy timeout covers their own writes.
            conn.execute_batch(settings).map_err(from_sqlite)?;
            Ok(conn)
        };
        let conn = open()?;
        conn.set_prepared_statement_cache_capacity(64);
        let checkpointer = Checkpointer::start(open()?, turns.clone(), path)?;
        let (sender, queue) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread().build().map_err(sqlx::Error::Io)?;
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || runtime.block_on(serve(conn, queue, turns, checkpointer)))
            .map_err(sqlx::Error::Io)?;
        Ok(Group { queue: sender })
    }

    /// Runs `work` in the next batch and answers once that batch is committed.
    pub(super) async fn run<T, E>(&self, work: Work<T, E>) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T, E>>();
        if self.queue.send(Message::Write(Box::new(Write { work: Some(work), result: None, answer }))).is_err() {
            return Err(E::from(sqlx::Error::PoolClosed));
        }
        answered.await.unwrap_or_else(|_| Err(E::from(sqlx::Error::WorkerCrashed)))
    }

    /// Ends the thread once the writes queued before are answered, and closes its connection.
    pub(super) async fn close(&self) {
        let (closed, done) = oneshot::channel();
        if self.queue.send(Message::Close(closed)).is_ok() {
            let _ = done.await;
        }
    }
}

/// The thread that copies the WAL's committed pages into the database every
/// `CHECKPOINT_EVERY` (SQLite's passive checkpoint, which waits for no writer or reader), and
/// writes the WAL to disk in between while writes commit in a stream.
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    /// Writes whose batches have ended so far, counted by the writing thread.
    commits: Arc<AtomicU64>,
}

impl Checkpointer {
    fn start(conn: rusqlite::Connection, turns: Arc<Semaphore>, database: &Path) -> Result<Checkpointer, sqlx::Error> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let commits = Arc::new(AtomicU64::new(0));
        let mut wal = WalWriteBack::new(database, commits.clone());
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                let (mut copies, mut next_copy) = (0u32, Instant::now() + CHECKPOINT_EVERY);
                loop {
                    // Idle or under a trickle of writes, the thread wakes only to copy.
                    let until_copy = next_copy.saturating_duration_since(Instant::now());
                    let wait = if wal.streaming { until_copy.min(WRITE_BACK_EVERY) } else { until_copy };
                    if !matches!(stopped.recv_timeout(wait), Err(std::sync::mpsc::RecvTimeoutError::Timeout)) {
                        return;
                    }
                    if Instant::now() < next_copy {
                        wal.look(true);
                        continue;
                    }
                    // The copy syncs the WAL itself.
                    wal.look(false);
                    copies += 1;
                    checkpoint(&conn);
                    // With no write under way the copy is whole, and the next write starts the
                    // WAL over. The turn is taken only if it is free (waiting for it would queue
                    // every writer behind the copy: the semaphore is fair), and only after the
                    // copy above, so that it is held for what was committed meanwhile alone.
                    if copies >= WHOLE_EVERY
                        && let Ok(_turn) = turns.try_acquire()
                    {
                        checkpoint(&conn);
                        copies = 0;
                    }
                    next_copy = Instant::now() + CHECKPOINT_EVERY;
                }
            })
            .map_err(sqlx::Error::Io)?;
        Ok(Checkpointer { stop, thread, commits })
    }

    /// Counts the writes of a batch that has ended: what they wrote is in the WAL, not yet on
    /// disk.
    fn committed(&self, writes: usize) {
        self.commits.fetch_add(writes as u64, Ordering::Relaxed);
    }

    /// Ends the thread and closes its connection.
    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// The WAL's pages written to disk as commits add them, a little at a time, rather than all at
/// the next copy's sync. Its file is opened apart from SQLite's, read-only: SQLite takes no lock
/// on it (its WAL locks are in the `-shm` file), so closing this descriptor releases none. The
/// same inode serves as long as the checkpointer's connection is open: SQLite deletes the WAL
/// only when its last connection closes, and `journal_size_limit` only truncates it.
struct WalWriteBack {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Writes whose batches have ended, counted by the writing thread (`Checkpointer::committed`).
    commits: Arc<AtomicU64>,
    /// The writes counted at the last look, and when it was.
    seen: u64,
    looked: Instant,
    /// Whether they came as a stream (`WRITE_BACK_FROM`).
    streaming: bool,
}

impl WalWriteBack {
    /// For the store whose database file is `database`.
    fn new(database: &Path, commits: Arc<AtomicU64>) -> WalWriteBack {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        WalWriteBack { path: path.into(), file: None, commits, seen: 0, looked: Instant::now(), streaming: false }
    }

    /// Counts the writes committed since the last look and, if they came as a stream and `sync`
    /// is asked, writes what the WAL holds to disk. A failure here costs nothing but the pacing:
    /// the copy syncs the WAL itself.
    fn look(&mut self, sync: bool) {
        let now = self.commits.load(Ordering::Relaxed);
        let since = u128::from(now.wrapping_sub(self.seen));
        let elapsed = self.looked.elapsed().as_nanos();
        (self.seen, self.looked) = (now, Instant::now());
        self.streaming = since > 0 && since * WRITE_BACK_EVERY.as_nanos() >= u128::from(WRITE_BACK_FROM) * elapsed;
        if !(sync && self.streaming) {
            return;
        }
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        if let Some(file) = &self.file {
            let _ = file.sync_data();
        }
    }
}

/// SQLite's passive checkpoint: it waits for no writer or reader, and copies what no reader
/// still needs.
fn checkpoint(conn: &rusqlite::Connection) {
    if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %err, "the metadata store's WAL could not be checkpointed; trying again");
    }
}

async fn serve(
    mut conn: rusqlite::Connection,
    mut queue: mpsc::UnboundedReceiver<Message>,
    turns: Arc<Semaphore>,
    checkpointer: Checkpointer,
) {
    let mut messages = Vec::new();
    let mut batch = Vec::new();
    while queue.recv_many(&mut messages, MAX_BATCH).await > 0 {
        let mut close = None;
        for message in messages.drain(..) {
            match message {
                Message::Write(job) if close.is_none() => batch.push(job),
                Message::Write(job) => job.finish(Some(&sqlx::Error::PoolClosed)),
                Message::Close(closed) => close = Some(closed),
            }
        }
        if !batch.is_empty() {
            // The batch's turn among the store's writers; never closed while this thread runs.
            let turn = turns.acquire().await;
            let ended = run_batch(&mut conn, &mut batch).await;
            drop(turn);
            checkpointer.committed(batch.len());
            if let Err(err) = &ended {
                tracing::warn!(error = %err, writes = batch.len(), "a batch of writes to the metadata store did not commit");
                // Whatever the failure left open is rolled back; the next batch begins afresh.
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
            for job in batch.drain(..) {
                job.finish(ended.as_ref().err());
            }
        }
        if let Some(closed) = close {
            drop(conn);
            checkpointer.stop();
            queue.close();
            let _ = closed.send(());
            return;
        }
    }
}

/// Runs a batch in one transaction, each write under a savepoint when it has company.
async fn run_batch(conn: &mut rusqlite::Connection, batch: &mut [Job]) -> Result<(), sqlx::Error> {
    let sql = |conn: &mut rusqlite::Connection, sql: &str| conn.execute_batch(sql).map_err(from_sqlite);
    sql(conn, "BEGIN IMMEDIATE")?;
    if let [job] = batch {
        // Alone: its own transaction, rolled back if it fails.
        let succeeded = matches!(AssertUnwindSafe(job.run(&mut InPlace(conn))).catch_unwind().await, Ok(true));
        return sql(conn, if succeeded { "COMMIT" } else { "ROLLBACK" });
    }
    for job in batch.iter_mut() {
        sql(conn, "SAVEPOINT write")?;
        let succeeded = matches!(AssertUnwindSafe(job.run(&mut InPlace(conn))).catch_unwind().await, Ok(true));
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (a full disk, an I/O error): nothing of
            // the batch may commit, not even statements a write ran after that.
            return Err(sqlx::Error::Protocol("the metadata store rolled back a batch of writes".into()));
        }
        sql(conn, if succeeded { "RELEASE write" } else { "ROLLBACK TO write; RELEASE write" })?;
    }
    sql(conn, "COMMIT")
}

/// A commit's error, once for each write it failed (sqlx's errors are not `Clone`), kept as the
/// kind the callers tell apart: the store unreachable, or anything else.
fn copy(err: &sqlx::Error) -> sqlx::Error {
    match err {
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(format!("the write's transaction did not commit: {other}")),
    }
}
