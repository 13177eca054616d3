//! The JSON documents of the trail besides records (checkpoints and digests), and the helpers
//! that read and write the trail's files.

use serde::{Deserialize, Serialize};

use crate::error::{TrailError, io};

/// One line of a checkpoint file: a signed statement that the trail's record `sequence_number`
/// has hash `record_hash`, chained to the previous checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub checkpoint_time: String,
    pub sequence_number: u64,
    pub record_hash: String,
    pub log_file: String,
    /// The newest digest when the checkpoint was made, so deleting it is noticed.
    pub last_digest_s3_object: Option<String>,
    pub last_digest_signature: Option<String>,
    pub public_key_fingerprint: String,
    pub signature_algorithm: String,
    pub previous_checkpoint_signature: String,
    pub signature: String,
}

/// CloudTrail's digest file, plus the chain position it seals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestFile {
    pub aws_account_id: String,
    pub digest_start_time: String,
    pub digest_end_time: String,
    pub digest_s3_bucket: String,
    pub digest_s3_object: String,
    pub digest_public_key_fingerprint: String,
    pub digest_signature_algorithm: String,
    pub newest_event_time: Option<String>,
    pub oldest_event_time: Option<String>,
    pub previous_digest_s3_bucket: Option<String>,
    pub previous_digest_s3_object: Option<String>,
    pub previous_digest_hash_value: Option<String>,
    pub previous_digest_hash_algorithm: Option<String>,
    pub previous_digest_signature: Option<String>,
    pub log_files: Vec<LogFileEntry>,
    pub last_sequence_number: u64,
    pub last_record_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFileEntry {
    pub s3_bucket: String,
    pub s3_object: String,
    /// Lower-hex SHA-256 of the uncompressed log file content, as in CloudTrail.
    pub hash_value: String,
    pub hash_algorithm: String,
    pub newest_event_time: Option<String>,
    pub oldest_event_time: Option<String>,
}

/// The signature of a digest, kept beside it (CloudTrail keeps it in object metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestSignature {
    pub signature: String,
    pub signature_algorithm: String,
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4 + 64), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writing to a Vec cannot fail");
    encoder.finish().expect("finishing into a Vec cannot fail")
}

pub fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut out = Vec::with_capacity(bytes.len() * 6);
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// Writes `bytes` to `path` atomically and durably: a temporary file, fsync, rename, fsync of
/// the directory.
pub fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    crate::layout::create_parent(path)?;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    crate::layout::sync_dir(path)
}

/// Appends `bytes` to `path` (created with its directories if missing) and makes them durable.
pub(crate) fn append_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    crate::layout::create_parent(path)?;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// Reads a log file whole, decompressing it if it is sealed (`.json.gz`).
pub(crate) fn read_log(path: &std::path::Path) -> Result<Vec<u8>, TrailError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    if path.extension().is_some_and(|e| e == "gz") { gunzip(&bytes).map_err(io(path)) } else { Ok(bytes) }
}
