//! Signatures over checkpoints and digests: Ed25519, with the public key identified by a
//! fingerprint (the first 32 hex digits of the SHA-256 of the key).

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "Ed25519";

/// The trail's signing key; the key service holds its material.
pub struct Signer {
    key: SigningKey,
}

impl Signer {
    pub fn from_bytes(secret: &[u8; 32]) -> Signer {
        Signer { key: SigningKey::from_bytes(secret) }
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.key.sign(message).to_bytes())
    }
}

pub fn fingerprint(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.to_bytes()))[..32].to_owned()
}

/// Reads a public key written as 64 hex digits (surrounding whitespace allowed).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(text.trim()).map_err(|_| "the public key must be 64 hex digits".to_owned())?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| "the public key must be 32 bytes (64 hex digits)".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

pub fn verify(key: &VerifyingKey, message: &[u8], signature_hex: &str) -> bool {
    let Ok(bytes) = hex::decode(signature_hex) else { return false };
    let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else { return false };
    key.verify(message, &Signature::from_bytes(&bytes)).is_ok()
}

/// CloudTrail's digest string to sign.
pub fn digest_string_to_sign(end_time: &str, bucket: &str, object: &str, digest_hash: &str, previous_signature: &str) -> String {
    format!("{end_time}\n{bucket}/{object}\n{digest_hash}\n{previous_signature}")
}

/// A checkpoint's string to sign: what it covers, chained to the previous checkpoint.
pub fn checkpoint_string_to_sign(
    time: &str,
    sequence: u64,
    record_hash: &str,
    log_file: &str,
    last_digest_signature: &str,
    previous: &str,
) -> String {
    format!("{time}\n{sequence}\n{record_hash}\n{log_file}\n{last_digest_signature}\n{previous}")
}
