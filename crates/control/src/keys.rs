//! `keys:` — symmetric keys with KMS's actions and members. Key material is AES-256-GCM,
//! stored wrapped by the host master key (`<data-dir>/master.key`, mode 0600).

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use policy::Resource;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::core::actions::KeysAction;
use crate::core::codec::{decode_base64, encode_base64};
use crate::core::error::ActionError;
use crate::core::keyring::{open, seal};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

const DAY_MS: i64 = 86_400_000;
const MAGIC: &[u8; 4] = b"DSK1";

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, action: KeysAction, input: Value) -> Result<Value, ActionError> {
    match action {
        KeysAction::CreateKey => create_key(ctx, input).await,
        KeysAction::DescribeKey => describe_key(ctx, input).await,
        KeysAction::ListKeys => list_keys(ctx, input).await,
        KeysAction::CreateAlias => create_alias(ctx, input).await,
        KeysAction::ListAliases => list_aliases(ctx, input).await,
        KeysAction::EnableKeyRotation => enable_rotation(ctx, input).await,
        KeysAction::DisableKeyRotation => disable_rotation(ctx, input).await,
        KeysAction::GetKeyRotationStatus => get_rotation_status(ctx, input).await,
        KeysAction::RotateKeyOnDemand => rotate_on_demand(ctx, input).await,
        KeysAction::GenerateDataKey => generate_data_key(ctx, input).await,
        KeysAction::Encrypt => encrypt(ctx, input).await,
        KeysAction::Decrypt => decrypt(ctx, input).await,
        KeysAction::ScheduleKeyDeletion => schedule_deletion(ctx, input).await,
        KeysAction::EnableKey | KeysAction::DisableKey => enable_disable(ctx, action, input).await,
        KeysAction::CancelKeyDeletion => cancel_deletion(ctx, input).await,
    }
}

pub(crate) struct KeyRow {
    key_id: String,
    key_usage: String,
    key_spec: String,
    description: String,
    state: String,
    created: i64,
    deletion_date: Option<i64>,
    rotation_period_days: Option<i64>,
    last_rotated: i64,
    current_version: i64,
}

fn key_arn(plane: &Platform, key_id: &str) -> String {
    format!("arn:datasandbox:keys:{}:{}:key/{key_id}", plane.spec.region, plane.spec.account_id)
}

fn not_found(reference: &str) -> ActionError {
    ActionError::not_found("NotFoundException", format!("key `{reference}` does not exist"))
}

/// Resolves a key id, key ARN, alias name or alias ARN to a key. Keys past their deletion
/// date are deleted here, lazily, and are then not found.
async fn resolve(plane: &Platform, reference: &str) -> Result<KeyRow, ActionError> {
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

fn metadata(plane: &Platform, key: &KeyRow) -> Value {
    let mut meta = json!({
        "KeyId": key.key_id,
        "Arn": key_arn(plane, &key.key_id),
        "AWSAccountId": plane.spec.account_id,
        "CreationDate": millis_to_rfc3339(key.created),
        "Enabled": key.state == "Enabled",
        "Description": key.description,
        "KeyUsage": key.key_usage,
        "KeyState": key.state,
        "Origin": "AWS_KMS",
        "KeyManager": if key.key_usage == "SIGN_VERIFY" { "AWS" } else { "CUSTOMER" },
        "KeySpec": key.key_spec,
    });
    if key.key_usage == "ENCRYPT_DECRYPT" {
        meta["EncryptionAlgorithms"] = json!(["SYMMETRIC_DEFAULT"]);
    } else {
        meta["SigningAlgorithms"] = json!(["ED25519"]);
    }
    if let Some(date) = key.deletion_date {
        meta["DeletionDate"] = json!(millis_to_rfc3339(date));
    }
    meta
}

/// The platform's own keys (the trail's signing key) are not the API's to delete or disable.
fn require_customer_managed(key: &KeyRow) -> Result<(), ActionError> {
    if key.key_usage == "SIGN_VERIFY" {
        return Err(ActionError::conflict(
            "KMSInvalidStateException",
            format!("key `{}` is managed by DataSandbox for the audit trail", key.key_id),
        ));
    }
    Ok(())
}

fn require_enabled(key: &KeyRow) -> Result<(), ActionError> {
    if key.key_usage != "ENCRYPT_DECRYPT" {
        return Err(ActionError::new(
            400,
            "InvalidKeyUsageException",
            format!("key `{}` is a {} key; it cannot encrypt or decrypt", key.key_id, key.key_usage),
        ));
    }
    if key.state == "Enabled" {
        Ok(())
    } else {
        Err(ActionError::conflict("KMSInvalidStateException", format!("key `{}` is {}; it cannot be used", key.key_id, key.state)))
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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateKeyInput {
    #[serde(default)]
    description: String,
    #[serde(default)]
    key_usage: Option<String>,
    #[serde(default)]
    key_spec: Option<String>,
}

async fn create_key(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateKeyInput = ctx.parse(input)?;
    if input.key_usage.as_deref().is_some_and(|u| u != "ENCRYPT_DECRYPT") {
        return Err(ActionError::validation("KeyUsage must be ENCRYPT_DECRYPT"));
    }
    if input.key_spec.as_deref().is_some_and(|s| s != "SYMMETRIC_DEFAULT") {
        return Err(ActionError::validation("KeySpec must be SYMMETRIC_DEFAULT"));
    }
    if input.description.chars().count() > 8192 {
        return Err(ActionError::validation("Description is longer than 8192 characters"));
    }
    ctx.authorize(Resource::Service("keys".into()))?;
    let key = insert_key(ctx.platform, &input.description).await?;
    Ok(json!({ "KeyMetadata": metadata(ctx.platform, &key) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct KeyInput {
    key_id: String,
}

/// Resolves the key named by the input and authorizes the action on it.
async fn authorized_key(ctx: &mut Ctx<'_>, reference: &str) -> Result<KeyRow, ActionError> {
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

async fn describe_key(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: KeyInput = ctx.parse(input)?;
    let key = authorized_key(ctx, &input.key_id).await?;
    Ok(json!({ "KeyMetadata": metadata(ctx.platform, &key) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ListInput {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    marker: Option<String>,
    #[serde(default)]
    key_id: Option<String>,
}

async fn list_keys(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ListInput = ctx.parse(input)?;
    let limit = crate::core::codec::bounded("Limit", input.limit, 100, 1..=1000)?;
    ctx.authorize(Resource::Service("keys".into()))?;
    let after = crate::core::codec::decode_token(input.marker.as_deref())?.unwrap_or_default();
    let rows = sqlx::query("SELECT key_id FROM keys WHERE key_id > $1 ORDER BY key_id LIMIT $2")
        .bind(&after)
        .bind(limit + 1)
        .fetch_all(&ctx.platform.store.pool)
        .await?;
    let mut ids: Vec<String> = rows.iter().map(|r| r.try_get("key_id")).collect::<Result<_, _>>()?;
    let truncated = ids.len() as i64 > limit;
    ids.truncate(limit as usize);
    let mut out = json!({
        "Keys": ids.iter().map(|id| json!({ "KeyId": id, "KeyArn": key_arn(ctx.platform, id) })).collect::<Vec<_>>(),
        "Truncated": truncated,
    });
    if truncated {
        out["NextMarker"] = json!(crate::core::codec::encode_token(ids.last().map_or("", String::as_str)));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateAliasInput {
    alias_name: String,
    target_key_id: String,
}

async fn create_alias(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateAliasInput = ctx.parse(input)?;
    let name = &input.alias_name;
    let valid = name
        .strip_prefix("alias/")
        .is_some_and(|rest| !rest.is_empty() && rest.len() <= 250 && rest.chars().all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c)));
    if !valid {
        return Err(ActionError::validation(format!("AliasName `{name}` must be `alias/` followed by 1..=250 of a-zA-Z0-9/_-")));
    }
    if name.starts_with("alias/aws/") {
        return Err(ActionError::validation("alias names under `alias/aws/` are reserved"));
    }
    let key = authorized_key(ctx, &input.target_key_id).await?;
    let inserted =
        sqlx::query("INSERT INTO aliases (alias_name, target_key_id, created) VALUES ($1, $2, $3) ON CONFLICT (alias_name) DO NOTHING")
            .bind(name)
            .bind(&key.key_id)
            .bind(now_millis())
            .execute(&ctx.platform.store.pool)
            .await?;
    if inserted.rows_affected() == 0 {
        return Err(ActionError::conflict("AlreadyExistsException", format!("alias `{name}` already exists")));
    }
    Ok(json!({}))
}

async fn list_aliases(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ListInput = ctx.parse(input)?;
    ctx.authorize(Resource::Service("keys".into()))?;
    let rows = sqlx::query("SELECT alias_name, target_key_id, created FROM aliases ORDER BY alias_name")
        .fetch_all(&ctx.platform.store.pool)
        .await?;
    let mut aliases = Vec::new();
    for r in rows {
        let target: String = r.try_get("target_key_id")?;
        if input.key_id.as_deref().is_some_and(|k| k != target) {
            continue;
        }
        let name: String = r.try_get("alias_name")?;
        aliases.push(json!({
            "AliasName": name,
            "AliasArn": format!("arn:datasandbox:keys:{}:{}:{name}", ctx.platform.spec.region, ctx.platform.spec.account_id),
            "TargetKeyId": target,
            "CreationDate": millis_to_rfc3339(r.try_get("created")?),
        }));
    }
    Ok(json!({ "Aliases": aliases, "Truncated": false }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RotationInput {
    key_id: String,
    #[serde(default)]
    rotation_period_in_days: Option<i64>,
}

/// The key a rotation action names, authorized, customer managed, with the rotation period
/// asked for (`RotationPeriodInDays` belongs to `EnableKeyRotation` alone).
async fn rotation_key(ctx: &mut Ctx<'_>, input: Value, takes_period: bool) -> Result<(KeyRow, i64), ActionError> {
    let input: RotationInput = ctx.parse(input)?;
    if input.rotation_period_in_days.is_some() && !takes_period {
        return Err(ActionError::validation("RotationPeriodInDays applies only to EnableKeyRotation"));
    }
    let period = crate::core::codec::bounded("RotationPeriodInDays", input.rotation_period_in_days, 365, 90..=2560)?;
    let key = authorized_key(ctx, &input.key_id).await?;
    require_customer_managed(&key)?;
    Ok((key, period))
}

async fn get_rotation_status(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let (key, _) = rotation_key(ctx, input, false).await?;
    let mut out = json!({ "KeyId": key.key_id, "KeyRotationEnabled": key.rotation_period_days.is_some() });
    if let Some(days) = key.rotation_period_days {
        out["RotationPeriodInDays"] = json!(days);
        out["NextRotationDate"] = json!(millis_to_rfc3339(key.last_rotated + days * DAY_MS));
    }
    Ok(out)
}

async fn enable_rotation(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let (key, period) = rotation_key(ctx, input, true).await?;
    require_enabled(&key)?;
    sqlx::query("UPDATE keys SET rotation_period_days = $1 WHERE key_id = $2")
        .bind(period)
        .bind(&key.key_id)
        .execute(&ctx.platform.store.pool)
        .await?;
    Ok(json!({}))
}

async fn disable_rotation(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let (key, _) = rotation_key(ctx, input, false).await?;
    require_enabled(&key)?;
    sqlx::query("UPDATE keys SET rotation_period_days = NULL WHERE key_id = $1")
        .bind(&key.key_id)
        .execute(&ctx.platform.store.pool)
        .await?;
    Ok(json!({}))
}

async fn rotate_on_demand(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let (key, _) = rotation_key(ctx, input, false).await?;
    require_enabled(&key)?;
    rotate(ctx.platform, &key).await?;
    Ok(json!({ "KeyId": key.key_id }))
}

/// Adds a new version of the key's material; older versions still decrypt what they made.
async fn rotate(plane: &Platform, key: &KeyRow) -> Result<i64, ActionError> {
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

async fn material(plane: &Platform, key_id: &str, version: i64) -> Result<Aes256Gcm, ActionError> {
    let row = sqlx::query("SELECT wrapped FROM key_material WHERE key_id = $1 AND version = $2")
        .bind(key_id)
        .bind(version)
        .fetch_optional(&plane.store.pool)
        .await?;
    let wrapped: Vec<u8> = row.ok_or_else(invalid_ciphertext)?.try_get("wrapped")?;
    let material = plane.keys.unwrap(&wrapped)?;
    Ok(Aes256Gcm::new_from_slice(&material).expect("key material is 32 bytes"))
}

fn invalid_ciphertext() -> ActionError {
    ActionError::new(
        400,
        "InvalidCiphertextException",
        "the ciphertext is not a valid ciphertext of this key service, or its encryption context differs",
    )
}

/// The additional authenticated data: the blob's header plus the encryption context, with
/// its pairs sorted so that member order does not matter.
fn aad(header: &[u8], context: &std::collections::BTreeMap<String, String>) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(serde_json::to_string(context).expect("a map of strings serializes").as_bytes());
    aad
}

/// Encrypts under the key's current material, rotating first when its period has passed.
pub(crate) async fn encrypt_with(
    plane: &Platform,
    key: &KeyRow,
    plaintext: &[u8],
    context: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<u8>, ActionError> {
    require_enabled(key)?;
    let mut version = key.current_version;
    if key.rotation_period_days.is_some_and(|days| now_millis() >= key.last_rotated + days * DAY_MS) {
        version = rotate(plane, key).await?;
    }
    let cipher = material(plane, &key.key_id, version).await?;
    let mut header = MAGIC.to_vec();
    header.push(key.key_id.len() as u8);
    header.extend_from_slice(key.key_id.as_bytes());
    header.extend_from_slice(&(version as u32).to_be_bytes());
    let sealed = seal(&cipher, plaintext, &aad(&header, context));
    Ok([header, sealed].concat())
}

/// Decrypts a blob made by [`encrypt_with`]; returns the key it was made with.
pub(crate) async fn decrypt_blob(
    plane: &Platform,
    blob: &[u8],
    context: &std::collections::BTreeMap<String, String>,
) -> Result<(KeyRow, Vec<u8>), ActionError> {
    let (key_id, version, header_len) = parse_header(blob).ok_or_else(invalid_ciphertext)?;
    let key = resolve(plane, &key_id).await.map_err(|_| invalid_ciphertext())?;
    require_enabled(&key)?;
    let cipher = material(plane, &key.key_id, version).await?;
    let plaintext = open(&cipher, &blob[header_len..], &aad(&blob[..header_len], context)).map_err(|()| invalid_ciphertext())?;
    Ok((key, plaintext))
}

/// The key a blob names, without decrypting it (to authorize before doing anything).
pub(crate) fn blob_key_id(blob: &[u8]) -> Option<String> {
    parse_header(blob).map(|(id, _, _)| id)
}

fn parse_header(blob: &[u8]) -> Option<(String, i64, usize)> {
    let rest = blob.strip_prefix(MAGIC)?;
    let (&len, rest) = rest.split_first()?;
    let id = std::str::from_utf8(rest.get(..len as usize)?).ok()?.to_owned();
    let version = u32::from_be_bytes(rest.get(len as usize..len as usize + 4)?.try_into().ok()?);
    Some((id, i64::from(version), MAGIC.len() + 1 + len as usize + 4))
}

/// The aliases (`alias/…`) that point at a key, for its authorization resource.
pub(crate) async fn aliases_of(plane: &Platform, key_id: &str) -> Result<Vec<String>, ActionError> {
    let rows = sqlx::query("SELECT alias_name FROM aliases WHERE target_key_id = $1 ORDER BY alias_name")
        .bind(key_id)
        .fetch_all(&plane.store.pool)
        .await?;
    Ok(rows.iter().map(|r| r.try_get::<String, _>("alias_name")).collect::<Result<_, _>>()?)
}

pub(crate) async fn resolve_for_use(plane: &Platform, reference: &str) -> Result<KeyRow, ActionError> {
    resolve(plane, reference).await
}

impl KeyRow {
    pub fn id(&self) -> &str {
        &self.key_id
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct GenerateDataKeyInput {
    key_id: String,
    #[serde(default)]
    key_spec: Option<String>,
    #[serde(default)]
    number_of_bytes: Option<i64>,
    #[serde(default)]
    encryption_context: std::collections::BTreeMap<String, String>,
}

async fn generate_data_key(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: GenerateDataKeyInput = ctx.parse(input)?;
    let size = match (input.key_spec.as_deref(), input.number_of_bytes) {
        (Some(_), Some(_)) => return Err(ActionError::validation("give KeySpec or NumberOfBytes, not both")),
        (Some("AES_256"), None) | (None, None) => 32,
        (Some("AES_128"), None) => 16,
        (Some(other), None) => return Err(ActionError::validation(format!("KeySpec `{other}` is not AES_256 or AES_128"))),
        (None, Some(n)) if (1..=1024).contains(&n) => n as usize,
        (None, Some(n)) => return Err(ActionError::validation(format!("NumberOfBytes {n} is outside 1..=1024"))),
    };
    let key = authorized_key(ctx, &input.key_id).await?;
    let mut plaintext = vec![0u8; size];
    rand::rngs::OsRng.fill_bytes(&mut plaintext);
    let blob = encrypt_with(ctx.platform, &key, &plaintext, &input.encryption_context).await?;
    Ok(
        json!({ "CiphertextBlob": encode_base64(&blob), "Plaintext": encode_base64(&plaintext), "KeyId": key_arn(ctx.platform, &key.key_id) }),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct EncryptInput {
    key_id: String,
    plaintext: String,
    #[serde(default)]
    encryption_context: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    encryption_algorithm: Option<String>,
}

async fn encrypt(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: EncryptInput = ctx.parse(input)?;
    let plaintext = decode_base64("Plaintext", &input.plaintext)?;
    if !(1..=4096).contains(&plaintext.len()) {
        return Err(ActionError::validation(format!("Plaintext is {} bytes; it must be 1..=4096", plaintext.len())));
    }
    if input.encryption_algorithm.as_deref().is_some_and(|a| a != "SYMMETRIC_DEFAULT") {
        return Err(ActionError::validation("EncryptionAlgorithm must be SYMMETRIC_DEFAULT"));
    }
    let key = authorized_key(ctx, &input.key_id).await?;
    let blob = encrypt_with(ctx.platform, &key, &plaintext, &input.encryption_context).await?;
    Ok(
        json!({ "CiphertextBlob": encode_base64(&blob), "KeyId": key_arn(ctx.platform, &key.key_id), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT" }),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DecryptInput {
    ciphertext_blob: String,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    encryption_context: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    encryption_algorithm: Option<String>,
}

async fn decrypt(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: DecryptInput = ctx.parse(input)?;
    let blob = decode_base64("CiphertextBlob", &input.ciphertext_blob)?;
    if input.encryption_algorithm.as_deref().is_some_and(|a| a != "SYMMETRIC_DEFAULT") {
        return Err(ActionError::validation("EncryptionAlgorithm must be SYMMETRIC_DEFAULT"));
    }
    let Some(named) = blob_key_id(&blob) else {
        ctx.authorize(Resource::Key { id: "*".into(), aliases: Vec::new() })?;
        return Err(invalid_ciphertext());
    };
    let key = authorized_key(ctx, &named).await?;
    if let Some(expected) = &input.key_id {
        let expected = resolve(ctx.platform, expected).await?;
        if expected.key_id != key.key_id {
            return Err(ActionError::new(400, "IncorrectKeyException", "the ciphertext was made with a different key than KeyId names"));
        }
    }
    let (key, plaintext) = decrypt_blob(ctx.platform, &blob, &input.encryption_context).await?;
    Ok(
        json!({ "Plaintext": encode_base64(&plaintext), "KeyId": key_arn(ctx.platform, &key.key_id), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT" }),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ScheduleInput {
    key_id: String,
    #[serde(default)]
    pending_window_in_days: Option<i64>,
}

async fn schedule_deletion(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ScheduleInput = ctx.parse(input)?;
    let days = crate::core::codec::bounded("PendingWindowInDays", input.pending_window_in_days, 30, 7..=30)?;
    let key = authorized_key(ctx, &input.key_id).await?;
    require_customer_managed(&key)?;
    if key.state == "PendingDeletion" {
        return Err(ActionError::conflict("KMSInvalidStateException", format!("key `{}` is already pending deletion", key.key_id)));
    }
    let date = now_millis() + days * DAY_MS;
    sqlx::query("UPDATE keys SET state = 'PendingDeletion', deletion_date = $1 WHERE key_id = $2")
        .bind(date)
        .bind(&key.key_id)
        .execute(&ctx.platform.store.pool)
        .await?;
    Ok(
        json!({ "KeyId": key_arn(ctx.platform, &key.key_id), "DeletionDate": millis_to_rfc3339(date), "KeyState": "PendingDeletion", "PendingWindowInDays": days }),
    )
}

async fn cancel_deletion(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: KeyInput = ctx.parse(input)?;
    let key = authorized_key(ctx, &input.key_id).await?;
    if key.state != "PendingDeletion" {
        return Err(ActionError::conflict("KMSInvalidStateException", format!("key `{}` is not pending deletion", key.key_id)));
    }
    // As in KMS, a key whose deletion is cancelled comes back disabled.
    sqlx::query("UPDATE keys SET state = 'Disabled', deletion_date = NULL WHERE key_id = $1")
        .bind(&key.key_id)
        .execute(&ctx.platform.store.pool)
        .await?;
    Ok(json!({ "KeyId": key_arn(ctx.platform, &key.key_id) }))
}

async fn enable_disable(ctx: &mut Ctx<'_>, action: KeysAction, input: Value) -> Result<Value, ActionError> {
    let input: KeyInput = ctx.parse(input)?;
    let key = authorized_key(ctx, &input.key_id).await?;
    if key.state == "PendingDeletion" {
        return Err(ActionError::conflict(
            "KMSInvalidStateException",
            format!("key `{}` is pending deletion; cancel the deletion first", key.key_id),
        ));
    }
    let state = if action == KeysAction::EnableKey { "Enabled" } else { "Disabled" };
    sqlx::query("UPDATE keys SET state = $1 WHERE key_id = $2").bind(state).bind(&key.key_id).execute(&ctx.platform.store.pool).await?;
    Ok(json!({}))
}
