//! cgroup limits from the instance type, on cgroup v1 controllers or the v2 unified
//! hierarchy, whichever the host has for each controller (this host: v1 controllers with a
//! v2 hierarchy mounted beside them).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{SandboxError, setup};
use crate::spec::Limits;

const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "datasandbox";

#[derive(Debug)]
pub struct Cgroup {
    /// One directory per hierarchy the instance is in.
    dirs: Vec<PathBuf>,
}

/// Where a controller lives on this host.
fn controller_dir(controller: &str) -> Option<(PathBuf, bool)> {
    let v1 = Path::new(ROOT).join(controller);
    if v1.join("cgroup.procs").exists() {
        return Some((v1, false));
    }
    let unified = Path::new(ROOT);
    let available = std::fs::read_to_string(unified.join("cgroup.controllers")).ok()?;
    available.split_whitespace().any(|c| c == controller).then(|| (unified.to_owned(), true))
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    std::fs::write(path, value).map_err(|e| setup("set a cgroup limit", format!("{}: {e}", path.display())))
}

impl Cgroup {
    pub fn create(id: &str, limits: &Limits) -> Result<Cgroup, SandboxError> {
        let mut cgroup = Cgroup { dirs: Vec::new() };
        let result = cgroup.create_inner(id, limits);
        match result {
            Ok(()) => Ok(cgroup),
            Err(err) => {
                let _ = cgroup.destroy();
                Err(err)
            }
        }
    }

    fn create_inner(&mut self, id: &str, limits: &Limits) -> Result<(), SandboxError> {
        let quota = u64::from(limits.vcpus) * 100_000;
        for controller in ["memory", "pids", "cpu"] {
            let (root, unified) = controller_dir(controller)
                .ok_or_else(|| setup("create cgroups", format!("the host has no `{controller}` cgroup controller")))?;
            let parent = root.join(PARENT);
            let dir = parent.join(id);
            if unified {
                std::fs::create_dir_all(&parent).map_err(|e| setup("create cgroups", e))?;
                // Controllers must be delegated down to the instance's cgroup.
                for level in [root.as_path(), parent.as_path()] {
                    let _ = std::fs::write(level.join("cgroup.subtree_control"), format!("+{controller}"));
                }
            }
            if !self.dirs.contains(&dir) {
                std::fs::create_dir_all(&dir).map_err(|e| setup("create cgroups", format!("{}: {e}", dir.display())))?;
                self.dirs.push(dir.clone());
            }
            match (controller, unified) {
                ("memory", false) => {
                    write(&dir.join("memory.limit_in_bytes"), &limits.memory_bytes.to_string())?;
                    // No swap beyond the limit, where swap accounting exists.
                    let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limits.memory_bytes.to_string());
                }
                ("memory", true) => {
                    write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                }
                ("pids", _) => write(&dir.join("pids.max"), &limits.pids.to_string())?,
                ("cpu", false) => {
                    write(&dir.join("cpu.cfs_period_us"), "100000")?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                ("cpu", true) => write(&dir.join("cpu.max"), &format!("{quota} 100000"))?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves a process (and so its future children) into every hierarchy of this cgroup.
    pub fn attach(&self, pid: i32) -> Result<(), SandboxError> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.clone()
    }

    /// Removes the cgroup once its processes are gone (waiting up to two seconds for them).
    pub fn destroy(&self) -> Result<(), SandboxError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        for dir in &self.dirs {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => break,
                    Err(err) if Instant::now() >= deadline => {
                        return Err(setup("remove cgroups", format!("{}: {err}", dir.display())));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        Ok(())
    }

    /// The cgroup of an instance made by an earlier process, for teardown after a crash.
    pub fn existing(id: &str) -> Cgroup {
        let mut dirs = Vec::new();
        for controller in ["memory", "pids", "cpu"] {
            if let Some((root, _)) = controller_dir(controller) {
                let dir = root.join(PARENT).join(id);
                if dir.exists() && !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        Cgroup { dirs }
    }

    /// Kills every process still in the cgroup (an instance whose init is already gone).
    pub fn kill_all(&self) {
        for dir in &self.dirs {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }

    /// Every instance cgroup left on the host (for reconciliation and teardown checks).
    pub fn leftovers() -> Vec<PathBuf> {
        let mut found = Vec::new();
        for controller in ["memory", "pids", "cpu"] {
            if let Some((root, _)) = controller_dir(controller)
                && let Ok(entries) = std::fs::read_dir(root.join(PARENT))
            {
                found.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
        }
        found.sort();
        found.dedup();
        found
    }
}
