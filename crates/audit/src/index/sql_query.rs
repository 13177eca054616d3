//! `audit:Query`: one read-only SQL statement over the index, and what keeps it read-only and
//! inside the documented tables. A SQLite index is a file of its own, opened read-only. In
//! PostgreSQL the tables share a database with the metadata store (keys, secrets' rows), so
//! the statement runs in a read-only transaction as a role that may read `events` and
//! `event_resources` and nothing else of the database.

use serde_json::{Map, Value};
use sqlx::any::AnyConnectOptions;
use sqlx::{Column as _, ConnectOptions as _, Row as _, TypeInfo as _, ValueRef as _};

use super::{Index, IndexError, IndexTarget};

/// The role audit queries run as on PostgreSQL: no login, `SELECT` on the index tables only.
const READER_ROLE: &str = "datasandbox_audit_reader";

/// Creates the reader role if the cluster has none (roles are cluster-wide) and lets it read
/// this database's index tables; the connecting user becomes a member so it can `SET ROLE`.
pub(super) async fn create_reader_role(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<(), sqlx::Error> {
    let statements = format!(
        "DO $$ BEGIN CREATE ROLE {READER_ROLE} NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
         GRANT SELECT ON events, event_resources TO {READER_ROLE};
         GRANT {READER_ROLE} TO CURRENT_USER;"
    );
    sqlx::raw_sql(&statements).execute(&mut **tx).await?;
    Ok(())
}

impl Index {
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
        let failed = |e: sqlx::Error| IndexError::Query(format!("the query failed: {e}"));
        let rows = match &self.target {
            IndexTarget::File(path) => {
                let options = format!("sqlite://{}?mode=ro", path.display())
                    .parse::<AnyConnectOptions>()
                    .map_err(|e| IndexError::Query(e.to_string()))?;
                let mut connection = options.connect().await.map_err(self.sql())?;
                sqlx::query("PRAGMA query_only = ON").execute(&mut connection).await.map_err(self.sql())?;
                sqlx::query(trimmed).fetch_all(&mut connection).await.map_err(failed)?
            }
            IndexTarget::Database(_) => {
                let mut tx = self.pool.begin().await.map_err(self.sql())?;
                sqlx::query("SET TRANSACTION READ ONLY").execute(&mut *tx).await.map_err(self.sql())?;
                sqlx::query("SET LOCAL statement_timeout = '30s'").execute(&mut *tx).await.map_err(self.sql())?;
                let role = format!("SET LOCAL ROLE {READER_ROLE}");
                sqlx::query(&role).execute(&mut *tx).await.map_err(|e| {
                    IndexError::Query(format!(
                        "audit queries run as the PostgreSQL role `{READER_ROLE}`, which the database user cannot take ({e}); \
                         create it (NOLOGIN, SELECT on events and event_resources) and grant it to the server's user"
                    ))
                })?;
                let rows = sqlx::query(trimmed).fetch_all(&mut *tx).await.map_err(failed)?;
                tx.rollback().await.map_err(self.sql())?;
                rows
            }
        };
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
                        "BOOLEAN" => row.try_get::<bool, _>(index).map(Value::from).unwrap_or(Value::Null),
                        "SMALLINT" | "INTEGER" | "BIGINT" => row.try_get::<i64, _>(index).map(Value::from).unwrap_or(Value::Null),
                        "REAL" | "DOUBLE" => row.try_get::<f64, _>(index).map(Value::from).unwrap_or(Value::Null),
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

/// `($1, …, $columns), ($columns+1, …)`: `rows` rows of placeholders.
pub(super) fn placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for column in 0..columns {
            if column > 0 {
                out.push(',');
            }
            out.push('$');
            out.push_str(&(row * columns + column + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// A database URL without its password, for messages.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
