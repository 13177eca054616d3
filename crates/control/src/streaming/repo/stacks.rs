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

/// Whether any stack enables `action` (`TERMINAL`, `DEBUGGER`) for its sessions: only then do
/// notebooks' servers offer Jupyter's terminals, or their kernels a debugger, at all.
pub(crate) async fn any_allows(store: &Store, action: &str) -> Result<bool, ActionError> {
    let rows = sqlx::query("SELECT user_settings FROM stacks").fetch_all(&store.pool).await?;
    for row in rows {
        let settings: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>("user_settings")?).unwrap_or_default();
        let listed = settings.as_array().or_else(|| settings["UserSettings"].as_array()).cloned().unwrap_or_default();
        if listed.iter().any(|s| s["Action"] == action && s["Permission"] == "ENABLED") {
            return Ok(true);
        }
    }
    Ok(false)
}
