//! The `instance_execs` table, typed: the operators' break-glass commands in an instance, which
//! its session's user is shown.

use sqlx::Row;

use crate::core::error::ActionError;
use crate::core::store::Store;

/// One operator command run in an instance.
pub(crate) struct ExecRow {
    pub operator: String,
    /// The command's argument vector, as JSON text.
    pub command: String,
    /// `None` while the command runs.
    pub exit_code: Option<i64>,
    pub time: i64,
}

/// The commands operators ran in `instance_id`, oldest first.
pub(crate) async fn execs_in(store: &Store, instance_id: &str) -> Result<Vec<ExecRow>, ActionError> {
    let rows = sqlx::query("SELECT operator, command, exit_code, time FROM instance_execs WHERE instance_id = $1 ORDER BY time")
        .bind(instance_id)
        .fetch_all(&store.pool)
        .await?;
    let rows = rows
        .iter()
        .map(|row| {
            Ok(ExecRow {
                operator: row.try_get("operator")?,
                command: row.try_get("command")?,
                exit_code: row.try_get("exit_code")?,
                time: row.try_get("time")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(rows)
}
