//! The host master key (`<data-dir>/master.key`, mode 0600) that wraps every key's
//! material and every other secret the platform keeps at rest (TOTP seeds, the trail's
//! signing secret). The `keys` service builds KMS's actions on it.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use crate::core::error::ActionError;

/// The host master key that wraps every key's material.
pub(crate) struct KeyRing {
    master: Aes256Gcm,
}

impl KeyRing {
    /// Loads `<data-dir>/master.key`, creating it (0600) on a fresh host. A key file that
    /// others can read is refused: it would expose every key.
    pub fn open(data_dir: &Path) -> Result<KeyRing, String> {
        let path = data_dir.join("master.key");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(&path).map_err(|e| format!("`{}`: {e}", path.display()))?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(format!("`{}` has mode {:o}; run `chmod 600 {}`", path.display(), mode & 0o777, path.display()));
                }
                bytes
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
                file.write_all(&key).and_then(|()| file.sync_all()).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
                key
            }
            Err(err) => return Err(format!("cannot read `{}`: {err}", path.display())),
        };
        if bytes.len() != 32 {
            return Err(format!("`{}` must hold exactly 32 bytes, it holds {}", path.display(), bytes.len()));
        }
        Ok(KeyRing { master: Aes256Gcm::new_from_slice(&bytes).expect("32 bytes is an AES-256 key") })
    }

    pub(crate) fn wrap(&self, material: &[u8]) -> Vec<u8> {
        seal(&self.master, material, b"datasandbox-key-material")
    }

    pub(crate) fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>, ActionError> {
        open(&self.master, wrapped, b"datasandbox-key-material")
            .map_err(|()| ActionError::internal("key material does not unwrap with the master key"))
    }
}

pub(crate) fn seal(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .expect("AES-GCM encryption of a bounded message cannot fail");
    [nonce.as_slice(), &sealed].concat()
}

pub(crate) fn open(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, ()> {
    if sealed.len() < 12 + 16 {
        return Err(());
    }
    cipher.decrypt(Nonce::from_slice(&sealed[..12]), Payload { msg: &sealed[12..], aad }).map_err(|_| ())
}

/// The 32-byte key at `path`, made on first use. The file is created owner-only by the
/// `open` that creates it (never a moment readable by others, whatever the umask); a
/// concurrent first use that loses the creation reads the winner's key.
pub(crate) fn load_or_create_key(path: &std::path::Path) -> Result<[u8; 32], ActionError> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let read = |path: &std::path::Path| -> Result<[u8; 32], ActionError> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut file| file.read_to_end(&mut bytes))
            .map_err(|err| ActionError::internal(format_args!("cannot read {}: {err}", path.display())))?;
        bytes.try_into().map_err(|_| ActionError::internal(format_args!("{} is not a 32-byte key", path.display())))
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() && meta.permissions().mode() & 0o077 == 0 => return read(path),
        Ok(meta) => {
            return Err(ActionError::internal(format_args!(
                "{} must be a regular file readable by its owner only (it is {:o}); remove it to make a new key",
                path.display(),
                meta.permissions().mode()
            )));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(ActionError::internal(format_args!("cannot read {}: {err}", path.display()))),
    }
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    // Written in full before anyone may read it: a partial key would be read as invalid, so
    // it goes to a private staging name (created exclusively, 0600) and is renamed into place.
    let staging = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&staging)
        .and_then(|mut file| file.write_all(&key).and_then(|()| file.sync_all()));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&staging);
        return Err(ActionError::internal(format_args!("cannot write {}: {err}", staging.display())));
    }
    // `link` fails if another first use got there first: theirs is the key.
    let linked = std::fs::hard_link(&staging, path);
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => Ok(key),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(err) => Err(ActionError::internal(format_args!("cannot place {}: {err}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::load_or_create_key;

    #[test]
    fn attack_f14_the_url_key_is_never_readable_by_others_while_it_is_made() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stop = AtomicBool::new(false);
        let seen = std::thread::scope(|scope| {
            // A local user racing to open the key while it is made: every entry of the
            // directory, looked at as fast as possible, must never be readable by others.
            let watcher = scope.spawn(|| {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for entry in std::fs::read_dir(dir.path()).expect("list").flatten() {
                        if let Ok(meta) = entry.metadata()
                            && meta.mode() & 0o077 != 0
                        {
                            seen.push(format!("{} {:o}", entry.file_name().to_string_lossy(), meta.mode()));
                        }
                    }
                }
                seen
            });
            for round in 0..300 {
                let path = dir.path().join(format!("streaming-url-{round}.key"));
                let key = load_or_create_key(&path).expect("a key");
                assert_eq!(load_or_create_key(&path).expect("the same key"), key, "a second use reads the first's key");
                assert_eq!(std::fs::metadata(&path).expect("key").permissions().mode() & 0o777, 0o600);
            }
            stop.store(true, Ordering::Relaxed);
            watcher.join().expect("watcher")
        });
        assert!(seen.is_empty(), "files readable by others while the key was made: {:?}", &seen[..seen.len().min(5)]);
        // A key file others can read is not used (it may have been read).
        let exposed = dir.path().join("exposed.key");
        std::fs::write(&exposed, [7u8; 32]).expect("write");
        std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(load_or_create_key(&exposed).is_err());
    }
}
