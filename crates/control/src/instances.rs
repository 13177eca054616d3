//! Sandbox instances as the control plane sees them: created through `streaming:` actions,
//! recorded in the metadata store before they are made, each with its own endpoint listener
//! on its link's host address and a short-lived credential, and reconciled after a crash.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use futures::future::BoxFuture;
use model::{AccessMode, UserId};
use policy::Resource;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::core::error::ActionError;
use crate::core::pipeline::{Ctx, Pipeline};
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};
use crate::identity::{InstanceCaller, InstanceLookup};

mod datasets;

/// Starts serving the endpoint on a listener bound to one link's host address.
pub type EndpointServer = Box<dyn Fn(tokio::net::TcpListener) -> tokio::task::JoinHandle<()> + Send + Sync>;

/// How long a stopping instance may take to finish its work (the home folder's last upload).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

fn credential_lifetime_ms(plane: &Platform) -> i64 {
    plane.spec.credential_lifetime_seconds as i64 * 1000
}

fn new_credential() -> String {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    format!("dsi_{}", hex::encode(secret))
}

/// The instances this host runs: the sandbox that makes them, and each one's live parts.
pub(crate) struct Instances {
    pipeline: Pipeline,
    sandbox: tokio::sync::OnceCell<Arc<sandbox::Sandbox>>,
    live: Arc<Mutex<HashMap<String, Live>>>,
    pub(crate) endpoint: OnceLock<EndpointServer>,
    datasets: OnceLock<tokio::sync::mpsc::UnboundedSender<datasets::Job>>,
    /// Serializes link allocation: launches run concurrently, and two must not take one index.
    allocation: tokio::sync::Mutex<()>,
    /// Launches under way, and whether new ones are refused (the platform is stopping): a
    /// clean stop waits for the first and sets the second, so no instance starts after the
    /// stop has ended the others.
    in_flight: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
}

/// A launch under way; dropping it ends it.
struct InFlight<'a>(&'a Instances);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Live {
    instance: sandbox::Instance,
    listener: Option<tokio::task::JoinHandle<()>>,
    /// The current credential, kept to read datasets as the instance when it is assigned.
    credential: String,
}

impl Instances {
    fn begin_launch(&self) -> Result<InFlight<'_>, ActionError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.in_flight.fetch_add(1, SeqCst);
        let flight = InFlight(self);
        if self.closed.load(SeqCst) {
            return Err(ActionError::new(503, "ServiceUnavailable", "the platform is stopping; no instance starts now"));
        }
        Ok(flight)
    }

    /// Refuses new launches and waits (up to `within`) for those under way.
    pub(crate) async fn close(&self, within: std::time::Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        self.closed.store(true, SeqCst);
        let _ = tokio::time::timeout(within, async {
            while self.in_flight.load(SeqCst) > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    async fn sandbox(&self) -> Result<Arc<sandbox::Sandbox>, ActionError> {
        let plane = &*self.pipeline.platform;
        let port = plane.spec.endpoint_port;
        self.sandbox
            .get_or_try_init(|| async move {
                let pool = sandbox::ids::IdPool { base: plane.spec.id_base, slots: plane.spec.id_slots };
                tokio::task::spawn_blocking(move || sandbox::Sandbox::new(port, pool))
                    .await
                    .map_err(ActionError::internal)?
                    .map(Arc::new)
                    .map_err(|e| {
                        ActionError::new(
                            503,
                            "ServiceUnavailable",
                            format!("instances need root, nftables and namespaces on this host: {e}"),
                        )
                    })
            })
            .await
            .cloned()
    }
}

fn images_dir(plane: &Platform) -> PathBuf {
    plane.data_dir.join("images")
}

/// The newest version of an image.
fn find_image(plane: &Platform, name: &str) -> Result<sandbox::image::Image, ActionError> {
    let dir = images_dir(plane).join(name);
    let mut versions: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .map(|entries| entries.flatten().filter_map(|e| Some((e.file_name().to_str()?.parse::<u64>().ok()?, e.path()))).collect())
        .unwrap_or_default();
    versions.sort();
    let (_, newest) = versions.pop().ok_or_else(|| {
        ActionError::not_found(
            "ResourceNotFoundException",
            format!("image `{name}` is not built; deploy a spec that declares it, or run `datasandbox image build <recipe> --name {name}`"),
        )
    })?;
    sandbox::image::Image::open(&newest).map_err(ActionError::internal)
}

/// Builds an image the spec declares unless it is built: `base` and `desktop` take well under
/// a second; `notebook` reuses the cached venv, or installs it from PyPI the first time
/// (about a minute). Runs on a blocking thread.
pub(crate) async fn ensure_image(plane: &Platform, spec: &model::spec::Spec, name: &str) -> Result<(), ActionError> {
    if find_image(plane, name).is_ok() {
        return Ok(());
    }
    let Some(image) = spec.images.iter().find(|i| i.name == name) else {
        return Err(ActionError::validation(format!(
            "image `{name}` is not built and the spec declares no recipe for it; declare [images.{name}] or build it with `datasandbox image build base --name {name}`"
        )));
    };
    let recipe = sandbox::image::Recipe::named(&image.recipe, &image.python_packages, &plane.image_cache)
        .ok_or_else(|| ActionError::validation(format!("image `{name}` has the unknown recipe `{}`", image.recipe)))?;
    let (images, owned, kind) = (images_dir(plane), name.to_owned(), image.recipe.clone());
    tracing::info!(image = name, recipe = kind, "building the image the spec declares");
    let built = tokio::task::spawn_blocking(move || {
        // Two callers may race to build it; the loser finds it sealed.
        sandbox::image::build(&images, &owned, "1", &recipe, &mut |step| tracing::info!(image = owned, "{step}"))
            .map(drop)
            .or_else(|err| if images.join(&owned).join("1/manifest.json").exists() { Ok(()) } else { Err(err) })
    })
    .await
    .map_err(ActionError::internal)?;
    built.map_err(|err| {
        ActionError::validation(format!(
            "building image `{name}` ({kind} recipe) failed: {err}; fix that, or build it with `datasandbox image build {kind} --name {name}`"
        ))
    })
}

/// The application ids of an image's catalog.
pub(crate) fn catalog(plane: &Platform, image: &str) -> Result<Vec<String>, ActionError> {
    Ok(find_image(plane, image)?.manifest.applications.iter().map(|a| a.name.clone()).collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateInput {
    #[serde(default)]
    image_name: Option<String>,
    #[serde(default)]
    instance_type: Option<String>,
    #[serde(default)]
    user_id: Option<UserId>,
    #[serde(default)]
    access_mode: Option<AccessMode>,
}

fn instance_json(row: &sqlx::any::AnyRow) -> Result<Value, sqlx::Error> {
    Ok(json!({
        "InstanceId": row.try_get::<String, _>("instance_id")?,
        "ImageName": row.try_get::<String, _>("image")?,
        "InstanceType": row.try_get::<String, _>("instance_type")?,
        "State": row.try_get::<String, _>("state")?,
        "PrivateIpAddress": row.try_get::<String, _>("private_address")?,
        "EndpointAddress": row.try_get::<String, _>("host_address")?,
        "UserId": row.try_get::<Option<String>, _>("user_id")?,
        "CreatedTime": millis_to_rfc3339(row.try_get("created")?),
    }))
}

pub(crate) async fn create(instances: &Instances, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let type_name = input.instance_type.clone().unwrap_or_else(|| plane.current().instance_type.clone());
    instance_type(plane, &type_name)?;
    if input.access_mode.is_some() && input.user_id.is_none() {
        return Err(ActionError::validation("AccessMode needs UserId"));
    }
    // A federated user is named by their identity provider too; only their sessions make one.
    if input.access_mode == Some(AccessMode::Federated) {
        return Err(ActionError::validation("AccessMode `federated` is only given by a federated user's session"));
    }
    ctx.authorize(Resource::Service("streaming".into()))?;
    let user = input.user_id.map(|user| {
        let mode = input.access_mode.unwrap_or(AccessMode::Custom);
        let mut env = vec![("DS_USER_NAME".to_owned(), user.to_string()), ("DS_USER_ACCESS_MODE".to_owned(), mode.as_str().to_owned())];
        if let Some(bucket) = plane.current().home_bucket() {
            env.push(("DS_HOME_BUCKET".to_owned(), bucket.name.to_string()));
        }
        let user = match mode {
            AccessMode::Local => model::UserRef::local(user),
            _ => model::UserRef::custom(user),
        };
        env.push(("DS_HOME_PREFIX".to_owned(), user.home().prefix()));
        Assignment { user, session_id: None, env }
    });
    let launch = Launch {
        image_name: input.image_name.unwrap_or_else(|| plane.current().image_name.clone()),
        instance_type: type_name,
        fleet: None,
        assignment: user,
        correlation_id: ctx.correlation_id().map(str::to_owned),
        program: None,
        ids: None,
    };
    let instance = launch_instance(instances, launch).await?;
    Ok(json!({ "Instance": instance }))
}

pub(crate) fn instance_type(plane: &Platform, name: &str) -> Result<model::spec::InstanceType, ActionError> {
    let spec = plane.current();
    spec.instance_types.iter().find(|t| t.name == name).cloned().ok_or_else(|| {
        let names: Vec<&str> = spec.instance_types.iter().map(|t| t.name.as_str()).collect();
        ActionError::validation(format!("InstanceType `{name}` is not one of {}", names.join(", ")))
    })
}

/// Reserves host ids for an instance about to be launched (see [`Launch::ids`]).
pub(crate) async fn lease_ids(instances: &Instances) -> Result<sandbox::ids::IdLease, ActionError> {
    let sandbox = instances.sandbox().await?;
    sandbox.lease_ids().map_err(|e| ActionError::new(503, "InsufficientCapacity", e.to_string()))
}

/// What an instance is started for.
pub(crate) struct Launch {
    pub image_name: String,
    pub instance_type: String,
    /// The fleet it belongs to; a fleet's instances wait for a session when started unassigned.
    pub fleet: Option<String>,
    pub assignment: Option<Assignment>,
    pub correlation_id: Option<String>,
    /// A program of its own instead of the session agent (a notebook's Jupyter server), with
    /// its variables and writable host directories.
    pub program: Option<Program>,
    /// Host ids reserved for it beforehand (a notebook's volume is mounted for its owner
    /// before the instance starts); otherwise the launch reserves them.
    pub ids: Option<sandbox::ids::IdLease>,
}

pub(crate) struct Program {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Secrets for the program (Jupyter's token), as files in `/run/datasandbox/`: never in
    /// a host process's command line or environment.
    pub files: Vec<(String, Vec<u8>)>,
    pub writable_binds: Vec<(PathBuf, PathBuf)>,
}

/// The user (and session) an instance serves.
pub(crate) struct Assignment {
    pub user: model::UserRef,
    pub session_id: Option<String>,
    /// The `DS_*` variables its programs see.
    pub env: Vec<(String, String)>,
}

impl Assignment {
    /// The `DS_*` variables as the file the session agent reads (one `NAME=value` per line;
    /// values never contain a newline, which `session_env` guarantees).
    fn env_file(&self) -> Vec<u8> {
        let mut text = String::new();
        for (name, value) in &self.env {
            text.push_str(name);
            text.push('=');
            text.push_str(&value.replace(['\n', '\r'], " "));
            text.push('\n');
        }
        text.into_bytes()
    }
}

/// The host directory bound at `/run/display` in a streaming instance: its display's RFB
/// socket appears there, owned by the instance's workspace user.
fn display_dir(plane: &Platform, id: &str, ids: sandbox::ids::IdRange) -> Result<PathBuf, sandbox::SandboxError> {
    let dir = datasets::instance_dir(plane, id).join("display");
    sandbox::bounded_dir(&dir, DISPLAY_DIR_BYTES, ids.workspace())?;
    Ok(dir)
}

/// What an instance may write into host directories: its display's socket (and nothing
/// else) and its printouts.
const DISPLAY_DIR_BYTES: u64 = 1 << 20;
const PRINT_DIR_BYTES: u64 = 256 << 20;

/// The host directory bound at `/run/print` in a streaming instance: the session's print
/// folder, where its printer puts each job's PDF. The gateway reads it, never follows links
/// in it, and hands a printout over only if the session allows printing to the local device.
pub(crate) fn print_dir(plane: &Platform, id: &str) -> PathBuf {
    datasets::instance_dir(plane, id).join("print")
}

/// The print folder, bounded, for the instance's workspace user only.
fn make_print_dir(plane: &Platform, id: &str, ids: sandbox::ids::IdRange) -> Result<PathBuf, sandbox::SandboxError> {
    let dir = print_dir(plane, id);
    sandbox::bounded_dir(&dir, PRINT_DIR_BYTES, ids.workspace())?;
    Ok(dir)
}

/// Where a streaming instance's display listens, seen from the host.
pub(crate) fn display_socket(plane: &Platform, id: &str) -> PathBuf {
    datasets::instance_dir(plane, id).join("display").join("rfb.sock")
}

/// Starts an instance: its row first, then the sandbox, its endpoint listener and — when it
/// serves a user — their datasets. Returns the instance as `DescribeInstances` shows it.
pub(crate) async fn launch_instance(instances: &Instances, mut launch: Launch) -> Result<Value, ActionError> {
    let plane = &*instances.pipeline.platform;
    let _launching = instances.begin_launch()?;
    let type_name = launch.instance_type.clone();
    let instance_type = instance_type(plane, &type_name)?;
    let image_name = launch.image_name.clone();
    let image = find_image(plane, &image_name)?;
    let sandbox = instances.sandbox().await?;
    let ids = match launch.ids.take() {
        Some(ids) => ids,
        None => lease_ids(instances).await?,
    };
    let range = ids.range();

    let mut raw = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let id = format!("i-{}", hex::encode(raw));
    let credential = new_credential();
    let assignment = launch.assignment.as_ref();
    // The row comes first, so that a crash from here on leaves something to reconcile.
    let link = {
        let _allocation = instances.allocation.lock().await;
        let mut tx = plane.store.write().await?;
        let used: Vec<i64> = sqlx::query("SELECT link_index FROM instances WHERE state IN ('PENDING', 'RUNNING', 'STOPPING')")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("link_index"))
            .collect::<Result<_, _>>()?;
        let index = (0..).find(|i| !used.contains(i)).expect("an unused index exists");
        let cidr = plane.current().vpc_cidr;
        let (host, private) = sandbox::link_addresses(cidr.address, cidr.prefix_len, index as u32).ok_or_else(|| {
            ActionError::new(503, "InsufficientCapacity", format!("vpc_cidr {cidr} has no room for another instance link"))
        })?;
        let link = sandbox::network::Link::new(&id, host, private);
        sqlx::query(
            "INSERT INTO instances (instance_id, image, instance_type, state, link_index, host_interface, host_address, private_address, user_id, access_mode,
             credential_hash, credential_expires, correlation_id, created, fleet, session_id, issuer) VALUES ($1, $2, $3, 'PENDING', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&id)
        .bind(&image_name)
        .bind(&type_name)
        .bind(index)
        .bind(&link.host_interface)
        .bind(link.host_address.to_string())
        .bind(link.instance_address.to_string())
        .bind(assignment.map(|a| a.user.user().to_string()))
        .bind(assignment.map(|a| a.user.mode().as_str()))
        .bind(hex::encode(Sha256::digest(credential.as_bytes())))
        .bind(now_millis() + credential_lifetime_ms(plane))
        .bind(launch.correlation_id.clone())
        .bind(now_millis())
        .bind(launch.fleet.clone())
        .bind(assignment.and_then(|a| a.session_id.clone()))
        .bind(assignment.and_then(|a| a.user.issuer_str()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        link
    };
    let endpoint = format!("http://{}:{}", link.host_address, plane.spec.endpoint_port);
    let mut env = vec![
        ("DS_INSTANCE_ID".to_owned(), id.clone()),
        ("DS_INSTANCE_TYPE".to_owned(), type_name.clone()),
        ("DS_ENDPOINT".to_owned(), endpoint),
        ("DS_HOME_FOLDER".to_owned(), "/home/user/MyFiles/HomeFolder".to_owned()),
    ];
    env.extend(launch.program.iter().flat_map(|p| p.env.iter().cloned()));
    let mut files = vec![("credential".to_owned(), credential.clone().into_bytes())];
    if let Some(assignment) = assignment {
        files.push(("session.env".to_owned(), assignment.env_file()));
    }
    files.extend(launch.program.iter().flat_map(|p| p.files.iter().cloned()));
    // Everything of the instance on the host is its own: a directory only its ids can enter.
    let prepared = (|| -> Result<_, sandbox::SandboxError> {
        datasets::make_instance_dir(plane, &id, range)
            .map_err(|e| sandbox::SandboxError::Setup { step: "make the instance's directory", message: e.to_string() })?;
        let mut read_only_binds = image.manifest.host_binds.clone();
        read_only_binds.push((
            datasets::mount_source(plane, &id, range)
                .map_err(|e| sandbox::SandboxError::Setup { step: "make the datasets' directory", message: e.to_string() })?,
            PathBuf::from("/data"),
        ));
        let mut writable_binds = launch.program.as_ref().map(|p| p.writable_binds.clone()).unwrap_or_default();
        if launch.program.is_none() && (assignment.is_some() || launch.fleet.is_some()) {
            // The display's RFB socket, which only the gateway reaches (from the host side).
            writable_binds.push((display_dir(plane, &id, range)?, PathBuf::from("/run/display")));
            // The print folder: printouts stay here unless the session may print to its device.
            writable_binds.push((make_print_dir(plane, &id, range)?, PathBuf::from("/run/print")));
        }
        Ok((read_only_binds, writable_binds))
    })();
    let (read_only_binds, writable_binds) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return Err(start_failed(plane, &id, err).await),
    };
    let spec = sandbox::InstanceSpec {
        id: id.clone(),
        rootfs: image.rootfs(),
        read_only_binds,
        writable_binds,
        hostname: id.clone(),
        limits: sandbox::Limits { vcpus: instance_type.vcpus, memory_bytes: instance_type.memory_mib << 20, pids: instance_type.pids },
        // The session agent waits for its assignment, then keeps the home folder in step.
        command: if let Some(program) = &launch.program {
            program.command.clone()
        } else if assignment.is_some() || launch.fleet.is_some() {
            vec!["/run/datasandbox/datasandbox".into(), "session-agent".into()]
        } else {
            vec!["/bin/sleep".into(), "infinity".into()]
        },
        env,
        link: link.clone(),
        self_exe: std::env::current_exe().map_err(ActionError::internal)?,
        files,
        log: Some(datasets::log_path(plane, &id).map_err(ActionError::internal)?),
    };
    // The endpoint listens on this link's host address only, from before the instance's
    // command runs (its first call must not find the port closed). An instance without it
    // could do nothing, so it does not start.
    let port = plane.spec.endpoint_port;
    let made = {
        let sandbox = sandbox.clone();
        tokio::task::spawn_blocking(move || {
            sandbox.create_with(&spec, ids, |link| {
                let listener = std::net::TcpListener::bind((link.host_address, port))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| sandbox::SandboxError::Setup {
                        step: "listen for the endpoint on the link",
                        message: format!("{}:{port}: {e}", link.host_address),
                    })?;
                Ok(listener)
            })
        })
        .await
        .map_err(ActionError::internal)?
    };
    let (instance, listener) = match made {
        Ok(made) => made,
        Err(err) => return Err(start_failed(plane, &id, err).await),
    };
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => instances.endpoint.get().map(|serve| serve(listener)),
        Err(err) => {
            let sandbox = sandbox.clone();
            let _ = tokio::task::spawn_blocking(move || sandbox.destroy(instance)).await;
            return Err(start_failed(plane, &id, format!("cannot serve the endpoint: {err}")).await);
        }
    };
    sqlx::query("UPDATE instances SET state = 'RUNNING', init_pid = $1 WHERE instance_id = $2")
        .bind(i64::from(instance.init_pid))
        .bind(&id)
        .execute(&plane.store.pool)
        .await?;
    instances.live.lock().expect("instances lock").insert(id.clone(), Live { instance, listener, credential: credential.clone() });
    let mounted = if assignment.is_some() { mount_datasets(instances, &id, &credential, &link).await } else { Vec::new() };
    let row = sqlx::query("SELECT * FROM instances WHERE instance_id = $1").bind(&id).fetch_one(&plane.store.pool).await?;
    let mut instance = instance_json(&row)?;
    instance["Datasets"] = json!(mounted);
    Ok(instance)
}

/// Marks an instance that could not start as FAILED (its row stays, for the record) and
/// removes its datasets' mount point; the error to return.
async fn start_failed(plane: &Platform, id: &str, err: impl std::fmt::Display) -> ActionError {
    datasets::remove(plane, id);
    let marked = sqlx::query("UPDATE instances SET state = 'FAILED', ended = $1 WHERE instance_id = $2")
        .bind(now_millis())
        .bind(id)
        .execute(&plane.store.pool)
        .await;
    if let Err(marking) = marked {
        tracing::error!(instance = id, error = %marking, "cannot mark the instance FAILED");
    }
    ActionError::internal(format_args!("instance {id} could not start: {err}"))
}

/// Gives a running, unassigned fleet instance to a session: the row, then the session's
/// variables placed inside for the waiting agent, then the user's datasets.
pub(crate) async fn assign(
    instances: &Instances,
    instance_id: &str,
    assignment: &Assignment,
    correlation_id: &str,
) -> Result<(), ActionError> {
    let plane = &*instances.pipeline.platform;
    let (pid, credential) = {
        let live = instances.live.lock().expect("instances lock");
        let live = live.get(instance_id).ok_or_else(|| ActionError::internal(format_args!("instance {instance_id} is not live")))?;
        (live.instance.init_pid, live.credential.clone())
    };
    sqlx::query(
        "UPDATE instances SET user_id = $1, access_mode = $2, session_id = $3, correlation_id = $4, issuer = $5 WHERE instance_id = $6",
    )
    .bind(assignment.user.user().to_string())
    .bind(assignment.user.mode().as_str())
    .bind(assignment.session_id.clone())
    .bind(correlation_id)
    .bind(assignment.user.issuer_str())
    .bind(instance_id)
    .execute(&plane.store.pool)
    .await?;
    let file = assignment.env_file();
    tokio::task::spawn_blocking(move || sandbox::place_file(pid, "session.env", &file))
        .await
        .map_err(ActionError::internal)?
        .map_err(|e| ActionError::internal(format_args!("cannot hand the session to instance {instance_id}: {e}")))?;
    let link_row = sqlx::query("SELECT host_interface, host_address, private_address FROM instances WHERE instance_id = $1")
        .bind(instance_id)
        .fetch_one(&plane.store.pool)
        .await?;
    let link = sandbox::network::Link {
        host_interface: link_row.try_get("host_interface")?,
        host_address: link_row.try_get::<String, _>("host_address")?.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        instance_address: link_row.try_get::<String, _>("private_address")?.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    mount_datasets(instances, instance_id, &credential, &link).await;
    Ok(())
}

/// Datasets are read as the instance itself, so the user's policies decide what appears.
async fn mount_datasets(instances: &Instances, id: &str, credential: &str, link: &sandbox::network::Link) -> Vec<Value> {
    let plane = &*instances.pipeline.platform;
    if plane.current().datasets.is_empty() {
        return Vec::new();
    }
    let (done, outcomes) = tokio::sync::oneshot::channel();
    let Some(owner) = instances.live.lock().expect("instances lock").get(id).map(|live| live.instance.ids().workspace()) else {
        return Vec::new();
    };
    let job = datasets::Job {
        id: id.to_owned(),
        credential: credential.to_owned(),
        private_address: link.instance_address.to_string(),
        owner,
        done,
    };
    let sent = instances.datasets.get().map(|jobs| jobs.send(job).is_ok()).unwrap_or(false);
    let outcomes = if sent { outcomes.await.unwrap_or_default() } else { Vec::new() };
    outcomes
        .into_iter()
        .map(|(name, outcome)| match outcome {
            datasets::Outcome::Mounted { objects, bytes } => {
                json!({ "Name": name, "State": "MOUNTED", "Objects": objects, "Bytes": bytes })
            }
            datasets::Outcome::NotGranted => json!({ "Name": name, "State": "NOT_GRANTED" }),
            datasets::Outcome::Failed(reason) => json!({ "Name": name, "State": "FAILED", "Reason": reason }),
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeInput {
    #[serde(default)]
    instance_ids: Vec<String>,
    #[serde(default)]
    include_ended: bool,
}

pub(crate) async fn describe(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: DescribeInput = ctx.parse(input)?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    let rows = sqlx::query("SELECT * FROM instances ORDER BY created").fetch_all(&ctx.platform.store.pool).await?;
    let mut instances = Vec::new();
    for row in &rows {
        let id: String = row.try_get("instance_id")?;
        let state: String = row.try_get("state")?;
        if (!input.instance_ids.is_empty() && !input.instance_ids.contains(&id))
            || (!input.include_ended && (state == "TERMINATED" || state == "FAILED"))
        {
            continue;
        }
        instances.push(instance_json(row)?);
    }
    Ok(json!({ "Instances": instances }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct InstanceInput {
    instance_id: String,
}

pub(crate) async fn terminate(instances: &Instances, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: InstanceInput = ctx.parse(input)?;
    ctx.authorize(Resource::Instance { id: input.instance_id.clone() })?;
    let plane = ctx.platform;
    stop_instance(instances, &input.instance_id).await?;
    let row = sqlx::query("SELECT * FROM instances WHERE instance_id = $1").bind(&input.instance_id).fetch_one(&plane.store.pool).await?;
    Ok(json!({ "Instance": instance_json(&row)? }))
}

/// Stops an instance — its programs get a grace period to finish, its credential stays valid
/// meanwhile so that its last changes reach storage — then removes everything it had.
pub(crate) async fn stop_instance(instances: &Instances, id: &str) -> Result<(), ActionError> {
    let plane = &*instances.pipeline.platform;
    let live = instances.live.lock().expect("instances lock").remove(id);
    let Some(live) = live else {
        return Err(ActionError::not_found("ResourceNotFoundException", format!("instance `{id}` is not running")));
    };
    sqlx::query("UPDATE instances SET state = 'STOPPING' WHERE instance_id = $1").bind(id).execute(&plane.store.pool).await?;
    let sandbox = instances.sandbox().await?;
    let destroyed = tokio::task::spawn_blocking(move || sandbox.stop(live.instance, STOP_GRACE)).await.map_err(ActionError::internal)?;
    if let Some(listener) = live.listener {
        listener.abort();
    }
    datasets::remove(plane, id);
    sqlx::query("UPDATE instances SET state = 'TERMINATED', credential_hash = NULL, previous_credential_hash = NULL, ended = $1 WHERE instance_id = $2")
        .bind(now_millis())
        .bind(id)
        .execute(&plane.store.pool)
        .await?;
    destroyed.map_err(|e| ActionError::internal(format_args!("teardown of {id} was incomplete: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ExecInput {
    instance_id: String,
    command: Vec<String>,
}

pub(crate) async fn exec(instances: &Instances, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ExecInput = ctx.parse(input)?;
    if input.command.is_empty() || input.command.iter().any(|a| a.contains('\0')) {
        return Err(ActionError::validation("Command must be a non-empty list of arguments without NUL"));
    }
    ctx.authorize(Resource::Instance { id: input.instance_id.clone() })?;
    let plane = ctx.platform;
    let sandbox = instances.sandbox().await?;
    let target = instances.live.lock().expect("instances lock").get(&input.instance_id).map(|live| live.instance.exec_target());
    let target = target
        .ok_or_else(|| ActionError::not_found("ResourceNotFoundException", format!("instance `{}` is not running", input.instance_id)))?;
    let command = input.command.clone();
    let output = tokio::task::spawn_blocking(move || sandbox.exec(&target, &command))
        .await
        .map_err(ActionError::internal)?
        .map_err(ActionError::internal)?;
    // The session's user sees every operator command in their instance.
    let operator = ctx.caller.identity.user_name.clone().unwrap_or_else(|| ctx.caller.identity.principal_id.clone());
    sqlx::query("INSERT INTO instance_execs (instance_id, operator, command, exit_code, time) VALUES ($1, $2, $3, $4, $5)")
        .bind(&input.instance_id)
        .bind(&operator)
        .bind(json!(input.command).to_string())
        .bind(output.status.code().map(i64::from))
        .bind(now_millis())
        .execute(&plane.store.pool)
        .await?;
    let row = sqlx::query("SELECT user_id, access_mode, issuer FROM instances WHERE instance_id = $1")
        .bind(&input.instance_id)
        .fetch_one(&plane.store.pool)
        .await?;
    let mode = row.try_get::<Option<String>, _>("access_mode")?.as_deref().and_then(AccessMode::parse);
    if let (Some(user), Some(mode)) = (row.try_get::<Option<String>, _>("user_id")?, mode)
        && let Ok(user) = model::UserRef::from_parts(mode, row.try_get::<Option<String>, _>("issuer")?.as_deref(), &user)
    {
        plane.changes.user(&user);
    }
    Ok(json!({
        "ExitCode": output.status.code(),
        "Stdout": String::from_utf8_lossy(&output.stdout),
        "Stderr": String::from_utf8_lossy(&output.stderr),
    }))
}

/// Starts the dataset worker and the credential rotation: every running instance's credential
/// is rotated once two thirds of its lifetime have passed; the new one is written into the
/// instance (atomically, for the workspace user only) before it becomes valid; the old one
/// stays valid until its own expiry.
pub(crate) fn start_background_tasks(instances: &Arc<Instances>) {
    let _ = instances.datasets.set(datasets::start_worker(instances.pipeline.clone()));
    let instances = instances.clone();
    tokio::spawn(async move {
        let plane = &instances.pipeline.platform;
        let lifetime = credential_lifetime_ms(plane);
        let tick = std::time::Duration::from_millis((lifetime / 6).clamp(250, 60_000) as u64);
        loop {
            tokio::time::sleep(tick).await;
            if let Err(err) = rotate_due(&instances, lifetime).await {
                tracing::error!(error = %err, "instance credential rotation");
            }
        }
    });
}

async fn rotate_due(instances: &Instances, lifetime: i64) -> Result<(), ActionError> {
    let plane = &*instances.pipeline.platform;
    let due = sqlx::query("SELECT instance_id, init_pid, credential_hash, credential_expires FROM instances WHERE state = 'RUNNING' AND credential_expires < $1")
        .bind(now_millis() + lifetime / 3)
        .fetch_all(&plane.store.pool)
        .await?;
    for row in due {
        let id: String = row.try_get("instance_id")?;
        let Some(pid) = row.try_get::<Option<i64>, _>("init_pid")? else { continue };
        let credential = new_credential();
        let written = tokio::task::spawn_blocking({
            let credential = credential.clone();
            move || sandbox::place_file(pid as i32, "credential", credential.as_bytes())
        })
        .await
        .map_err(ActionError::internal)?;
        if let Err(err) = written {
            tracing::warn!(instance = id, error = %err, "cannot place a rotated credential; the current one stays until it expires");
            continue;
        }
        sqlx::query(
            "UPDATE instances SET previous_credential_hash = credential_hash, previous_credential_expires = credential_expires,
             credential_hash = $1, credential_expires = $2 WHERE instance_id = $3 AND state = 'RUNNING'",
        )
        .bind(hex::encode(Sha256::digest(credential.as_bytes())))
        .bind(now_millis() + lifetime)
        .bind(&id)
        .execute(&plane.store.pool)
        .await?;
        if let Some(live) = instances.live.lock().expect("instances lock").get_mut(&id) {
            live.credential = credential;
        }
    }
    Ok(())
}

/// Ends every running instance (at a clean shutdown). Returns their ids.
pub(crate) async fn terminate_all(instances: &Instances) -> Vec<String> {
    let plane = &*instances.pipeline.platform;
    let live: Vec<(String, Live)> = instances.live.lock().expect("instances lock").drain().collect();
    let Some(sandbox) = instances.sandbox.get().cloned() else { return Vec::new() };
    // All stop at once, each with its grace period, their endpoints still serving.
    let mut stopping = Vec::new();
    for (id, live) in live {
        let _ = sqlx::query("UPDATE instances SET state = 'STOPPING' WHERE instance_id = $1").bind(&id).execute(&plane.store.pool).await;
        let sandbox = sandbox.clone();
        stopping.push((id, live.listener, tokio::task::spawn_blocking(move || sandbox.stop(live.instance, STOP_GRACE))));
    }
    let mut ended = Vec::new();
    for (id, listener, stopped) in stopping {
        let result = stopped.await;
        if let Some(listener) = listener {
            listener.abort();
        }
        datasets::remove(plane, &id);
        if !matches!(result, Ok(Ok(()))) {
            tracing::warn!(instance = id, "teardown at shutdown was incomplete; the next start reconciles it");
            continue;
        }
        let _ = sqlx::query("UPDATE instances SET state = 'TERMINATED', credential_hash = NULL, previous_credential_hash = NULL, ended = $1 WHERE instance_id = $2")
            .bind(now_millis())
            .bind(&id)
            .execute(&plane.store.pool)
            .await;
        ended.push(id);
    }
    ended
}

/// After a crash of the control plane, instances recorded as not yet ended are destroyed:
/// their processes, links, firewall elements and cgroups. Returns their ids.
pub(crate) async fn reconcile(instances: &Instances) -> Result<Vec<String>, ActionError> {
    let plane = &*instances.pipeline.platform;
    let rows = sqlx::query("SELECT instance_id, host_interface, host_address, private_address, init_pid FROM instances WHERE state IN ('PENDING', 'RUNNING', 'STOPPING')")
        .fetch_all(&plane.store.pool)
        .await?;
    let mut reaped = Vec::new();
    for row in rows {
        let id: String = row.try_get("instance_id")?;
        let host: String = row.try_get("host_address")?;
        let private: String = row.try_get("private_address")?;
        let init_pid: Option<i64> = row.try_get("init_pid")?;
        let link = sandbox::network::Link {
            host_interface: row.try_get("host_interface")?,
            host_address: host.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
            instance_address: private.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        let id_for_teardown = id.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(pid) = init_pid {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if cmdline.windows(12).any(|w| w == b"sandbox-init") {
                    let _ = nix_kill(pid as i32);
                }
            }
            let cgroup = sandbox::cgroups::Cgroup::existing(&id_for_teardown);
            cgroup.kill_all();
            let _ = sandbox::network::revoke(&link);
            let _ = sandbox::network::detach(&link);
            let _ = cgroup.destroy();
        })
        .await
        .map_err(ActionError::internal)?;
        datasets::remove(plane, &id);
        sqlx::query("UPDATE instances SET state = 'TERMINATED', credential_hash = NULL, previous_credential_hash = NULL, ended = $1 WHERE instance_id = $2")
            .bind(now_millis())
            .bind(&id)
            .execute(&plane.store.pool)
            .await?;
        reaped.push(id);
    }
    Ok(reaped)
}

fn nix_kill(pid: i32) -> std::io::Result<()> {
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().map(|_| ())
}

impl InstanceLookup for Instances {
    fn instance_by_credential<'a>(&'a self, token: &'a str, source_ip: &'a str) -> BoxFuture<'a, Result<InstanceCaller, ActionError>> {
        Box::pin(authenticate(&self.pipeline.platform, token, source_ip))
    }
}

/// Authenticates a call on the endpoint: the credential must be the current one of the
/// running instance whose private address the call comes from.
async fn authenticate(plane: &Platform, token: &str, source_ip: &str) -> Result<InstanceCaller, ActionError> {
    let row = sqlx::query(
        "SELECT instance_id, user_id, access_mode, issuer, credential_hash, credential_expires, previous_credential_hash, previous_credential_expires, correlation_id
         FROM instances WHERE private_address = $1 AND state IN ('RUNNING', 'STOPPING')",
    )
        .bind(source_ip)
        .fetch_optional(&plane.store.pool)
        .await?
        .ok_or_else(|| ActionError::unauthenticated("the endpoint serves only running instances, on their own link"))?;
    let presented = hex::encode(Sha256::digest(token.as_bytes()));
    let now = now_millis();
    let mut matched = false;
    for (hash, expires) in [("credential_hash", "credential_expires"), ("previous_credential_hash", "previous_credential_expires")] {
        let hash: Option<String> = row.try_get(hash)?;
        let expires: Option<i64> = row.try_get(expires)?;
        if hash.as_deref() == Some(presented.as_str()) {
            if expires.is_none_or(|e| e <= now) {
                return Err(ActionError::unauthenticated(
                    "the instance credential has expired; read the rotated one from /run/datasandbox/credential",
                ));
            }
            matched = true;
        }
    }
    if !matched {
        return Err(ActionError::unauthenticated("the instance credential is not valid"));
    }
    Ok(InstanceCaller {
        instance_id: row.try_get("instance_id")?,
        user_id: row.try_get("user_id")?,
        access_mode: row.try_get("access_mode")?,
        issuer: row.try_get("issuer")?,
        correlation_id: row.try_get("correlation_id")?,
    })
}

impl Instances {
    pub(crate) fn new(pipeline: Pipeline) -> Instances {
        Instances {
            pipeline,
            sandbox: Default::default(),
            live: Default::default(),
            endpoint: OnceLock::new(),
            datasets: OnceLock::new(),
            allocation: Default::default(),
            in_flight: Default::default(),
            closed: Default::default(),
        }
    }

    /// Gives the control plane the function that serves the endpoint on a listener (the
    /// gateway's), before any instance is created.
    pub(crate) fn set_endpoint_server(&self, serve: EndpointServer) {
        let _ = self.endpoint.set(serve);
    }

    pub(crate) fn start_background_tasks(self: &Arc<Self>) {
        start_background_tasks(self)
    }

    pub(crate) async fn terminate_all(&self) -> Vec<String> {
        terminate_all(self).await
    }

    pub(crate) async fn reconcile(&self) -> Result<Vec<String>, ActionError> {
        reconcile(self).await
    }
}
