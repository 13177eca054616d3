//! A backup's keys, sealed under the operator's passphrase: argon2id (64 MiB, 3 passes) makes
//! a 256-bit key from it and a random salt, and AES-256-GCM seals the key files with it, and
//! with them the SHA-256 of the backup's manifest, so that the manifest (and through its hashes
//! every file) is authenticated too: a wrong passphrase, a changed byte in the keys or a
//! manifest other than the one sealed is refused before anything is restored. A backup
//! without its keys authenticates its manifest with an HMAC under a key derived from
//! `master.key` instead, which its restore must be given.
//!
//! The keys are what makes the rest readable: `master.key` wraps every secret in the store
//! (the key service's keys, so every SecureString), `streaming-url.key` signs URLs and
//! sign-in states, and the local TLS authority's key is what browsers were told to trust.

use std::collections::BTreeMap;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::core::codec::{decode_base64, encode_base64};

/// The files a backup seals, relative to the data directory.
pub(crate) const KEY_FILES: [&str; 4] = ["master.key", "streaming-url.key", "tls/authority.key", "tls/authority.pem"];
/// Where the sealed keys are in a backup.
pub(crate) const SEALED: &str = "keys.sealed";
const FORMAT: &str = "datasandbox-keys-1";
const AAD: &[u8] = b"datasandbox backup keys v1";
/// The shortest passphrase accepted.
pub const MIN_PASSPHRASE: usize = 12;
const MEMORY_KIB: u32 = 64 * 1024;
const PASSES: u32 = 3;
/// The most a backup's sealed keys may ask of a restore (a changed file must not exhaust it).
const MOST_MEMORY_KIB: u32 = 256 * 1024;
const MOST_PASSES: u32 = 8;
/// Where a backup without its keys keeps its manifest's HMAC.
pub(crate) const MANIFEST_MAC: &str = "manifest.mac";

/// The keys' files and the hash of the manifest they were sealed with.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Sealed {
    files: BTreeMap<String, String>,
    manifest_sha256: String,
}

/// What a backup does with the data directory's keys.
pub enum Keys {
    /// Sealed under this passphrase, in the backup.
    Sealed(String),
    /// Left out: the operator keeps them elsewhere and puts them back before `serve`.
    LeftOut,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SealedKeys {
    format: String,
    memory_kib: u32,
    passes: u32,
    salt: String,
    nonce: String,
    ciphertext: String,
}

fn cipher(passphrase: &str, salt: &[u8], memory_kib: u32, passes: u32) -> Result<Aes256Gcm, String> {
    let params = argon2::Params::new(memory_kib, passes, 1, Some(32)).map_err(|e| format!("cannot derive the keys' key: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon.hash_password_into(passphrase.as_bytes(), salt, &mut key).map_err(|e| format!("cannot derive the keys' key: {e}"))?;
    Ok(Aes256Gcm::new_from_slice(&key).expect("32 bytes"))
}

/// The key files (path → content) and the manifest's hash sealed under `passphrase`, as the
/// JSON of `keys.sealed`.
pub(crate) fn seal(files: &BTreeMap<String, Vec<u8>>, manifest_sha256: &str, passphrase: &str) -> Result<Vec<u8>, String> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(format!("the passphrase is shorter than {MIN_PASSPHRASE} characters"));
    }
    let (mut salt, mut nonce) = ([0u8; 16], [0u8; 12]);
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let plain = Sealed {
        files: files.iter().map(|(name, bytes)| (name.clone(), encode_base64(bytes))).collect(),
        manifest_sha256: manifest_sha256.to_owned(),
    };
    let plain = serde_json::to_vec(&plain).expect("a map serializes");
    let sealed = cipher(passphrase, &salt, MEMORY_KIB, PASSES)?
        .encrypt((&nonce).into(), Payload { msg: &plain, aad: AAD })
        .map_err(|_| "cannot seal the keys".to_owned())?;
    let document = SealedKeys {
        format: FORMAT.into(),
        memory_kib: MEMORY_KIB,
        passes: PASSES,
        salt: encode_base64(&salt),
        nonce: encode_base64(&nonce),
        ciphertext: encode_base64(&sealed),
    };
    Ok(serde_json::to_vec_pretty(&document).expect("serializes"))
}

/// The key files sealed in `sealed`, once the manifest's hash is the one sealed with them; a
/// wrong passphrase, a changed byte or another manifest is an error.
pub(crate) fn open(sealed: &[u8], manifest_sha256: &str, passphrase: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let document: SealedKeys = serde_json::from_slice(sealed).map_err(|e| format!("`{SEALED}` is not sealed keys: {e}"))?;
    if document.format != FORMAT || document.memory_kib > MOST_MEMORY_KIB || document.passes > MOST_PASSES {
        return Err(format!("`{SEALED}` is of a format this version does not read (`{}`)", document.format));
    }
    let field = |value: &str, what: &str| decode_base64(what, value).map_err(|e| format!("`{SEALED}`: {}", e.message));
    let (salt, nonce, ciphertext) =
        (field(&document.salt, "salt")?, field(&document.nonce, "nonce")?, field(&document.ciphertext, "ciphertext")?);
    if nonce.len() != 12 {
        return Err(format!("`{SEALED}`: its nonce is not 12 bytes"));
    }
    let plain = cipher(passphrase, &salt, document.memory_kib, document.passes)?
        .decrypt(nonce.as_slice().into(), Payload { msg: &ciphertext, aad: AAD })
        .map_err(|_| "the passphrase does not open this backup's keys (or `keys.sealed` was changed)".to_owned())?;
    let sealed: Sealed = serde_json::from_slice(&plain).map_err(|e| format!("the sealed keys are not readable: {e}"))?;
    if sealed.manifest_sha256 != manifest_sha256 {
        return Err("the backup's manifest is not the one its keys were sealed with: it was changed; nothing was restored".into());
    }
    sealed
        .files
        .into_iter()
        .map(|(name, value)| {
            let known = KEY_FILES.contains(&name.as_str());
            let bytes = decode_base64(&name, &value)
                .ok()
                .filter(|_| known)
                .ok_or_else(|| format!("the sealed keys hold an unknown file `{name}`"))?;
            Ok((name, bytes))
        })
        .collect()
}

/// The HMAC-SHA256 (hex) of a manifest under a key derived from `master.key`'s bytes.
pub(crate) fn manifest_mac(master_key: &[u8], manifest: &[u8]) -> String {
    use hmac::Mac as _;
    use sha2::Digest as _;
    let key = sha2::Sha256::new().chain_update(b"datasandbox backup manifest v1").chain_update(master_key).finalize();
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key).expect("any key length");
    mac.update(manifest);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_with_the_passphrase_only() {
        let files = BTreeMap::from([("master.key".to_owned(), vec![7u8; 32])]);
        let sealed = seal(&files, "abc", "correct horse battery").expect("sealed");
        assert!(!String::from_utf8_lossy(&sealed).contains(&encode_base64(&[7u8; 32])), "the key is in the clear");
        assert_eq!(open(&sealed, "abc", "correct horse battery").expect("opens"), files);
        assert!(open(&sealed, "abd", "correct horse battery").is_err_and(|e| e.contains("manifest")));
        assert!(open(&sealed, "abc", "wrong horse battery").is_err_and(|e| e.contains("does not open")));
        let mut changed: serde_json::Value = serde_json::from_slice(&sealed).expect("json");
        let mut ciphertext = decode_base64("Ciphertext", changed["Ciphertext"].as_str().expect("ciphertext")).expect("base64");
        ciphertext[0] ^= 1;
        changed["Ciphertext"] = encode_base64(&ciphertext).into();
        assert!(open(&serde_json::to_vec(&changed).expect("json"), "abc", "correct horse battery").is_err());
        changed["MemoryKib"] = (4 * 1024 * 1024).into();
        assert!(open(&serde_json::to_vec(&changed).expect("json"), "abc", "x").is_err_and(|e| e.contains("format")));
        assert!(seal(&files, "abc", "short").is_err_and(|e| e.contains("shorter than 12")));
    }
}
