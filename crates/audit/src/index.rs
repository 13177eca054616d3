//! The audit index: every record in a SQLite table for lookups, traces and read-only SQL (one
//! `SELECT` or `WITH … SELECT` statement). It is derived data, fed by the writer after each
//! fsync and rebuilt from the log files alone by `datasandbox audit reindex`; nothing that
//! judges the trail's integrity reads it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Column, Row, TypeInfo, ValueRef};
use tokio::sync::Notify;

use crate::chain;
use crate::error::TrailError;
use crate::files::read_log;
use crate::layout::{Kind, Layout};
use crate::record::Record;
use crate::writer::IndexBatch;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("audit index `{path}`: {source}")]
    Sql { path: PathBuf, source: sqlx::Error },
    #[error("{0}")]
    Query(String),
    #[error(transparent)]
    Trail(#[from] TrailError),
}

/// The documented tables, created on open.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    sequence INTEGER PRIMARY KEY,      -- the record's place in the hash chain
    event_time TEXT NOT NULL,          -- RFC 3339, UTC, milliseconds
    event_source TEXT NOT NULL,        -- the service: storage, parameters, keys, identity, audit, functions…
    event_name TEXT NOT NULL,          -- the action: PutObject, GetParameter…
    user_type TEXT,                    -- Operator, User, AssumedRole, AWSService, Anonymous
    user_name TEXT,
    principal_id TEXT,
    user_arn TEXT,
    source_ip TEXT,
    user_agent TEXT,
    error_code TEXT,                   -- NULL when the action succeeded
    error_message TEXT,
    read_only INTEGER NOT NULL,
    management_event INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    request_id TEXT,
    event_id TEXT,
    correlation_id TEXT,               -- one sign-in or session, end to end
    session_id TEXT,                   -- the streaming session, when the action names one
    request_parameters TEXT,           -- JSON, secrets redacted
    response_elements TEXT,            -- JSON
    record TEXT NOT NULL               -- the whole record line, as in the log file
);
CREATE TABLE IF NOT EXISTS event_resources (
    sequence INTEGER NOT NULL,
    arn TEXT NOT NULL,
    type TEXT
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_name, sequence);
CREATE INDEX IF NOT EXISTS events_by_correlation ON events (correlation_id, sequence);
CREATE INDEX IF NOT EXISTS events_by_session ON events (session_id, sequence);
CREATE INDEX IF NOT EXISTS events_by_request ON events (request_id);
CREATE INDEX IF NOT EXISTS events_by_name ON events (event_name, sequence);
CREATE INDEX IF NOT EXISTS events_by_source_ip ON events (source_ip, event_time);
CREATE INDEX IF NOT EXISTS events_by_time ON events (event_time);
CREATE INDEX IF NOT EXISTS resources_by_arn ON event_resources (arn, sequence);
CREATE INDEX IF NOT EXISTS resources_by_sequence ON event_resources (sequence);
";

/// The most records the feeder holds back while the index cannot be written.
const MAX_BACKLOG: usize = 200_000;

#[derive(Clone)]
pub struct Index {
    pool: SqlitePool,
    path: PathBuf,
    indexed: Arc<AtomicU64>,
    progress: Arc<Notify>,
}

/// Which records a lookup returns; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct LookupFilter {
    pub event_name: Option<String>,
    pub event_source: Option<String>,
    pub user_name: Option<String>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    /// A resource ARN, or its end (`bucket/key`).
    pub resource_name: Option<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub read_only: Option<bool>,
}

/// Whose timeline `trace` draws.
#[derive(Debug, Clone)]
pub enum TraceSelector {
    User(String),
    Session(String),
    CorrelationId(String),
}

impl Index {
    pub async fn open(path: &Path) -> Result<Index, IndexError> {
        let sql = |source| IndexError::Sql { path: path.to_owned(), source };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Derived data: a crash loses at most what `catch_up` re-reads from the trail.
            .synchronous(SqliteSynchronous::Off)
            .busy_timeout(Duration::from_secs(10))
            // Random inserts into eight B-trees thrash SQLite's default 2 MB page cache.
            .pragma("cache_size", "-262144")
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(sql)?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(sql)?;
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM events").fetch_one(&pool).await.map_err(sql)?;
        Ok(Index { pool, path: path.to_owned(), indexed: Arc::new(AtomicU64::new(last as u64)), progress: Arc::new(Notify::new()) })
    }

    pub fn indexed_sequence(&self) -> u64 {
        self.indexed.load(Ordering::Acquire)
    }

    /// Waits (up to `timeout`) until every record up to `sequence` is indexed.
    pub async fn wait_for(&self, sequence: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.progress.notified();
            if self.indexed_sequence() >= sequence {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.indexed_sequence() >= sequence;
            }
        }
    }

    /// Indexes batches from the writer, merging whatever has queued into one transaction. A
    /// batch the index cannot take (its disk is full: the trail is then writing refusals from
    /// its reserve) is kept and tried again, in order, so the index has no gap once space is
    /// freed; past [`MAX_BACKLOG`] records it is given up (`audit reindex` rebuilds).
    pub fn spawn_feeder(&self, mut receiver: tokio::sync::mpsc::UnboundedReceiver<IndexBatch>) {
        let index = self.clone();
        tokio::spawn(async move {
            let mut backlog: IndexBatch = Vec::new();
            loop {
                let next = if backlog.is_empty() {
                    receiver.recv().await
                } else {
                    match tokio::time::timeout(Duration::from_secs(1), receiver.recv()).await {
                        Ok(next) => next,
                        Err(_) => Some(Vec::new()),
                    }
                };
                let Some(batch) = next else { return };
                let mut batch = if backlog.is_empty() {
                    batch
                } else {
                    let mut merged = std::mem::take(&mut backlog);
                    merged.extend(batch);
                    merged
                };
                while let Ok(more) = receiver.try_recv() {
                    batch.extend(more);
                    if batch.len() >= 20_000 {
                        break;
                    }
                }
                let lines: Vec<(u64, &[u8])> = batch.iter().map(|(s, l)| (*s, l.as_slice())).collect();
                if let Err(err) = index.insert(&lines).await {
                    if batch.len() <= MAX_BACKLOG {
                        tracing::warn!(error = %err, records = batch.len(), "audit index update failed; trying again");
                        backlog = batch;
                    } else {
                        tracing::error!(error = %err, "audit index update failed; `datasandbox audit reindex` rebuilds it from the trail");
                    }
                }
            }
        });
    }

    async fn insert(&self, lines: &[(u64, &[u8])]) -> Result<(), IndexError> {
        let sql = |source| IndexError::Sql { path: self.path.clone(), source };
        let already = self.indexed_sequence();
        let mut rows = Vec::with_capacity(lines.len());
        let mut newest = 0;
        for (sequence, line) in lines {
            newest = newest.max(*sequence);
            if *sequence <= already {
                continue;
            }
            match serde_json::from_slice::<Record>(line) {
                Ok(record) => rows.push((*sequence as i64, record, String::from_utf8_lossy(line).into_owned())),
                Err(_) => tracing::warn!(sequence, "an audit record does not parse; it is left out of the index"),
            }
        }
        let mut tx = self.pool.begin().await.map_err(sql)?;
        // Many rows per statement: one round trip to SQLite per chunk, not per row.
        for chunk in rows.chunks(40) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT OR REPLACE INTO events (sequence, event_time, event_source, event_name, user_type, user_name, principal_id, user_arn, source_ip,
                 user_agent, error_code, error_message, read_only, management_event, event_type, request_id, event_id, correlation_id, session_id,
                 request_parameters, response_elements, record) ",
            );
            insert.push_values(chunk, |mut row, (sequence, record, text)| {
                let session_id = ["SessionId", "SessionID"]
                    .iter()
                    .find_map(|k| record.request_parameters.get(*k).or_else(|| record.response_elements.get(*k)))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                row.push_bind(*sequence)
                    .push_bind(record.event_time.clone())
                    .push_bind(record.event_source.clone())
                    .push_bind(record.event_name.clone())
                    .push_bind(record.user_identity.kind.clone())
                    .push_bind(record.user_identity.user_name.clone())
                    .push_bind(record.user_identity.principal_id.clone())
                    .push_bind(record.user_identity.arn.clone())
                    .push_bind(record.source_ip_address.clone())
                    .push_bind(record.user_agent.clone())
                    .push_bind(record.error_code.clone())
                    .push_bind(record.error_message.clone())
                    .push_bind(record.read_only)
                    .push_bind(record.management_event)
                    .push_bind(record.event_type.clone())
                    .push_bind(record.request_id.clone())
                    .push_bind(record.event_id.clone())
                    .push_bind(record.correlation_id.clone())
                    .push_bind(session_id)
                    .push_bind(record.request_parameters.to_string())
                    .push_bind(record.response_elements.to_string())
                    .push_bind(text.clone());
            });
            insert.build().execute(&mut *tx).await.map_err(sql)?;
            let resources: Vec<(i64, &crate::record::RecordResource)> =
                chunk.iter().flat_map(|(sequence, record, _)| record.resources.iter().map(move |r| (*sequence, r))).collect();
            for resources in resources.chunks(300) {
                let mut insert = sqlx::QueryBuilder::new("INSERT INTO event_resources (sequence, arn, type) ");
                insert.push_values(resources, |mut row, (sequence, resource)| {
                    row.push_bind(*sequence).push_bind(resource.arn.clone()).push_bind(resource.kind.clone());
                });
                insert.build().execute(&mut *tx).await.map_err(sql)?;
            }
        }
        tx.commit().await.map_err(sql)?;
        self.indexed.fetch_max(newest, Ordering::AcqRel);
        self.progress.notify_waiters();
        Ok(())
    }

    /// Indexes every record of the trail's files that the index does not hold yet.
    pub async fn catch_up(&self, layout: &Layout) -> Result<u64, IndexError> {
        let mut added = 0;
        let files =
            layout.files(Kind::Log, &[".jsonl", ".json.gz"]).map_err(|source| TrailError::Io { path: layout.root.clone(), source })?;
        for path in files {
            if path.extension().is_some_and(|e| e == "jsonl") && crate::layout::sealed_name(&path).exists() {
                continue;
            }
            let content = read_log(&path)?;
            let sealed = path.extension().is_some_and(|e| e == "gz");
            let Ok((lines, _)) = chain::record_lines(&content, sealed) else { continue };
            let mut batch = Vec::with_capacity(lines.len());
            for line in lines {
                if let Some(link) = chain::parse_link(line)
                    && link.sequence > self.indexed_sequence()
                {
                    batch.push((link.sequence, line));
                }
            }
            for chunk in batch.chunks(20_000) {
                self.insert(chunk).await?;
                added += chunk.len() as u64;
            }
        }
        Ok(added)
    }

    /// Empties the index and rebuilds it from the trail's files alone.
    pub async fn rebuild(&self, layout: &Layout) -> Result<u64, IndexError> {
        let sql = |source| IndexError::Sql { path: self.path.clone(), source };
        sqlx::raw_sql("DELETE FROM events; DELETE FROM event_resources;").execute(&self.pool).await.map_err(sql)?;
        self.indexed.store(0, Ordering::Release);
        self.catch_up(layout).await
    }

    /// Records matching `filter`, newest first; `after` continues a previous page.
    pub async fn lookup(&self, filter: &LookupFilter, limit: u32, before: Option<u64>) -> Result<(Vec<Value>, Option<u64>), IndexError> {
        let sql = |source| IndexError::Sql { path: self.path.clone(), source };
        let rows = sqlx::query(
            "SELECT sequence, record FROM events e
             WHERE (?1 IS NULL OR event_name = ?1) AND (?2 IS NULL OR event_source = ?2) AND (?3 IS NULL OR user_name = ?3)
               AND (?4 IS NULL OR request_id = ?4) AND (?5 IS NULL OR correlation_id = ?5)
               AND (?6 IS NULL OR EXISTS (SELECT 1 FROM event_resources r WHERE r.sequence = e.sequence AND (r.arn = ?6 OR r.arn LIKE '%' || ?6)))
               AND (?7 IS NULL OR event_time >= ?7) AND (?8 IS NULL OR event_time <= ?8) AND (?9 IS NULL OR read_only = ?9)
               AND sequence < ?10
             ORDER BY sequence DESC LIMIT ?11",
        )
        .bind(&filter.event_name)
        .bind(&filter.event_source)
        .bind(&filter.user_name)
        .bind(&filter.request_id)
        .bind(&filter.correlation_id)
        .bind(&filter.resource_name)
        .bind(&filter.start_time)
        .bind(&filter.end_time)
        .bind(filter.read_only)
        .bind(before.map_or(i64::MAX, |b| b as i64))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        let mut events = Vec::new();
        let mut last = None;
        for row in rows.iter().take(limit as usize) {
            let sequence: i64 = row.try_get("sequence").map_err(sql)?;
            let text: String = row.try_get("record").map_err(sql)?;
            events.push(serde_json::from_str(&text).unwrap_or(Value::String(text)));
            last = Some(sequence as u64);
        }
        let next = if rows.len() > limit as usize { last } else { None };
        Ok((events, next))
    }

    /// One timeline: the selected person's, session's or correlation's actions, in order,
    /// including actions made on their behalf (same correlation id).
    pub async fn trace(
        &self,
        selector: &TraceSelector,
        since: Option<&str>,
        until: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Value>, IndexError> {
        let sql = |source| IndexError::Sql { path: self.path.clone(), source };
        let (column, value) = match selector {
            TraceSelector::User(user) => ("user_name", user),
            TraceSelector::Session(session) => ("session_id", session),
            TraceSelector::CorrelationId(id) => ("correlation_id", id),
        };
        // Two index lookups joined, not an OR over the whole table: the selected rows, and every
        // row that shares a correlation id with them (actions made on their behalf).
        let query = format!(
            "WITH ids AS (SELECT DISTINCT correlation_id FROM events WHERE {column} = ?1 AND correlation_id IS NOT NULL),
                  picked AS (SELECT sequence FROM events WHERE {column} = ?1
                             UNION SELECT e.sequence FROM ids JOIN events e ON e.correlation_id = ids.correlation_id)
             SELECT e.sequence, event_time, source_ip, user_type, user_name, event_source, event_name, error_code, correlation_id, session_id,
                    (SELECT group_concat(arn, ' ') FROM event_resources r WHERE r.sequence = e.sequence) AS resources
             FROM picked JOIN events e ON e.sequence = picked.sequence
             WHERE (?2 IS NULL OR event_time >= ?2) AND (?3 IS NULL OR event_time <= ?3)
             ORDER BY e.sequence LIMIT ?4"
        );
        let rows =
            sqlx::query(&query).bind(value).bind(since).bind(until).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(sql)?;
        rows.iter()
            .map(|row| {
                Ok(json!({
                    "sequence": row.try_get::<i64, _>("sequence")?,
                    "eventTime": row.try_get::<String, _>("event_time")?,
                    "sourceIPAddress": row.try_get::<Option<String>, _>("source_ip")?,
                    "userType": row.try_get::<Option<String>, _>("user_type")?,
                    "userName": row.try_get::<Option<String>, _>("user_name")?,
                    "action": format!("{}:{}", row.try_get::<String, _>("event_source")?, row.try_get::<String, _>("event_name")?),
                    "errorCode": row.try_get::<Option<String>, _>("error_code")?,
                    "correlationId": row.try_get::<Option<String>, _>("correlation_id")?,
                    "sessionId": row.try_get::<Option<String>, _>("session_id")?,
                    "resources": row.try_get::<Option<String>, _>("resources")?.map(|r| r.split(' ').map(str::to_owned).collect::<Vec<_>>()).unwrap_or_default(),
                }))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(sql)
    }

    /// The records of one kind of event within a time window, oldest first.
    pub async fn records(&self, source: &str, name: &str, from: &str, to: &str) -> Result<Vec<Record>, IndexError> {
        let sql = |source| IndexError::Sql { path: self.path.clone(), source };
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT record FROM events WHERE event_name = ?1 AND event_source = ?2 AND event_time >= ?3 AND event_time < ?4 ORDER BY sequence",
        )
        .bind(name)
        .bind(source)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(sql)?;
        Ok(rows.iter().filter_map(|text| serde_json::from_str(text).ok()).collect())
    }

    /// Runs one read-only SELECT (or WITH … SELECT) over the documented tables.
    pub async fn query(&self, statement: &str, max_rows: usize) -> Result<(Vec<String>, Vec<Vec<Value>>), IndexError> {
        let trimmed = statement.trim().trim_end_matches(';').trim();
        let first = trimmed.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        if first != "SELECT" && first != "WITH" {
            return Err(IndexError::Query("only one SELECT statement (or WITH … SELECT) is allowed".into()));
        }
        if trimmed.contains(';') {
            return Err(IndexError::Query("only one statement is allowed; remove the `;` inside it".into()));
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", self.path.display()))
            .map_err(|e| IndexError::Query(e.to_string()))?
            .read_only(true);
        let mut connection =
            sqlx::ConnectOptions::connect(&options).await.map_err(|source| IndexError::Sql { path: self.path.clone(), source })?;
        sqlx::query("PRAGMA query_only = ON")
            .execute(&mut connection)
            .await
            .map_err(|source| IndexError::Sql { path: self.path.clone(), source })?;
        let rows =
            sqlx::query(trimmed).fetch_all(&mut connection).await.map_err(|e| IndexError::Query(format!("the query failed: {e}")))?;
        let columns: Vec<String> = rows.first().map(|r| r.columns().iter().map(|c| c.name().to_owned()).collect()).unwrap_or_default();
        let mut out = Vec::new();
        for row in rows.iter().take(max_rows) {
            let mut values = Vec::with_capacity(columns.len());
            for index in 0..columns.len() {
                let raw = row.try_get_raw(index).map_err(|e| IndexError::Query(e.to_string()))?;
                let value = if raw.is_null() {
                    Value::Null
                } else {
                    match raw.type_info().name() {
                        "INTEGER" | "BOOLEAN" => row.try_get::<i64, _>(index).map(Value::from).unwrap_or(Value::Null),
                        "REAL" => row.try_get::<f64, _>(index).map(Value::from).unwrap_or(Value::Null),
                        "BLOB" => row.try_get::<Vec<u8>, _>(index).map(|b| Value::from(hex::encode(b))).unwrap_or(Value::Null),
                        _ => row.try_get::<String, _>(index).map(Value::from).unwrap_or(Value::Null),
                    }
                };
                values.push(value);
            }
            out.push(values);
        }
        Ok((columns, out))
    }
}

/// Rows as objects keyed by column, for JSON output.
pub fn rows_as_objects(columns: &[String], rows: &[Vec<Value>]) -> Vec<Value> {
    rows.iter().map(|row| Value::Object(columns.iter().cloned().zip(row.iter().cloned()).collect::<Map<_, _>>())).collect()
}
