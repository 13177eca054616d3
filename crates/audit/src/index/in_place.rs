//! Records into the embedded node's SQLite index, called in place through rusqlite (the same
//! SQLite library as sqlx's): on a thread of its own, each batch's lines (copied there once)
//! are read into rows (see `rows`), bound row by row through one prepared statement per table.
//! Through sqlx's `Any` driver the same inserts cost each row its values converted twice and
//! handed to a worker thread; under a stream of proxied notebook requests that was about a
//! sixth of the server's CPU.
//!
//! The index is derived from the trail, which holds every record durably before its action is
//! answered, so its thread works behind the actions: at a lower priority, giving up the
//! processor every [`ROWS_BETWEEN_YIELDS`] rows. A batch of a tenth of a second of proxied
//! notebook requests held a core for a few milliseconds at a time, and, on a host whose other
//! core runs the notebook, preempted the notebook for that long with every request it was
//! answering (the notebook benchmark's p99). While a read waits for the index, or a batch is
//! a backlog (more than [`BACKLOG_ROWS`]), the thread works at the server's priority: on a
//! host kept busy it would otherwise fall behind until reads gave up waiting. A batch stays
//! one transaction: each commit writes the last page of each of the table's indexes again,
//! and transactions of 32 rows cost the proxy about a tenth more CPU per request.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::rows::{EVENT_COLUMNS, INSERT_EVENTS, INSERT_RESOURCES, Row, rows_of};
use super::statements::placeholders;

/// How many rows the thread inserts before it gives up the processor: a few hundred
/// microseconds of its work.
const ROWS_BETWEEN_YIELDS: usize = 32;

/// A batch of more rows than this is a backlog (a catch-up, a rebuild, or a stream the thread
/// fell behind), inserted at the server's priority.
const BACKLOG_ROWS: usize = 5_000;

/// The index's SQLite file, opened for inserts by a thread of its own.
#[derive(Clone)]
pub(super) struct InPlace {
    jobs: mpsc::Sender<Job>,
}

/// A batch to insert: `node`'s `lines` past `already`, and where the outcome goes.
struct Job {
    node: String,
    lines: Vec<(u64, Vec<u8>)>,
    already: u64,
    done: oneshot::Sender<Result<u64, Refusal>>,
}

impl InPlace {
    /// Opens the index at `path` (its tables made already) with the pool's settings, and starts
    /// the thread that inserts into it; the thread ends once every handle is dropped. `waiting`
    /// counts the reads waiting for the index. The error says why.
    pub(super) fn open(path: &Path, settings: &str, waiting: Arc<AtomicUsize>) -> Result<InPlace, String> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut connection = rusqlite::Connection::open_with_flags(path, flags).map_err(|err| err.to_string())?;
        connection.execute_batch(settings).map_err(|err| err.to_string())?;
        let (jobs, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("audit-index".into())
            .spawn(move || {
                let mut priority = crate::background::Priority::lower("index");
                for job in receiver {
                    let backlog = job.lines.len() > BACKLOG_ROWS;
                    let mut hurry = || priority.hurry(backlog || waiting.load(Ordering::Acquire) > 0);
                    hurry();
                    // A panic is one record's (a row it could not make): the transaction rolls
                    // back, and the feeder's halving finds the record and stands it in.
                    let inserted = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let (rows, newest) = rows_of(job.lines.iter().map(|(sequence, line)| (*sequence, line.as_slice())), job.already);
                        insert(&mut connection, &job.node, &rows, &mut hurry)
                            .map(|()| newest)
                            .map_err(|err| Refusal { row_refused: row_refused(&err), message: err.to_string() })
                    }))
                    .unwrap_or_else(|_| {
                        Err(Refusal { message: "indexing a record panicked".to_owned(), row_refused: Some("a panic".to_owned()) })
                    });
                    let _ = job.done.send(inserted);
                }
            })
            .map_err(|err| format!("cannot start the index's inserting thread: {err}"))?;
        Ok(InPlace { jobs })
    }

    /// Puts `node`'s `lines` past `already` in, in one transaction (a row already there is
    /// left); the newest sequence number among `lines`.
    pub(super) async fn insert(&self, node: &str, lines: &[(u64, &[u8])], already: u64) -> Result<u64, Refusal> {
        let lines = lines.iter().map(|(sequence, line)| (*sequence, line.to_vec())).collect();
        let (done, outcome) = oneshot::channel();
        let stopped = || Refusal { message: "the index's inserting thread stopped".to_owned(), row_refused: None };
        self.jobs.send(Job { node: node.to_owned(), lines, already, done }).map_err(|_| stopped())?;
        outcome.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// Why an insert failed; `row_refused`, SQLite's code if it refused a value a row holds (a
/// constraint, a value too big or of the wrong type), which one row may be the cause of.
pub(super) struct Refusal {
    pub message: String,
    pub row_refused: Option<String>,
}

fn row_refused(err: &rusqlite::Error) -> Option<String> {
    use rusqlite::ErrorCode::{ConstraintViolation, ParameterOutOfRange, TooBig, TypeMismatch};
    err.sqlite_error_code()
        .filter(|code| [ConstraintViolation, TooBig, TypeMismatch, ParameterOutOfRange].contains(code))
        .map(|code| format!("SQLite {code:?}"))
}

/// Inserts `rows` in one transaction, yielding the processor every [`ROWS_BETWEEN_YIELDS`]
/// rows and calling `between` then (to raise or lower the thread's priority).
fn insert(connection: &mut rusqlite::Connection, node: &str, rows: &[Row<'_>], between: &mut dyn FnMut()) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    {
        let mut events = transaction.prepare_cached(&format!(
            "{INSERT_EVENTS} VALUES {} ON CONFLICT (node, sequence) DO NOTHING",
            placeholders(1, EVENT_COLUMNS, true)
        ))?;
        let mut resources = transaction.prepare_cached(&format!("{INSERT_RESOURCES} VALUES {}", placeholders(1, 4, true)))?;
        for (n, row) in rows.iter().enumerate() {
            if n > 0 && n % ROWS_BETWEEN_YIELDS == 0 {
                std::thread::yield_now();
                between();
            }
            let (record, identity) = (&row.fields, &row.fields.user_identity);
            let added = events.execute(rusqlite::params![
                node,
                row.sequence,
                record.event_time,
                record.event_source,
                record.event_name,
                identity.kind,
                identity.user_name,
                identity.principal_id,
                identity.arn,
                record.source_ip_address,
                record.user_agent,
                record.error_code,
                record.error_message,
                i64::from(record.read_only),
                i64::from(record.management_event),
                record.event_type,
                record.request_id,
                record.event_id,
                record.correlation_id,
                row.session_id,
                record.request_parameters.get(),
                record.response_elements.get(),
                row.text,
            ])?;
            // A record already indexed (by another handle on this file: a reindex beside the
            // server) has its resources.
            if added == 0 {
                continue;
            }
            for resource in &record.resources {
                resources.execute(rusqlite::params![node, row.sequence, resource.arn, resource.kind])?;
            }
        }
    }
    transaction.commit()
}
