//! The digest chain: each hourly digest in its place, signed, chained to the one before it, and
//! listing sealed log files whose content still has the hash it records.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use super::report::{BAD_HASH, BAD_SIGNATURE, INVALID_FORMAT, MOVED, NOT_FOUND, Reporter, location, parse_name_time};
use super::scan::LogScan;
use crate::files::{self, DigestFile, DigestSignature};
use crate::layout::{Kind, Layout};
use crate::sealer::signature_path;
use crate::signing;

/// What the digest chain establishes for the checks after it.
pub(crate) struct DigestChain {
    /// The object key of every digest file present.
    pub(crate) objects: Vec<String>,
    /// The newest record a validly signed digest seals (0 if none does).
    pub(crate) signed_through: u64,
}

/// Checks every digest file and the log files each one lists, reporting one verdict per file.
pub(crate) fn check_digests(
    layout: &Layout,
    key: &VerifyingKey,
    fingerprint: &str,
    scans: &[LogScan],
    all_logs: &[PathBuf],
    reporter: &mut Reporter<'_>,
) -> DigestChain {
    let paths = layout.files(Kind::Digest, &[".json.gz"]).unwrap_or_default();
    let check = DigestCheck {
        layout,
        key,
        fingerprint,
        objects: paths.iter().map(|p| layout.object_key(p)).collect(),
        content_hashes: scans.iter().filter_map(|scan| scan.content_hash.clone().map(|hash| (scan.path.clone(), hash))).collect(),
        all_logs,
    };
    let mut previous: Option<PreviousDigest> = None;
    let mut signed_through = 0u64;
    for path in &paths {
        let checked = check.digest(path, previous.as_ref(), reporter);
        if let Some(sealed) = checked.signed_through {
            signed_through = signed_through.max(sealed);
        }
        previous = checked.previous;
    }
    DigestChain { objects: check.objects, signed_through }
}

/// The digest before the one being checked, which that one must name.
struct PreviousDigest {
    object: String,
    hash: String,
}

/// What checking one digest yields for the next.
struct CheckedDigest {
    /// Present when the digest has a signature, valid or not: the next digest chains to it.
    previous: Option<PreviousDigest>,
    /// The last record sealed, when the signature is valid.
    signed_through: Option<u64>,
}

/// What every digest is checked against.
struct DigestCheck<'a> {
    layout: &'a Layout,
    key: &'a VerifyingKey,
    fingerprint: &'a str,
    objects: Vec<String>,
    /// SHA-256 of each sealed log file's uncompressed content, by path.
    content_hashes: HashMap<PathBuf, String>,
    all_logs: &'a [PathBuf],
}

impl DigestCheck<'_> {
    /// Format, location, signature and chain of one digest; then the log files it lists.
    fn digest(&self, path: &Path, previous: Option<&PreviousDigest>, reporter: &mut Reporter<'_>) -> CheckedDigest {
        let loc = location(self.layout, path);
        let object = self.layout.object_key(path);
        let time = parse_name_time(path);
        let bytes = std::fs::read(path).ok().and_then(|b| files::gunzip(&b).ok());
        let Some(digest) = bytes.as_ref().and_then(|b| serde_json::from_slice::<DigestFile>(b).ok()) else {
            reporter.file("Digest file", &loc, time, &[INVALID_FORMAT.to_owned()]);
            return CheckedDigest { previous: None, signed_through: None };
        };
        let bytes = bytes.expect("parsed above");
        let hash = hex::encode(Sha256::digest(&bytes));
        let mut problems = Vec::new();
        if digest.digest_s3_object != object {
            problems.push(MOVED.to_owned());
        }
        let signature: Option<DigestSignature> = std::fs::read(signature_path(path)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let signature_ok = signature.as_ref().is_some_and(|s| self.signed(&digest, &hash, &s.signature));
        let mut signed_through = None;
        if !signature_ok {
            problems.push(BAD_SIGNATURE.to_owned());
        } else {
            signed_through = Some(digest.last_sequence_number);
        }
        self.chain_link(&digest, previous, time, &mut problems, reporter);
        self.listed_logs(&digest, reporter);
        reporter.file("Digest file", &loc, time, &problems);
        let previous = signature.map(|_| PreviousDigest { object, hash });
        CheckedDigest { previous, signed_through }
    }

    /// Whether `signature` is the trail key's signature of `digest`, whose content has `hash`.
    fn signed(&self, digest: &DigestFile, hash: &str, signature: &str) -> bool {
        let previous_signature = digest.previous_digest_signature.clone().unwrap_or_else(|| "null".to_owned());
        let signed = signing::digest_string_to_sign(
            &digest.digest_end_time,
            &digest.digest_s3_bucket,
            &digest.digest_s3_object,
            hash,
            &previous_signature,
        );
        digest.digest_public_key_fingerprint == self.fingerprint && signing::verify(self.key, signed.as_bytes(), signature)
    }

    /// The chain: the digest this one names as previous must be the one before it.
    fn chain_link(
        &self,
        digest: &DigestFile,
        previous: Option<&PreviousDigest>,
        time: Option<chrono::DateTime<chrono::Utc>>,
        problems: &mut Vec<String>,
        reporter: &mut Reporter<'_>,
    ) {
        match (&digest.previous_digest_s3_object, previous) {
            (Some(named), Some(previous))
                if *named == previous.object && digest.previous_digest_hash_value.as_deref() != Some(previous.hash.as_str()) =>
            {
                problems.push(format!("{BAD_HASH} for its previous digest"));
            }
            (Some(named), Some(previous)) if *named == previous.object => {}
            (Some(named), _) if !self.objects.contains(named) => {
                reporter.file("Digest file", &format!("s3://{}/{named}", self.layout.bucket), time, &[NOT_FOUND.to_owned()]);
            }
            (None, Some(_)) => problems.push("INVALID: it starts a new digest chain in the middle of the trail".to_owned()),
            _ => {}
        }
    }

    /// Each log file the digest lists must be where it was and hold the content it hashed.
    fn listed_logs(&self, digest: &DigestFile, reporter: &mut Reporter<'_>) {
        for entry in &digest.log_files {
            let log_path = self.layout.root.join(&entry.s3_object);
            let log_loc = format!("s3://{}/{}", entry.s3_bucket, entry.s3_object);
            let log_time = parse_name_time(&log_path);
            match self.content_hashes.get(&log_path) {
                Some(hash) if *hash == entry.hash_value => {}
                Some(_) => reporter.file("Log file", &log_loc, log_time, &[BAD_HASH.to_owned()]),
                None => {
                    let name = log_path.file_name();
                    let moved = self.all_logs.iter().any(|p| p.file_name() == name)
                        || find_by_name(&self.layout.root, name.and_then(|n| n.to_str()).unwrap_or_default());
                    reporter.file("Log file", &log_loc, log_time, &[if moved { MOVED } else { NOT_FOUND }.to_owned()]);
                }
            }
        }
    }
}

fn find_by_name(root: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else { return false };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() { find_by_name(&path, name) } else { path.file_name().and_then(|n| n.to_str()) == Some(name) }
    })
}
