//! The metadata store: SQLite in the data directory by default, PostgreSQL when the spec
//! names one. Both speak the same SQL through sqlx's `Any` driver; only the migrations differ.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use audit::redact_url;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod group;
mod memo;
mod statements;

pub use memo::Memo;
pub use statements::{Statements, Work};

/// A connection pool with the schema migrated to the newest version.
#[derive(Clone)]
pub struct Store {
    pub pool: AnyPool,
    /// SQLite's connection for the interactive transactions that write (`write`).
    writer: Option<AnyPool>,
    /// The thread SQLite's queued writes are committed on, in groups (`transact`).
    group: Option<group::Group>,
    /// SQLite's writers take their turns here, first come first served, rather than in SQLite's
    /// busy handler, which sleeps (up to 100 ms a turn) between tries: held by an interactive
    /// transaction from its `BEGIN` to its end, and by the writer thread for each batch.
    turns: Arc<Semaphore>,
    sqlite: bool,
    /// Buckets' rows as stored (home folders, notification configuration JSON), kept on
    /// SQLite; the storage service forgets them at every change to a bucket.
    pub buckets: Memo<(bool, Arc<str>)>,
}

/// A transaction that writes: SQLite's turn to write is held until it ends.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<OwnedSemaphorePermit>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the metadata store at `{url}`: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot migrate the metadata store at `{url}`: {source}")]
    Migrate { url: String, source: sqlx::migrate::MigrateError },
    #[error(
        "the metadata store at `{url}` was written by a newer DataSandbox: its schema is at migration {applied}, and this binary \
         (datasandbox {binary}) knows migrations up to {known}; run the newer binary on it, or restore a backup this version made"
    )]
    Newer { url: String, applied: i64, known: i64, binary: &'static str },
}

impl Store {
    pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = url.map_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("metadata.db").display()), str::to_owned);
        let open_err = |source| StoreError::Open { url: redact_url(&url), source };
        let options = AnyConnectOptions::from_str(&url).map_err(open_err)?;
        let sqlite = url.starts_with("sqlite:");
        // SQLite has one writer at a time; a small pool avoids busy waits between our own connections.
        let pool = connect(options.clone(), sqlite, if sqlite { 4 } else { 16 }).await.map_err(open_err)?;
        // Its interactive writes go through a connection of their own (and queued ones through
        // the writer thread's), taking turns (`turns`).
        let writer = if sqlite { Some(connect(options, true, 1).await.map_err(open_err)?) } else { None };
        let migrator = if sqlite { sqlx::migrate!("migrations/sqlite") } else { sqlx::migrate!("migrations/postgres") };
        // Migrations go forward only: a store a newer binary migrated is refused, with what to
        // do, before this binary changes anything in it. (A fresh store has no migrations table.)
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations").fetch_one(&pool).await.ok().flatten();
        if let Some(applied) = applied.filter(|applied| *applied > known) {
            return Err(StoreError::Newer { url: redact_url(&url), applied, known, binary: env!("CARGO_PKG_VERSION") });
        }
        migrator.run(&pool).await.map_err(|source| StoreError::Migrate { url: redact_url(&url), source })?;
        let now = now_millis();
        sqlx::query(
            "INSERT INTO software_versions (version, first_started, last_started) VALUES ($1, $2, $2)
             ON CONFLICT (version) DO UPDATE SET last_started = excluded.last_started",
        )
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(now)
        .execute(&pool)
        .await
        .map_err(open_err)?;
        // SQLite's queued writes go through a connection of the writer thread's own, to its
        // file (an in-memory store, which a second connection could not share, has none).
        let turns = Arc::new(Semaphore::new(1));
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let file = (sqlite && !memory).then(|| sqlx::sqlite::SqliteConnectOptions::from_str(&url).ok()).flatten();
        let group = match file {
            Some(file) => Some(group::Group::start(file.get_filename(), SQLITE_SETTINGS, turns.clone()).map_err(open_err)?),
            None => None,
        };
        Ok(Store { pool, writer, group, turns, sqlite, buckets: Memo::new(sqlite) })
    }

    /// Closes every connection (the restored store is then moved into place).
    pub async fn close(&self) {
        if let Some(group) = &self.group {
            group.close().await;
        }
        self.pool.close().await;
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
    }

    /// Whether the store is SQLite, which serves one node only.
    pub fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// Begins a transaction that will write. SQLite's waits its turn among the writers, then
    /// takes the write lock up front (`BEGIN IMMEDIATE`). Never queue a write (`transact`)
    /// while holding one: the writer thread would wait for this turn, and this for it.
    pub async fn write(&self) -> Result<WriteTx, sqlx::Error> {
        match &self.writer {
            Some(writer) => {
                let turn = self.turns.clone().acquire_owned().await.map_err(|_| sqlx::Error::PoolClosed)?;
                Ok(WriteTx { tx: writer.begin_with("BEGIN IMMEDIATE").await?, _turn: Some(turn) })
            }
            None => Ok(WriteTx { tx: self.pool.begin().await?, _turn: None }),
        }
    }

    /// Runs `work` as a write transaction and answers once it is committed. On SQLite the
    /// writes queued meanwhile share one commit, on a thread of their own; on PostgreSQL each is
    /// a transaction of its own. `work` must touch nothing but the store.
    pub async fn transact<T, E>(&self, work: Work<T, E>) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
    {
        if let Some(group) = &self.group {
            return group.run(work).await;
        }
        let mut tx = self.write().await?;
        let value = work(&mut statements::Through(&mut tx)).await?;
        tx.commit().await?;
        Ok(value)
    }
}

/// Every connection's settings on SQLite. WAL survives a process crash at every commit;
/// `synchronous = NORMAL` skips the per-commit fsync (power loss may lose the newest commits,
/// never corrupt). No memory map: SQLite drops a connection's whole map at the first read
/// after another connection's commit, and each unmap interrupts every thread of the process
/// to flush its TLB (under a stream of writes, more than the reads it saved). No connection
/// checkpoints the WAL at its own commits: the writer thread's checkpointer does, beside them
/// (`group`). A WAL grown past 64 MiB is cut back when it starts over.
const SQLITE_SETTINGS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA journal_size_limit = 67108864; PRAGMA wal_autocheckpoint = 0;";

/// A pool of up to `connections` to the store; SQLite's in WAL mode, synced at checkpoints.
async fn connect(options: AnyConnectOptions, sqlite: bool, connections: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(connections)
        // A store that does not answer fails a call within seconds (503), not half a minute.
        .acquire_timeout(std::time::Duration::from_secs(if sqlite { 30 } else { 5 }))
        // A SQLite connection is a file in this process: no round trip to its worker thread to
        // ask whether it still works before every query. A PostgreSQL server may have gone.
        .test_before_acquire(!sqlite)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    conn.execute(SQLITE_SETTINGS).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An RFC 3339 time as Unix milliseconds, as the actions' times are written.
pub fn rfc3339_to_millis(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis())
}

pub fn millis_to_rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::Store;

    /// Each connection keeps a page cache of its own size (`.cargo/config.toml` says why).
    #[tokio::test]
    async fn sqlite_is_built_with_a_page_cache_per_connection() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(None, dir.path()).await.expect("open");
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options").fetch_all(&store.pool).await.expect("options");
        assert!(options.iter().any(|o| o.starts_with("THREADSAFE=")), "not SQLite's list of options: {options:?}");
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "SQLite was built with one page cache for every connection (LIBSQLITE3_FLAGS unset?): {options:?}"
        );
    }

    /// Writes queued together: each failed one is rolled back alone (its own earlier statement
    /// too), a panicking one is refused, and every other is committed before it is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_is_rolled_back_alone_and_each_answer_follows_its_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(None, dir.path()).await.expect("open");
        sqlx::query("CREATE TABLE numbers (n INTEGER PRIMARY KEY)").execute(&store.pool).await.expect("table");
        let writes: Vec<_> = (0..96_i64)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let written = store
                        .transact(Box::new(move |statements| {
                            Box::pin(async move {
                                statements.execute("INSERT INTO numbers (n) VALUES ($1)", &[n.into()]).await?;
                                if n % 4 == 0 {
                                    // The same row again: refused, and the first insert with it.
                                    statements.execute("INSERT INTO numbers (n) VALUES ($1)", &[n.into()]).await?;
                                }
                                assert!(n != 7, "a write that panics");
                                Ok::<_, sqlx::Error>(n)
                            })
                        }))
                        .await;
                    // Answered: visible at once on another connection.
                    let seen: Option<i64> =
                        sqlx::query_scalar("SELECT n FROM numbers WHERE n = $1").bind(n).fetch_optional(&store.pool).await.expect("read");
                    (n, written.is_ok(), seen.is_some())
                })
            })
            .collect();
        for write in writes {
            let (n, written, seen) = write.await.expect("task");
            let expected = n % 4 != 0 && n != 7;
            assert_eq!((written, seen), (expected, expected), "write {n}");
        }
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM numbers").fetch_one(&store.pool).await.expect("count");
        assert_eq!(count, 71);
        store.close().await;
        let refused = store.transact(Box::new(|_| Box::pin(async { Ok::<_, sqlx::Error>(()) }))).await;
        assert!(matches!(refused, Err(sqlx::Error::PoolClosed)), "{refused:?}");
    }

    /// Under a stream of writes the WAL is copied into the database beside the writer and
    /// starts over (its header's checkpoint count moves on at each new start), which it would
    /// never do if only copies beside the writer were made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_a_stream_of_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(None, dir.path()).await.expect("open");
        sqlx::query("CREATE TABLE bodies (n INTEGER PRIMARY KEY, body BLOB)").execute(&store.pool).await.expect("table");
        // The WAL header's checkpoint sequence number (big-endian, bytes 12..16).
        let starts = || {
            let header = std::fs::read(dir.path().join("metadata.db-wal")).unwrap_or_default();
            header.get(12..16).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let first = starts();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..8_i64)
            .map(|writer| {
                let (store, stop) = (store.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = writer;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < until {
                        store
                            .transact(Box::new(move |statements| {
                                Box::pin(async move {
                                    statements.execute("INSERT INTO bodies (n, body) VALUES ($1, zeroblob(4096))", &[n.into()]).await
                                })
                            }))
                            .await
                            .expect("write");
                        n += 8;
                    }
                })
            })
            .collect();
        while starts() <= first + 1 && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for writer in writers {
            writer.await.expect("writer");
        }
        assert!(starts() > first + 1, "the WAL never started over while it was written for 30 s");
        store.close().await;
    }
}
