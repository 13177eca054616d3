//! The sealer: compresses closed log files into CloudTrail-shaped `.json.gz` files (one
//! `{"Records":[…]}` document each) and writes the signed, chained digest files that list them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::chain::{self, SEALED_HEAD, SEALED_TAIL, hash_line};
use crate::error::TrailError;
use crate::files::{self, DigestFile, DigestSignature, LogFileEntry, read_log};
use crate::layout::{self, GENESIS_HASH, Kind, Layout};
use crate::seal_job::{DigestRef, SealJob};
use crate::signing::{self, Signer};

struct Sealer {
    layout: Layout,
    signer: Arc<Signer>,
    previous: Option<DigestRef>,
    pending: Vec<LogFileEntry>,
    last_sequence: u64,
    last_hash: String,
    shared: Arc<Mutex<Option<DigestRef>>>,
    witness: Option<PathBuf>,
}

pub(crate) fn start(
    layout: Layout,
    signer: Arc<Signer>,
    shared: Arc<Mutex<Option<DigestRef>>>,
    witness: Option<PathBuf>,
) -> Result<mpsc::Sender<SealJob>, TrailError> {
    let io = |source| TrailError::Io { path: layout.root.clone(), source };
    let digests = layout.files(Kind::Digest, &[".json.gz"]).map_err(io)?;
    let mut digested = HashSet::new();
    let mut previous = None;
    let mut last_sequence = 0;
    let mut last_hash = GENESIS_HASH.to_owned();
    for path in &digests {
        let bytes = files::gunzip(&std::fs::read(path).map_err(io)?).map_err(io)?;
        let digest: DigestFile = serde_json::from_slice(&bytes)
            .map_err(|e| TrailError::Damaged { path: path.clone(), message: format!("not a digest file: {e}") })?;
        let signature: DigestSignature = std::fs::read(signature_path(path))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| TrailError::Damaged { path: path.clone(), message: "its signature file is missing or unreadable".into() })?;
        digested.extend(digest.log_files.iter().map(|f| f.s3_object.clone()));
        last_sequence = digest.last_sequence_number;
        last_hash = digest.last_record_hash.clone();
        previous = Some(DigestRef {
            object: layout.object_key(path),
            signature: signature.signature,
            hash: hex::encode(Sha256::digest(&bytes)),
            end_time: digest.digest_end_time,
        });
    }
    *shared.lock().expect("digest lock") = previous.clone();
    let mut sealer = Sealer { layout: layout.clone(), signer, previous, pending: Vec::new(), last_sequence, last_hash, shared, witness };
    // Sealed files no digest lists yet (the run before stopped between sealing and digesting).
    for path in layout.files(Kind::Log, &[".json.gz"]).map_err(io)? {
        if !digested.contains(&layout.object_key(&path)) {
            sealer.track(&path, &read_log(&path)?)?;
        }
    }
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("audit-sealer".into())
        .spawn(move || {
            // Sealing compresses a whole log file at once (a few hundred milliseconds of CPU
            // for `rotate_bytes`): it yields to the actions whose records it seals.
            let _lowered = crate::background::Priority::lower("sealer");
            for job in receiver {
                #[cfg(test)]
                while HELD_SEALERS.lock().expect("lock").as_ref().is_some_and(|dir| sealer.layout.root.starts_with(dir)) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                match job {
                    SealJob::Seal(path) => {
                        if let Err(err) = sealer.seal(&path) {
                            tracing::error!(error = %err, "cannot seal an audit log file; it stays open and is retried at start-up");
                        }
                    }
                    SealJob::Digest { end, done } => {
                        if let Err(err) = sealer.digest(end) {
                            tracing::error!(error = %err, "cannot write an audit digest");
                        }
                        let _ = done.send(());
                    }
                    SealJob::Stop(done) => {
                        let _ = done.send(());
                        return;
                    }
                }
            }
        })
        .map_err(io)?;
    Ok(sender)
}

/// The sealers of trails under this directory wait before each job while it is set (tests
/// only: a seal that takes long cannot be had on demand).
#[cfg(test)]
pub(crate) static HELD_SEALERS: Mutex<Option<PathBuf>> = Mutex::new(None);

pub(crate) fn signature_path(digest: &std::path::Path) -> PathBuf {
    let name = digest.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    digest.with_file_name(format!("{name}.sig"))
}

fn event_time(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Time {
        #[serde(rename = "eventTime")]
        event_time: String,
    }
    serde_json::from_slice::<Time>(line).ok().map(|t| t.event_time)
}

impl Sealer {
    /// Compresses an open log file into its sealed form. Bytes after the last complete line
    /// (a record whose write never finished, so was never acknowledged) are kept beside it in
    /// a `.partial` file, for validation to report.
    fn seal(&mut self, path: &std::path::Path) -> Result<(), TrailError> {
        let io = |source| TrailError::Io { path: path.to_owned(), source };
        let content = std::fs::read(path).map_err(io)?;
        let (lines, partial) = chain::record_lines(&content, false).expect("open files always split");
        let sealed_path = layout::sealed_name(path);
        if !lines.is_empty() {
            let mut sealed = Vec::with_capacity(content.len() + 32);
            sealed.extend_from_slice(SEALED_HEAD);
            for (index, line) in lines.iter().enumerate() {
                if index > 0 {
                    sealed.extend_from_slice(b",\n");
                }
                sealed.extend_from_slice(line);
            }
            sealed.extend_from_slice(SEALED_TAIL);
            files::write_durably(&sealed_path, &files::gzip(&sealed)).map_err(io)?;
            self.track(&sealed_path, &sealed)?;
        }
        if !partial.is_empty() {
            let partial_path =
                sealed_path.with_file_name(format!("{}.partial", sealed_path.file_name().and_then(|n| n.to_str()).unwrap_or_default()));
            files::write_durably(&partial_path, partial).map_err(io)?;
        }
        std::fs::remove_file(path).map_err(io)?;
        layout::sync_dir(path).map_err(io)
    }

    fn track(&mut self, sealed_path: &std::path::Path, content: &[u8]) -> Result<(), TrailError> {
        let (lines, _) = chain::record_lines(content, true)
            .map_err(|()| TrailError::Damaged { path: sealed_path.to_owned(), message: "not a sealed log file".into() })?;
        if let Some(last) = lines.last() {
            if let Some(link) = chain::parse_link(last) {
                self.last_sequence = link.sequence;
            }
            self.last_hash = hash_line(last);
        }
        self.pending.push(LogFileEntry {
            s3_bucket: self.layout.bucket.clone(),
            s3_object: self.layout.object_key(sealed_path),
            hash_value: hex::encode(Sha256::digest(content)),
            hash_algorithm: "SHA-256".into(),
            newest_event_time: lines.last().and_then(|l| event_time(l)),
            oldest_event_time: lines.first().and_then(|l| event_time(l)),
        });
        Ok(())
    }

    fn digest(&mut self, end: DateTime<Utc>) -> Result<(), TrailError> {
        let end_time = end.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let path = self.layout.digest_file(&end);
        let object = self.layout.object_key(&path);
        let start_time = self.previous.as_ref().map_or_else(|| end_time.clone(), |p| p.end_time.clone());
        let logs = std::mem::take(&mut self.pending);
        let digest = DigestFile {
            aws_account_id: self.layout.account_id.clone(),
            digest_start_time: start_time,
            digest_end_time: end_time.clone(),
            digest_s3_bucket: self.layout.bucket.clone(),
            digest_s3_object: object.clone(),
            digest_public_key_fingerprint: self.signer.fingerprint(),
            digest_signature_algorithm: signing::ALGORITHM.into(),
            newest_event_time: logs.iter().filter_map(|l| l.newest_event_time.clone()).max(),
            oldest_event_time: logs.iter().filter_map(|l| l.oldest_event_time.clone()).min(),
            previous_digest_s3_bucket: self.previous.as_ref().map(|_| self.layout.bucket.clone()),
            previous_digest_s3_object: self.previous.as_ref().map(|p| p.object.clone()),
            previous_digest_hash_value: self.previous.as_ref().map(|p| p.hash.clone()),
            previous_digest_hash_algorithm: self.previous.as_ref().map(|_| "SHA-256".into()),
            previous_digest_signature: self.previous.as_ref().map(|p| p.signature.clone()),
            log_files: logs,
            last_sequence_number: self.last_sequence,
            last_record_hash: self.last_hash.clone(),
        };
        let bytes = serde_json::to_vec(&digest).expect("a digest serializes");
        let hash = hex::encode(Sha256::digest(&bytes));
        let previous_signature = self.previous.as_ref().map_or("null", |p| p.signature.as_str());
        let signature =
            self.signer.sign(signing::digest_string_to_sign(&end_time, &self.layout.bucket, &object, &hash, previous_signature).as_bytes());
        let signature_file = DigestSignature { signature: signature.clone(), signature_algorithm: signing::ALGORITHM.into() };
        let io = |source| TrailError::Io { path: path.clone(), source };
        let signature_bytes = serde_json::to_vec(&signature_file).expect("serializes");
        let compressed = files::gzip(&bytes);
        files::write_durably(&signature_path(&path), &signature_bytes).map_err(io)?;
        files::write_durably(&path, &compressed).map_err(io)?;
        if let Some(witness) = &self.witness {
            let copy = witness.join(&object);
            let copied =
                files::write_durably(&signature_path(&copy), &signature_bytes).and_then(|()| files::write_durably(&copy, &compressed));
            if let Err(err) = copied {
                tracing::error!(error = %err, path = %copy.display(), "cannot write a digest to the trail's witness");
            }
        }
        let reference = DigestRef { object, signature, hash, end_time };
        *self.shared.lock().expect("digest lock") = Some(reference.clone());
        self.previous = Some(reference);
        Ok(())
    }
}
