//! `sandbox-workspace [--hand FILE] [--view FROM=TO] -- cmd…`: how a service-group program (a notebook's Jupyter
//! server) starts the user's code (its kernels and terminals) in the workspace group alone.
//!
//! The server runs with the service group as its effective (and saved) group and the workspace
//! group as its real one; an unprivileged process may set each of its three to any of them, so
//! this drops to the workspace group in all three and cannot come back. What it runs then is
//! kept from the service group's files and directories, cannot trace or read the server (whose
//! differing real and effective groups make the kernel start it non-dumpable, and a process
//! may read another's memory only if all of their groups match anyway), and is refused by the
//! instance's network at the service address.
//!
//! `--hand FILE` passes a file only the service group can read (a kernel's connection file,
//! which holds the key that signs its messages and names its ports) to the command as an
//! anonymous in-memory copy: each argument equal to `FILE` becomes `/proc/self/fd/N`. The
//! kernel reads its own key; no other code in the instance can open the file.
//!
//! `--view FROM=TO` moves the command's working directory out of the service's view of the
//! user's files (`FROM`, where links are not followed) to the same place in the user's own
//! (`TO`); a command started anywhere else starts in `TO`. `HOME` becomes the workspace user's
//! again.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::unistd::{Gid, getresgid, setresgid};

use crate::error::{SandboxError, setup};
use crate::spec::WORKSPACE_UID;

/// Variables that name the service group's directories: the user's code gets Jupyter's and
/// IPython's defaults (under its home) instead of paths it cannot enter.
const SERVICE_VARIABLES: &[&str] = &["JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_TOKEN_FILE", "IPYTHONDIR"];

/// What the command is given.
struct Options<'a> {
    hand: Option<&'a str>,
    view: Option<(&'a str, &'a str)>,
    command: &'a [String],
}

/// The entry point; returns only on failure, with the exit code to end with.
pub fn workspace_main(args: &[String]) -> i32 {
    let options = match parse(args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("sandbox-workspace: {message}; usage: sandbox-workspace [--hand FILE] [--view FROM=TO] -- cmd…");
            return 2;
        }
    };
    match prepare(options.hand, options.command) {
        Ok((program, args, _handed)) => {
            let mut command = std::process::Command::new(&program);
            command.args(&args).env("HOME", "/home/user");
            for name in SERVICE_VARIABLES {
                command.env_remove(name);
            }
            if let Some((from, to)) = options.view {
                let here = std::env::current_dir().unwrap_or_default();
                command.current_dir(here.strip_prefix(from).map_or_else(|_| to.into(), |rest| std::path::Path::new(to).join(rest)));
            }
            let error = std::os::unix::process::CommandExt::exec(&mut command);
            eprintln!("sandbox-workspace: cannot run `{}`: {error}", program.to_string_lossy());
            127
        }
        Err(err) => {
            eprintln!("sandbox-workspace: {err}");
            125
        }
    }
}

fn parse(args: &[String]) -> Result<Options<'_>, String> {
    let at = args.iter().position(|a| a == "--").ok_or("no `--` before the command")?;
    let mut options = Options { hand: None, view: None, command: &args[at + 1..] };
    for pair in args[..at].chunks(2) {
        match pair {
            [flag, file] if flag == "--hand" => options.hand = Some(file.as_str()),
            [flag, view] if flag == "--view" => options.view = Some(view.split_once('=').ok_or("--view takes FROM=TO")?),
            other => return Err(format!("unknown options {other:?}")),
        }
    }
    if options.command.is_empty() {
        return Err("no command".into());
    }
    Ok(options)
}

/// Copies the handed file (while the service group may still read it), drops to the workspace
/// group, and returns the program, its arguments and the copy (kept open across exec).
fn prepare(hand: Option<&str>, command: &[String]) -> Result<(OsString, Vec<OsString>, Option<OwnedFd>), SandboxError> {
    let handed = match hand {
        Some(file) => {
            let content = std::fs::read(file).map_err(|e| setup("read the handed file", format!("{file}: {e}")))?;
            // Not close-on-exec: the command opens it as /proc/self/fd/N.
            let copy = nix::sys::memfd::memfd_create(c"handed", nix::sys::memfd::MFdFlags::empty())
                .map_err(|e| setup("copy the handed file", e))?;
            let mut writer = std::fs::File::from(copy.try_clone().map_err(|e| setup("copy the handed file", e))?);
            std::io::Write::write_all(&mut writer, &content).map_err(|e| setup("copy the handed file", e))?;
            Some((file, copy))
        }
        None => None,
    };
    let workspace = Gid::from_raw(WORKSPACE_UID);
    setresgid(workspace, workspace, workspace).map_err(|e| setup("drop to the workspace group", e))?;
    let groups = getresgid().map_err(|e| setup("drop to the workspace group", e))?;
    if [groups.real, groups.effective, groups.saved] != [workspace; 3] {
        return Err(setup("drop to the workspace group", "a group other than the workspace's remains"));
    }
    let mut args: Vec<OsString> = command.iter().map(OsString::from).collect();
    if let Some((file, copy)) = &handed {
        let path = OsString::from(format!("/proc/self/fd/{}", copy.as_raw_fd()));
        for arg in args.iter_mut().filter(|a| a.as_os_str() == std::ffi::OsStr::new(file)) {
            arg.clone_from(&path);
        }
    }
    let program = args.remove(0);
    Ok((program, args, handed.map(|(_, copy)| copy)))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn options_come_before_the_command() {
        let args = |s: &[&str]| s.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        let given = args(&["--hand", "/run/k.json", "--view", "/run/work=/home/user/work", "--", "python", "-f", "/run/k.json"]);
        let options = parse(&given).expect("parses");
        assert_eq!(options.hand, Some("/run/k.json"));
        assert_eq!(options.view, Some(("/run/work", "/home/user/work")));
        assert_eq!(options.command, &given[5..]);
        assert!(parse(&args(&["--", "bash"])).is_ok_and(|o| o.hand.is_none() && o.view.is_none()));
        assert!(parse(&args(&["--view", "nowhere", "--", "bash"])).is_err(), "a view without its target");
        assert!(parse(&args(&["--hand", "/x"])).is_err(), "no command");
        assert!(parse(&args(&["--other", "--", "bash"])).is_err(), "unknown option");
        assert!(parse(&args(&["--"])).is_err(), "empty command");
    }
}
