//! Connections to the index.

use sqlx::AnyPool;
use sqlx::Executor as _;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

/// Each SQLite connection's settings. Derived data: a crash loses at most what `catch_up`
/// re-reads from the trail. Random inserts into eight B-trees thrash SQLite's default 2 MB
/// page cache.
pub(super) const SQLITE_SETTINGS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -262144; PRAGMA temp_store = memory;";

/// A pool of up to `connections` to the index (SQLite's tuned for a derived, rebuildable table).
pub(super) async fn connect(options: AnyConnectOptions, sqlite: bool, connections: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(connections)
        // A SQLite file needs no check before each use; a PostgreSQL server may have gone.
        .test_before_acquire(!sqlite)
        .after_connect(move |connection, _| {
            Box::pin(async move {
                if sqlite {
                    connection.execute(SQLITE_SETTINGS).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
}
