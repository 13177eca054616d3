//! Isolated instances on one Linux host. This is the only crate with `unsafe` code, and all of
//! it is marked and explained. An instance is a process tree in its own user, mount, pid,
//! network, IPC, UTS and cgroup namespaces, inside a read-only image root, with cgroup limits,
//! no capabilities, `no_new_privs` and a seccomp allow-list, and one point-to-point link to
//! the host — nothing else.
//!
//! The host side ([`Sandbox`]) spawns a helper process (this binary, `sandbox-helper`) and
//! drives it through a fixed setup order over its stdin/stdout; the helper does what must be
//! done from inside (see [`helper`]). Every step fails closed: a failed step kills the helper
//! and tears down whatever was made.
//!
//! The `unsafe` code is five calls, each with its `SAFETY` note: the `fork` into the new pid
//! namespace and the init's SIGTERM handler (`helper.rs`); two `pre_exec` hooks: one
//! (`host.rs`) starts every process this side puts into an instance (the helper, a command run
//! in it through `sandbox-exec`, the shell that places a file, the dataset daemon) in a session
//! of its own, so that none has a controlling terminal, the other (here) joins an instance's
//! cgroups; and taking ownership of a descriptor received over the dataset daemon's socket
//! (`dataset_fs/wire.rs`).
//!
//! Host directories an instance may write (its display's socket, its print folder, a notebook
//! server's socket) are size-bounded tmpfs mounts ([`bounded_dir`]), so that no workload can
//! fill the file system that holds the data directory and the audit trail.

pub mod cgroups;
pub mod dataset_fs;
mod error;
pub mod helper;
mod host;
pub mod ids;
pub mod image;
pub mod network;
pub mod seccomp;
mod spec;
pub mod workspace;

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub use error::SandboxError;
use error::setup;
use host::in_new_session;
pub use host::{release_dir, release_mount};
pub use spec::{InstanceSpec, Limits, SERVICE_ADDRESS, SERVICE_GID, WORKSPACE_UID};

/// A running instance, as the host sees it.
#[derive(Debug)]
pub struct Instance {
    pub id: String,
    /// The host pid of the instance's init (pid 1 inside).
    pub init_pid: i32,
    pub link: network::Link,
    helper: Child,
    cgroups: cgroups::Cgroup,
    ids: ids::IdLease,
    destroyed: bool,
}

impl Drop for Instance {
    /// An instance dropped without `destroy` (a panic, an early return) is still torn down,
    /// except for its firewall element, which the next `Sandbox::new` clears with the table.
    fn drop(&mut self) {
        if !self.destroyed {
            self.kill();
            let _ = network::detach(&self.link);
            let _ = self.cgroups.destroy();
        }
    }
}

/// The host-side manager: one nftables table, one cgroup parent, one address space, one
/// pool of host id ranges.
pub struct Sandbox {
    pub table: network::Firewall,
    slots: std::sync::Arc<ids::Slots>,
}

impl Sandbox {
    /// Installs the firewall table, after checking that the id pool overlaps no subordinate id
    /// range of the host (a sandbox whose pool overlaps one does not start).
    pub fn new(endpoint_port: u16, pool: ids::IdPool) -> Result<Sandbox, SandboxError> {
        pool.check_host()?;
        let table = network::Firewall::install(endpoint_port)?;
        Ok(Sandbox { table, slots: ids::Slots::new(pool) })
    }

    /// Reserves a range of host ids for an instance about to be created (to prepare host
    /// files it will own before it starts); `create_with` takes it.
    pub fn lease_ids(&self) -> Result<ids::IdLease, SandboxError> {
        self.slots.lease()
    }

    /// Creates and starts an instance. On any failure everything made so far is undone.
    pub fn create(&self, spec: &InstanceSpec) -> Result<Instance, SandboxError> {
        self.create_with(spec, self.lease_ids()?, |_| Ok(())).map(|(instance, ())| instance)
    }

    /// Creates and starts an instance on the host ids `ids`, calling `link_ready` once its
    /// link is up and before its command runs: what the instance will talk to (its endpoint)
    /// is listening before the instance can call it. On any failure, `link_ready`'s included,
    /// everything made so far is undone.
    pub fn create_with<T>(
        &self,
        spec: &InstanceSpec,
        ids: ids::IdLease,
        link_ready: impl FnOnce(&network::Link) -> Result<T, SandboxError>,
    ) -> Result<(Instance, T), SandboxError> {
        if let Some(why) = spec.home_folder_refused() {
            return Err(setup("make a home folder", why));
        }
        let cgroup = cgroups::Cgroup::create(&spec.id, &spec.limits)?;
        let mut made = Made { cgroup: Some(cgroup), link: None, helper: None };
        match self.create_inner(spec, ids.range(), &mut made, link_ready) {
            Ok((init_pid, ready)) => Ok((
                Instance {
                    id: spec.id.clone(),
                    init_pid,
                    link: spec.link.clone(),
                    helper: made.helper.take().expect("helper started").0,
                    cgroups: made.cgroup.take().expect("cgroup made"),
                    ids,
                    destroyed: false,
                },
                ready,
            )),
            Err(err) => {
                made.undo(&self.table);
                Err(with_log_tail(err, spec.log.as_deref()))
            }
        }
    }

    fn create_inner<T>(
        &self,
        spec: &InstanceSpec,
        ids: ids::IdRange,
        made: &mut Made,
        link_ready: impl FnOnce(&network::Link) -> Result<T, SandboxError>,
    ) -> Result<(i32, T), SandboxError> {
        // The helper's errors, and its init's, go to the instance's log: never to the
        // server's own streams, which may be the operator's terminal.
        let log = match &spec.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| setup("open the instance's log", format!("{}: {e}", path.display())))?,
            ),
            None => Stdio::null(),
        };
        // The helper works from `/` (see `helper`): a relative path would be taken from there.
        let paths =
            [&spec.rootfs, &spec.self_exe].into_iter().chain(spec.read_only_binds.iter().chain(&spec.writable_binds).map(|(host, _)| host));
        if let Some(relative) = paths.into_iter().find(|p| !p.is_absolute()) {
            return Err(setup("start the helper", format!("{} is not an absolute path", relative.display())));
        }
        let mut helper = Command::new(&spec.self_exe);
        in_new_session(&mut helper);
        let mut child = helper
            .arg("sandbox-helper")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .env_clear()
            .spawn()
            .map_err(|e| setup("spawn the helper", e))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let pid = child.id() as i32;
        made.helper = Some((child, stdin, stdout));
        let (_, stdin, stdout) = made.helper.as_mut().expect("just set");
        // 0. The spec (with the instance's files: its credential) travels on the pipe.
        send(stdin, &serde_json::to_string(&helper::HelperInput { spec, ids }).expect("a spec serializes"))?;
        // 1. The helper is in its cgroup before it makes any child.
        made.cgroup.as_ref().expect("made").attach(pid)?;
        // 2. It unshares its user namespace; we map its ids to the instance's own range.
        expect_line(stdout, "userns")?;
        let map = format!("0 {} {}\n", ids.base, ids::RANGE_SIZE);
        for (file, content) in [("uid_map", &map), ("gid_map", &map)] {
            std::fs::write(format!("/proc/{pid}/{file}"), content).map_err(|e| setup("write the id maps", e))?;
        }
        send(stdin, "go")?;
        // 3. It unshares the other namespaces; we give its network namespace the link.
        expect_line(stdout, "namespaces")?;
        network::ensure_unused(&spec.link)?;
        // From here a failure removes the link, however far it got.
        made.link = Some(spec.link.clone());
        network::attach(&spec.link, pid, spec.service_group.then_some((SERVICE_ADDRESS, SERVICE_GID)))?;
        self.table.allow(&spec.link)?;
        let ready = link_ready(&spec.link)?;
        send(stdin, "go")?;
        // 4. It forks the instance's init and reports its pid once the init runs the workload.
        let line = read_line(stdout)?;
        let init_pid =
            line.strip_prefix("running ").and_then(|p| p.parse().ok()).ok_or_else(|| setup("start the instance", line.clone()))?;
        Ok((init_pid, ready))
    }

    /// Stops an instance and removes everything it had on the host.
    pub fn destroy(&self, instance: Instance) -> Result<(), SandboxError> {
        self.stop(instance, std::time::Duration::ZERO)
    }

    /// Asks the instance's command to finish (SIGTERM, passed on by its init) and gives it up to
    /// `grace` — for example to flush the home folder — then destroys the instance.
    pub fn stop(&self, mut instance: Instance, grace: std::time::Duration) -> Result<(), SandboxError> {
        if !grace.is_zero() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(instance.init_pid), nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline && matches!(instance.helper.try_wait(), Ok(None)) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        instance.kill();
        instance.destroyed = true;
        let mut first_error = None;
        if let Err(err) = self.table.revoke(&instance.link) {
            first_error.get_or_insert(err);
        }
        if let Err(err) = network::detach(&instance.link) {
            first_error.get_or_insert(err);
        }
        if let Err(err) = instance.cgroups.destroy() {
            first_error.get_or_insert(err);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Runs a command inside a running instance, as the workspace user, in all its namespaces
    /// and its cgroups.
    pub fn exec(&self, target: &ExecTarget, command: &[String]) -> Result<std::process::Output, SandboxError> {
        let pid = target.init_pid.to_string();
        let mut nsenter = Command::new("nsenter");
        nsenter
            .args([
                "-t",
                &pid,
                "-U",
                "-m",
                "-p",
                "-n",
                "-i",
                "-u",
                "-C",
                "--setuid",
                &WORKSPACE_UID.to_string(),
                "--setgid",
                &WORKSPACE_UID.to_string(),
                "--",
            ])
            .args(["/run/datasandbox/datasandbox", "sandbox-exec", "--"])
            .args(command)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        in_new_session(&mut nsenter);
        // The command joins the instance's cgroups before it runs, so the instance's limits
        // hold for it too: the paths are prepared here, written between fork and exec.
        let procs: Vec<std::ffi::CString> = target
            .cgroups
            .iter()
            .map(|dir| std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes()).expect("cgroup paths have no NUL"))
            .collect();
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (open, write, close, getpid) on memory prepared above.
        #[allow(unsafe_code, reason = "joining the instance's cgroups between fork and exec")]
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut nsenter, move || {
                let pid = libc::getpid();
                let mut digits = [0u8; 12];
                let mut at = digits.len();
                let mut value = pid as u32;
                loop {
                    at -= 1;
                    digits[at] = b'0' + (value % 10) as u8;
                    value /= 10;
                    if value == 0 {
                        break;
                    }
                }
                for path in &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let written = libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
                    libc::close(fd);
                    if written < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        nsenter.output().map_err(|e| setup("exec in the instance", e))
    }
}

/// What it takes to run a command in an instance.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    pub init_pid: i32,
    pub cgroups: Vec<PathBuf>,
}

impl Instance {
    /// The host ids this instance's ids map to.
    pub fn ids(&self) -> ids::IdRange {
        self.ids.range()
    }

    pub fn exec_target(&self) -> ExecTarget {
        ExecTarget { init_pid: self.init_pid, cgroups: self.cgroups.paths() }
    }

    fn kill(&mut self) {
        // Killing pid 1 of a pid namespace kills every process in it; the helper, its parent,
        // reaps it and exits, so nothing is left as a zombie.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.init_pid), nix::sys::signal::Signal::SIGKILL);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match self.helper.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(2)),
                Err(_) => break,
            }
        }
        let _ = self.helper.kill();
        let _ = self.helper.wait();
    }

    /// The cgroup paths holding this instance, for tests and accounting.
    pub fn cgroup_paths(&self) -> Vec<PathBuf> {
        self.cgroups.paths()
    }
}

/// What a failed create has made so far.
struct Made {
    cgroup: Option<cgroups::Cgroup>,
    link: Option<network::Link>,
    helper: Option<(Child, ChildStdin, BufReader<ChildStdout>)>,
}

impl Made {
    fn undo(&mut self, table: &network::Firewall) {
        if let Some((mut child, _, _)) = self.helper.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(link) = self.link.take() {
            let _ = table.revoke(&link);
            let _ = network::detach(&link);
        }
        if let Some(cgroup) = self.cgroup.take() {
            let _ = cgroup.destroy();
        }
    }
}

/// A setup error with the last lines the helper wrote to the instance's log (its own account
/// of what went wrong).
fn with_log_tail(err: SandboxError, log: Option<&std::path::Path>) -> SandboxError {
    let tail = log.and_then(|path| std::fs::read_to_string(path).ok()).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(3).collect();
    match err {
        SandboxError::Setup { step, message } if !tail.is_empty() => {
            let said: Vec<&str> = tail.into_iter().rev().collect();
            SandboxError::Setup { step, message: format!("{message}; its log says: {}", said.join(" / ")) }
        }
        other => other,
    }
}

fn read_line(stdout: &mut BufReader<ChildStdout>) -> Result<String, SandboxError> {
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(|e| setup("talk to the helper", e))?;
    if line.is_empty() {
        return Err(setup("talk to the helper", "the helper exited during setup"));
    }
    Ok(line.trim_end().to_owned())
}

fn expect_line(stdout: &mut BufReader<ChildStdout>, want: &str) -> Result<(), SandboxError> {
    let line = read_line(stdout)?;
    if line == want { Ok(()) } else { Err(setup("talk to the helper", format!("expected `{want}`, got `{line}`"))) }
}

fn send(stdin: &mut ChildStdin, line: &str) -> Result<(), SandboxError> {
    writeln!(stdin, "{line}").and_then(|()| stdin.flush()).map_err(|e| setup("talk to the helper", e))
}

/// Replaces a file in a running instance's `/run/datasandbox/` atomically, owned by the
/// workspace user, mode 0400. The write happens inside the instance's user and mount
/// namespaces: the host's root cannot create files on a filesystem owned by the instance.
pub fn place_file(init_pid: i32, name: &str, content: &[u8]) -> Result<(), SandboxError> {
    if name.is_empty() || name.starts_with('.') || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(setup("place a file", format!("`{name}` is not a plain file name")));
    }
    let script = format!(
        "umask 077; cat > /run/datasandbox/.{name}.new && chown {WORKSPACE_UID}:{WORKSPACE_UID} /run/datasandbox/.{name}.new && mv -f /run/datasandbox/.{name}.new /run/datasandbox/{name} && chmod 400 /run/datasandbox/{name}"
    );
    let mut nsenter = Command::new("nsenter");
    in_new_session(&mut nsenter);
    let mut child = nsenter
        .args(["-t", &init_pid.to_string(), "-U", "-m", "--setuid", "0", "--setgid", "0", "--", "/bin/sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| setup("place a file", e))?;
    child.stdin.take().expect("piped").write_all(content).map_err(|e| setup("place a file", e))?;
    let output = child.wait_with_output().map_err(|e| setup("place a file", e))?;
    if output.status.success() { Ok(()) } else { Err(setup("place a file", String::from_utf8_lossy(&output.stderr).trim().to_owned())) }
}

/// Addresses of a link: the host side and the instance side of a /30.
pub fn link_addresses(network: Ipv4Addr, prefix_len: u8, index: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let size = 1u64 << (32 - u32::from(prefix_len));
    let offset = u64::from(index) * 4;
    if offset + 4 > size {
        return None;
    }
    let base = u32::from(network) + offset as u32;
    Some((Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2)))
}

/// Makes `dir` a host directory an instance may write (its display socket, its printouts, its
/// notebook server's socket) that cannot grow past `size_bytes`: a tmpfs of that size (no
/// devices, no set-id, nothing executable), mode 0700, owned by `owner` (an id of the
/// instance's own range). Without a bound, a workload could fill the file system the data
/// directory — and the audit trail — live on.
pub fn bounded_dir(dir: &std::path::Path, size_bytes: u64, owner: u32) -> Result<(), SandboxError> {
    bounded_dir_as(dir, size_bytes, (owner, owner), 0o700)
}

/// A bounded directory ([`bounded_dir`]) for a service group: owned by the instance's root
/// and open to the service group alone (mode 0770), so that the service (a notebook's Jupyter
/// server) keeps there what the user's code must not reach: its socket, its kernels'
/// connection files, its configuration.
pub fn bounded_service_dir(dir: &std::path::Path, size_bytes: u64, ids: ids::IdRange) -> Result<(), SandboxError> {
    bounded_dir_as(dir, size_bytes, (ids.root(), ids.host(SERVICE_GID)), 0o770)
}

fn bounded_dir_as(dir: &std::path::Path, size_bytes: u64, (uid, gid): (u32, u32), mode: u32) -> Result<(), SandboxError> {
    use nix::mount::{MsFlags, mount};
    release_dir(dir);
    std::fs::create_dir_all(dir).map_err(|e| setup("make a bounded directory", format!("{}: {e}", dir.display())))?;
    let options = format!("size={size_bytes},mode={mode:04o},uid={uid},gid={gid}");
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        // Not noexec: the instance's bind of it could not drop a flag the host set (a locked
        // mount flag), and inside, running a file from it gains nothing /tmp does not give.
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| setup("make a bounded directory", format!("{}: {e}", dir.display())))
}

/// The bytes an unprivileged writer may still put on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Result<u64, SandboxError> {
    let stats = nix::sys::statvfs::statvfs(path).map_err(|e| setup("measure free space", format!("{}: {e}", path.display())))?;
    Ok(stats.blocks_available() * stats.fragment_size())
}
