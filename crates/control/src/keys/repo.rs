//! The key service's rows: keys, their versions of wrapped material, and aliases, as the
//! metadata store keeps them. Every statement of the key service is here, one function each,
//! so the rest of `keys/` works with typed rows and a `KeyState`, never with column names.

use sqlx::{AnyConnection, Row};

use crate::core::error::ActionError;
use crate::core::platform::Platform;
use crate::core::store::Store;

crate::core::codec::stored_as_text! {
    /// Where a key is in its life. Only an enabled key encrypts or decrypts; a key pending
    /// deletion is deleted once its deletion date passes, unless the deletion is cancelled.
    pub(crate) enum KeyState {
        Enabled = "Enabled",
        Disabled = "Disabled",
        PendingDeletion = "PendingDeletion",
    }
}

pub(crate) struct KeyRow {
    pub(super) key_id: String,
    pub(super) key_usage: String,
    pub(super) key_spec: String,
    pub(super) description: String,
    pub(super) state: KeyState,
    pub(super) created: i64,
    pub(super) deletion_date: Option<i64>,
    pub(super) rotation_period_days: Option<i64>,
    pub(super) last_rotated: i64,
    pub(super) current_version: i64,
}

impl KeyRow {
    pub fn id(&self) -> &str {
        &self.key_id
    }
}

/// The key an alias points at.
pub(super) async fn find_alias_target(plane: &Platform, alias_name: &str) -> Result<Option<String>, ActionError> {
    let row =
        sqlx::query("SELECT target_key_id FROM aliases WHERE alias_name = $1").bind(alias_name).fetch_optional(&plane.store.pool).await?;
    Ok(row.map(|row| row.try_get("target_key_id")).transpose()?)
}

pub(super) async fn find_key(plane: &Platform, key_id: &str) -> Result<Option<KeyRow>, ActionError> {
    let row = sqlx::query(
        "SELECT key_id, key_usage, key_spec, description, state, created, deletion_date, rotation_period_days, last_rotated, current_version FROM keys WHERE key_id = $1",
    )
    .bind(key_id)
    .fetch_optional(&plane.store.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let state: String = row.try_get("state")?;
    Ok(Some(KeyRow {
        key_id: row.try_get("key_id")?,
        key_usage: row.try_get("key_usage")?,
        key_spec: row.try_get("key_spec")?,
        description: row.try_get("description")?,
        state: KeyState::parse(&state).ok_or_else(|| ActionError::internal(format_args!("unknown key state `{state}`")))?,
        created: row.try_get("created")?,
        deletion_date: row.try_get("deletion_date")?,
        rotation_period_days: row.try_get("rotation_period_days")?,
        last_rotated: row.try_get("last_rotated")?,
        current_version: row.try_get("current_version")?,
    }))
}

/// Deletes a key, its material and its aliases, in the caller's transaction.
pub(super) async fn delete_key(conn: &mut AnyConnection, key_id: &str) -> Result<(), ActionError> {
    for table in ["aliases WHERE target_key_id", "key_material WHERE key_id", "keys WHERE key_id"] {
        sqlx::query(&format!("DELETE FROM {table} = $1")).bind(key_id).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The aliases (`alias/…`) that point at a key, in name order.
pub(super) async fn aliases_of(plane: &Platform, key_id: &str) -> Result<Vec<String>, ActionError> {
    let rows = sqlx::query("SELECT alias_name FROM aliases WHERE target_key_id = $1 ORDER BY alias_name")
        .bind(key_id)
        .fetch_all(&plane.store.pool)
        .await?;
    Ok(rows.iter().map(|r| r.try_get::<String, _>("alias_name")).collect::<Result<_, _>>()?)
}

/// The current wrapped material of the key an alias names.
pub(super) async fn find_current_material_by_alias(store: &Store, alias_name: &str) -> Result<Option<Vec<u8>>, ActionError> {
    let row = sqlx::query("SELECT m.wrapped FROM aliases a JOIN keys k ON k.key_id = a.target_key_id JOIN key_material m ON m.key_id = k.key_id AND m.version = k.current_version WHERE a.alias_name = $1")
        .bind(alias_name)
        .fetch_optional(&store.pool)
        .await?;
    Ok(row.map(|row| row.try_get("wrapped")).transpose()?)
}

/// The audit trail's signing key: the platform's own, never usable to encrypt.
pub(super) async fn insert_signing_key(conn: &mut AnyConnection, key_id: &str, now: i64) -> Result<(), ActionError> {
    sqlx::query("INSERT INTO keys (key_id, key_usage, key_spec, description, state, created, deletion_date, rotation_period_days, last_rotated, current_version) VALUES ($1, 'SIGN_VERIFY', 'ED25519', 'Signs the audit trail''s checkpoints and digests', 'Enabled', $2, NULL, NULL, $2, 1)")
        .bind(key_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A customer key (the table's defaults: ENCRYPT_DECRYPT, SYMMETRIC_DEFAULT), enabled.
pub(super) async fn insert_encryption_key(conn: &mut AnyConnection, key_id: &str, description: &str, now: i64) -> Result<(), ActionError> {
    sqlx::query("INSERT INTO keys (key_id, description, state, created, deletion_date, rotation_period_days, last_rotated, current_version) VALUES ($1, $2, 'Enabled', $3, NULL, NULL, $3, 1)")
        .bind(key_id)
        .bind(description)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Material version 1, the one a new key starts with.
pub(super) async fn insert_first_material(conn: &mut AnyConnection, key_id: &str, wrapped: &[u8], now: i64) -> Result<(), ActionError> {
    sqlx::query("INSERT INTO key_material (key_id, version, wrapped, created) VALUES ($1, 1, $2, $3)")
        .bind(key_id)
        .bind(wrapped)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn insert_material(
    conn: &mut AnyConnection,
    key_id: &str,
    version: i64,
    wrapped: &[u8],
    now: i64,
) -> Result<(), ActionError> {
    sqlx::query("INSERT INTO key_material (key_id, version, wrapped, created) VALUES ($1, $2, $3, $4)")
        .bind(key_id)
        .bind(version)
        .bind(wrapped)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes a rotation's new material the version that encrypts from now on.
pub(super) async fn set_current_version(conn: &mut AnyConnection, key_id: &str, version: i64, now: i64) -> Result<(), ActionError> {
    sqlx::query("UPDATE keys SET current_version = $1, last_rotated = $2 WHERE key_id = $3")
        .bind(version)
        .bind(now)
        .bind(key_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(super) async fn insert_alias(conn: &mut AnyConnection, alias_name: &str, key_id: &str, now: i64) -> Result<(), ActionError> {
    sqlx::query("INSERT INTO aliases (alias_name, target_key_id, created) VALUES ($1, $2, $3)")
        .bind(alias_name)
        .bind(key_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Creates an alias unless the name is taken; false when it is.
pub(super) async fn insert_alias_if_absent(plane: &Platform, alias_name: &str, key_id: &str, now: i64) -> Result<bool, ActionError> {
    let inserted =
        sqlx::query("INSERT INTO aliases (alias_name, target_key_id, created) VALUES ($1, $2, $3) ON CONFLICT (alias_name) DO NOTHING")
            .bind(alias_name)
            .bind(key_id)
            .bind(now)
            .execute(&plane.store.pool)
            .await?;
    Ok(inserted.rows_affected() > 0)
}

pub(super) async fn find_material(plane: &Platform, key_id: &str, version: i64) -> Result<Option<Vec<u8>>, ActionError> {
    let row = sqlx::query("SELECT wrapped FROM key_material WHERE key_id = $1 AND version = $2")
        .bind(key_id)
        .bind(version)
        .fetch_optional(&plane.store.pool)
        .await?;
    Ok(row.map(|row| row.try_get("wrapped")).transpose()?)
}

/// Up to `limit` key ids after `after`, in id order.
pub(super) async fn key_ids_after(plane: &Platform, after: &str, limit: i64) -> Result<Vec<String>, ActionError> {
    let rows = sqlx::query("SELECT key_id FROM keys WHERE key_id > $1 ORDER BY key_id LIMIT $2")
        .bind(after)
        .bind(limit)
        .fetch_all(&plane.store.pool)
        .await?;
    Ok(rows.iter().map(|r| r.try_get("key_id")).collect::<Result<_, _>>()?)
}

pub(super) struct AliasRow {
    pub alias_name: String,
    pub target_key_id: String,
    pub created: i64,
}

pub(super) async fn list_aliases(plane: &Platform) -> Result<Vec<AliasRow>, ActionError> {
    let rows =
        sqlx::query("SELECT alias_name, target_key_id, created FROM aliases ORDER BY alias_name").fetch_all(&plane.store.pool).await?;
    let aliases = rows
        .iter()
        .map(|r| {
            Ok(AliasRow {
                alias_name: r.try_get("alias_name")?,
                target_key_id: r.try_get("target_key_id")?,
                created: r.try_get("created")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(aliases)
}

pub(super) async fn set_rotation_period(plane: &Platform, key_id: &str, days: i64) -> Result<(), ActionError> {
    sqlx::query("UPDATE keys SET rotation_period_days = $1 WHERE key_id = $2").bind(days).bind(key_id).execute(&plane.store.pool).await?;
    Ok(())
}

pub(super) async fn clear_rotation_period(plane: &Platform, key_id: &str) -> Result<(), ActionError> {
    sqlx::query("UPDATE keys SET rotation_period_days = NULL WHERE key_id = $1").bind(key_id).execute(&plane.store.pool).await?;
    Ok(())
}

pub(super) async fn schedule_deletion(plane: &Platform, key_id: &str, deletion_date: i64) -> Result<(), ActionError> {
    sqlx::query("UPDATE keys SET state = 'PendingDeletion', deletion_date = $1 WHERE key_id = $2")
        .bind(deletion_date)
        .bind(key_id)
        .execute(&plane.store.pool)
        .await?;
    Ok(())
}

/// As in KMS, a key whose deletion is cancelled comes back disabled.
pub(super) async fn cancel_deletion(plane: &Platform, key_id: &str) -> Result<(), ActionError> {
    sqlx::query("UPDATE keys SET state = 'Disabled', deletion_date = NULL WHERE key_id = $1")
        .bind(key_id)
        .execute(&plane.store.pool)
        .await?;
    Ok(())
}

pub(super) async fn set_state(plane: &Platform, key_id: &str, state: KeyState) -> Result<(), ActionError> {
    sqlx::query("UPDATE keys SET state = $1 WHERE key_id = $2").bind(state.as_str()).bind(key_id).execute(&plane.store.pool).await?;
    Ok(())
}
