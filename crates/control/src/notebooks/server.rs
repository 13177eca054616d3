//! A notebook's Jupyter server: its volume mounted, JupyterLab started in a fresh instance and
//! waited for, and everything undone when it stops.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::repo::{self, NotebookState};
use super::state::{NOTEBOOK_IMAGE, Notebooks, notebook_dir, volume_context};
use super::volume::Volume;
use crate::core::error::{ActionError, ErrorCode};
use crate::instances::{Launch, Program, launch_instance, stop_instance};

/// How long Jupyter may take to answer after its instance started.
const JUPYTER_START: Duration = Duration::from_secs(60);

/// What a notebook's instance may write to its server's socket directory on the host.
const RUN_DIR_BYTES: u64 = 1 << 20;

/// Starts a notebook: its volume mounted, its Jupyter server in a fresh instance, then
/// InService once Jupyter answers (or Failed with the reason).
pub(super) async fn run_notebook(notebooks: &Notebooks, name: &str) {
    if let Err(err) = try_run_notebook(notebooks, name).await {
        tracing::error!(notebook = name, error = %err, "notebook did not start");
        let plane = &*notebooks.pipeline.platform;
        Volume::new(notebook_dir(plane, name)).unmount();
        let _ = repo::mark_failed(plane, name, &err.message).await;
    }
}

async fn try_run_notebook(notebooks: &Notebooks, name: &str) -> Result<(), ActionError> {
    let plane = &*notebooks.pipeline.platform;
    let notebook = repo::find(plane, name).await?;
    let wrapped = crate::core::codec::decode_base64("wrapped key", &notebook.wrapped_key)?;
    let (_, data_key) = crate::keys::decrypt_blob(plane, &wrapped, &volume_context(name)).await?;
    // The notebook image is built on first use from the deployed spec's declaration.
    crate::instances::ensure_image(plane, &plane.current(), NOTEBOOK_IMAGE).await?;
    let image = crate::instances::find_image(plane, NOTEBOOK_IMAGE)?;
    let jupyter = image.manifest.host_binds.iter().find(|(_, inside)| inside == Path::new("/opt/jupyter")).map(|(host, _)| host.clone());
    let dir = notebook_dir(plane, name);
    grow_if_asked(notebooks, name, Volume::new(dir.clone()), notebook.volume_size_gb as u64).await?;
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
    // It is the service group's alone (the server's, not its kernels'): its socket, its
    // kernels' connection files, the kernel it starts and its configuration live there.
    sandbox::bounded_service_dir(&run, RUN_DIR_BYTES, range).map_err(ActionError::internal)?;
    let debugger = crate::streaming::repo::any_allows(&plane.store, "DEBUGGER").await?;
    place_kernel_spec(&run, range, jupyter.as_deref(), debugger).map_err(ActionError::internal)?;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let terminals = crate::streaming::repo::any_allows(&plane.store, "TERMINAL").await?;
    let program = jupyter_program(name, &token, &run, &plain, terminals);
    let launch = Launch {
        image_name: NOTEBOOK_IMAGE.into(),
        instance_type: notebook.instance_type,
        fleet: None,
        assignment: None,
        correlation_id: None,
        program: Some(program),
        ids: Some(ids),
    };
    let instance = launch_instance(&notebooks.instances, launch).await?;
    let instance_id = instance["InstanceId"].as_str().unwrap_or_default().to_owned();
    repo::set_instance(plane, name, &instance_id).await?;
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
                ErrorCode::ServiceUnavailable,
                format!("Jupyter did not answer within {} s", JUPYTER_START.as_secs()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    notebooks.tokens.lock().expect("tokens lock").insert(name.to_owned(), token);
    repo::mark_in_service(plane, name).await?;
    Ok(())
}

/// Grows the disk to the size an update on another node recorded (admitted here, where the
/// disk is).
async fn grow_if_asked(notebooks: &Notebooks, name: &str, volume: Volume, size_gb: u64) -> Result<(), ActionError> {
    if volume.size_gb()? >= size_gb {
        return Ok(());
    }
    let _admission = notebooks.admission.lock().await;
    // The row already claims the new size: nothing more than it may be admitted.
    super::admission::admit_volume(&notebooks.pipeline.platform, 0).await?;
    tracing::info!(notebook = name, size_gb, "growing the notebook's volume as its update asked");
    tokio::task::spawn_blocking(move || volume.grow(size_gb)).await.map_err(ActionError::internal)?
}

/// The Python kernel the server starts, whatever the image or the user's files declare (it is
/// first on `JUPYTER_PATH`, and the only one allowed): ipykernel in the workspace group alone,
/// handed its connection file (see `sandbox::workspace`) and working in the user's own view of
/// the folder, isolated from modules there (`-P`), started by [`KERNEL_GUARD`] and
/// [`KERNEL_START`]; with the debugger only if a stack enables `DEBUGGER`.
fn kernel_spec(debugger: bool) -> String {
    let boot = format!("{KERNEL_GUARD}{}{KERNEL_START}", if debugger { "" } else { NO_DEBUGGER });
    let spec = serde_json::json!({
        "argv": [
            "/run/datasandbox/datasandbox", "sandbox-workspace", "--hand", "{connection_file}", "--view", "/run/work=/home/user/work", "--",
            "/opt/jupyter/bin/python", "-P", "-c", boot, "-f", "{connection_file}",
        ],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": { "debugger": debugger },
    });
    serde_json::to_string_pretty(&spec).expect("a kernel spec serializes")
}

/// How the kernel starts, first of all: it makes itself non-dumpable and keeps the handed file
/// from its children, so that no other code in the instance can read its memory or open the
/// file through `/proc` (from the moment the interpreter runs: a moment before, it is).
const KERNEL_GUARD: &str = r"import ctypes, os, sys
libc = ctypes.CDLL(None)
libc.prctl(4, 0, 0, 0, 0)
if libc.prctl(3, 0, 0, 0, 0) != 0:
    sys.exit('the kernel could not make itself non-dumpable')
for arg in sys.argv:
    if arg.startswith('/proc/self/fd/'):
        os.set_inheritable(int(arg[len('/proc/self/fd/'):]), False)
";

/// Then ipykernel, its shell socket's own connection (which the debugger uses) kept inside the
/// process, since the kernel's code may not connect to the address its ports are on.
const KERNEL_START: &str = r"import ipykernel.kernelapp as k
bind = k.IPKernelApp._bind_socket
def own(app, s, port):
    port = bind(app, s, port)
    if s is app.shell_socket:
        s.bind('inproc://datasandbox-shell')
    return port
k.IPKernelApp._bind_socket = own
k.IPKernelApp.launch_instance()
";

/// Put between the two when no stack enables the debugger: ipykernel then answers no
/// debug request and starts no debugpy, whose port the notebook's other kernels could reach.
const NO_DEBUGGER: &str = "import ipykernel.debugger\nipykernel.debugger._is_debugpy_available = False\n";

/// Writes the kernel spec into the run directory (`/run/jupyter/share/kernels/python3`),
/// readable by the service group, with the logos of the image's Python environment (`jupyter`,
/// on the host) beside it.
fn place_kernel_spec(run: &Path, ids: sandbox::ids::IdRange, jupyter: Option<&Path>, debugger: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let owner = (Some(ids.root()), Some(ids.host(sandbox::SERVICE_GID)));
    let mut dir = run.to_path_buf();
    for part in ["share", "kernels", "python3"] {
        dir.push(part);
        std::fs::create_dir(&dir)?;
        std::os::unix::fs::chown(&dir, owner.0, owner.1)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750))?;
    }
    // ipykernel's logos, which JupyterLab's launcher shows: copies (Jupyter serves no link
    // that leads out of the spec's directory).
    let logos = ["logo-32x32.png", "logo-64x64.png", "logo-svg.svg"]
        .map(|logo| (logo, jupyter.map(|j| j.join("share/jupyter/kernels/python3").join(logo))));
    for (logo, from) in logos {
        if let Some(content) = from.and_then(|from| std::fs::read(from).ok()) {
            place(&dir.join(logo), &content, owner)?;
        }
    }
    place(&dir.join("kernel.json"), kernel_spec(debugger).as_bytes(), owner)
}

/// Writes a file of the kernel spec: the service group's to read.
fn place(path: &Path, content: &[u8], (uid, gid): (Option<u32>, Option<u32>)) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, content)?;
    std::os::unix::fs::chown(path, uid, gid)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
}

/// JupyterLab on a Unix socket in the run directory, rooted at the volume, with its token in a
/// file. It runs in the instance's service group; its kernels and terminals in the workspace
/// group alone, their ports on the service address, which their code cannot reach.
fn jupyter_program(name: &str, token: &str, run: &Path, plain: &Path, terminals: bool) -> Program {
    Program {
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
            // The service's view of the volume, where no link is followed.
            "--ServerApp.root_dir=/run/work".into(),
            // Terminals only when a stack enables `TERMINAL`: the proxy lets only such a stack's
            // sessions reach them, and records every line typed before the shell has it.
            format!("--ServerApp.terminals_enabled={}", if terminals { "True" } else { "False" }),
            r#"--ServerApp.terminado_settings={"shell_command": ["/run/datasandbox/datasandbox", "sandbox-workspace", "--view", "/run/work=/home/user/work", "--", "/bin/bash"]}"#.into(),
            // Only the platform's kernel, and nothing nbconvert finds in a working directory.
            r#"--KernelSpecManager.allowed_kernelspecs={"python3"}"#.into(),
            "--KernelSpecManager.ensure_native_kernel=False".into(),
            "--TemplateExporter.extra_template_basedirs=[]".into(),
            // Deleting deletes: the trash would be found by a path it resolves itself, links
            // and all.
            "--FileContentsManager.delete_to_trash=False".into(),
            format!("--KernelManager.ip={}", sandbox::SERVICE_ADDRESS),
            // Nothing else the server would start runs the user's files in its group: no
            // language server (a linter may load a plugin named in the user's folder), no
            // extension installs.
            "--LanguageServerManager.autodetect=False".into(),
            "--LabApp.extension_manager=readonly".into(),
        ],
        // The token is a file (never in a host process's environment or command line).
        env: vec![
            ("JUPYTER_TOKEN_FILE".into(), "/run/datasandbox/jupyter-token".into()),
            ("PATH".into(), "/opt/jupyter/bin:/usr/bin:/bin".into()),
            // Jupyter's own state and search paths, in the run directory: not under the home
            // folder, where the user's code could read the connection files or plant a kernel
            // spec or configuration for the server to use.
            ("JUPYTER_PATH".into(), "/run/jupyter/share".into()),
            ("JUPYTER_DATA_DIR".into(), "/run/jupyter/data".into()),
            ("JUPYTER_RUNTIME_DIR".into(), "/run/jupyter/runtime".into()),
            ("JUPYTER_CONFIG_DIR".into(), "/run/jupyter/config".into()),
            // IPython's directory is on the kernel spec search path too.
            ("IPYTHONDIR".into(), "/run/jupyter/ipython".into()),
            ("HOME".into(), "/run/jupyter/home".into()),
        ],
        files: vec![("jupyter-token".into(), token.as_bytes().to_vec())],
        writable_binds: vec![(run.to_path_buf(), PathBuf::from("/run/jupyter")), (plain.to_path_buf(), PathBuf::from("/home/user/work"))],
        terminals,
        service_group: true,
        service_view: Some((PathBuf::from("/home/user/work"), PathBuf::from("/run/work"))),
    }
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

/// Stops a notebook: access ends, its instance is destroyed, its volume unmounted.
pub(crate) async fn stop_notebook(notebooks: &Notebooks, name: &str) -> Result<(), ActionError> {
    let plane = &*notebooks.pipeline.platform;
    let notebook = repo::find(plane, name).await?;
    repo::set_state(plane, name, NotebookState::Stopping).await?;
    notebooks.tokens.lock().expect("tokens lock").remove(name);
    repo::delete_access(plane, name).await?;
    if let Some(instance) = notebook.instance_id
        && let Err(err) = stop_instance(&notebooks.instances, &instance).await
        && err.status != 404
    {
        return Err(err);
    }
    let volume = Volume::new(notebook_dir(plane, name));
    tokio::task::spawn_blocking(move || volume.unmount()).await.map_err(ActionError::internal)?;
    repo::mark_stopped(plane, name).await?;
    Ok(())
}

/// At a clean stop, start-up or rejoin: every notebook of this node stopped, its volume
/// unmounted.
pub(super) async fn stop_all(notebooks: &Notebooks) {
    let plane = &*notebooks.pipeline.platform;
    for name in repo::names_not_at_rest(plane).await.unwrap_or_default() {
        let _ = stop_notebook(notebooks, &name).await;
    }
    // After a rejoin, the sweep that took this node for lost failed its notebooks: their
    // servers are gone with its instances.
    notebooks.tokens.lock().expect("tokens lock").clear();
    // A run that was killed may have left any notebook's volume mounted, whatever its row says.
    let all = repo::all_names(plane).await.unwrap_or_default();
    let volumes: Vec<Volume> = all.iter().map(|n| Volume::new(notebook_dir(plane, n))).collect();
    let _ = tokio::task::spawn_blocking(move || volumes.iter().for_each(Volume::unmount)).await;
}
