//! Managing keys: create, describe and list them, their aliases, their rotation, their
//! deletion (scheduled, and cancelled), enabling and disabling.

use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};

use super::repo::{self, KeyRow, KeyState};
use super::rows::{DAY_MS, authorized_key, insert_key, key_arn, require_customer_managed, require_enabled, rotate};
use crate::core::actions::KeysAction;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

fn metadata(plane: &Platform, key: &KeyRow) -> Value {
    let mut meta = json!({
        "KeyId": key.key_id,
        "Arn": key_arn(plane, &key.key_id),
        "AWSAccountId": plane.spec.account_id,
        "CreationDate": millis_to_rfc3339(key.created),
        "Enabled": key.state == KeyState::Enabled,
        "Description": key.description,
        "KeyUsage": key.key_usage,
        "KeyState": key.state.as_str(),
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

pub(super) async fn create_key(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
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

pub(super) async fn describe_key(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
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

pub(super) async fn list_keys(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ListInput = ctx.parse(input)?;
    let limit = crate::core::codec::bounded("Limit", input.limit, 100, 1..=1000)?;
    ctx.authorize(Resource::Service("keys".into()))?;
    let after = crate::core::codec::decode_token(input.marker.as_deref())?.unwrap_or_default();
    let mut ids = repo::key_ids_after(ctx.platform, &after, limit + 1).await?;
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

pub(super) async fn create_alias(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateAliasInput = ctx.parse(input)?;
    let name = &input.alias_name;
    let valid = name
        .strip_prefix("alias/")
        .is_some_and(|rest| !rest.is_empty() && rest.len() <= 250 && rest.chars().all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c)));
    if !valid {
        return Err(ActionError::validation(format!("AliasName `{name}` must be `alias/` followed by 1..=250 of a-zA-Z0-9/_-")));
    }
    if name.starts_with("alias/aws/") || name.starts_with("alias/datasandbox/") {
        return Err(ActionError::validation(
            "alias names under `alias/aws/` and `alias/datasandbox/` are reserved (the platform's own keys: the trail's, the recordings')",
        ));
    }
    let key = authorized_key(ctx, &input.target_key_id).await?;
    if !repo::insert_alias_if_absent(ctx.platform, name, &key.key_id, now_millis()).await? {
        return Err(ActionError::conflict(ErrorCode::AlreadyExistsException, format!("alias `{name}` already exists")));
    }
    Ok(json!({}))
}

pub(super) async fn list_aliases(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ListInput = ctx.parse(input)?;
    ctx.authorize(Resource::Service("keys".into()))?;
    let mut aliases = Vec::new();
    for repo::AliasRow { alias_name: name, target_key_id: target, created } in repo::list_aliases(ctx.platform).await? {
        if input.key_id.as_deref().is_some_and(|k| k != target) {
            continue;
        }
        aliases.push(json!({
            "AliasName": name,
            "AliasArn": model::arn::regional("keys", &ctx.platform.spec.region, &ctx.platform.spec.account_id, &name),
            "TargetKeyId": target,
            "CreationDate": millis_to_rfc3339(created),
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

pub(super) async fn get_rotation_status(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let (key, _) = rotation_key(ctx, input, false).await?;
    let mut out = json!({ "KeyId": key.key_id, "KeyRotationEnabled": key.rotation_period_days.is_some() });
    if let Some(days) = key.rotation_period_days {
        out["RotationPeriodInDays"] = json!(days);
        out["NextRotationDate"] = json!(millis_to_rfc3339(key.last_rotated + days * DAY_MS));
    }
    Ok(out)
}

pub(super) async fn enable_rotation(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let (key, period) = rotation_key(ctx, input, true).await?;
    require_enabled(&key)?;
    repo::set_rotation_period(ctx.platform, &key.key_id, period).await?;
    Ok(json!({}))
}

pub(super) async fn disable_rotation(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let (key, _) = rotation_key(ctx, input, false).await?;
    require_enabled(&key)?;
    repo::clear_rotation_period(ctx.platform, &key.key_id).await?;
    Ok(json!({}))
}

pub(super) async fn rotate_on_demand(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let (key, _) = rotation_key(ctx, input, false).await?;
    require_enabled(&key)?;
    rotate(ctx.platform, &key).await?;
    Ok(json!({ "KeyId": key.key_id }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ScheduleInput {
    key_id: String,
    #[serde(default)]
    pending_window_in_days: Option<i64>,
}

pub(super) async fn schedule_deletion(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ScheduleInput = ctx.parse(input)?;
    let days = crate::core::codec::bounded("PendingWindowInDays", input.pending_window_in_days, 30, 7..=30)?;
    let key = authorized_key(ctx, &input.key_id).await?;
    require_customer_managed(&key)?;
    if key.state == KeyState::PendingDeletion {
        return Err(ActionError::conflict(
            ErrorCode::KMSInvalidStateException,
            format!("key `{}` is already pending deletion", key.key_id),
        ));
    }
    let date = now_millis() + days * DAY_MS;
    repo::schedule_deletion(ctx.platform, &key.key_id, date).await?;
    Ok(
        json!({ "KeyId": key_arn(ctx.platform, &key.key_id), "DeletionDate": millis_to_rfc3339(date), "KeyState": KeyState::PendingDeletion.as_str(), "PendingWindowInDays": days }),
    )
}

pub(super) async fn cancel_deletion(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: KeyInput = ctx.parse(input)?;
    let key = authorized_key(ctx, &input.key_id).await?;
    if key.state != KeyState::PendingDeletion {
        return Err(ActionError::conflict(ErrorCode::KMSInvalidStateException, format!("key `{}` is not pending deletion", key.key_id)));
    }
    // As in KMS, a key whose deletion is cancelled comes back disabled.
    repo::cancel_deletion(ctx.platform, &key.key_id).await?;
    Ok(json!({ "KeyId": key_arn(ctx.platform, &key.key_id) }))
}

pub(super) async fn enable_disable(ctx: &mut Ctx<'_>, action: KeysAction, input: Value) -> Result<Value, ActionError> {
    let input: KeyInput = ctx.parse(input)?;
    let key = authorized_key(ctx, &input.key_id).await?;
    if key.state == KeyState::PendingDeletion {
        return Err(ActionError::conflict(
            ErrorCode::KMSInvalidStateException,
            format!("key `{}` is pending deletion; cancel the deletion first", key.key_id),
        ));
    }
    let state = if action == KeysAction::EnableKey { KeyState::Enabled } else { KeyState::Disabled };
    repo::set_state(ctx.platform, &key.key_id, state).await?;
    Ok(json!({}))
}
