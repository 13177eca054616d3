//! Notebook instances (SageMaker's model): a real Jupyter server (JupyterLab from the
//! `notebook` image) in a sandbox instance of its own, reachable only by the gateway through a
//! Unix socket, with an encrypted volume; and single-use presigned URLs bound to the
//! streaming session they were made for.
//!
//! The volume (`volume.rs`) is a disk of the notebook's size holding a gocryptfs directory,
//! mounted (FUSE) at `…/plain` only while the notebook runs and bound into its instance at
//! `/home/user/work`. Its password is a 256-bit data key from the key service, stored wrapped
//! by the notebook's KMS key: while the notebook is stopped, nothing of the volume is
//! plaintext on the host disk.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use policy::Resource;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod volume;

use volume::Volume;

use crate::core::actions::NotebooksAction;
use crate::core::codec::bounded;
use crate::core::error::ActionError;
use crate::core::pipeline::{Ctx, Pipeline};
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};
use crate::instances::Instances;
use crate::instances::{Launch, Program, launch_instance, stop_instance};

/// The image notebook instances run.
pub(crate) const NOTEBOOK_IMAGE: &str = "datasandbox-notebook";
/// How long a presigned notebook URL may be opened, in seconds (AWS: 5 minutes; scaled like
/// session timeouts).
const URL_VALIDITY_SECONDS: i64 = 5 * 60;
/// How long Jupyter may take to answer after its instance started.
const JUPYTER_START: Duration = Duration::from_secs(60);

/// What the gateway needs to reach a running notebook's Jupyter.
#[derive(Debug, Clone)]
pub struct NotebookTarget {
    pub socket: PathBuf,
    pub token: String,
    pub session_id: String,
    pub user_id: String,
    pub correlation_id: String,
    /// The session's `FILE_DOWNLOAD` and `FILE_UPLOAD` permissions.
    pub download: bool,
    pub upload: bool,
    /// Where the request came from: the user's browser, or the instance of a pixel session.
    pub source_ip: String,
}

/// The notebook service: the instances it runs Jupyter in, and the tokens of the running
/// Jupyter servers, by notebook (never stored, never shown).
pub(crate) struct Notebooks {
    pipeline: Pipeline,
    instances: Arc<Instances>,
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Held from a volume's admission until its row records its size (or its growth is
    /// recorded): two creates at once must not both count the same free space.
    admission: tokio::sync::Mutex<()>,
}

impl Notebooks {
    pub(crate) fn new(pipeline: Pipeline, instances: Arc<Instances>) -> Notebooks {
        Notebooks { pipeline, instances, tokens: Default::default(), admission: Default::default() }
    }

    pub(crate) async fn dispatch(self: &Arc<Self>, ctx: &mut Ctx<'_>, action: NotebooksAction, input: Value) -> Result<Value, ActionError> {
        use NotebooksAction as A;
        match action {
            A::CreateNotebookInstance => create(self, ctx, input).await,
            A::DescribeNotebookInstance => describe(ctx, input).await,
            A::ListNotebookInstances => list(ctx, input).await,
            A::StartNotebookInstance => start(self, ctx, input).await,
            A::StopNotebookInstance => stop(self, ctx, input).await,
            A::UpdateNotebookInstance => update(self, ctx, input).await,
            A::DeleteNotebookInstance => delete(ctx, input).await,
            A::CreatePresignedNotebookInstanceUrl => presign(ctx, input).await,
            A::RedeemPresignedNotebookInstanceUrl => redeem(ctx, input).await,
        }
    }

    /// At a clean stop or start-up: every notebook stopped, its volume unmounted.
    pub(crate) async fn stop_all(&self) {
        stop_all(self).await
    }
}

const GIB: u64 = 1 << 30;

/// Kept free beside the notebook volumes, for the platform (the trail above all).
const VOLUME_RESERVE: u64 = GIB;

/// Volumes are sparse disk images: each may still claim the space it has not used yet. A new
/// volume (or a volume's growth) of `more` bytes is admitted only if every volume could fill
/// up and the file system would still keep [`VOLUME_RESERVE`] — otherwise one notebook user
/// filling their volume could fill the disk the trail is written to.
async fn admit_volume(plane: &Platform, more: u64) -> Result<(), ActionError> {
    let rows = sqlx::query("SELECT name, volume_size_gb FROM notebooks").fetch_all(&plane.store.pool).await?;
    let mut unclaimed = 0u64;
    for row in rows {
        let (name, size): (String, i64) = (row.try_get("name")?, row.try_get("volume_size_gb")?);
        let used = std::fs::metadata(notebook_dir(plane, &name).join("volume.img")).map_or(0, |m| m.blocks() * 512);
        unclaimed += (size as u64 * GIB).saturating_sub(used);
    }
    let dir = plane.data_dir.join("notebooks");
    let probe = if dir.exists() { dir } else { plane.data_dir.clone() };
    let free = sandbox::free_bytes(&probe).map_err(ActionError::internal)?;
    if unclaimed + more + VOLUME_RESERVE > free {
        return Err(ActionError::new(
            400,
            "ResourceLimitExceeded",
            format!(
                "the notebook volumes would claim {} GiB more than the {} GiB free where they live (keeping {} GiB for the platform); \
                 choose a smaller VolumeSizeInGB, delete a notebook, or free space",
                (unclaimed + more + VOLUME_RESERVE - free).div_ceil(GIB),
                free / GIB,
                VOLUME_RESERVE / GIB
            ),
        ));
    }
    Ok(())
}

/// What a notebook's instance may write to its server's socket directory on the host.
const RUN_DIR_BYTES: u64 = 1 << 20;

fn notebook_dir(plane: &Platform, name: &str) -> PathBuf {
    plane.data_dir.join("notebooks").join(name)
}

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

fn not_found(name: &str) -> ActionError {
    ActionError::not_found("ResourceNotFound", format!("notebook instance `{name}` does not exist"))
}

async fn row(plane: &Platform, name: &str) -> Result<sqlx::any::AnyRow, ActionError> {
    sqlx::query("SELECT * FROM notebooks WHERE name = $1")
        .bind(name)
        .fetch_optional(&plane.store.pool)
        .await?
        .ok_or_else(|| not_found(name))
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

async fn create(notebooks: &Arc<Notebooks>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
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

fn volume_context(name: &str) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([("notebook".to_owned(), name.to_owned())])
}

fn arn(plane: &Platform, name: &str) -> String {
    format!("arn:datasandbox:notebooks:{}:{}:notebook-instance/{name}", plane.spec.region, plane.spec.account_id)
}

/// Starts a notebook: its volume mounted, its Jupyter server in a fresh instance, then
/// InService once Jupyter answers (or Failed with the reason).
async fn run_notebook(notebooks: &Notebooks, name: &str) {
    if let Err(err) = try_run_notebook(notebooks, name).await {
        tracing::error!(notebook = name, error = %err, "notebook did not start");
        let plane = &*notebooks.pipeline.platform;
        Volume::new(notebook_dir(plane, name)).unmount();
        let _ = sqlx::query("UPDATE notebooks SET state = 'Failed', failure_reason = $1 WHERE name = $2")
            .bind(err.message.clone())
            .bind(name)
            .execute(&plane.store.pool)
            .await;
    }
}

async fn try_run_notebook(notebooks: &Notebooks, name: &str) -> Result<(), ActionError> {
    let plane = &*notebooks.pipeline.platform;
    let notebook = row(plane, name).await?;
    let wrapped = crate::core::codec::decode_base64("wrapped key", &notebook.try_get::<String, _>("wrapped_key")?)?;
    let (_, data_key) = crate::keys::decrypt_blob(plane, &wrapped, &volume_context(name)).await?;
    // The notebook image is built on first use from the deployed spec's declaration.
    crate::instances::ensure_image(plane, &plane.current(), NOTEBOOK_IMAGE).await?;
    let dir = notebook_dir(plane, name);
    let (plain, run) = (Volume::new(dir.clone()).plain(), dir.join("run"));
    // The instance's host ids are chosen first: its volume and directories are made its own.
    let ids = crate::instances::lease_ids(&notebooks.instances).await?;
    let range = ids.range();
    let password = hex::encode(&data_key);
    {
        let volume = Volume::new(dir.clone());
        tokio::task::spawn_blocking(move || volume.mount(&password, range)).await.map_err(ActionError::internal)??;
    }
    // Its server's socket directory is bounded: the instance can write there, and must not
    // be able to fill the data directory's file system.
    sandbox::bounded_dir(&run, RUN_DIR_BYTES, range.workspace()).map_err(ActionError::internal)?;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let program = Program {
        command: vec![
            "/opt/jupyter/bin/python".into(),
            // Isolated: no module is looked up in the writable working directory (the user's
            // code could plant one for the server to import), no PYTHON* variable is read.
            "-I".into(),
            "-m".into(),
            "jupyterlab".into(),
            "--no-browser".into(),
            "--ServerApp.sock=/run/jupyter/jupyter.sock".into(),
            format!("--ServerApp.base_url=/notebook/{name}/"),
            "--ServerApp.root_dir=/home/user/work".into(),
            // No terminals: a shell in the browser would be one more channel nothing judges.
            "--ServerApp.terminals_enabled=False".into(),
        ],
        // The token is a file (never in a host process's environment or command line).
        env: vec![
            ("JUPYTER_TOKEN_FILE".into(), "/run/datasandbox/jupyter-token".into()),
            ("PATH".into(), "/opt/jupyter/bin:/usr/bin:/bin".into()),
        ],
        files: vec![("jupyter-token".into(), token.clone().into_bytes())],
        writable_binds: vec![(run.clone(), PathBuf::from("/run/jupyter")), (plain.clone(), PathBuf::from("/home/user/work"))],
    };
    let launch = Launch {
        image_name: NOTEBOOK_IMAGE.into(),
        instance_type: notebook.try_get("instance_type")?,
        fleet: None,
        assignment: None,
        correlation_id: None,
        program: Some(program),
        ids: Some(ids),
    };
    let instance = launch_instance(&notebooks.instances, launch).await?;
    let instance_id = instance["InstanceId"].as_str().unwrap_or_default().to_owned();
    sqlx::query("UPDATE notebooks SET instance_id = $1 WHERE name = $2").bind(&instance_id).bind(name).execute(&plane.store.pool).await?;
    let socket = run.join("jupyter.sock");
    let deadline = tokio::time::Instant::now() + JUPYTER_START;
    loop {
        if jupyter_status(&socket, name, &token).await == Some(200) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = stop_instance(&notebooks.instances, &instance_id).await;
            return Err(ActionError::new(
                503,
                "ServiceUnavailable",
                format!("Jupyter did not answer within {} s", JUPYTER_START.as_secs()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    notebooks.tokens.lock().expect("tokens lock").insert(name.to_owned(), token);
    sqlx::query("UPDATE notebooks SET state = 'InService', failure_reason = NULL WHERE name = $1")
        .bind(name)
        .execute(&plane.store.pool)
        .await?;
    Ok(())
}

/// The HTTP status of Jupyter's `/api/status` on its socket, if it answers.
async fn jupyter_status(socket: &Path, name: &str, token: &str) -> Option<u16> {
    let mut stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    let request = format!("GET /notebook/{name}/api/status HTTP/1.0\r\nHost: localhost\r\nAuthorization: token {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = vec![0u8; 32];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head)).await.ok()?.ok()?;
    std::str::from_utf8(&head[..read]).ok()?.split_whitespace().nth(1)?.parse().ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NameInput {
    notebook_instance_name: String,
}

async fn describe(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
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

async fn list(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let rows = sqlx::query("SELECT * FROM notebooks ORDER BY name").fetch_all(&ctx.platform.store.pool).await?;
    let notebooks = rows.iter().map(|r| notebook_json(ctx.platform, r)).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "NotebookInstances": notebooks }))
}

async fn start(notebooks: &Arc<Notebooks>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
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

async fn stop(notebooks: &Notebooks, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    row(plane, &input.notebook_instance_name).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    stop_notebook(notebooks, &input.notebook_instance_name).await?;
    Ok(json!({}))
}

/// Stops a notebook: access ends, its instance is destroyed, its volume unmounted.
pub(crate) async fn stop_notebook(notebooks: &Notebooks, name: &str) -> Result<(), ActionError> {
    let plane = &*notebooks.pipeline.platform;
    let notebook = row(plane, name).await?;
    sqlx::query("UPDATE notebooks SET state = 'Stopping' WHERE name = $1").bind(name).execute(&plane.store.pool).await?;
    notebooks.tokens.lock().expect("tokens lock").remove(name);
    sqlx::query("DELETE FROM notebook_access WHERE notebook = $1").bind(name).execute(&plane.store.pool).await?;
    if let Some(instance) = notebook.try_get::<Option<String>, _>("instance_id")?
        && let Err(err) = stop_instance(&notebooks.instances, &instance).await
        && err.status != 404
    {
        return Err(err);
    }
    let volume = Volume::new(notebook_dir(plane, name));
    tokio::task::spawn_blocking(move || volume.unmount()).await.map_err(ActionError::internal)?;
    sqlx::query("UPDATE notebooks SET state = 'Stopped', instance_id = NULL WHERE name = $1").bind(name).execute(&plane.store.pool).await?;
    Ok(())
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
async fn update(notebooks: &Arc<Notebooks>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
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

async fn delete(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let notebook = row(plane, &input.notebook_instance_name).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    require_stopped(&notebook, &input.notebook_instance_name)?;
    sqlx::query("DELETE FROM notebooks WHERE name = $1").bind(&input.notebook_instance_name).execute(&plane.store.pool).await?;
    let _ = std::fs::remove_dir_all(notebook_dir(plane, &input.notebook_instance_name));
    Ok(json!({}))
}

/// A notebook with an owner opens only in its owner's sessions: the same user id *and* access
/// mode *and* identity provider (a local `bob` and a SAML `bob` are two people).
fn check_owner(notebook: &sqlx::any::AnyRow, session: &sqlx::any::AnyRow, name: &str) -> Result<(), ActionError> {
    let Some(owner) = notebook.try_get::<Option<String>, _>("owner")? else { return Ok(()) };
    let refused = |why: String| Err(ActionError::new(403, "NotebookOwnedByAnotherUser", why));
    let Some(mode) = notebook.try_get::<Option<String>, _>("owner_mode")?.as_deref().and_then(model::AccessMode::parse) else {
        return refused(format!(
            "notebook instance `{name}` was made before owners carried their access mode; an operator must recreate it for its owner"
        ));
    };
    let issuer: Option<String> = notebook.try_get("owner_issuer")?;
    let owner = model::UserRef::from_parts(mode, issuer.as_deref(), &owner).map_err(ActionError::internal)?;
    let user = crate::streaming::sessions::session_user(session)?;
    if owner != user {
        return refused(format!("notebook instance `{name}` belongs to {owner}, not to this session's {user}"));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PresignInput {
    notebook_instance_name: String,
    #[serde(default)]
    session_expiration_duration_in_seconds: Option<i64>,
    /// The streaming session the URL is for: only that session can open it (DataSandbox's
    /// addition; AWS's URL is a bearer token).
    streaming_session_id: String,
}

async fn presign(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: PresignInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let duration = bounded("SessionExpirationDurationInSeconds", input.session_expiration_duration_in_seconds, 43_200, 1800..=43_200)?;
    let notebook = row(plane, &input.notebook_instance_name).await?;
    let session = crate::streaming::sessions::session_row(plane, &input.streaming_session_id).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let state: String = notebook.try_get("state")?;
    if state != "InService" {
        return Err(ActionError::new(
            400,
            "ValidationException",
            format!("notebook instance `{}` is {state}, not InService", input.notebook_instance_name),
        ));
    }
    if session.try_get::<String, _>("state")? != "ACTIVE" {
        return Err(ActionError::validation(format!("streaming session `{}` is not ACTIVE", input.streaming_session_id)));
    }
    check_owner(&notebook, &session, &input.notebook_instance_name)?;
    // A pixel session's URL opens only in the browser inside its instance, through the
    // endpoint on that instance's link; a direct session's, in the browser holding its cookie.
    let settings: Value = serde_json::from_str(&session.try_get::<String, _>("settings")?).map_err(ActionError::internal)?;
    let link = match settings["StreamView"].as_str() {
        // The browser is the user's device: file transfer controls cannot hold there.
        Some("DIRECT") if transfers_disabled(&settings) => {
            return Err(ActionError::validation(format!(
                "streaming session `{}` is DIRECT with FILE_UPLOAD or FILE_DOWNLOAD disabled: its notebook would be in the user's browser, \
                 where they cannot hold; stream the session (DESKTOP or APP) instead",
                input.streaming_session_id
            )));
        }
        Some("DIRECT") => None,
        _ => {
            let instance: Option<String> = session.try_get("instance_id")?;
            let row = sqlx::query("SELECT private_address, host_address FROM instances WHERE instance_id = $1")
                .bind(instance.unwrap_or_default())
                .fetch_optional(&plane.store.pool)
                .await?
                .ok_or_else(|| ActionError::validation(format!("streaming session `{}` has no instance", input.streaming_session_id)))?;
            Some((row.try_get::<String, _>("private_address")?, row.try_get::<String, _>("host_address")?))
        }
    };
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let now = now_millis();
    sqlx::query(
        "INSERT INTO notebook_urls (url_hash, notebook, session_id, session_expiration, expires, redeemed, created, instance_address)
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7)",
    )
    .bind(hex::encode(Sha256::digest(token.as_bytes())))
    .bind(&input.notebook_instance_name)
    .bind(&input.streaming_session_id)
    .bind(duration * 1000)
    .bind(now + crate::streaming::scaled_ms(plane, URL_VALIDITY_SECONDS))
    .bind(now)
    .bind(link.as_ref().map(|(private, _)| private.clone()))
    .execute(&plane.store.pool)
    .await?;
    let url = match &link {
        Some((_, endpoint)) => format!("http://{endpoint}:{}/notebook-auth/{token}", plane.spec.endpoint_port),
        None => {
            let url = format!("{}/notebook-auth/{token}", plane.public_base());
            // The session's page offers it; it opens only with that session's cookie.
            sqlx::query("UPDATE sessions SET notebook_url = $1 WHERE session_id = $2")
                .bind(&url)
                .bind(&input.streaming_session_id)
                .execute(&plane.store.pool)
                .await?;
            url
        }
    };
    Ok(json!({ "AuthorizedUrl": url }))
}

/// Whether a session's settings disable FILE_UPLOAD or FILE_DOWNLOAD.
fn transfers_disabled(settings: &Value) -> bool {
    settings["UserSettings"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| (s["Action"] == "FILE_UPLOAD" || s["Action"] == "FILE_DOWNLOAD") && s["Permission"] == "DISABLED")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RedeemInput {
    token: String,
}

/// Opens a presigned URL in the browser of the session it was made for: once, within five
/// minutes; returns the notebook cookie, valid for the URL's session expiration or until the
/// streaming session ends.
async fn redeem(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: RedeemInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let caller_session = crate::streaming::sessions::caller_session(ctx);
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let url = sqlx::query("SELECT * FROM notebook_urls WHERE url_hash = $1")
        .bind(hex::encode(Sha256::digest(input.token.as_bytes())))
        .fetch_optional(&plane.store.pool)
        .await?
        .ok_or_else(|| ActionError::new(403, "InvalidNotebookURL", "this notebook URL is not valid"))?;
    let bound: String = url.try_get("session_id")?;
    let instance_address: Option<String> = url.try_get("instance_address")?;
    if instance_address.as_deref().is_some_and(|address| address != ctx.source_ip) {
        return Err(ActionError::new(
            403,
            "NotebookURLBoundToInstance",
            "this notebook URL opens only in the browser of its session's workspace; it cannot be used from anywhere else",
        ));
    }
    if caller_session.as_deref() != Some(bound.as_str()) {
        return Err(ActionError::new(403, "NotebookURLBoundToAnotherSession", "this notebook URL belongs to another streaming session"));
    }
    if url.try_get::<i64, _>("expires")? <= now_millis() {
        return Err(ActionError::new(
            403,
            "ExpiredNotebookURL",
            "this notebook URL expired (they are valid for 5 minutes); start again from the launcher",
        ));
    }
    let session = crate::streaming::sessions::session_row(plane, &bound).await?;
    if session.try_get::<String, _>("state")? != "ACTIVE" {
        return Err(ActionError::new(403, "SessionEnded", "the streaming session of this notebook URL has ended"));
    }
    let used = sqlx::query("UPDATE notebook_urls SET redeemed = $1 WHERE url_hash = $2 AND redeemed IS NULL")
        .bind(now_millis())
        .bind(hex::encode(Sha256::digest(input.token.as_bytes())))
        .execute(&plane.store.pool)
        .await?;
    if used.rows_affected() == 0 {
        return Err(ActionError::new(403, "NotebookURLAlreadyUsed", "this notebook URL was already used; each opens the notebook once"));
    }
    let notebook: String = url.try_get("notebook")?;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let cookie = hex::encode(raw);
    let lifetime: i64 = url.try_get("session_expiration")?;
    sqlx::query(
        "INSERT INTO notebook_access (cookie_hash, notebook, session_id, expires, created, instance_address) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(hex::encode(Sha256::digest(cookie.as_bytes())))
    .bind(&notebook)
    .bind(&bound)
    .bind(now_millis() + lifetime)
    .bind(now_millis())
    .bind(&instance_address)
    .execute(&plane.store.pool)
        .await?;
    Ok(json!({ "NotebookInstanceName": notebook, "Cookie": cookie, "MaxAgeSeconds": lifetime / 1000 }))
}

impl Notebooks {
    /// Where a notebook request goes, if its cookie still grants access: the cookie is the
    /// notebook's, unexpired, its streaming session is still ACTIVE, and, for a pixel session,
    /// the request comes from that session's instance (`source_ip`).
    pub(crate) async fn notebook_target(&self, name: &str, cookie: &str, source_ip: &str) -> Result<NotebookTarget, ActionError> {
        let plane = &*self.pipeline.platform;
        let denied = |why: &str| ActionError::new(403, "AccessDeniedException", why.to_owned());
        let access = sqlx::query("SELECT * FROM notebook_access WHERE cookie_hash = $1 AND notebook = $2")
            .bind(hex::encode(Sha256::digest(cookie.as_bytes())))
            .bind(name)
            .fetch_optional(&plane.store.pool)
            .await?
            .ok_or_else(|| denied("no access to this notebook; open it from your session"))?;
        if access.try_get::<i64, _>("expires")? <= now_millis() {
            return Err(denied("your notebook access has expired; open it again from your session"));
        }
        if access.try_get::<Option<String>, _>("instance_address")?.is_some_and(|address| address != source_ip) {
            return Err(denied("this notebook opens only in the browser of its session's workspace"));
        }
        let session_id: String = access.try_get("session_id")?;
        let session = crate::streaming::sessions::session_row(plane, &session_id).await?;
        if session.try_get::<String, _>("state")? != "ACTIVE" {
            return Err(denied("your streaming session has ended, and notebook access with it"));
        }
        let token = self.tokens.lock().expect("tokens lock").get(name).cloned().ok_or_else(|| denied("the notebook is not running"))?;
        let settings: Value = serde_json::from_str(&session.try_get::<String, _>("settings")?).map_err(ActionError::internal)?;
        let enabled = |action: &str| {
            settings["UserSettings"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["Action"] == action)
                .is_none_or(|s| s["Permission"] != "DISABLED")
        };
        Ok(NotebookTarget {
            socket: notebook_dir(plane, name).join("run/jupyter.sock"),
            token,
            session_id,
            user_id: session.try_get("user_id")?,
            correlation_id: session.try_get("correlation_id")?,
            download: enabled("FILE_DOWNLOAD"),
            upload: enabled("FILE_UPLOAD"),
            source_ip: source_ip.to_owned(),
        })
    }

    /// One audit record per proxied notebook request or kernel connection, under the
    /// session's correlation id; refusals carry their reason. A request is forwarded only
    /// once its record is durable: on an error, refuse it with that error.
    pub(crate) async fn record_notebook_access(
        &self,
        target: &NotebookTarget,
        name: &str,
        method: &str,
        path: &str,
        refused: Option<&str>,
    ) -> Result<(), ActionError> {
        let error = refused.map(|why| ActionError::new(403, "AccessDeniedException", why.to_owned()));
        let event = crate::core::platform::ServiceEvent {
            source: "notebooks",
            name: "NotebookRequest",
            principal: "gateway.datasandbox",
            parameters: json!({ "NotebookInstanceName": name, "UserId": target.user_id, "SessionId": target.session_id, "Method": method, "Path": path }),
            error: error.as_ref(),
            correlation_id: Some(target.correlation_id.clone()),
            source_ip: Some(target.source_ip.clone()),
            ..crate::core::platform::ServiceEvent::default()
        };
        self.pipeline.record_service_event(event).await
    }
}

/// At a clean stop or start-up: every notebook stopped, its volume unmounted.
async fn stop_all(notebooks: &Notebooks) {
    let plane = &*notebooks.pipeline.platform;
    let rows = sqlx::query("SELECT name FROM notebooks WHERE state != 'Stopped' AND state != 'Failed'")
        .fetch_all(&plane.store.pool)
        .await
        .unwrap_or_default();
    for row in rows {
        if let Ok(name) = row.try_get::<String, _>("name") {
            let _ = stop_notebook(notebooks, &name).await;
        }
    }
    // A run that was killed may have left any notebook's volume mounted, whatever its row says.
    let all = sqlx::query("SELECT name FROM notebooks").fetch_all(&plane.store.pool).await.unwrap_or_default();
    let volumes: Vec<Volume> =
        all.iter().filter_map(|r| r.try_get::<String, _>("name").ok()).map(|n| Volume::new(notebook_dir(plane, &n))).collect();
    let _ = tokio::task::spawn_blocking(move || volumes.iter().for_each(Volume::unmount)).await;
}
