//! Records into the embedded node's SQLite index, called in place through rusqlite (the same
//! SQLite library as sqlx's): on a blocking thread, each batch's lines (copied there once) are
//! read into rows (see `rows`), bound row by row through one prepared statement per table, in
//! one transaction. Through sqlx's `Any` driver the same inserts cost each row its values
//! converted twice and handed to a worker thread; under a stream of proxied notebook requests
//! that was about a sixth of the server's CPU.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::rows::{EVENT_COLUMNS, INSERT_EVENTS, INSERT_RESOURCES, Row, rows_of};
use super::statements::placeholders;

/// The index's SQLite file, opened for inserts.
#[derive(Clone)]
pub(super) struct InPlace {
    connection: Arc<Mutex<rusqlite::Connection>>,
}

impl InPlace {
    /// Opens the index at `path` (its tables made already) with the pool's settings.
    pub(super) fn open(path: &Path, settings: &str) -> rusqlite::Result<InPlace> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = rusqlite::Connection::open_with_flags(path, flags)?;
        connection.execute_batch(settings)?;
        Ok(InPlace { connection: Arc::new(Mutex::new(connection)) })
    }

    /// Puts `node`'s `lines` past `already` in, in one transaction (a row already there is
    /// left); the newest sequence number among `lines`.
    pub(super) async fn insert(&self, node: &str, lines: &[(u64, &[u8])], already: u64) -> Result<u64, Refusal> {
        let (connection, node) = (self.connection.clone(), node.to_owned());
        let lines: Vec<(u64, Vec<u8>)> = lines.iter().map(|(sequence, line)| (*sequence, line.to_vec())).collect();
        let inserted = tokio::task::spawn_blocking(move || {
            let (rows, newest) = rows_of(lines.iter().map(|(sequence, line)| (*sequence, line.as_slice())), already);
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            insert(&mut connection, &node, &rows).map(|()| newest)
        })
        .await;
        match inserted {
            Ok(inserted) => inserted.map_err(|err| Refusal { row_refused: row_refused(&err), message: err.to_string() }),
            Err(err) => Err(Refusal { message: format!("the insert stopped: {err}"), row_refused: None }),
        }
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

fn insert(connection: &mut rusqlite::Connection, node: &str, rows: &[Row<'_>]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    {
        let mut events = transaction.prepare_cached(&format!(
            "{INSERT_EVENTS} VALUES {} ON CONFLICT (node, sequence) DO NOTHING",
            placeholders(1, EVENT_COLUMNS, true)
        ))?;
        let mut resources = transaction.prepare_cached(&format!("{INSERT_RESOURCES} VALUES {}", placeholders(1, 4, true)))?;
        for row in rows {
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
