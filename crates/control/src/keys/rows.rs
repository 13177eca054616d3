//! Resolving keys: a key id, ARN or alias to a key (deleting keys past their deletion date on
//! the way), the checks an action makes on a key, new keys, new versions of material, and the
//! audit trail's own signing key. Their rows are read and written through `repo.rs`.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use policy::Resource;
use rand::RngCore;
use serde_json::json;

use super::repo::{self, KeyRow, KeyState};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

pub(super) const DAY_MS: i64 = 86_400_000;

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
        Some(name) => repo::find_alias_target(plane, &name).await?.ok_or_else(|| not_found(reference))?,
        None => reference.rsplit_once(":key/").map_or(reference, |(_, id)| id).to_owned(),
    };
    let key = repo::find_key(plane, &id).await?.ok_or_else(|| not_found(reference))?;
    if key.state == KeyState::PendingDeletion && key.deletion_date.is_some_and(|d| d <= now_millis()) {
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
        repo::delete_key(&mut tx, &key.key_id).await?;
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
            let platform_only = aliases.iter().any(|a| PLATFORM_ONLY_ALIASES.contains(&a.as_str()));
            ctx.authorize(Resource::Key { id: key.key_id.clone(), aliases })?;
            if platform_only {
                return Err(ActionError::new(
                    403,
                    ErrorCode::AccessDeniedException,
                    format!("key `{}` is the platform's own (session recordings); no action reaches it", key.key_id),
                ));
            }
            Ok(key)
        }
        Err(err) => {
            // Authorize against the reference as given, so a denied caller cannot probe for keys.
            ctx.authorize(Resource::Key { id: reference.to_owned(), aliases: Vec::new() })?;
            Err(err)
        }
    }
}

/// Keys no action reaches, whatever the policies say: the platform uses them through this
/// module's functions alone.
const PLATFORM_ONLY_ALIASES: &[&str] = &["alias/datasandbox/recordings"];

/// The aliases (`alias/…`) that point at a key, for its authorization resource.
pub(crate) async fn aliases_of(plane: &Platform, key_id: &str) -> Result<Vec<String>, ActionError> {
    repo::aliases_of(plane, key_id).await
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
    if key.state == KeyState::Enabled {
        Ok(())
    } else {
        Err(ActionError::conflict(
            ErrorCode::KMSInvalidStateException,
            format!("key `{}` is {}; it cannot be used", key.key_id, key.state.as_str()),
        ))
    }
}

const TRAIL_SIGNING_ALIAS: &str = "alias/datasandbox/audit-trail-signing";

/// The alias of a node's trail signing key: the embedded node keeps the one alias it always
/// had; in scale-out mode each node has its own (`…/audit-trail-signing/<node>`), since nodes
/// sharing one metadata store must not sign with one key: each node's public key, published
/// beside its chain, then checks that chain alone. (Every node holds the master key, so this
/// separates chains; it does not protect one node's chain from another compromised node.)
pub(crate) fn trail_signing_alias(node: Option<&str>) -> String {
    match node {
        Some(node) => format!("{TRAIL_SIGNING_ALIAS}/{node}"),
        None => TRAIL_SIGNING_ALIAS.to_owned(),
    }
}

/// The audit trail's Ed25519 signing key of `node`, created on its first start and held like
/// every other key: wrapped by the master key, named by an alias, never usable to encrypt.
pub(crate) async fn trail_signing_secret(
    store: &crate::core::store::Store,
    ring: &crate::core::keyring::KeyRing,
    node: Option<&str>,
) -> Result<[u8; 32], ActionError> {
    let alias = trail_signing_alias(node);
    let existing = repo::find_current_material_by_alias(store, &alias).await?;
    let wrapped: Vec<u8> = match existing {
        Some(wrapped) => wrapped,
        None => {
            let key_id = uuid::Uuid::new_v4().to_string();
            let mut secret = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            let wrapped = ring.wrap(&secret);
            let now = now_millis();
            let mut tx = store.write().await?;
            repo::insert_signing_key(&mut tx, &key_id, now).await?;
            repo::insert_first_material(&mut tx, &key_id, &wrapped, now).await?;
            repo::insert_alias(&mut tx, &alias, &key_id, now).await?;
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
    repo::insert_encryption_key(&mut tx, &key_id, description, now).await?;
    repo::insert_first_material(&mut tx, &key_id, &plane.keys.wrap(&material), now).await?;
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
    repo::insert_material(&mut tx, &key.key_id, version, &plane.keys.wrap(&material), now).await?;
    repo::set_current_version(&mut tx, &key.key_id, version, now).await?;
    tx.commit().await?;
    Ok(version)
}

pub(super) async fn material(plane: &Platform, key_id: &str, version: i64) -> Result<Aes256Gcm, ActionError> {
    let wrapped = repo::find_material(plane, key_id, version).await?.ok_or_else(invalid_ciphertext)?;
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
    repo::insert_alias_if_absent(plane, alias_name, key_id, now_millis()).await
}
