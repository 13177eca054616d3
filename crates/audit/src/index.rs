//! The audit index: every record in a table for lookups, traces and read-only SQL (one
//! `SELECT` or `WITH … SELECT` statement). It is derived data, fed by the writer after each
//! fsync and rebuilt from the log files alone by `datasandbox audit reindex`; nothing that
//! judges the trail's integrity reads it.
//!
//! One code path for both places it lives, through sqlx's `Any` driver (as the metadata
//! store): a SQLite file in the data directory for the single embedded node, and the shared
//! PostgreSQL database in scale-out mode, where every node feeds its own records (keyed by
//! node and sequence) into the same tables, so lookups, queries and traces on any node see
//! every node's records. Each node catches up from its own chain only. The one exception is
//! how records go into the SQLite file: through a connection of its own on a thread of its own,
//! at a lower priority (`in_place`), at a quarter of what the same inserts cost through sqlx.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyPool, Row as _};
use tokio::sync::Notify;

use crate::error::TrailError;
use crate::record::Record;

mod feed;
mod in_place;
mod pool;
mod rows;
mod sql_query;
mod stand_in;
mod statements;

use in_place::InPlace;
use pool::{SQLITE_SETTINGS, connect};
pub use statements::redact_url;
pub use statements::rows_as_objects;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("audit index `{place}`: {source}")]
    Sql { place: String, source: sqlx::Error },
    /// The embedded node's file, written in place; `row_refused`: SQLite's code, if it refused
    /// a value a row holds.
    #[error("audit index `{place}`: {message}")]
    InPlace { place: String, message: String, row_refused: Option<String> },
    #[error(
        "audit index `{place}`: the database's encoding is {encoding}, and records hold any Unicode text; \
         give the index a UTF8 database (CREATE DATABASE … ENCODING 'UTF8' TEMPLATE template0)"
    )]
    Encoding { place: String, encoding: String },
    #[error("{0}")]
    Query(String),
    #[error(transparent)]
    Trail(#[from] TrailError),
}

impl IndexError {
    /// The store's code, if it refused a value a row holds (which one row may be the cause of),
    /// rather than failed itself or refused the statement whatever its rows: PostgreSQL's
    /// classes of a data exception (22: a byte sequence the encoding lacks, a string too long),
    /// an integrity constraint (23), a program limit (54: an index entry too big) and a
    /// trigger's exception (P0); SQLite's constraint, too-big, mismatch and range results. Any
    /// other failure (the store unreachable, full, locked, read-only, its password changed)
    /// keeps the whole batch for the next try.
    fn row_refused(&self) -> Option<String> {
        match self {
            IndexError::Sql { source: sqlx::Error::Database(err), .. } => err
                .code()
                .filter(|code| ["22", "23", "54", "P0"].iter().any(|class| code.starts_with(class)))
                .map(|code| format!("SQLSTATE {code}")),
            IndexError::InPlace { row_refused, .. } => row_refused.clone(),
            IndexError::Sql { .. } | IndexError::Encoding { .. } | IndexError::Query(_) | IndexError::Trail(_) => None,
        }
    }
}

/// Where the index lives.
#[derive(Debug, Clone)]
pub enum IndexTarget {
    /// A SQLite file of its own (the single embedded node).
    File(PathBuf),
    /// The shared PostgreSQL database (`postgres://…`), in scale-out mode.
    Database(String),
}

/// The documented tables, created on open, the same in SQLite and PostgreSQL. A record is
/// identified by its node and its place in that node's chain; across nodes, records are
/// ordered by time.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    node TEXT NOT NULL,                -- the node whose chain holds the record (`local` when embedded)
    sequence BIGINT NOT NULL,          -- the record's place in its node's hash chain
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
    read_only BIGINT NOT NULL,         -- 1 or 0
    management_event BIGINT NOT NULL,  -- 1 or 0
    event_type TEXT NOT NULL,
    request_id TEXT,
    event_id TEXT,
    correlation_id TEXT,               -- one sign-in or session, end to end
    session_id TEXT,                   -- the streaming session, when the action names one
    request_parameters TEXT,           -- JSON, secrets redacted
    response_elements TEXT,            -- JSON
    record TEXT NOT NULL,              -- the whole record line, as in the log file
    PRIMARY KEY (node, sequence)
);
CREATE TABLE IF NOT EXISTS event_resources (
    node TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    arn TEXT NOT NULL,
    type TEXT
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user_name, event_time);
CREATE INDEX IF NOT EXISTS events_by_correlation ON events (correlation_id, event_time);
CREATE INDEX IF NOT EXISTS events_by_session ON events (session_id, event_time);
CREATE INDEX IF NOT EXISTS events_by_request ON events (request_id);
CREATE INDEX IF NOT EXISTS events_by_name ON events (event_name, event_time);
CREATE INDEX IF NOT EXISTS events_by_source_ip ON events (source_ip, event_time);
CREATE INDEX IF NOT EXISTS events_by_time ON events (event_time, node, sequence);
CREATE INDEX IF NOT EXISTS resources_by_arn ON event_resources (arn);
CREATE INDEX IF NOT EXISTS resources_by_record ON event_resources (node, sequence);
";

/// Which node generated each day's usage reports: one row per day, claimed by the first node
/// to insert it, so that nodes sharing a database write each day's reports once.
const CLAIMS: &str = "CREATE TABLE IF NOT EXISTS usage_report_claims (day TEXT PRIMARY KEY, node TEXT NOT NULL, claimed_at TEXT NOT NULL)";

/// Serializes creating the tables between nodes starting at once on one PostgreSQL database
/// (concurrent `CREATE TABLE IF NOT EXISTS` can fail on its catalog rows).
const SCHEMA_LOCK: i64 = 0x6175_6469_7431;

#[derive(Clone)]
pub struct Index {
    pool: AnyPool,
    /// The SQLite file's own connection for inserts, called in place (see `in_place`); none
    /// on PostgreSQL.
    in_place: Option<InPlace>,
    target: IndexTarget,
    /// Where the index is, for messages (a database URL without its password).
    place: String,
    /// The node whose records this process feeds.
    node: String,
    indexed: Arc<AtomicU64>,
    progress: Arc<Notify>,
    /// A read waits for records still on their way in: the feeder inserts now.
    hurry: Arc<Notify>,
    /// How many reads wait for the index: its inserting thread works at the server's priority
    /// meanwhile (see `in_place`).
    waiting: Arc<AtomicUsize>,
    /// Held while records go in, and by a rebuild from its delete to the end of its catch-up.
    feeding: Arc<tokio::sync::Mutex<()>>,
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

/// Where a page of lookups ends: the (time, node, sequence) of its last record, so the next
/// page starts after it whichever node wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupCursor {
    pub event_time: String,
    pub node: String,
    pub sequence: u64,
}

impl LookupCursor {
    /// The cursor as one string (for a NextToken).
    pub fn encode(&self) -> String {
        format!("{}|{}|{}", self.event_time, self.sequence, self.node)
    }

    pub fn decode(text: &str) -> Option<LookupCursor> {
        let mut parts = text.splitn(3, '|');
        let event_time = parts.next()?.to_owned();
        let sequence = parts.next()?.parse().ok()?;
        let node = parts.next()?.to_owned();
        Some(LookupCursor { event_time, node, sequence })
    }
}

/// Whose timeline `trace` draws.
#[derive(Debug, Clone)]
pub enum TraceSelector {
    User(String),
    Session(String),
    CorrelationId(String),
}

impl Index {
    /// Opens (creating its tables) the index at `target`, for the records of `node`.
    pub async fn open(target: &IndexTarget, node: &str) -> Result<Index, IndexError> {
        sqlx::any::install_default_drivers();
        let (url, place, sqlite) = match target {
            IndexTarget::File(path) => (format!("sqlite://{}?mode=rwc", path.display()), path.display().to_string(), true),
            IndexTarget::Database(url) => (url.clone(), redact_url(url), false),
        };
        let sql = |source| IndexError::Sql { place: place.clone(), source };
        let options = AnyConnectOptions::from_str(&url).map_err(sql)?;
        let pool = connect(options, sqlite, 4).await.map_err(sql)?;
        if !sqlite {
            // Records hold any Unicode text: a database of another encoding refuses the rows of
            // those it cannot hold, which then stand in the index without their text.
            let encoding: String = sqlx::query_scalar("SELECT current_setting('server_encoding')").fetch_one(&pool).await.map_err(sql)?;
            if encoding != "UTF8" && encoding != "SQL_ASCII" {
                return Err(IndexError::Encoding { place, encoding });
            }
        }
        create_tables(&pool, sqlite).await.map_err(sql)?;
        // SQLite: records go in through one connection of their own, whose page cache then stays
        // valid from one batch to the next (a connection that did not write the last change
        // drops its whole cache).
        let waiting = Arc::new(AtomicUsize::new(0));
        let in_place = match target {
            IndexTarget::File(path) => Some(InPlace::open(path, SQLITE_SETTINGS, waiting.clone()).map_err(|err| IndexError::InPlace {
                place: place.clone(),
                message: err,
                row_refused: None,
            })?),
            IndexTarget::Database(_) => None,
        };
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM events WHERE node = $1")
            .bind(node)
            .fetch_one(&pool)
            .await
            .map_err(sql)?;
        Ok(Index {
            pool,
            in_place,
            target: target.clone(),
            place,
            node: node.to_owned(),
            indexed: Arc::new(AtomicU64::new(last as u64)),
            progress: Arc::new(Notify::new()),
            hurry: Arc::new(Notify::new()),
            waiting,
            feeding: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Wraps a database error with where the index is; owns its copy of the place, so that
    /// no borrow of the index is held across an await (the futures must be `Send` for any
    /// lifetime, which sqlx's executors make hard to prove through a borrow).
    fn sql(&self) -> impl Fn(sqlx::Error) -> IndexError + Send + Sync + 'static {
        let place = self.place.clone();
        move |source| IndexError::Sql { place: place.clone(), source }
    }

    fn sqlite(&self) -> bool {
        matches!(self.target, IndexTarget::File(_))
    }

    /// The sequence number of this node's newest indexed record.
    pub fn indexed_sequence(&self) -> u64 {
        self.indexed.load(Ordering::Acquire)
    }

    /// Waits (up to `timeout`) until every record of this node up to `sequence` is indexed.
    pub async fn wait_for(&self, sequence: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let _waiting = Waiting::count(&self.waiting);
        loop {
            let notified = self.progress.notified();
            if self.indexed_sequence() >= sequence {
                return true;
            }
            self.hurry.notify_one();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.indexed_sequence() >= sequence;
            }
        }
    }

    /// Records of every node matching `filter`, newest first; `before` continues a page.
    pub async fn lookup(
        &self,
        filter: &LookupFilter,
        limit: u32,
        before: Option<&LookupCursor>,
    ) -> Result<(Vec<Value>, Option<LookupCursor>), IndexError> {
        let sql = self.sql();
        // Each value as the columns hold it (no NUL: see `rows::as_column`).
        let column = |value: &Option<String>| value.as_deref().map(|v| rows::as_column(v).into_owned());
        // A resource is found by its ARN or by the ARN's end, matched as written on both backends
        // (SQLite's LIKE ignores ASCII case, PostgreSQL's does not, and each escapes its own way).
        let resource = column(&filter.resource_name);
        // Without a cursor, one that sorts after every record: `~` after every digit.
        let start = LookupCursor { event_time: "~".into(), node: String::new(), sequence: 0 };
        let before = before.unwrap_or(&start);
        let rows = sqlx::query(
            "SELECT node, sequence, event_time, record FROM events e
             WHERE ($1 IS NULL OR event_name = $1) AND ($2 IS NULL OR event_source = $2) AND ($3 IS NULL OR user_name = $3)
               AND ($4 IS NULL OR request_id = $4) AND ($5 IS NULL OR correlation_id = $5)
               AND ($6 IS NULL OR EXISTS (SELECT 1 FROM event_resources r WHERE r.node = e.node AND r.sequence = e.sequence
                                          AND substr(r.arn, length(r.arn) - length(CAST($6 AS TEXT)) + 1) = $6))
               AND ($7 IS NULL OR event_time >= $7) AND ($8 IS NULL OR event_time <= $8) AND ($9 IS NULL OR read_only = $9)
               AND (event_time < $10 OR (event_time = $10 AND (node < $11 OR (node = $11 AND sequence < $12))))
             ORDER BY event_time DESC, node DESC, sequence DESC LIMIT $13",
        )
        .bind(column(&filter.event_name))
        .bind(column(&filter.event_source))
        .bind(column(&filter.user_name))
        .bind(column(&filter.request_id))
        .bind(column(&filter.correlation_id))
        .bind(resource)
        .bind(column(&filter.start_time))
        .bind(column(&filter.end_time))
        .bind(filter.read_only.map(i64::from))
        .bind(&before.event_time)
        .bind(if before.event_time == "~" { "\u{10ffff}" } else { before.node.as_str() })
        .bind(if before.event_time == "~" { i64::MAX } else { before.sequence as i64 })
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(&sql)?;
        let mut events = Vec::new();
        let mut last = None;
        for row in rows.iter().take(limit as usize) {
            let text: String = row.try_get("record").map_err(&sql)?;
            events.push(serde_json::from_str(&text).unwrap_or(Value::String(text)));
            last = Some(LookupCursor {
                event_time: row.try_get("event_time").map_err(&sql)?,
                node: row.try_get("node").map_err(&sql)?,
                sequence: row.try_get::<i64, _>("sequence").map_err(&sql)? as u64,
            });
        }
        let next = if rows.len() > limit as usize { last } else { None };
        Ok((events, next))
    }

    /// One timeline across every node: the selected person's, session's or correlation's
    /// actions, in time order, including actions made on their behalf (same correlation id).
    pub async fn trace(
        &self,
        selector: &TraceSelector,
        since: Option<&str>,
        until: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Value>, IndexError> {
        let sql = self.sql();
        let (column, value) = match selector {
            TraceSelector::User(user) => ("user_name", user),
            TraceSelector::Session(session) => ("session_id", session),
            TraceSelector::CorrelationId(id) => ("correlation_id", id),
        };
        // Two index lookups joined, not an OR over the whole table: the selected rows, and every
        // row that shares a correlation id with them (actions made on their behalf). A record's
        // resources come as a JSON array: an ARN may hold any character but NUL (an object's key
        // a space), so no separator would do.
        let resources = if self.sqlite() { "json_group_array(arn)" } else { "json_agg(arn)::text" };
        let query = format!(
            "WITH ids AS (SELECT DISTINCT correlation_id FROM events WHERE {column} = $1 AND correlation_id IS NOT NULL),
                  picked AS (SELECT node, sequence FROM events WHERE {column} = $1
                             UNION SELECT e.node, e.sequence FROM ids JOIN events e ON e.correlation_id = ids.correlation_id)
             SELECT e.node, e.sequence, event_time, source_ip, user_type, user_name, event_source, event_name, error_code, correlation_id, session_id, read_only,
                    (SELECT {resources} FROM event_resources r WHERE r.node = e.node AND r.sequence = e.sequence) AS resources,
                    CASE WHEN (event_source = 'notebooks' AND event_name IN ('ExecuteCode', 'ExecuteCodeResult', 'KernelInput'))
                      OR (event_source = 'storage' AND event_name IN ('DatasetFileOpened', 'DatasetFileClosed', 'DatasetWriteRefused'))
                      THEN record END AS record
             FROM picked JOIN events e ON e.node = picked.node AND e.sequence = picked.sequence
             WHERE ($2 IS NULL OR event_time >= $2) AND ($3 IS NULL OR event_time <= $3)
             ORDER BY event_time, e.node, e.sequence LIMIT $4"
        );
        let [value, since, until] = [Some(value.as_str()), since, until].map(|v| v.map(|v| rows::as_column(v).into_owned()));
        let rows =
            sqlx::query(&query).bind(value).bind(since).bind(until).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(&sql)?;
        rows.iter()
            .map(|row| {
                Ok(json!({
                    "node": row.try_get::<String, _>("node")?,
                    "sequence": row.try_get::<i64, _>("sequence")?,
                    "eventTime": row.try_get::<String, _>("event_time")?,
                    "sourceIPAddress": row.try_get::<Option<String>, _>("source_ip")?,
                    "userType": row.try_get::<Option<String>, _>("user_type")?,
                    "userName": row.try_get::<Option<String>, _>("user_name")?,
                    "action": format!("{}:{}", row.try_get::<String, _>("event_source")?, row.try_get::<String, _>("event_name")?),
                    "errorCode": row.try_get::<Option<String>, _>("error_code")?,
                    "readOnly": row.try_get::<i64, _>("read_only")? != 0,
                    "correlationId": row.try_get::<Option<String>, _>("correlation_id")?,
                    "sessionId": row.try_get::<Option<String>, _>("session_id")?,
                    "resources": row
                        .try_get::<Option<String>, _>("resources")?
                        .and_then(|arns| serde_json::from_str::<Vec<String>>(&arns).ok())
                        .unwrap_or_default(),
                    "detail": row.try_get::<Option<String>, _>("record")?.as_deref().and_then(crate::detail::detail),
                }))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(sql)
    }

    /// The records of one kind of event within a time window, from every node, oldest first.
    pub async fn records(&self, source: &str, name: &str, from: &str, to: &str) -> Result<Vec<Record>, IndexError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT record FROM events WHERE event_name = $1 AND event_source = $2 AND event_time >= $3 AND event_time < $4
             ORDER BY event_time, node, sequence",
        )
        .bind(name)
        .bind(source)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(self.sql())?;
        let records: Vec<Record> = rows.iter().filter_map(|text| serde_json::from_str(text).ok()).collect();
        for stand_in in records.iter().filter(|record| record.error_code.as_deref() == Some(stand_in::CODE)) {
            tracing::warn!(
                source,
                name,
                detail = stand_in.error_message.as_deref().unwrap_or_default(),
                "a record of this kind stands in the index for one it refused: what is drawn from these records leaves it out; the trail holds it"
            );
        }
        Ok(records)
    }

    /// Claims the writing of `day`'s usage reports for this node: true for the first node to
    /// ask (the claim row is then theirs), false for every later one.
    pub async fn claim_report_day(&self, day: &str) -> Result<bool, IndexError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let done = sqlx::query("INSERT INTO usage_report_claims (day, node, claimed_at) VALUES ($1, $2, $3) ON CONFLICT (day) DO NOTHING")
            .bind(day)
            .bind(&self.node)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(self.sql())?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claim back (its reports could not be written), so a later run may try again.
    pub async fn release_report_day(&self, day: &str) -> Result<(), IndexError> {
        sqlx::query("DELETE FROM usage_report_claims WHERE day = $1 AND node = $2")
            .bind(day)
            .bind(&self.node)
            .execute(&self.pool)
            .await
            .map_err(self.sql())?;
        Ok(())
    }
}

/// Creates the tables; an index from before records had a node is dropped first (it is
/// derived data: `catch_up` refills it from the trail). On PostgreSQL under an advisory lock,
/// so nodes starting together do not race on the catalog, with the role `audit:Query` runs as.
async fn create_tables(pool: &AnyPool, sqlite: bool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if !sqlite {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SCHEMA_LOCK).execute(&mut *tx).await?;
    }
    let before_nodes = sqlx::query("SELECT sequence FROM events WHERE node IS NULL LIMIT 1").fetch_optional(&mut *tx).await;
    if before_nodes.is_err() {
        // No table, or one without a node column: either way, start from nothing.
        if !sqlite {
            tx.rollback().await?;
            tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SCHEMA_LOCK).execute(&mut *tx).await?;
        }
        sqlx::raw_sql("DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS event_resources;").execute(&mut *tx).await?;
    }
    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
    sqlx::raw_sql(CLAIMS).execute(&mut *tx).await?;
    if !sqlite {
        statements::create_reader_role(&mut tx).await?;
    }
    tx.commit().await
}

/// A read counted as waiting for the index while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Waiting<'a> {
        waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
