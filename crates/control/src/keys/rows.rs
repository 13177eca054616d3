//! Key rows and their material: resolving a key id, ARN or alias to a key (deleting keys past
//! their deletion date on the way), the checks an action makes on a key, new keys, new
//! versions of material, and the audit trail's own signing key.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use policy::Resource;
use rand::RngCore;
use serde_json::json;
use sqlx::Row;

use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

pub(super) const DAY_MS: i64 = 86_400_000;

pub(crate) struct KeyRow {
    pub(super) key_id: String,
    pub(super) key_usage: String,
    pub(super) key_spec: String,
    pub(super) description: String,
    pub(super) state: String,
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

pub(super) fn key_arn(plane: &Platform, key_id: &str) -> String {
    model::arn::regional("keys", &plane.spec.region, &plane.spec.account_id, &format!("key/{key_id}"))
}

fn not_found(reference: &str) -> ActionError {
    ActionError::not_found(ErrorCode::NotFoundException, format!("key `{reference}` does not exist"))
}

/// Resolves a key id, key ARN, alias name or alias ARN to a key. Keys past their deletion
/// date are deleted here, lazily, and are then not found.
pub(super) async fn resolve(plane: &Platform, reference: &str) -> Result<KeyRow, ActionError> {
    let alias_name = if reference.starts_with("alias/") {
        Some(reference.to_owned())
    } else {
        reference.split_once(":alias/").map(|(_, name)| format!("alias/{name}"))
    };
    let id = match alias_name {
        Some(name) => {
            let row = sqlx::query("SELECT target_key_id FROM aliases WHERE alias_name = $1")
                .bind(&name)
                .fetch_optional(&plane.store.pool)
                .await?;
            row.ok_or_else(|| not_found(reference))?.try_get::<String, _>("target_key_id")?
        }
        None => reference.rsplit_once(":key/").map_or(reference, |(_, id)| id).to_owned(),
    };
    let row = sqlx::query(
        "SELECT key_id, key_usage, key_spec, description, state, created, deletion_date, rotation_period_days, last_rotated, current_version FROM keys WHERE key_id = $1",
    )
        .bind(&id)
        .fetch_optional(&plane.store.pool)
        .await?
        .ok_or_else(|| not_found(reference))?;
    let key = KeyRow {
        key_id: row.try_get("key_id")?,
        key_usage: row.try_get("key_usage")?,
        key_spec: row.try_get("key_spec")?,
        description: row.try_get("description")?,
        state: row.try_get("state")?,
        created: row.try_get("created")?,
        deletion_date: row.try_get("deletion_date")?,
        rotation_period_days: row.try_get("rotation_period_days")?,
        last_rotated: row.try_get("last_rotated")?,
        current_version: row.try_get("current_version")?,
    };
    if key.state == "PendingDeletion" && key.deletion_date.is_some_and(|d| d <= now_millis()) {
        // The destruction is an event of its own, recorded before the material goes, not a
        // silent side effect of whichever request happened to find the deletion due.
        let arn = key_arn(plane, &key.key_id);
        let event = crate::core::platform::ServiceEvent {
            source: "keys",
            name: "KeyDeleted",
            principal: "keys.datasandbox",
            parameters: json!({ "KeyId": key.key_id, "DeletionDate": key.deletion_date.map(millis_to_rfc3339) }),
            resources: vec![audit::RecordResource {
                arn,
                account_id: plane.spec.account_id.clone(),
                kind: "DataSandbox::Keys::Key".into(),
            }],
            ..crate::core::platform::ServiceEvent::default()
        };
        plane.record_service_event(event).await?;
        let mut tx = plane.store.write().await?;
        for table in ["aliases WHERE target_key_id", "key_material WHERE key_id", "keys WHERE key_id"] {
            sqlx::query(&format!("DELETE FROM {table} = $1")).bind(&key.key_id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        return Err(not_found(reference));
    }
    Ok(key)
}

pub(crate) async fn resolve_for_use(plane: &Platform, reference: &str) -> Result<KeyRow, ActionError> {
    resolve(plane, reference).await
}

/// Resolves the key named by the input and authorizes the action on it.
pub(super) async fn authorized_key(ctx: &mut Ctx<'_>, reference: &str) -> Result<KeyRow, ActionError> {
    match resolve(ctx.platform, reference).await {
        Ok(key) => {
            let aliases = aliases_of(ctx.platform, &key.key_id).await?;
            ctx.authorize(Resource::Key { id: key.key_id.clone(), aliases })?;
            Ok(key)
        }
        Err(err) => {
            // Authorize against the reference as given, so a denied caller cannot probe for keys.
            ctx.authorize(Resource::Key { id: reference.to_owned(), aliases: Vec::new() })?;
            Err(err)
        }
    }
}

/// The aliases (`alias/…`) that point at a key, for its authorization resource.
pub(crate) async fn aliases_of(plane: &Platform, key_id: &str) -> Result<Vec<String>, ActionError> {
    let rows = sqlx::query("SELECT alias_name FROM aliases WHERE target_key_id = $1 ORDER BY alias_name")
        .bind(key_id)
        .fetch_all(&plane.store.pool)
        .await?;
    Ok(rows.iter().map(|r| r.try_get::<String, _>("alias_name")).collect::<Result<_, _>>()?)
}

/// The platform's own keys (the trail's signing key) are not the API's to delete or disable.
pub(super) fn require_customer_managed(key: &KeyRow) -> Result<(), ActionError> {
    if key.key_usage == "SIGN_VERIFY" {
        return Err(ActionError::conflict(
            ErrorCode::KMSInvalidStateException,
            format!("key `{}` is managed by DataSandbox for the audit trail", key.key_id),
        ));
    }
    Ok(())
}

pub(super) fn require_enabled(key: &KeyRow) -> Result<(), ActionError> {
    if key.key_usage != "ENCRYPT_DECRYPT" {
        return Err(ActionError::new(
            400,
            ErrorCode::InvalidKeyUsageException,
            format!("key `{}` is a {} key; it cannot encrypt or decrypt", key.key_id, key.key_usage),
        ));
    }
    if key.state == "Enabled" {
        Ok(())
    } else {
        Err(ActionError::conflict(ErrorCode::KMSInvalidStateException, format!("key `{}` is {}; it cannot be used", key.key_id, key.state)))
    }
}

const TRAIL_SIGNING_ALIAS: &str = "alias/datasandbox/audit-trail-signing";

/// The audit trail's Ed25519 signing key, created on first start and held like every other
/// key: wrapped by the master key, named by an alias, never usable to encrypt.
pub(crate) async fn trail_signing_secret(
    store: &crate::core::store::Store,
    ring: &crate::core::keyring::KeyRing,
) -> Result<[u8; 32], ActionError> {
    let existing = sqlx::query("SELECT m.wrapped FROM aliases a JOIN keys k ON k.key_id = a.target_key_id JOIN key_material m ON m.key_id = k.key_id AND m.version = k.current_version WHERE a.alias_name = $1")
        .bind(TRAIL_SIGNING_ALIAS)
        .fetch_optional(&store.pool)
        .await?;
    let wrapped: Vec<u8> = match existing {
        Some(row) => row.try_get("wrapped")?,
        None => {
            let key_id = uuid::Uuid::new_v4().to_string();
            let mut secret = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            let wrapped = ring.wrap(&secret);
            let now = now_millis();
            let mut tx = store.write().await?;
            sqlx::query("INSERT INTO keys (key_id, key_usage, key_spec, description, state, created, deletion_date, rotation_period_days, last_rotated, current_version) VALUES ($1, 'SIGN_VERIFY', 'ED25519', 'Signs the audit trail''s checkpoints and digests', 'Enabled', $2, NULL, NULL, $2, 1)")
                .bind(&key_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO key_material (key_id, version, wrapped, created) VALUES ($1, 1, $2, $3)")
                .bind(&key_id)
                .bind(&wrapped)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO aliases (alias_name, target_key_id, created) VALUES ($1, $2, $3)")
                .bind(TRAIL_SIGNING_ALIAS)
                .bind(&key_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            wrapped
        }
    };
    let secret = ring.unwrap(&wrapped)?;
    secret.try_into().map_err(|_| ActionError::internal("the trail signing key is not 32 bytes"))
}

/// Creates a key with fresh material. Used by CreateKey and for the platform's own keys.
pub(crate) async fn insert_key(plane: &Platform, description: &str) -> Result<KeyRow, ActionError> {
    let key_id = uuid::Uuid::new_v4().to_string();
    let mut material = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut material);
    let now = now_millis();
    let mut tx = plane.store.write().await?;
    sqlx::query("INSERT INTO keys (key_id, description, state, created, deletion_date, rotation_period_days, last_rotated, current_version) VALUES ($1, $2, 'Enabled', $3, NULL, NULL, $3, 1)")
        .bind(&key_id)
        .bind(description)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO key_material (key_id, version, wrapped, created) VALUES ($1, 1, $2, $3)")
        .bind(&key_id)
        .bind(plane.keys.wrap(&material))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    resolve(plane, &key_id).await
}

/// Adds a new version of the key's material; older versions still decrypt what they made.
pub(super) async fn rotate(plane: &Platform, key: &KeyRow) -> Result<i64, ActionError> {
    let mut material = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut material);
    let version = key.current_version + 1;
    let now = now_millis();
    let mut tx = plane.store.write().await?;
    sqlx::query("INSERT INTO key_material (key_id, version, wrapped, created) VALUES ($1, $2, $3, $4)")
        .bind(&key.key_id)
        .bind(version)
        .bind(plane.keys.wrap(&material))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE keys SET current_version = $1, last_rotated = $2 WHERE key_id = $3")
        .bind(version)
        .bind(now)
        .bind(&key.key_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(version)
}

pub(super) async fn material(plane: &Platform, key_id: &str, version: i64) -> Result<Aes256Gcm, ActionError> {
    let row = sqlx::query("SELECT wrapped FROM key_material WHERE key_id = $1 AND version = $2")
        .bind(key_id)
        .bind(version)
        .fetch_optional(&plane.store.pool)
        .await?;
    let wrapped: Vec<u8> = row.ok_or_else(invalid_ciphertext)?.try_get("wrapped")?;
    let material = plane.keys.unwrap(&wrapped)?;
    Ok(Aes256Gcm::new_from_slice(&material).expect("key material is 32 bytes"))
}

pub(super) fn invalid_ciphertext() -> ActionError {
    ActionError::new(
        400,
        ErrorCode::InvalidCiphertextException,
        "the ciphertext is not a valid ciphertext of this key service, or its encryption context differs",
    )
}

/// Creates an alias unless the name is taken; false when another request created it first.
pub(crate) async fn insert_alias_if_absent(plane: &Platform, alias_name: &str, key_id: &str) -> Result<bool, ActionError> {
    let inserted =
        sqlx::query("INSERT INTO aliases (alias_name, target_key_id, created) VALUES ($1, $2, $3) ON CONFLICT (alias_name) DO NOTHING")
            .bind(alias_name)
            .bind(key_id)
            .bind(now_millis())
            .execute(&plane.store.pool)
            .await?;
    Ok(inserted.rows_affected() > 0)
}
