//! Where a trail left off, read back when its writer starts: the newest complete record's place
//! in the chain, the last signed checkpoint, and the signing key's public half beside them.

use crate::chain::{self, hash_line};
use crate::error::{TrailError, io};
use crate::files::{Checkpoint, read_log};
use crate::layout::{GENESIS_HASH, Kind, Layout};
use crate::signing::Signer;

pub(crate) fn write_public_key(layout: &Layout, signer: &Signer) -> Result<(), TrailError> {
    let path = layout.public_keys().join(format!("{}.pub", signer.fingerprint()));
    if !path.exists() {
        crate::files::write_durably(&path, format!("{}\n", signer.public_key_hex()).as_bytes()).map_err(io(&path))?;
    }
    Ok(())
}

/// The sequence number and hash of the newest complete record on disk.
pub(crate) fn chain_position(layout: &Layout) -> Result<(u64, String), TrailError> {
    let logs = layout.files(Kind::Log, &[".jsonl", ".json.gz"]).map_err(io(&layout.root))?;
    for path in logs.iter().rev() {
        let content = read_log(path)?;
        let sealed = path.extension().is_some_and(|e| e == "gz");
        let (lines, _) = chain::record_lines(&content, sealed)
            .map_err(|()| TrailError::Damaged { path: path.clone(), message: "it is not a sealed log file".into() })?;
        if let Some(last) = lines.last() {
            let link = chain::parse_link(last)
                .ok_or_else(|| TrailError::Damaged { path: path.clone(), message: "its last record has no chain prefix".into() })?;
            return Ok((link.sequence, hash_line(last)));
        }
    }
    Ok((0, GENESIS_HASH.to_owned()))
}

/// The signature and sequence number of the newest checkpoint on disk.
pub(crate) fn last_checkpoint(layout: &Layout) -> Result<(String, u64), TrailError> {
    let files = layout.files(Kind::Checkpoint, &[".jsonl"]).map_err(io(&layout.root))?;
    for path in files.iter().rev() {
        let content = std::fs::read(path).map_err(io(path))?;
        let (lines, _) = chain::record_lines(&content, false).expect("open files always split");
        if let Some(last) = lines.last() {
            let checkpoint: Checkpoint = serde_json::from_slice(last)
                .map_err(|e| TrailError::Damaged { path: path.clone(), message: format!("its last checkpoint is not valid: {e}") })?;
            return Ok((checkpoint.signature, checkpoint.sequence_number));
        }
    }
    Ok(("null".to_owned(), 0))
}
