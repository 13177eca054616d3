//! The parameter store's rows: every version of every parameter, as the metadata store keeps
//! them. The actions in `parameters.rs` read and write versions only through here, so the SQL
//! and the column names live in one file.

use sqlx::Row;

use crate::core::error::ActionError;
use crate::core::platform::Platform;

/// One stored version of a parameter; a SecureString's `value` is its ciphertext.
pub(super) struct Version {
    pub name: String,
    pub version: i64,
    pub kind: String,
    pub value: Vec<u8>,
    pub key_id: Option<String>,
    pub description: String,
    pub last_modified: i64,
    pub modified_by: String,
}

const COLUMNS: &str = "name, version, type, value, key_id, description, last_modified, modified_by";

fn version_from(row: &sqlx::any::AnyRow) -> Result<Version, sqlx::Error> {
    Ok(Version {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        kind: row.try_get("type")?,
        value: row.try_get("value")?,
        key_id: row.try_get("key_id")?,
        description: row.try_get("description")?,
        last_modified: row.try_get("last_modified")?,
        modified_by: row.try_get("modified_by")?,
    })
}

/// The newest version of a parameter.
pub(super) async fn current_version(plane: &Platform, name: &str) -> Result<Option<Version>, ActionError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM parameters WHERE name = $1 ORDER BY version DESC LIMIT 1"))
        .bind(name)
        .fetch_optional(&plane.store.pool)
        .await?;
    Ok(row.as_ref().map(version_from).transpose()?)
}

pub(super) async fn find_version(plane: &Platform, name: &str, version: i64) -> Result<Option<Version>, ActionError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM parameters WHERE name = $1 AND version = $2"))
        .bind(name)
        .bind(version)
        .fetch_optional(&plane.store.pool)
        .await?;
    Ok(row.as_ref().map(version_from).transpose()?)
}

/// Up to `limit` versions of a parameter after `after`, oldest first.
pub(super) async fn versions_after(plane: &Platform, name: &str, after: i64, limit: i64) -> Result<Vec<Version>, ActionError> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM parameters WHERE name = $1 AND version > $2 ORDER BY version LIMIT $3"))
        .bind(name)
        .bind(after)
        .bind(limit)
        .fetch_all(&plane.store.pool)
        .await?;
    Ok(rows.iter().map(version_from).collect::<Result<_, _>>()?)
}

/// Up to 100 distinct parameter names after `cursor` and from `prefix` on, in name order.
pub(super) async fn names_after(plane: &Platform, cursor: &str, prefix: &str) -> Result<Vec<String>, ActionError> {
    let rows = sqlx::query("SELECT DISTINCT name FROM parameters WHERE name > $1 AND name >= $2 ORDER BY name LIMIT 100")
        .bind(cursor)
        .bind(prefix)
        .fetch_all(&plane.store.pool)
        .await?;
    Ok(rows.iter().map(|row| row.try_get("name")).collect::<Result<_, _>>()?)
}

/// A version as PutParameter stores it.
pub(super) struct NewVersion {
    pub name: String,
    pub kind: String,
    pub value: Vec<u8>,
    pub key_id: Option<String>,
    pub description: String,
    pub last_modified: i64,
    pub modified_by: String,
}

/// Stores `new` as its parameter's next version and drops all but the newest `keep`, in one
/// write; returns the version, or `None` (and writes nothing) if the parameter exists and
/// `overwrite` is off.
pub(super) async fn insert_next_version(plane: &Platform, new: NewVersion, overwrite: bool, keep: i64) -> Result<Option<i64>, ActionError> {
    plane
        .store
        .transact(Box::new(move |statements| {
            Box::pin(async move {
                let row = statements.fetch_optional("SELECT COALESCE(MAX(version), 0) FROM parameters WHERE name = $1", &[(&new.name).into()]).await?;
                let newest = row.map(|row| row.int(0)).transpose()?.unwrap_or(0);
                if newest > 0 && !overwrite {
                    return Ok(None);
                }
                let version = newest + 1;
                let args = [
                    (&new.name).into(),
                    version.into(),
                    (&new.kind).into(),
                    new.value.as_slice().into(),
                    new.key_id.as_deref().into(),
                    (&new.description).into(),
                    new.last_modified.into(),
                    (&new.modified_by).into(),
                ];
                statements
                    .execute(
                        "INSERT INTO parameters (name, version, type, value, key_id, description, last_modified, modified_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        &args,
                    )
                    .await?;
                statements.execute("DELETE FROM parameters WHERE name = $1 AND version <= $2", &[(&new.name).into(), (version - keep).into()]).await?;
                Ok(Some(version))
            })
        }))
        .await
}

/// Deletes every version of a parameter; false when it had none.
pub(super) async fn delete_parameter(plane: &Platform, name: &str) -> Result<bool, ActionError> {
    let deleted = sqlx::query("DELETE FROM parameters WHERE name = $1").bind(name).execute(&plane.store.pool).await?;
    Ok(deleted.rows_affected() > 0)
}
