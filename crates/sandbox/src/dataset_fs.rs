//! The dataset mount: a FUSE file system per instance at its `/data`, served by a daemon
//! process of its own (this binary, `dataset-mount`) on the host, outside the instance, so
//! that nothing inside can see or signal it.
//!
//! The daemon knows nothing and decides nothing. It shows the listing the control plane
//! pushes ([`wire::Down::Datasets`]); each open is asked of the control plane, which runs it
//! through the pipeline as the instance's user (the policies decide; the record is written
//! before the answer) and hands over the object's body as a descriptor, or serves its reads.
//! Reads are counted per open file and summed up at release. Every change is refused with
//! `EROFS` and recorded. If the daemon dies, the kernel fails every access with `ENOTCONN`:
//! no read is served unrecorded.
//!
//! [`DatasetDaemon`] is the control plane's side: spawn (answering only once mounted), the
//! socket, and the stop.

mod daemon;
mod tree;
pub mod wire;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};

use crate::error::{SandboxError, setup};
use wire::{Channel, Down, Frame, Up};

/// The daemon: `dataset-mount <instance> -- <mountpoint> <owner uid> <instance root uid>`,
/// its socket on standard input. Returns its exit code.
pub fn daemon_main(args: &[String]) -> i32 {
    let [mountpoint, owner, instance_root] = args else {
        eprintln!("usage: datasandbox dataset-mount <instance> -- <mountpoint> <owner uid> <instance root uid>");
        return 2;
    };
    let (Ok(owner), Ok(instance_root)) = (owner.parse::<u32>(), instance_root.parse::<u32>()) else {
        eprintln!("dataset mount: the owner and the instance's root must be numeric ids");
        return 2;
    };
    let socket = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(err) => {
            eprintln!("dataset mount: no socket on standard input: {err}");
            return 2;
        }
    };
    let channel = Arc::new(Channel::new(socket));
    let tree = Arc::new(RwLock::new(Arc::new(tree::Tree::empty())));
    let (answers, answered) = mpsc::channel();
    let fs = daemon::DatasetFs::new(tree.clone(), daemon::Link::new(channel.clone(), answered), owner, instance_root);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("datasandbox".into()),
        fuser::MountOption::Subtype("datasets".into()),
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
    ];
    // The daemon checks who asks (the instance's ids only); the kernel lets them reach it.
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(2);
    let session = match fuser::Session::new(fs, mountpoint, &config) {
        Ok(session) => session,
        Err(err) => {
            let _ = channel.send(&Up::MountFailed(err.to_string()), &[], None);
            return 1;
        }
    };
    if channel.send(&Up::Mounted, &[], None).is_err() {
        return 1;
    }
    let mountpoint = PathBuf::from(mountpoint);
    std::thread::spawn(move || {
        loop {
            match channel.recv::<Down>() {
                Ok(Some(Frame { message: Down::Answer { id, answer }, data, fd })) => {
                    let _ = answers.send((id, Frame { message: answer, data, fd }));
                }
                Ok(Some(Frame { message: Down::Datasets(datasets), .. })) => {
                    *tree.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tree::Tree::of(&datasets));
                }
                // The control plane is gone: nothing could be recorded any more.
                _ => {
                    let _ = nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH);
                    std::process::exit(0);
                }
            }
        }
    });
    match session.run() {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("dataset mount: the session ended: {err}");
            1
        }
    }
}

/// The control plane's handle on one instance's dataset daemon.
pub struct DatasetDaemon {
    pub channel: Channel,
    pub mountpoint: PathBuf,
    child: Mutex<Child>,
    stopping: AtomicBool,
}

impl DatasetDaemon {
    /// Starts the daemon for instance `id` on `mountpoint` (an empty directory) and returns
    /// once it has mounted. `log` takes its standard output and error.
    pub fn spawn(
        self_exe: &Path,
        id: &str,
        mountpoint: &Path,
        owner: u32,
        instance_root: u32,
        log: &Path,
    ) -> Result<DatasetDaemon, SandboxError> {
        let step = "start the dataset mount";
        let (channel, theirs) = Channel::pair().map_err(|e| setup(step, e))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| setup(step, e))?;
        let mut command = Command::new(self_exe);
        command
            .args(["dataset-mount", id, "--"])
            .arg(mountpoint)
            .args([owner.to_string(), instance_root.to_string()])
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(log.try_clone().map_err(|e| setup(step, e))?))
            .stderr(Stdio::from(log));
        crate::host::in_new_session(&mut command);
        let child = command.spawn().map_err(|e| setup(step, e))?;
        // The daemon's end of the socket must live only in the daemon: its end is ours to see.
        drop(command);
        let daemon =
            DatasetDaemon { channel, mountpoint: mountpoint.to_owned(), child: Mutex::new(child), stopping: AtomicBool::new(false) };
        match daemon.channel.recv::<Up>() {
            Ok(Some(Frame { message: Up::Mounted, .. })) => Ok(daemon),
            Ok(Some(Frame { message: Up::MountFailed(why), .. })) => Err(setup(step, why)),
            Ok(_) => Err(setup(step, "the daemon ended before it mounted (its log says why)")),
            Err(err) => Err(setup(step, err)),
        }
    }

    /// Whether [`DatasetDaemon::stop`] was called: an end after it is no failure.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Detaches the mount, ends the daemon and reaps it.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        crate::host::release_mount(&self.mountpoint);
        let mut child = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
        self.channel.shut_down();
    }

    /// Reaps the daemon after its socket ended; its exit status, as text.
    pub fn reap(&self) -> String {
        let mut child = self.child.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match child.wait() {
            Ok(status) => status.to_string(),
            Err(err) => format!("cannot be reaped: {err}"),
        }
    }
}

impl Drop for DatasetDaemon {
    fn drop(&mut self) {
        if !self.stopping() {
            self.stop();
        }
    }
}
