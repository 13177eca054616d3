//! Launching an instance: its row first (so a crash leaves something to reconcile), then its
//! host directories, the sandbox with its endpoint listener, and — when it serves a user —
//! their datasets; and handing a running fleet instance to a session.

use std::path::PathBuf;

use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;
use crate::core::store::now_millis;

use super::credentials::{credential_lifetime_ms, new_credential};
use super::host_dirs::{display_dir, make_print_dir};
use super::images::{ensure_image, find_image, instance_type};
use super::repo;
use super::state::{Instances, Live, lease_ids};
use super::{dataset_mount, datasets};

/// A session's home folder, under the workspace user's home directory (`DS_HOME_FOLDER`).
const HOME_FOLDER: &str = "MyFiles/HomeFolder";

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
    /// Pseudo-terminals of the instance's own, for Jupyter's terminals.
    pub terminals: bool,
    /// The program runs in the instance's service group, and the user's code it starts in the
    /// workspace group alone (see `sandbox::InstanceSpec::service_group`).
    pub service_group: bool,
    /// The service's view of the user's files, where links are not followed
    /// (`sandbox::InstanceSpec::service_view`).
    pub service_view: Option<(PathBuf, PathBuf)>,
}

/// The user (and session) an instance serves.
pub(crate) struct Assignment {
    pub user: model::UserRef,
    pub session_id: Option<String>,
    /// The `DS_*` variables its programs see.
    pub env: Vec<(String, String)>,
}

impl Assignment {
    /// The stack of the session the instance serves (`DS_STACK_NAME`), if it serves one.
    fn workspace(&self) -> Option<String> {
        self.env.iter().find(|(name, _)| name == "DS_STACK_NAME").map(|(_, stack)| stack.clone())
    }

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

/// A fresh instance id, `i-` and 16 random hex digits.
fn new_instance_id() -> String {
    let mut raw = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    format!("i-{}", hex::encode(raw))
}

/// Starts an instance: its row first, then the sandbox, its endpoint listener and — when it
/// serves a user — their datasets. Returns the instance as `DescribeInstances` shows it.
pub(crate) async fn launch_instance(instances: &Instances, mut launch: Launch) -> Result<Value, ActionError> {
    let plane = &*instances.pipeline.platform;
    let _launching = instances.begin_launch()?;
    let type_name = launch.instance_type.clone();
    let instance_type = instance_type(plane, &type_name)?;
    // Images are each node's own: a node that joined after the deploy builds a declared one
    // at its first launch (a built one is found at once).
    if find_image(plane, &launch.image_name).is_err() {
        ensure_image(plane, &plane.current(), &launch.image_name).await?;
    }
    let image = find_image(plane, &launch.image_name)?;
    let sandbox = instances.sandbox().await?;
    let ids = match launch.ids.take() {
        Some(ids) => ids,
        None => lease_ids(instances).await?,
    };
    let range = ids.range();

    let id = new_instance_id();
    let credential = new_credential();
    let assignment = launch.assignment.as_ref();
    // The row comes first, so that a crash from here on leaves something to reconcile.
    let link = record_pending(instances, &id, &launch, &credential).await?;
    let endpoint = format!("http://{}:{}", link.host_address, plane.spec.endpoint_port);
    let (env, files) =
        env_and_files(&launch, [("DS_INSTANCE_ID", id.clone()), ("DS_INSTANCE_TYPE", type_name), ("DS_ENDPOINT", endpoint)], &credential);
    // A session's instance shows its user's datasets through a mount of its own, started first
    // (its `/data` binds it); a program's (a notebook server's) shows none.
    let dataset_mount = launch.program.is_none() && !plane.current().datasets.is_empty();
    let (read_only_binds, writable_binds) = match host_binds(plane, &id, range, &image, &launch, dataset_mount) {
        Ok(prepared) => prepared,
        Err(err) => return Err(start_failed(plane, &id, err).await),
    };
    let log = datasets::log_path(plane, &id).map_err(ActionError::internal)?;
    let mounted = match dataset_mount.then_some(()) {
        Some(()) => Some(start_mount(instances, &id, &credential, &link, range, &log).await?),
        None => None,
    };
    let mount_guard = dataset_mount::StopOnDrop(mounted.clone());
    let program = launch.program.as_ref();
    let spec = sandbox::InstanceSpec {
        id: id.clone(),
        rootfs: image.rootfs(),
        read_only_binds,
        writable_binds,
        hostname: id.clone(),
        limits: sandbox::Limits { vcpus: instance_type.vcpus, memory_bytes: instance_type.memory_mib << 20, pids: instance_type.pids },
        command: command(&launch),
        env,
        link: link.clone(),
        self_exe: std::env::current_exe().map_err(ActionError::internal)?,
        files,
        log: Some(log),
        terminals: program.is_some_and(|p| p.terminals),
        service_group: program.is_some_and(|p| p.service_group),
        service_view: program.and_then(|p| p.service_view.clone()),
        // A session's: the folder is there once the session is ACTIVE (its sync fills it).
        home_folders: if program.is_none() { vec![HOME_FOLDER.into()] } else { Vec::new() },
    };
    let (instance, listener) = bring_up(instances, &sandbox, spec, ids, mounted.as_deref()).await?;
    repo::mark_running(plane, &id, i64::from(instance.init_pid)).await?;
    let live = Live { instance, listener, credential: credential.clone(), datasets: mounted };
    instances.live.lock().expect("instances lock").insert(id.clone(), live);
    mount_guard.disarm();
    let mounted = match &assignment {
        Some(assignment) => mount_datasets(instances, &id, &credential, &link, assignment).await,
        None => Vec::new(),
    };
    let mut instance = repo::find(plane, &id).await?.to_json();
    instance["Datasets"] = json!(mounted);
    Ok(instance)
}

/// Named values: an instance's environment variables, or its files.
type Pairs<T> = Vec<(String, T)>;

/// The instance's environment (`given`, then where its home folder is, then its program's) and
/// the files placed in its `/run/datasandbox/`: its credential, its session's variables, its
/// program's.
fn env_and_files(launch: &Launch, given: [(&str, String); 3], credential: &str) -> (Pairs<String>, Pairs<Vec<u8>>) {
    let mut env: Vec<(String, String)> = given.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
    env.push(("DS_HOME_FOLDER".to_owned(), format!("/home/user/{HOME_FOLDER}")));
    env.extend(launch.program.iter().flat_map(|p| p.env.iter().cloned()));
    let mut files = vec![("credential".to_owned(), credential.as_bytes().to_vec())];
    if let Some(assignment) = &launch.assignment {
        files.push(("session.env".to_owned(), assignment.env_file()));
    }
    files.extend(launch.program.iter().flat_map(|p| p.files.iter().cloned()));
    (env, files)
}

/// Starts the instance's dataset mount on its `data` directory; a failure marks it FAILED.
async fn start_mount(
    instances: &Instances,
    id: &str,
    credential: &str,
    link: &sandbox::network::Link,
    range: sandbox::ids::IdRange,
    log: &std::path::Path,
) -> Result<std::sync::Arc<dataset_mount::Mounted>, ActionError> {
    let plane = &*instances.pipeline.platform;
    let mountpoint = datasets::instance_dir(plane, id).join("data");
    let address = link.instance_address.to_string();
    match dataset_mount::start(&instances.pipeline, id, credential, &address, &mountpoint, range, log).await {
        Ok(mounted) => Ok(mounted),
        Err(err) => Err(start_failed(plane, id, err.message).await),
    }
}

/// Makes the instance and starts serving its endpoint; a failure ends its dataset mount (a
/// stop, not a failure of the mount) and marks it FAILED.
async fn bring_up(
    instances: &Instances,
    sandbox: &std::sync::Arc<sandbox::Sandbox>,
    spec: sandbox::InstanceSpec,
    ids: sandbox::ids::IdLease,
    mounted: Option<&dataset_mount::Mounted>,
) -> Result<(sandbox::Instance, Option<tokio::task::JoinHandle<()>>), ActionError> {
    let plane = &*instances.pipeline.platform;
    let id = spec.id.clone();
    let failed = |err: String| async move {
        mounted.iter().for_each(|m| m.stop());
        start_failed(plane, &id, err).await
    };
    let made = create_listening(sandbox, spec, ids, plane.spec.endpoint_port).await;
    let (instance, listener) = match made {
        Ok(Ok(made)) => made,
        Ok(Err(err)) => return Err(failed(err.to_string()).await),
        Err(err) => {
            mounted.iter().for_each(|m| m.stop());
            return Err(err);
        }
    };
    match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => Ok((instance, instances.endpoint.get().map(|serve| serve(listener)))),
        Err(err) => {
            let sandbox = sandbox.clone();
            let _ = tokio::task::spawn_blocking(move || sandbox.destroy(instance)).await;
            Err(failed(format!("cannot serve the endpoint: {err}")).await)
        }
    }
}

/// Takes the lowest link index no live instance holds and records the instance PENDING with
/// that link, both under the allocation lock; returns the link.
async fn record_pending(instances: &Instances, id: &str, launch: &Launch, credential: &str) -> Result<sandbox::network::Link, ActionError> {
    let plane = &*instances.pipeline.platform;
    let assignment = launch.assignment.as_ref();
    let _allocation = instances.allocation.lock().await;
    let mut tx = plane.store.write().await?;
    let used = repo::used_link_indexes(&mut tx, &plane.node.name).await?;
    let index = (0..).find(|i| !used.contains(i)).expect("an unused index exists");
    // The network is the node's own (its start spec's): nodes on one host must not share link addresses.
    let cidr = plane.spec.vpc_cidr;
    let (host, private) = sandbox::link_addresses(cidr.address, cidr.prefix_len, index as u32).ok_or_else(|| {
        ActionError::new(503, ErrorCode::InsufficientCapacity, format!("vpc_cidr {cidr} has no room for another instance link"))
    })?;
    let link = sandbox::network::Link::new(id, host, private);
    let new = repo::NewInstance {
        instance_id: id,
        image: &launch.image_name,
        instance_type: &launch.instance_type,
        link_index: index,
        link: &link,
        user_id: assignment.map(|a| a.user.user().to_string()),
        access_mode: assignment.map(|a| a.user.mode().as_str()),
        credential_hash: hex::encode(Sha256::digest(credential.as_bytes())),
        credential_expires: now_millis() + credential_lifetime_ms(plane),
        correlation_id: launch.correlation_id.clone(),
        fleet: launch.fleet.clone(),
        session_id: assignment.and_then(|a| a.session_id.clone()),
        issuer: assignment.and_then(|a| a.user.issuer_str()),
        node: &plane.node.name,
        node_epoch: plane.node.epoch(),
    };
    repo::insert_pending(&mut tx, new).await?;
    tx.commit().await?;
    Ok(link)
}

/// Host directories read-only (the image's and the datasets') and writable (the program's,
/// or a streaming instance's display and print folders), made first: everything of the
/// instance on the host is its own, in a directory only its ids can enter.
#[expect(clippy::type_complexity, reason = "the two bind lists of `sandbox::InstanceSpec`, named by their bindings")]
fn host_binds(
    plane: &Platform,
    id: &str,
    range: sandbox::ids::IdRange,
    image: &sandbox::image::Image,
    launch: &Launch,
    dataset_mount: bool,
) -> Result<(Vec<(PathBuf, PathBuf)>, Vec<(PathBuf, PathBuf)>), sandbox::SandboxError> {
    datasets::make_instance_dir(plane, id, range)
        .map_err(|e| sandbox::SandboxError::Setup { step: "make the instance's directory", message: e.to_string() })?;
    let mut read_only_binds = image.manifest.host_binds.clone();
    let mut writable_binds = launch.program.as_ref().map(|p| p.writable_binds.clone()).unwrap_or_default();
    let data = datasets::mount_source(plane, id, range, "data")
        .map_err(|e| sandbox::SandboxError::Setup { step: "make the datasets' directory", message: e.to_string() })?;
    if dataset_mount {
        // Not a read-only bind: the mount refuses every change itself, and records it, where a
        // read-only bind would refuse it unrecorded.
        writable_binds.push((data, PathBuf::from("/data")));
    } else {
        read_only_binds.push((data, PathBuf::from("/data")));
    }
    // What the airlock let in for the user, read-only like the datasets (an image built before
    // `/imports` existed has nowhere to show it until it is built again).
    if image.rootfs().join("imports").is_dir() {
        read_only_binds.push((
            datasets::mount_source(plane, id, range, "imports")
                .map_err(|e| sandbox::SandboxError::Setup { step: "make the imports' directory", message: e.to_string() })?,
            PathBuf::from("/imports"),
        ));
    } else {
        tracing::warn!(instance = id, "the image has no /imports: rebuild it (`datasandbox image build`) to show released imports");
    }
    if launch.program.is_none() && (launch.assignment.is_some() || launch.fleet.is_some()) {
        // The display's RFB socket, which only the gateway reaches (from the host side).
        writable_binds.push((display_dir(plane, id, range)?, PathBuf::from("/run/display")));
        // The print folder: printouts stay here unless the session may print to its device.
        writable_binds.push((make_print_dir(plane, id, range)?, PathBuf::from("/run/print")));
    }
    Ok((read_only_binds, writable_binds))
}

/// What the instance runs: its own program, else the session agent (which waits for its
/// assignment, then keeps the home folder in step), else nothing but a placeholder.
fn command(launch: &Launch) -> Vec<String> {
    if let Some(program) = &launch.program {
        program.command.clone()
    } else if launch.assignment.is_some() || launch.fleet.is_some() {
        vec!["/run/datasandbox/datasandbox".into(), "session-agent".into()]
    } else {
        vec!["/bin/sleep".into(), "infinity".into()]
    }
}

/// Makes the instance with the endpoint listening on its link's host address only, from
/// before the instance's command runs (its first call must not find the port closed). An
/// instance without it could do nothing, so it does not start.
async fn create_listening(
    sandbox: &std::sync::Arc<sandbox::Sandbox>,
    spec: sandbox::InstanceSpec,
    ids: sandbox::ids::IdLease,
    port: u16,
) -> Result<Result<(sandbox::Instance, std::net::TcpListener), sandbox::SandboxError>, ActionError> {
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
    .map_err(ActionError::internal)
}

/// Marks an instance that could not start as FAILED (its row stays, for the record) and
/// removes its datasets' mount point; the error to return.
async fn start_failed(plane: &Platform, id: &str, err: impl std::fmt::Display) -> ActionError {
    datasets::remove(plane, id);
    if let Err(marking) = repo::mark_failed(plane, id).await {
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
    let to = repo::AssignedTo {
        user_id: assignment.user.user().to_string(),
        access_mode: assignment.user.mode().as_str(),
        session_id: assignment.session_id.clone(),
        correlation_id,
        issuer: assignment.user.issuer_str(),
    };
    repo::assign(plane, instance_id, to).await?;
    let file = assignment.env_file();
    tokio::task::spawn_blocking(move || sandbox::place_file(pid, "session.env", &file))
        .await
        .map_err(ActionError::internal)?
        .map_err(|e| ActionError::internal(format_args!("cannot hand the session to instance {instance_id}: {e}")))?;
    let link = repo::link_of(plane, instance_id).await?;
    mount_datasets(instances, instance_id, &credential, &link, assignment).await;
    Ok(())
}

/// Datasets are read as the instance itself, so the user's policies decide what appears; so
/// are the user's released imports into `workspace` (the airlock's).
async fn mount_datasets(
    instances: &Instances,
    id: &str,
    credential: &str,
    link: &sandbox::network::Link,
    assignment: &Assignment,
) -> Vec<Value> {
    let plane = &*instances.pipeline.platform;
    let workspace = assignment.workspace();
    if plane.current().datasets.is_empty() && workspace.is_none() {
        return Vec::new();
    }
    let (done, outcomes) = tokio::sync::oneshot::channel();
    let live = instances.live.lock().expect("instances lock").get(id).map(|live| (live.instance.ids().workspace(), live.datasets.clone()));
    let Some((owner, mount)) = live else { return Vec::new() };
    let job = datasets::Job {
        id: id.to_owned(),
        credential: credential.to_owned(),
        private_address: link.instance_address.to_string(),
        owner,
        workspace,
        session: assignment.session_id.clone(),
        mount,
        done,
    };
    let sent = instances.datasets.get().map(|jobs| jobs.send(job).is_ok()).unwrap_or(false);
    let outcomes = if sent { outcomes.await.unwrap_or_default() } else { Vec::new() };
    outcomes
        .into_iter()
        .map(|(name, outcome)| match outcome {
            datasets::Outcome::Mounted { objects, bytes, millis: Some(millis) } => {
                json!({ "Name": name, "State": "MOUNTED", "Objects": objects, "Bytes": bytes, "MountMillis": millis })
            }
            datasets::Outcome::Mounted { objects, bytes, millis: None } => {
                json!({ "Name": name, "State": "MOUNTED", "Objects": objects, "Bytes": bytes })
            }
            datasets::Outcome::NotGranted => json!({ "Name": name, "State": "NOT_GRANTED" }),
            datasets::Outcome::Failed(reason) => json!({ "Name": name, "State": "FAILED", "Reason": reason }),
        })
        .collect()
}
