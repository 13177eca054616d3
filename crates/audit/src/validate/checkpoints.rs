//! The checkpoint chain: each checkpoint signed by the trail's key and chained to the one
//! before it.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;

use super::report::{BAD_SIGNATURE, INVALID_FORMAT, Reporter, location, parse_name_time};
use crate::chain;
use crate::files::Checkpoint;
use crate::layout::{Kind, Layout};
use crate::signing;

/// The checkpoints that carry a valid signature, which the record chain is held against.
pub(crate) struct SignedCheckpoints {
    /// Each checkpoint by the sequence number of the record it signs.
    pub(crate) by_sequence: BTreeMap<u64, Checkpoint>,
    pub(crate) newest: Option<Checkpoint>,
}

impl SignedCheckpoints {
    /// The newest record a checkpoint signs (0 if none does).
    pub(crate) fn signed_through(&self) -> u64 {
        self.by_sequence.keys().next_back().copied().unwrap_or(0)
    }
}

/// Checks every checkpoint file, reports one verdict per file, and returns the checkpoints
/// that passed. A partial line at the end of the newest file is only noted: the writer may be
/// in the middle of it.
pub(crate) fn check_checkpoints(layout: &Layout, key: &VerifyingKey, fingerprint: &str, reporter: &mut Reporter<'_>) -> SignedCheckpoints {
    let mut checkpoints = SignedCheckpoints { by_sequence: BTreeMap::new(), newest: None };
    let mut previous_signature = "null".to_owned();
    let checkpoint_files = layout.files(Kind::Checkpoint, &[".jsonl"]).unwrap_or_default();
    let newest_checkpoint_file = checkpoint_files.last().cloned();
    for path in &checkpoint_files {
        let mut problems = Vec::new();
        let content = std::fs::read(path).unwrap_or_default();
        let (lines, partial) = chain::record_lines(&content, false).expect("open files always split");
        for line in lines {
            let Ok(checkpoint) = serde_json::from_slice::<Checkpoint>(line) else {
                problems.push(INVALID_FORMAT.to_owned());
                break;
            };
            if !signed_by(&checkpoint, key, fingerprint) {
                problems.push(BAD_SIGNATURE.to_owned());
                break;
            }
            if checkpoint.previous_checkpoint_signature != previous_signature {
                problems.push("INVALID: the checkpoint chain is broken before it (a checkpoint or checkpoint file was removed)".to_owned());
            }
            previous_signature = checkpoint.signature.clone();
            checkpoints.by_sequence.insert(checkpoint.sequence_number, checkpoint.clone());
            checkpoints.newest = Some(checkpoint);
        }
        let loc = location(layout, path);
        if !partial.is_empty() && Some(path) == newest_checkpoint_file.as_ref() {
            reporter.note("Checkpoint file", &loc, &format!("partial checkpoint at the end: {} bytes never completed", partial.len()));
        } else if !partial.is_empty() {
            problems.push(INVALID_FORMAT.to_owned());
        }
        reporter.file("Checkpoint file", &loc, parse_name_time(path), &problems);
    }
    checkpoints
}

/// Whether `checkpoint` carries a valid signature of the key with `fingerprint`.
pub(crate) fn signed_by(checkpoint: &Checkpoint, key: &VerifyingKey, fingerprint: &str) -> bool {
    let message = signing::checkpoint_string_to_sign(
        &checkpoint.checkpoint_time,
        checkpoint.sequence_number,
        &checkpoint.record_hash,
        &checkpoint.log_file,
        checkpoint.last_digest_signature.as_deref().unwrap_or("null"),
        &checkpoint.previous_checkpoint_signature,
    );
    checkpoint.public_key_fingerprint == fingerprint && signing::verify(key, message.as_bytes(), &checkpoint.signature)
}
