//! What the host side does to its own processes and mounts: a new session for every process it
//! starts for an instance, and the detaching of mounts it made.

use std::process::Command;

/// Makes `command` start in a session of its own, so that nothing it runs (inside an instance)
/// has a controlling terminal — not even when the server runs in the operator's terminal,
/// where a process of that terminal's session could push keystrokes into its input
/// (`TIOCSTI`) or read them.
pub(crate) fn in_new_session(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and makes one
    // async-signal-safe call that touches no memory.
    #[allow(unsafe_code, reason = "setsid between fork and exec")]
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Undoes [`bounded_dir`] (detaching the tmpfs even while something still holds it open) and
/// removes the directory. A directory that was never bounded is removed all the same.
pub fn release_dir(dir: &std::path::Path) {
    release_mount(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Detaches whatever is mounted on `dir` (every layer), even while something holds it open.
pub fn release_mount(dir: &std::path::Path) {
    while is_mount_point(dir) {
        if nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
}

fn is_mount_point(dir: &std::path::Path) -> bool {
    let Some(dir) = dir.to_str() else { return false };
    std::fs::read_to_string("/proc/self/mounts").unwrap_or_default().lines().any(|l| l.split(' ').nth(1) == Some(dir))
}
