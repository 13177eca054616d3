//! Records as the index takes them, and their inserts through sqlx (PostgreSQL); the embedded
//! node's SQLite file takes the same rows in place (`in_place`).

use serde_json::Value;
use sqlx::AnyPool;

use super::statements::placeholders;
use crate::record::Record;

/// The columns of `events`, in the order `insert` binds them.
pub(super) const EVENT_COLUMNS: usize = 23;

pub(super) const INSERT_EVENTS: &str = "INSERT INTO events (node, sequence, event_time, event_source, event_name, user_type, user_name, principal_id, \
     user_arn, source_ip, user_agent, error_code, error_message, read_only, management_event, event_type, request_id, event_id, \
     correlation_id, session_id, request_parameters, response_elements, record)";
pub(super) const INSERT_RESOURCES: &str = "INSERT INTO event_resources (node, sequence, arn, type)";

/// A record as the index takes it: parsed, with the session it names and its exact line.
pub(super) struct Row {
    pub sequence: i64,
    pub record: Record,
    pub session_id: Option<String>,
    pub text: String,
}

impl Row {
    pub(super) fn of(sequence: i64, record: Record, line: &[u8]) -> Row {
        let session_id = ["SessionId", "SessionID"]
            .iter()
            .find_map(|k| record.request_parameters.get(*k).or_else(|| record.response_elements.get(*k)))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Row { sequence, record, session_id, text: String::from_utf8_lossy(line).into_owned() }
    }
}

/// Inserts `rows` of `node`'s chain through sqlx, many rows per statement (PostgreSQL).
pub(super) async fn through_pool(writer: &AnyPool, node: &str, rows: &[Row], sqlite: bool) -> Result<(), sqlx::Error> {
    let mut tx = writer.begin().await?;
    // Many rows per statement: one round trip per chunk, not per row. The placeholders are
    // written out (`$n` for PostgreSQL, `?` for SQLite): sqlx's builder writes `?` for `Any`.
    for chunk in rows.chunks(40) {
        let statement =
            format!("{INSERT_EVENTS} VALUES {} ON CONFLICT (node, sequence) DO NOTHING", placeholders(chunk.len(), EVENT_COLUMNS, sqlite));
        let mut insert = sqlx::query(&statement);
        for row in chunk {
            let record = &row.record;
            insert = insert
                .bind(node.to_owned())
                .bind(row.sequence)
                .bind(record.event_time.clone())
                .bind(record.event_source.clone())
                .bind(record.event_name.clone())
                .bind(record.user_identity.kind.clone())
                .bind(record.user_identity.user_name.clone())
                .bind(record.user_identity.principal_id.clone())
                .bind(record.user_identity.arn.clone())
                .bind(record.source_ip_address.clone())
                .bind(record.user_agent.clone())
                .bind(record.error_code.clone())
                .bind(record.error_message.clone())
                .bind(i64::from(record.read_only))
                .bind(i64::from(record.management_event))
                .bind(record.event_type.clone())
                .bind(record.request_id.clone())
                .bind(record.event_id.clone())
                .bind(record.correlation_id.clone())
                .bind(row.session_id.clone())
                .bind(record.request_parameters.to_string())
                .bind(record.response_elements.to_string())
                .bind(row.text.clone());
        }
        insert.execute(&mut *tx).await?;
        let resources: Vec<(i64, &crate::record::RecordResource)> =
            chunk.iter().flat_map(|row| row.record.resources.iter().map(move |r| (row.sequence, r))).collect();
        for resources in resources.chunks(300) {
            let statement = format!("{INSERT_RESOURCES} VALUES {}", placeholders(resources.len(), 4, sqlite));
            let mut insert = sqlx::query(&statement);
            for (sequence, resource) in resources {
                insert = insert.bind(node.to_owned()).bind(*sequence).bind(resource.arn.clone()).bind(resource.kind.clone());
            }
            insert.execute(&mut *tx).await?;
        }
    }
    tx.commit().await
}
