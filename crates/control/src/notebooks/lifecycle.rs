//! The notebook actions of SageMaker's model: create, describe, list, start, stop, update and
//! delete; a notebook changes or goes only while it is stopped.

use std::sync::Arc;

use policy::Resource;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};

use super::admission::{GIB, admit_volume};
use super::nodes::Work;
use super::repo::{self, NotebookRow, NotebookState};
use super::state::{Notebooks, arn, notebook_dir, volume_context};
use super::volume::Volume;
use crate::core::codec::bounded;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::millis_to_rfc3339;

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
    if repo::exists(plane, &input.notebook_instance_name).await? {
        return Err(ActionError::conflict(
            ErrorCode::ResourceInUse,
            format!("notebook instance `{}` already exists", input.notebook_instance_name),
        ));
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
    let new = repo::NewNotebook {
        name: &name,
        instance_type: &input.instance_type,
        volume_size_gb: volume_size,
        kms_key_id: key.id(),
        owner: owner.as_ref().map(|o| o.user().to_string()),
        wrapped_key: crate::core::codec::encode_base64(&wrapped),
        owner_mode: owner.as_ref().map(|o| o.mode().as_str()),
        owner_issuer: owner.as_ref().and_then(|o| o.issuer_str()),
    };
    repo::insert(plane, new).await?;
    // Created notebooks start, as SageMaker's do, on this node: its disk holds the volume.
    notebooks.spawn_work(&name, Work::Start);
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
    Ok(notebook_json(ctx.platform, &repo::find(ctx.platform, &input.notebook_instance_name).await?))
}

fn notebook_json(plane: &Platform, row: &NotebookRow) -> Value {
    json!({
        "NotebookInstanceName": row.name,
        "NotebookInstanceArn": arn(plane, &row.name),
        "NotebookInstanceStatus": row.state.as_str(),
        "FailureReason": row.failure_reason,
        "InstanceType": row.instance_type,
        "VolumeSizeInGB": row.volume_size_gb,
        "KmsKeyId": row.kms_key_id,
        "RootAccess": "Disabled",
        "DirectInternetAccess": "Disabled",
        "Owner": row.owner,
        "OwnerAccessMode": row.owner_mode,
        "OwnerIssuer": row.owner_issuer,
        "InstanceId": row.instance_id,
        "Node": row.node,
        "CreationTime": millis_to_rfc3339(row.created),
    })
}

pub(super) async fn list(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let notebooks: Vec<Value> = repo::all(ctx.platform).await?.iter().map(|row| notebook_json(ctx.platform, row)).collect();
    Ok(json!({ "NotebookInstances": notebooks }))
}

pub(super) async fn start(notebooks: &Arc<Notebooks>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let notebook = repo::find(plane, &input.notebook_instance_name).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let key = notebook.kms_key_id;
    let aliases = crate::keys::aliases_of(plane, &key).await?;
    ctx.authorize_also("keys:Decrypt", Resource::Key { id: key, aliases })?;
    let name = &input.notebook_instance_name;
    let conflict =
        |state: NotebookState| ActionError::conflict(ErrorCode::ConflictException, format!("notebook instance `{name}` is {state}"));
    if !notebook.state.is_at_rest() {
        return Err(conflict(notebook.state));
    }
    // Only the node whose disk holds the volume can start it.
    notebooks.require_live_node(notebook.node.as_deref(), name).await?;
    if !repo::request_state(plane, name, &[NotebookState::Stopped, NotebookState::Failed], NotebookState::Pending).await? {
        return Err(conflict(repo::find(plane, name).await?.state));
    }
    notebooks.ask(notebook.node.as_deref(), name, Work::Start).await;
    Ok(json!({}))
}

/// Stops a notebook: here, at once, when this node runs it; else its node is asked to (the
/// notebook is `Stopping` until it has), and its access ends now.
pub(super) async fn stop(notebooks: &Arc<Notebooks>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let notebook = repo::find(plane, &input.notebook_instance_name).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let name = &input.notebook_instance_name;
    match notebook.node.as_deref() {
        Some(node) if node != plane.node.name => {
            if repo::request_state(plane, name, &[NotebookState::Pending, NotebookState::InService], NotebookState::Stopping).await? {
                repo::delete_access(plane, name).await?;
                notebooks.ask(Some(node), name, Work::Stop).await;
            }
        }
        _ => notebooks.stop_here(name).await?,
    }
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
    let notebook = repo::find(plane, &input.notebook_instance_name).await?;
    if let Some(t) = &input.instance_type {
        crate::instances::instance_type(plane, t)?;
    }
    let current = notebook.volume_size_gb;
    let volume = bounded("VolumeSizeInGB", input.volume_size_in_gb, current, 5..=16_384)?;
    if volume < current {
        return Err(ActionError::validation(format!("VolumeSizeInGB {volume} is smaller than the volume's {current}: volumes only grow")));
    }
    ctx.authorize(Resource::Service("notebooks".into()))?;
    require_stopped(&notebook, &input.notebook_instance_name)?;
    let instance_type = input.instance_type.clone().unwrap_or(notebook.instance_type);
    let _admission = notebooks.admission.lock().await;
    // A volume on another node's disk grows there, at its next start.
    if volume > current && notebook.node.as_deref().is_none_or(|n| n == plane.node.name) {
        admit_volume(plane, (volume - current) as u64 * GIB).await?;
        let disk = Volume::new(notebook_dir(plane, &input.notebook_instance_name));
        tokio::task::spawn_blocking(move || disk.grow(volume as u64)).await.map_err(ActionError::internal)??;
    }
    repo::update_type_and_size(plane, &input.notebook_instance_name, &instance_type, volume).await?;
    Ok(json!({}))
}

/// Only a stopped (or failed) notebook may change or go, as in SageMaker.
fn require_stopped(notebook: &NotebookRow, name: &str) -> Result<(), ActionError> {
    let state = notebook.state;
    if !state.is_at_rest() {
        return Err(ActionError::conflict(ErrorCode::ConflictException, format!("notebook instance `{name}` is {state}; stop it first")));
    }
    Ok(())
}

/// Deletes a stopped notebook; its volume goes with it, here or, on another node's disk, by
/// that node's reconciler.
pub(super) async fn delete(notebooks: &Notebooks, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let notebook = repo::find(plane, &input.notebook_instance_name).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    require_stopped(&notebook, &input.notebook_instance_name)?;
    if !repo::delete(plane, &input.notebook_instance_name).await? {
        let now = repo::find(plane, &input.notebook_instance_name).await?;
        return Err(ActionError::conflict(
            ErrorCode::ConflictException,
            format!("notebook instance `{}` is {}; stop it first", input.notebook_instance_name, now.state),
        ));
    }
    match notebook.node.as_deref() {
        Some(node) if node != plane.node.name => notebooks.tell(&input.notebook_instance_name).await,
        _ => {
            let volume = Volume::new(notebook_dir(plane, &input.notebook_instance_name));
            if let Err(err) = tokio::task::spawn_blocking(move || volume.remove()).await.map_err(|e| e.to_string()).and_then(|r| r) {
                tracing::warn!(notebook = %input.notebook_instance_name, error = %err, "a deleted notebook's volume is left on disk");
            }
        }
    }
    Ok(json!({}))
}
