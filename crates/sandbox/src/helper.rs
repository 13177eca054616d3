//! What runs inside: the helper (host pid namespace, new everything else) and the instance's
//! init (pid 1 of the new pid namespace). The setup order is fixed and fails closed — any
//! error ends the process before the workload runs:
//!
//! 0. host: start the helper in a session of its own (no controlling terminal), its errors
//!    going to the instance's log; send it the spec on its stdin (never argv: `/proc/*/cmdline`
//!    is world-readable, and the spec holds the instance's credential).
//! 1. helper: unshare the user namespace; the host maps its ids (0 → the instance's own range
//!    of 65536 host ids, see `ids`).
//! 2. helper: become root of that namespace; unshare mount, network, IPC, UTS, cgroup and pid
//!    namespaces; the host gives the network namespace its link. The helper's working
//!    directory is `/` by then, so that the init's pivot_root moves it into the new root: a
//!    working directory left in the host's tree would keep the detached old root, and with it
//!    a copy of every host mount of that moment, alive for as long as the instance runs.
//! 3. helper: set the hostname; fork the init, which is pid 1 inside.
//! 4. init: make every mount private; bind the image root; bind read-only host directories;
//!    tmpfs on /tmp, /run, /dev, /home/user; device nodes (no terminal among them, unless the
//!    spec asks for a devpts of the instance's own); /proc
//!    (with /proc/sys read-only);
//!    this binary and the instance's files under /run/datasandbox; remount the root read-only;
//!    pivot_root and detach the old root.
//! 5. init: resource limits; drop every capability from the bounding, inheritable and ambient
//!    sets; become the workspace user (which clears the rest), in the service group if the
//!    spec asks for one (see `workspace`); no_new_privs.
//! 6. init: install the seccomp allow-list, last, and exec the instance init.

use std::ffi::CString;
use std::io::{BufRead, Write};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, chdir, fork, pivot_root, sethostname, setresgid, setresuid};

use crate::error::{SandboxError, setup};
use crate::spec::{InstanceSpec, SERVICE_GID, WORKSPACE_UID};

fn say(line: &str) -> Result<(), SandboxError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).map_err(|e| setup("talk to the host", e))
}

fn wait_go() -> Result<(), SandboxError> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| setup("talk to the host", e))?;
    if line.trim() == "go" { Ok(()) } else { Err(setup("talk to the host", "the host stopped the setup")) }
}

/// The helper's entry point (`datasandbox sandbox-helper`, the spec as the first line of its
/// stdin). Returns its exit code.
pub fn helper_main() -> i32 {
    let mut config = String::new();
    if let Err(err) = std::io::stdin().lock().read_line(&mut config) {
        eprintln!("sandbox helper: cannot read the instance spec: {err}");
        return 125;
    }
    match run_helper(&config) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sandbox helper: {err}");
            125
        }
    }
}

/// What the host sends the helper: the instance and its host ids.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct HelperInput<S> {
    pub spec: S,
    pub ids: crate::ids::IdRange,
}

fn run_helper(config: &str) -> Result<i32, SandboxError> {
    let input: HelperInput<InstanceSpec> = serde_json::from_str(config).map_err(|e| setup("read the instance spec", e))?;
    let spec = input.spec;
    chdir("/").map_err(|e| setup("leave the host's working directory", e))?;
    // 1. The user namespace is made by the instance's own root id, not by the host's root:
    //    what the kernel counts per user and charges up to the namespace's owner (inotify
    //    instances and watches, message queue bytes, namespaces) is the instance's alone, and
    //    an instance exhausting it starves no one else.
    let owner = input.ids.root();
    nix::unistd::setgroups(&[]).map_err(|e| setup("become the instance's owner", e))?;
    setresgid(Gid::from_raw(owner), Gid::from_raw(owner), Gid::from_raw(owner)).map_err(|e| setup("become the instance's owner", e))?;
    setresuid(Uid::from_raw(owner), Uid::from_raw(owner), Uid::from_raw(owner)).map_err(|e| setup("become the instance's owner", e))?;
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| setup("unshare the user namespace", e))?;
    say("userns")?;
    wait_go()?;
    // 2.
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0)).map_err(|e| setup("become root of the namespace", e))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).map_err(|e| setup("become root of the namespace", e))?;
    let namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP
        | CloneFlags::CLONE_NEWPID;
    unshare(namespaces).map_err(|e| setup("unshare the namespaces", e))?;
    say("namespaces")?;
    wait_go()?;
    // 3.
    sethostname(&spec.hostname).map_err(|e| setup("set the hostname", e))?;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| setup("make the status pipe", e))?;
    // SAFETY: the helper is single-threaded (it is a fresh exec of this binary that starts no
    // threads before this point), so the child may run arbitrary code after fork.
    #[allow(unsafe_code, reason = "fork is the only way into the new pid namespace")]
    let forked = unsafe { fork() }.map_err(|e| setup("fork the instance init", e))?;
    match forked {
        ForkResult::Child => {
            drop(read_end);
            let error = instance_init(&spec).err().map(|e| e.to_string()).unwrap_or_else(|| "exec returned".into());
            let mut pipe = std::fs::File::from(write_end);
            let _ = pipe.write_all(error.as_bytes());
            std::process::exit(126);
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            // The pipe closes without a word when the init's exec succeeds.
            let mut message = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(read_end), &mut message);
            if !message.is_empty() {
                let _ = waitpid(child, None);
                return Err(setup("start the instance", message));
            }
            say(&format!("running {child}"))?;
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                    Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(setup("wait for the instance", e)),
                }
            }
        }
    }
}

fn bind(source: &Path, target: &Path, flags: MsFlags, step: &'static str) -> Result<(), SandboxError> {
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| setup(step, format!("{}: {e}", target.display())))?;
    mount(None::<&str>, target, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags, None::<&str>)
        .map_err(|e| setup(step, format!("remount {}: {e}", target.display())))
}

fn tmpfs(target: &Path, options: &str) -> Result<(), SandboxError> {
    std::fs::create_dir_all(target).ok();
    mount(Some("tmpfs"), target, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options))
        .map_err(|e| setup("mount tmpfs", format!("{}: {e}", target.display())))
}

/// Makes `folder` (checked: relative, no `..`) in the fresh home directory `home`, each level
/// the workspace user's.
fn home_folder(home: &Path, folder: &Path) -> Result<(), SandboxError> {
    let mut path = home.to_owned();
    for part in folder.components() {
        path.push(part);
        match std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o755).create(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => return Err(setup("make a home folder", err)),
            _ => chown(&path, Some(WORKSPACE_UID), Some(WORKSPACE_UID)).map_err(|e| setup("make a home folder", e))?,
        }
    }
    Ok(())
}

/// How read-only binds are mounted: no writes, no set-uid programs, no device nodes.
const READ_ONLY: MsFlags = MsFlags::MS_RDONLY.union(MsFlags::MS_NOSUID).union(MsFlags::MS_NODEV);

/// Steps 4–6, in the init (pid 1). Returns only on failure.
fn instance_init(spec: &InstanceSpec) -> Result<(), SandboxError> {
    silence_standard_input_and_output()?;
    // 4.
    mount_root(spec)?;
    mount_proc_and_place_files(spec)?;
    enter_read_only_root(&spec.rootfs)?;
    // 5.
    drop_privileges(spec.service_group)?;
    // 6.
    exec_instance_init(spec)
}

/// Standard input and output become /dev/null: the workload talks to nothing the host reads
/// (standard error stays: it is the instance's log).
fn silence_standard_input_and_output() -> Result<(), SandboxError> {
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").map_err(|e| setup("open /dev/null", e))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| setup("redirect standard streams", e))?;
    nix::unistd::dup2_stdout(&null).map_err(|e| setup("redirect standard streams", e))?;
    Ok(())
}

/// Step 4, first part: mounts made private, then the image root and everything under it but
/// /proc: host directories, tmpfs, device nodes.
fn mount_root(spec: &InstanceSpec) -> Result<(), SandboxError> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| setup("make mounts private", e))?;
    let root = &spec.rootfs;
    mount(Some(root), root, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).map_err(|e| setup("bind the image root", e))?;
    for (host, inside) in &spec.read_only_binds {
        bind(host, &root.join(inside.strip_prefix("/").unwrap_or(inside)), READ_ONLY, "bind a read-only host directory")?;
    }
    tmpfs(&root.join("tmp"), "mode=1777,size=512m")?;
    tmpfs(&root.join("run"), "mode=755,size=16m")?;
    tmpfs(&root.join("home/user"), &format!("mode=700,uid={WORKSPACE_UID},gid={WORKSPACE_UID},size=1g"))?;
    if let Some(why) = spec.home_folder_refused() {
        return Err(setup("make a home folder", why));
    }
    for folder in &spec.home_folders {
        home_folder(&root.join("home/user"), folder)?;
    }
    tmpfs(&root.join("dev"), "mode=755,size=64k")?;
    // No `tty`: `/dev/tty` is "my controlling terminal", and there is none to reach.
    for device in ["null", "zero", "full", "random", "urandom"] {
        let target = root.join("dev").join(device);
        std::fs::File::create(&target).map_err(|e| setup("make device nodes", e))?;
        mount(Some(&Path::new("/dev").join(device)), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| setup("make device nodes", format!("{device}: {e}")))?;
    }
    for (host, inside) in &spec.writable_binds {
        let target = root.join(inside.strip_prefix("/").unwrap_or(inside));
        std::fs::create_dir_all(&target).map_err(|e| setup("bind a writable host directory", format!("{}: {e}", target.display())))?;
        bind(host, &target, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "bind a writable host directory")?;
    }
    if let Some((source, target)) = &spec.service_view {
        let target = root.join(target.strip_prefix("/").unwrap_or(target));
        std::fs::create_dir_all(&target).map_err(|e| setup("bind the service's view", format!("{}: {e}", target.display())))?;
        let no_links = MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);
        bind(
            &root.join(source.strip_prefix("/").unwrap_or(source)),
            &target,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | no_links,
            "bind the service's view",
        )?;
    }
    std::fs::create_dir_all(root.join("dev/shm")).ok();
    tmpfs(&root.join("dev/shm"), "mode=1777,size=64m")?;
    if spec.terminals {
        // A devpts instance of its own: its terminals are the instance's alone, and no
        // terminal of the host's or of another instance is among them.
        let pts = root.join("dev/pts");
        std::fs::create_dir_all(&pts).map_err(|e| setup("make the terminals' directory", e))?;
        mount(Some("devpts"), &pts, Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("newinstance,ptmxmode=0666,mode=0620"))
            .map_err(|e| setup("mount the instance's terminals", e))?;
        let _ = std::os::unix::fs::symlink("pts/ptmx", root.join("dev/ptmx"));
    }
    for (link, target) in
        [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")]
    {
        let _ = std::os::unix::fs::symlink(target, root.join("dev").join(link));
    }
    Ok(())
}

/// Step 4, second part: /proc (with /proc/sys read-only), then this binary and the instance's
/// files under /run/datasandbox, readable by the workspace user alone (or the service group).
fn mount_proc_and_place_files(spec: &InstanceSpec) -> Result<(), SandboxError> {
    let root = &spec.rootfs;
    let proc_dir = root.join("proc");
    mount(Some("proc"), &proc_dir, Some("proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>)
        .map_err(|e| setup("mount /proc", e))?;
    bind(&proc_dir.join("sys"), &proc_dir.join("sys"), READ_ONLY | MsFlags::MS_NOEXEC, "make /proc/sys read-only")?;
    let own = root.join("run/datasandbox");
    std::fs::create_dir_all(&own).map_err(|e| setup("make /run/datasandbox", e))?;
    let exe = own.join("datasandbox");
    std::fs::File::create(&exe).map_err(|e| setup("place the launcher", e))?;
    bind(&spec.self_exe, &exe, READ_ONLY, "place the launcher")?;
    // With a service group, the files are the service's (Jupyter's token): the user's code,
    // in the workspace group alone, cannot read them.
    let (owner, group, mode) = if spec.service_group { (0, SERVICE_GID, 0o440) } else { (WORKSPACE_UID, WORKSPACE_UID, 0o400) };
    for (name, content) in &spec.files {
        let path = own.join(name);
        std::fs::write(&path, content).map_err(|e| setup("place the instance's files", e))?;
        chown(&path, Some(owner), Some(group)).map_err(|e| setup("place the instance's files", e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| setup("place the instance's files", e))?;
    }
    Ok(())
}

/// Step 4, last part: the root remounted read-only, pivot_root into it, the old root detached.
fn enter_read_only_root(root: &Path) -> Result<(), SandboxError> {
    mount(None::<&str>, root, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | READ_ONLY, None::<&str>)
        .map_err(|e| setup("make the root read-only", e))?;
    chdir(root).map_err(|e| setup("enter the root", e))?;
    pivot_root(".", ".").map_err(|e| setup("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| setup("detach the old root", e))?;
    chdir("/").map_err(|e| setup("enter the root", e))?;
    Ok(())
}

/// Step 5: resource limits, every capability dropped, the workspace user (in the service
/// group, the workspace group its real one, if the spec asks for it), no_new_privs.
fn drop_privileges(service_group: bool) -> Result<(), SandboxError> {
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| setup("set rlimits", e))?;
    setrlimit(Resource::RLIMIT_NOFILE, 4096, 4096).map_err(|e| setup("set rlimits", e))?;
    caps::clear(None, caps::CapSet::Bounding).map_err(|e| setup("drop capabilities", e))?;
    caps::clear(None, caps::CapSet::Inheritable).map_err(|e| setup("drop capabilities", e))?;
    caps::clear(None, caps::CapSet::Ambient).map_err(|e| setup("drop capabilities", e))?;
    nix::unistd::setgroups(&[]).map_err(|e| setup("drop groups", e))?;
    let workspace_gid = Gid::from_raw(WORKSPACE_UID);
    let workspace_uid = Uid::from_raw(WORKSPACE_UID);
    // The service group is the effective (and so, after exec, the saved) group; the real one
    // stays the workspace's, which the service may drop to for the user's code.
    let group = if service_group { Gid::from_raw(SERVICE_GID) } else { workspace_gid };
    setresgid(workspace_gid, group, group).map_err(|e| setup("become the workspace user", e))?;
    setresuid(workspace_uid, workspace_uid, workspace_uid).map_err(|e| setup("become the workspace user", e))?;
    let remaining = caps::read(None, caps::CapSet::Effective).map_err(|e| setup("check capabilities", e))?;
    if !remaining.is_empty() {
        return Err(setup("drop capabilities", format!("{remaining:?} remain")));
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| setup("set no_new_privs", e))?;
    // A service starts in `/`, where nothing is the user's to write (nbconvert, for one, looks
    // for templates in its working directory).
    chdir(if service_group { "/" } else { "/home/user" }).map_err(|e| setup("enter the home directory", e))?;
    Ok(())
}

/// Step 6: the seccomp allow-list, installed last, then exec of the instance init; returns
/// only on failure.
fn exec_instance_init(spec: &InstanceSpec) -> Result<(), SandboxError> {
    let program = CString::new("/run/datasandbox/datasandbox").expect("no NUL");
    let mut args = vec![program.clone(), CString::new("sandbox-init").expect("no NUL"), CString::new("--").expect("no NUL")];
    for arg in &spec.command {
        args.push(CString::new(arg.as_str()).map_err(|_| setup("exec the workload", "an argument holds a NUL"))?);
    }
    let mut env = vec![
        CString::new("PATH=/usr/local/bin:/usr/bin:/bin").expect("no NUL"),
        CString::new("HOME=/home/user").expect("no NUL"),
        CString::new("USER=user").expect("no NUL"),
    ];
    for (key, value) in &spec.env {
        env.push(CString::new(format!("{key}={value}")).map_err(|_| setup("exec the workload", "an environment value holds a NUL"))?);
    }
    crate::seccomp::install()?;
    let error = nix::unistd::execve(&program, &args, &env).err();
    Err(setup("exec the instance init", format!("{error:?}")))
}

/// The instance's init (`sandbox-init -- cmd…`, pid 1 inside): runs the command, reaps every
/// orphan, and ends with the command's status (which ends the instance).
pub fn init_main(command: &[String]) -> i32 {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::wait::WaitPidFlag;
    let Some((program, args)) = command.split_first() else {
        eprintln!("sandbox-init: no command");
        return 2;
    };

    // Pid 1 gets only the signals it handles: a SIGTERM with the default disposition would be
    // dropped, so it gets a handler that does nothing, then stays blocked and is taken by
    // `sigwait` below (a graceful stop, passed on to the command), as is SIGCHLD (reaping).
    // The command starts with an empty mask and default dispositions (std and exec reset them).
    extern "C" fn taken_by_sigwait(_: libc::c_int) {}
    let handler = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(taken_by_sigwait),
        nix::sys::signal::SaFlags::empty(),
        SigSet::empty(),
    );
    #[allow(unsafe_code, reason = "pid 1 receives SIGTERM only if it has a handler")]
    // SAFETY: the handler does nothing, so it is async-signal-safe, and no other handler exists
    // in this process that it could replace.
    if let Err(err) = unsafe { nix::sys::signal::sigaction(Signal::SIGTERM, &handler) } {
        eprintln!("sandbox-init: cannot handle SIGTERM: {err}");
        return 125;
    }
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGCHLD);
    if let Err(err) = signals.thread_block() {
        eprintln!("sandbox-init: cannot block signals: {err}");
        return 125;
    }
    // The workload's output is its own: it must not reach (or block on) the control plane's log.
    let child = match std::process::Command::new(program).args(args).stderr(std::process::Stdio::null()).spawn() {
        Ok(child) => child,
        Err(err) => {
            eprintln!("sandbox-init: cannot start `{program}`: {err}");
            return 127;
        }
    };
    let main = nix::unistd::Pid::from_raw(child.id() as i32);
    // From here the init has nothing to say; its stderr (the instance's host-side log) is
    // let go, so that no process of the instance holds a host file open (the workload runs as
    // the init's user and could reach it through `/proc/1/fd/2`).
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stderr(&null);
    }
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == main => return code,
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == main => return 128 + signal as i32,
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 0,
            }
        }
        match signals.wait() {
            Ok(Signal::SIGTERM) => {
                let _ = nix::sys::signal::kill(main, Signal::SIGTERM);
            }
            Ok(_) => {}
            Err(_) => return 0,
        }
    }
}

/// `sandbox-exec -- cmd…`, for an operator's exec: the same no_new_privs and seccomp filter
/// as the workload, then the command.
pub fn exec_main(command: &[String]) -> i32 {
    let Some(program) = command.first() else {
        eprintln!("sandbox-exec: no command");
        return 2;
    };
    if let Err(err) = nix::sys::prctl::set_no_new_privs().map_err(|e| setup("set no_new_privs", e)).and_then(|()| crate::seccomp::install())
    {
        eprintln!("sandbox-exec: {err}");
        return 125;
    }
    let error = std::os::unix::process::CommandExt::exec(std::process::Command::new(program).args(&command[1..]));
    eprintln!("sandbox-exec: cannot run `{program}`: {error}");
    127
}
