//! `audit:Query`: one read-only SQL statement over the index, and what keeps it read-only and
//! inside the documented tables. A SQLite index is a file of its own, opened read-only. In
//! PostgreSQL the tables share a database with the metadata store (keys, secrets' rows), so
//! the statement runs in a read-only transaction as a role that may read `events` and
//! `event_resources` and nothing else of the database.

use serde_json::Value;
use sqlx::any::AnyConnectOptions;
use sqlx::{Column as _, ConnectOptions as _, Row as _, TypeInfo as _, ValueRef as _};

use super::statements::READER_ROLE;
use super::{Index, IndexError, IndexTarget};

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
