//! The `stacks` table, typed: what the streaming service reads of a stack by its name.

use sqlx::Row;

use crate::core::error::ActionError;
use crate::core::store::Store;

/// The application a stack starts when a URL names none (`None` for a stack that is gone or
/// has no default).
pub(crate) async fn default_application(store: &Store, stack: &str) -> Result<Option<String>, ActionError> {
    let row = sqlx::query("SELECT default_application FROM stacks WHERE name = $1").bind(stack).fetch_optional(&store.pool).await?;
    Ok(row.map(|row| row.try_get::<Option<String>, _>("default_application")).transpose()?.flatten())
}
