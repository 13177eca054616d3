//! A notebook's volume, like the EBS volume SageMaker gives a notebook: a disk of exactly
//! `VolumeSizeInGB` (a sparse ext4 image on a loop device, so the size is enforced by the
//! file system) that holds a gocryptfs directory, so nothing on it is plaintext at rest.
//!
//! Layout under `<data-dir>/notebooks/<name>/`: `volume.img` (the disk, only ciphertext),
//! `disk/` (where the disk is mounted while the notebook runs), `disk/cipher/` (gocryptfs's
//! directory) and `plain/` (the decrypted view, bound into the notebook's instance).
//!
//! Why gocryptfs. A notebook's working directory must be a POSIX file system (Jupyter, pip and
//! pandas write in place) of a fixed size, survive the instance, and hold no plaintext at rest.
//! Encrypted object sync would leave plaintext on the instance's disk while it runs and turn
//! every small write into an object upload; dm-crypt needs the kernel's device-mapper crypt
//! target (not loadable on hosts without a modules directory, like ours) and root tooling at
//! every open. So the size comes from the ext4 image, and the encryption from gocryptfs (FUSE,
//! from Debian) in a directory on it: per-file encryption, mounted only while the notebook
//! runs, with a 256-bit data key from the key service handed over on a pipe (never in argv or
//! a file). Stopped, the image holds only ciphertext. Its weakness: file sizes and the
//! directory structure are visible at rest.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::core::error::{ActionError, ErrorCode};

const GIB: u64 = 1024 * 1024 * 1024;

pub(super) struct Volume {
    dir: PathBuf,
}

impl Volume {
    pub fn new(dir: PathBuf) -> Volume {
        Volume { dir }
    }

    fn image(&self) -> PathBuf {
        self.dir.join("volume.img")
    }

    fn disk(&self) -> PathBuf {
        self.dir.join("disk")
    }

    fn cipher(&self) -> PathBuf {
        self.disk().join("cipher")
    }

    pub fn plain(&self) -> PathBuf {
        self.dir.join("plain")
    }

    /// Makes the disk and the encrypted directory on it; leaves nothing mounted.
    pub fn create(&self, size_gb: u64, password: &str) -> Result<(), ActionError> {
        if let Some(parent) = self.dir.parent() {
            // Traversable (a notebook's instance enters its own directory), not listable.
            std::fs::DirBuilder::new().recursive(true).mode(0o711).create(parent).map_err(ActionError::internal)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711)).map_err(ActionError::internal)?;
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(ActionError::internal)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).map_err(ActionError::internal)?;
        let image = std::fs::File::create(self.image()).map_err(ActionError::internal)?;
        image.set_len(size_gb * GIB).map_err(ActionError::internal)?;
        drop(image);
        // No reserved blocks (the whole size is the user's); a small journal; lazy init keeps
        // the image sparse.
        run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0", "-J", "size=8", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
                .arg(self.image()),
            "format the volume",
        )?;
        self.mount_disk()?;
        let initialized = (|| {
            std::fs::create_dir_all(self.cipher()).map_err(ActionError::internal)?;
            std::fs::set_permissions(self.cipher(), std::fs::Permissions::from_mode(0o700)).map_err(ActionError::internal)?;
            with_password(
                Command::new("gocryptfs").args(["-init", "-q", "-passfile", "/dev/stdin"]).arg(self.cipher()),
                password,
                "initialize the volume",
            )
        })();
        unmount(&self.disk());
        initialized
    }

    /// Mounts the disk, then the decrypted view, for the instance whose host ids are `ids`:
    /// the notebook's directory becomes its own (0700, its root id; no other host user can
    /// enter it), and the volume's files its workspace user's, whichever instance (with ids of
    /// its own) wrote them before. gocryptfs acts on the backing files with its caller's ids.
    pub fn mount(&self, password: &str, ids: sandbox::ids::IdRange) -> Result<(), ActionError> {
        std::os::unix::fs::chown(&self.dir, Some(ids.root()), Some(ids.root())).map_err(ActionError::internal)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).map_err(ActionError::internal)?;
        self.mount_disk()?;
        if let Err(err) = give_tree(&self.cipher(), ids.workspace()) {
            unmount(&self.disk());
            return Err(ActionError::internal(format_args!("cannot give the volume to its instance: {err}")));
        }
        std::fs::create_dir_all(self.plain()).map_err(ActionError::internal)?;
        let mounted = with_password(
            Command::new("gocryptfs").args(["-q", "-allow_other", "-passfile", "/dev/stdin"]).arg(self.cipher()).arg(self.plain()),
            password,
            "mount the volume",
        );
        if let Err(err) = mounted {
            unmount(&self.disk());
            return Err(err);
        }
        Ok(())
    }

    /// Unmounts the view and the disk, removes the server's socket directory, and gives the
    /// notebook's directory back to the host's root.
    pub fn unmount(&self) {
        unmount(&self.plain());
        unmount(&self.disk());
        sandbox::release_dir(&self.dir.join("run"));
        let _ = std::os::unix::fs::chown(&self.dir, Some(0), Some(0));
    }

    /// The disk's size in whole GiB.
    pub fn size_gb(&self) -> Result<u64, ActionError> {
        Ok(std::fs::metadata(self.image()).map_err(ActionError::internal)?.len() / GIB)
    }

    /// Unmounts the volume and removes its directory, unless something of it is still mounted
    /// (removing then would delete through the mount, into a live notebook's files).
    pub fn remove(&self) -> Result<(), String> {
        self.unmount();
        if is_mounted(&self.plain()) || is_mounted(&self.disk()) {
            return Err(format!("{} is still mounted; it is left in place", self.dir.display()));
        }
        std::fs::remove_dir_all(&self.dir).map_err(|e| e.to_string())
    }

    /// Grows a stopped notebook's disk (volumes only grow, as in SageMaker).
    pub fn grow(&self, size_gb: u64) -> Result<(), ActionError> {
        // A stop that detached the disk lazily (a process still held it) lets go of its loop
        // device a moment later: the disk is grown only once nothing holds it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while is_mounted(&self.disk()) || self.loop_attached() {
            if std::time::Instant::now() > deadline {
                return Err(ActionError::new(
                    503,
                    ErrorCode::ServiceUnavailable,
                    "the volume's disk is still in use after its notebook stopped; start the notebook again in a moment",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let image = std::fs::OpenOptions::new().write(true).open(self.image()).map_err(ActionError::internal)?;
        image.set_len(size_gb * GIB).map_err(ActionError::internal)?;
        drop(image);
        // e2fsck exits 1 when it corrected something (a journal replayed): the disk is sound.
        let checked = Command::new("e2fsck").args(["-f", "-p"]).arg(self.image()).stdin(Stdio::null()).output();
        match checked {
            Ok(out) if matches!(out.status.code(), Some(0 | 1)) => {}
            Ok(out) => {
                let said = String::from_utf8_lossy(if out.stderr.is_empty() { &out.stdout } else { &out.stderr }).trim().to_owned();
                return Err(ActionError::new(
                    503,
                    ErrorCode::ServiceUnavailable,
                    format!("check the volume (e2fsck exit {:?}): {said}", out.status.code()),
                ));
            }
            Err(err) => return Err(ActionError::new(503, ErrorCode::ServiceUnavailable, format!("check the volume: {err}"))),
        }
        run(Command::new("resize2fs").arg("-f").arg(self.image()), "grow the volume")
    }

    /// Whether a loop device still holds the disk's image.
    fn loop_attached(&self) -> bool {
        Command::new("losetup").arg("-j").arg(self.image()).output().is_ok_and(|out| !out.stdout.is_empty())
    }

    fn mount_disk(&self) -> Result<(), ActionError> {
        std::fs::create_dir_all(self.disk()).map_err(ActionError::internal)?;
        if is_mounted(&self.disk()) {
            return Ok(());
        }
        run(
            Command::new("mount").args(["-o", "loop,nodev,nosuid,noexec"]).arg(self.image()).arg(self.disk()),
            "mount the volume's disk (needs loop devices)",
        )
    }
}

/// Gives every file under `dir` (not following links) to `owner`, but gocryptfs's own
/// configuration, which stays root's.
fn give_tree(dir: &Path, owner: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(owner), Some(owner))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == "gocryptfs.conf" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            give_tree(&entry.path(), owner)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(owner), Some(owner))?;
        }
    }
    Ok(())
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts").unwrap_or_default().lines().any(|l| l.split(' ').nth(1) == path.to_str())
}

/// Unmounts, waiting out a busy mount while the instance's last processes exit (up to 5 s),
/// then detaching it lazily so that nothing stays reachable at the path.
fn unmount(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while is_mounted(path) {
        if std::time::Instant::now() > deadline {
            tracing::warn!(path = %path.display(), "a volume stayed busy; detaching it lazily");
            let _ = Command::new("umount").arg("-l").arg(path).stderr(Stdio::null()).status();
            return;
        }
        if !Command::new("umount").arg(path).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn run(command: &mut Command, step: &str) -> Result<(), ActionError> {
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| ActionError::new(503, ErrorCode::ServiceUnavailable, format!("{step}: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ActionError::new(503, ErrorCode::ServiceUnavailable, format!("{step}: {}", String::from_utf8_lossy(&output.stderr).trim())))
    }
}

/// Runs a command with the volume password on its standard input (never in a file or argv).
fn with_password(command: &mut Command, password: &str, step: &str) -> Result<(), ActionError> {
    use std::io::Write as _;
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().map_err(|e| {
        ActionError::new(503, ErrorCode::ServiceUnavailable, format!("{step}: cannot run gocryptfs ({e}); apt-get install gocryptfs"))
    })?;
    child.stdin.take().expect("piped").write_all(password.as_bytes()).map_err(ActionError::internal)?;
    let output = child.wait_with_output().map_err(ActionError::internal)?;
    if output.status.success() {
        Ok(())
    } else {
        // The operator reads this as the notebook's FailureReason.
        Err(ActionError::new(503, ErrorCode::ServiceUnavailable, format!("{step}: {}", String::from_utf8_lossy(&output.stderr).trim())))
    }
}
