//! SQL text shared by the index's statements: placeholders written out for both databases,
//! the role audit queries run as on PostgreSQL, and how rows turn into JSON.

use serde_json::{Map, Value};

/// The role audit queries run as on PostgreSQL: no login, `SELECT` on the index tables only.
pub(super) const READER_ROLE: &str = "datasandbox_audit_reader";

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

/// Rows as objects keyed by column, for JSON output.
pub fn rows_as_objects(columns: &[String], rows: &[Vec<Value>]) -> Vec<Value> {
    rows.iter().map(|row| Value::Object(columns.iter().cloned().zip(row.iter().cloned()).collect::<Map<_, _>>())).collect()
}

/// `($1, …, $columns), ($columns+1, …)`: `rows` rows of placeholders; or, for SQLite, `(?, …)`,
/// which it binds in order (sqlx asks SQLite the name of every numbered one, and SQLite finds
/// each name by a walk through all of them: a statement of n of them costs n² steps).
pub(super) fn placeholders(rows: usize, columns: usize, sqlite: bool) -> String {
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
            if sqlite {
                out.push('?');
            } else {
                out.push('$');
                out.push_str(&(row * columns + column + 1).to_string());
            }
        }
        out.push(')');
    }
    out
}

/// A database URL without its password, for messages (the metadata store's too).
pub fn redact_url(url: &str) -> String {
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
