//! The witness: copies of the checkpoints and digests on another file system, which show a
//! trail whose whole tail was deleted along with the signatures over it.

use std::path::Path;

use ed25519_dalek::VerifyingKey;

use super::checkpoints::signed_by;
use super::report::{NOT_FOUND, Reporter};
use super::scan::{LogScan, decode_hash};
use crate::chain;
use crate::files::Checkpoint;
use crate::layout::{Kind, Layout};

/// What the witness holds: its newest checkpoint signed by the trail's key, and its newest
/// digest. Read before the trail itself, so that a trail still being written never looks
/// shorter than its witness (the writer writes records, then the trail's checkpoint, then
/// the witness's copy).
pub(crate) struct Witnessed {
    pub(crate) newest: Option<Checkpoint>,
    pub(crate) newest_digest: Option<String>,
}

pub(crate) fn read_witness(
    layout: &Layout,
    witness: &Path,
    key: &VerifyingKey,
    fingerprint: &str,
    reporter: &mut Reporter<'_>,
) -> Witnessed {
    let witnessed = Layout { root: witness.to_owned(), ..layout.clone() };
    let location = |object: &str| format!("witness {}/{object}", witness.display());
    let mut newest: Option<Checkpoint> = None;
    for path in witnessed.files(Kind::Checkpoint, &[".jsonl"]).unwrap_or_default() {
        let content = std::fs::read(&path).unwrap_or_default();
        let (lines, _) = chain::record_lines(&content, false).expect("open files always split");
        for line in lines {
            let Ok(checkpoint) = serde_json::from_slice::<Checkpoint>(line) else { continue };
            if !signed_by(&checkpoint, key, fingerprint) {
                reporter.note(
                    "Checkpoint file",
                    &location(&witnessed.object_key(&path)),
                    "a checkpoint in the witness is not signed by this key; ignored",
                );
                continue;
            }
            if newest.as_ref().is_none_or(|n| checkpoint.sequence_number >= n.sequence_number) {
                newest = Some(checkpoint);
            }
        }
    }
    if newest.is_none() {
        reporter.note("Checkpoint file", &location("DataSandbox-Checkpoint"), "the witness holds no checkpoint: nothing to compare");
    }
    let newest_digest = witnessed.files(Kind::Digest, &[".json.gz"]).unwrap_or_default().last().map(|d| witnessed.object_key(d));
    Witnessed { newest, newest_digest }
}

/// Checks the trail against its witness: the newest checkpoint the witness holds must sign
/// records the trail has, with the same hash, and the newest digest it holds must be in the
/// trail. A trail whose tail was deleted along with its signatures fails here.
pub(crate) fn check_witness(
    layout: &Layout,
    witnessed: &Witnessed,
    scans: &[LogScan],
    last_sequence: u64,
    digest_objects: &[String],
    reporter: &mut Reporter<'_>,
) {
    if let Some(newest) = &witnessed.newest {
        check_witness_checkpoint(layout, newest, scans, last_sequence, reporter);
    }
    if let Some(object) = witnessed.newest_digest.as_ref().filter(|o| !digest_objects.contains(o)) {
        reporter.file(
            "Digest file",
            &format!("s3://{}/{object}", layout.bucket),
            None,
            &[format!("{NOT_FOUND} (the witness holds it: the trail's digests were deleted)")],
        );
    }
}

fn check_witness_checkpoint(layout: &Layout, newest: &Checkpoint, scans: &[LogScan], last_sequence: u64, reporter: &mut Reporter<'_>) {
    let log = format!("s3://{}/{}", layout.bucket, newest.log_file);
    if newest.sequence_number > last_sequence {
        reporter.file(
            "Log file",
            &log,
            None,
            &[format!(
                "INVALID: records {}..={} are missing: the witness holds a checkpoint of {} that signs them (the trail's tail was deleted)",
                last_sequence + 1,
                newest.sequence_number,
                newest.checkpoint_time
            )],
        );
    } else {
        let hash = scans.iter().find_map(|scan| {
            let index = scan.links.iter().position(|(n, _)| *n == newest.sequence_number)?;
            scan.line_hashes.get(index).copied()
        });
        if hash.is_some_and(|h| h != decode_hash(&newest.record_hash)) {
            reporter.file(
                "Log file",
                &log,
                None,
                &[format!(
                    "INVALID: record {} does not match the witness's checkpoint of {} (the records were rewritten)",
                    newest.sequence_number, newest.checkpoint_time
                )],
            );
        }
    }
}
