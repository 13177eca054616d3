//! The notebook actions of SageMaker's model: create, describe, list, start, stop, update and
//! delete; a notebook changes or goes only while it is stopped.

use std::sync::Arc;

use policy::Resource;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::admission::{GIB, admit_volume};
use super::server::{run_notebook, stop_notebook};
use super::state::{Notebooks, arn, notebook_dir, row, volume_context};
use super::volume::Volume;
use crate::core::codec::bounded;
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

fn check_name(name: &str) -> Result<(), ActionError> {
    let ok = (1..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ActionError::validation(format!("NotebookInstanceName `{name}` must be 1..=63 letters, digits and inner `-`")))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateInput {
    notebook_instance_name: String,
    instance_type: String,
    #[serde(default, rename = "VolumeSizeInGB")]
    volume_size_in_gb: Option<i64>,
    #[serde(default)]
    kms_key_id: Option<String>,
    #[serde(default)]
    root_access: Option<String>,
    #[serde(default)]
    direct_internet_access: Option<String>,
    #[serde(default)]
    role_arn: Option<String>,
    /// The user whose notebook this is (DataSandbox's addition), with their access mode
    /// (`custom` unless given) and, for a federated user, their identity provider: only that
    /// user's sessions are given URLs to it.
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    owner_access_mode: Option<model::AccessMode>,
    #[serde(default)]
    owner_issuer: Option<String>,
}

pub(super) async fn create(notebooks: &Arc<Notebooks>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateInput = ctx.parse(input)?;
    let _ = input.role_arn;
    check_name(&input.notebook_instance_name)?;
    let plane = ctx.platform;
    crate::instances::instance_type(plane, &input.instance_type)?;
    let volume_size = bounded("VolumeSizeInGB", input.volume_size_in_gb, 5, 5..=16_384)?;
    if input.root_access.as_deref().is_some_and(|r| r != "Disabled") {
        return Err(ActionError::validation("RootAccess must be Disabled: notebook users never get root"));
    }
    if input.direct_internet_access.as_deref().is_some_and(|r| r != "Disabled") {
        return Err(ActionError::validation("DirectInternetAccess must be Disabled: notebooks have no route out"));
    }
    let owner = match &input.owner {
        Some(owner) => {
            let mode = input.owner_access_mode.unwrap_or(model::AccessMode::Custom);
            Some(
                model::UserRef::from_parts(mode, input.owner_issuer.as_deref(), owner)
                    .map_err(|e| ActionError::validation(format!("Owner `{owner}`: {e}")))?,
            )
        }
        None if input.owner_access_mode.is_some() || input.owner_issuer.is_some() => {
            return Err(ActionError::validation("OwnerAccessMode and OwnerIssuer describe an Owner: name the Owner too"));
        }
        None => None,
    };
    let key_ref = input.kms_key_id.clone().unwrap_or_else(|| format!("alias/{}", default_key_alias(plane)));
    let key = crate::keys::resolve_for_use(plane, &key_ref).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let aliases = crate::keys::aliases_of(plane, key.id()).await?;
    ctx.authorize_also("keys:GenerateDataKey", Resource::Key { id: key.id().to_owned(), aliases })?;
    let _admission = notebooks.admission.lock().await;
    if sqlx::query("SELECT name FROM notebooks WHERE name = $1")
        .bind(&input.notebook_instance_name)
        .fetch_optional(&plane.store.pool)
        .await?
        .is_some()
    {
        return Err(ActionError::conflict("ResourceInUse", format!("notebook instance `{}` already exists", input.notebook_instance_name)));
    }
    // The volume's key: 256 random bits, kept only wrapped.
    let mut data_key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut data_key);
    let context = volume_context(&input.notebook_instance_name);
    admit_volume(plane, volume_size as u64 * GIB).await?;
    let wrapped = crate::keys::encrypt_with(plane, &key, &data_key, &context).await?;
    let name = input.notebook_instance_name.clone();
    let volume = Volume::new(notebook_dir(plane, &name));
    let password = hex::encode(data_key);
    let size = volume_size as u64;
    tokio::task::spawn_blocking(move || volume.create(size, &password)).await.map_err(ActionError::internal)??;
    sqlx::query(
        "INSERT INTO notebooks (name, instance_type, volume_size_gb, kms_key_id, owner, state, instance_id, wrapped_key, created, owner_mode, owner_issuer)
         VALUES ($1, $2, $3, $4, $5, 'Pending', NULL, $6, $7, $8, $9)",
    )
    .bind(&name)
    .bind(&input.instance_type)
    .bind(volume_size)
    .bind(key.id())
    .bind(owner.as_ref().map(|o| o.user().to_string()))
    .bind(crate::core::codec::encode_base64(&wrapped))
    .bind(now_millis())
    .bind(owner.as_ref().map(|o| o.mode().as_str()))
    .bind(owner.as_ref().and_then(|o| o.issuer_str()))
    .execute(&plane.store.pool)
    .await?;
    // Created notebooks start, as SageMaker's do.
    let notebooks = notebooks.clone();
    let starting = name.clone();
    tokio::spawn(async move { run_notebook(&notebooks, &starting).await });
    Ok(json!({ "NotebookInstanceArn": arn(plane, &name) }))
}

fn default_key_alias(plane: &Platform) -> String {
    plane.current().notebooks.first().map_or_else(|| "notebook-kms".to_owned(), |n| n.kms_key_alias.clone())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NameInput {
    notebook_instance_name: String,
}

pub(super) async fn describe(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    notebook_json(ctx.platform, &row(ctx.platform, &input.notebook_instance_name).await?)
}

fn notebook_json(plane: &Platform, row: &sqlx::any::AnyRow) -> Result<Value, ActionError> {
    let name: String = row.try_get("name")?;
    Ok(json!({
        "NotebookInstanceName": name,
        "NotebookInstanceArn": arn(plane, &name),
        "NotebookInstanceStatus": row.try_get::<String, _>("state")?,
        "FailureReason": row.try_get::<Option<String>, _>("failure_reason")?,
        "InstanceType": row.try_get::<String, _>("instance_type")?,
        "VolumeSizeInGB": row.try_get::<i64, _>("volume_size_gb")?,
        "KmsKeyId": row.try_get::<String, _>("kms_key_id")?,
        "RootAccess": "Disabled",
        "DirectInternetAccess": "Disabled",
        "Owner": row.try_get::<Option<String>, _>("owner")?,
        "OwnerAccessMode": row.try_get::<Option<String>, _>("owner_mode")?,
        "OwnerIssuer": row.try_get::<Option<String>, _>("owner_issuer")?,
        "InstanceId": row.try_get::<Option<String>, _>("instance_id")?,
        "CreationTime": millis_to_rfc3339(row.try_get("created")?),
    }))
}

pub(super) async fn list(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let rows = sqlx::query("SELECT * FROM notebooks ORDER BY name").fetch_all(&ctx.platform.store.pool).await?;
    let notebooks = rows.iter().map(|r| notebook_json(ctx.platform, r)).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "NotebookInstances": notebooks }))
}

pub(super) async fn start(notebooks: &Arc<Notebooks>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let notebook = row(plane, &input.notebook_instance_name).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let key: String = notebook.try_get("kms_key_id")?;
    let aliases = crate::keys::aliases_of(plane, &key).await?;
    ctx.authorize_also("keys:Decrypt", Resource::Key { id: key, aliases })?;
    let state: String = notebook.try_get("state")?;
    if state != "Stopped" && state != "Failed" {
        return Err(ActionError::conflict("ConflictException", format!("notebook instance `{}` is {state}", input.notebook_instance_name)));
    }
    sqlx::query("UPDATE notebooks SET state = 'Pending' WHERE name = $1")
        .bind(&input.notebook_instance_name)
        .execute(&plane.store.pool)
        .await?;
    let (notebooks, name) = (notebooks.clone(), input.notebook_instance_name.clone());
    tokio::spawn(async move { run_notebook(&notebooks, &name).await });
    Ok(json!({}))
}

pub(super) async fn stop(notebooks: &Notebooks, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    row(plane, &input.notebook_instance_name).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    stop_notebook(notebooks, &input.notebook_instance_name).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct UpdateInput {
    notebook_instance_name: String,
    #[serde(default)]
    instance_type: Option<String>,
    #[serde(default, rename = "VolumeSizeInGB")]
    volume_size_in_gb: Option<i64>,
}

/// As in SageMaker: only a stopped notebook changes, and its volume only grows.
pub(super) async fn update(notebooks: &Arc<Notebooks>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: UpdateInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let notebook = row(plane, &input.notebook_instance_name).await?;
    if let Some(t) = &input.instance_type {
        crate::instances::instance_type(plane, t)?;
    }
    let current: i64 = notebook.try_get("volume_size_gb")?;
    let volume = bounded("VolumeSizeInGB", input.volume_size_in_gb, current, 5..=16_384)?;
    if volume < current {
        return Err(ActionError::validation(format!("VolumeSizeInGB {volume} is smaller than the volume's {current}: volumes only grow")));
    }
    ctx.authorize(Resource::Service("notebooks".into()))?;
    require_stopped(&notebook, &input.notebook_instance_name)?;
    let instance_type = input.instance_type.clone().map_or_else(|| notebook.try_get("instance_type"), Ok)?;
    let _admission = notebooks.admission.lock().await;
    if volume > current {
        admit_volume(plane, (volume - current) as u64 * GIB).await?;
        let disk = Volume::new(notebook_dir(plane, &input.notebook_instance_name));
        tokio::task::spawn_blocking(move || disk.grow(volume as u64)).await.map_err(ActionError::internal)??;
    }
    sqlx::query("UPDATE notebooks SET instance_type = $1, volume_size_gb = $2 WHERE name = $3")
        .bind(&instance_type)
        .bind(volume)
        .bind(&input.notebook_instance_name)
        .execute(&plane.store.pool)
        .await?;
    Ok(json!({}))
}

/// Only a stopped (or failed) notebook may change or go, as in SageMaker.
fn require_stopped(notebook: &sqlx::any::AnyRow, name: &str) -> Result<(), ActionError> {
    let state: String = notebook.try_get("state")?;
    if state != "Stopped" && state != "Failed" {
        return Err(ActionError::conflict("ConflictException", format!("notebook instance `{name}` is {state}; stop it first")));
    }
    Ok(())
}

pub(super) async fn delete(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let notebook = row(plane, &input.notebook_instance_name).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    require_stopped(&notebook, &input.notebook_instance_name)?;
    sqlx::query("DELETE FROM notebooks WHERE name = $1").bind(&input.notebook_instance_name).execute(&plane.store.pool).await?;
    let _ = std::fs::remove_dir_all(notebook_dir(plane, &input.notebook_instance_name));
    Ok(json!({}))
}
