//! `audit validate`: checks a trail offline, given only its files and the public key, and
//! reports in the format of `aws cloudtrail validate-logs`: one line per file (invalid ones
//! always, valid ones with `verbose`), then counts; invalid if anything is.
//!
//! Three layers are checked: the digest chain (signed, hourly, listing sealed log files with
//! their hashes), the checkpoint chain (signed, within a second of any record), and the
//! per-record hash chain across every log file, sealed or still open. Every record must be
//! covered by a signature (a checkpoint or digest at or after it): records no signature
//! covers are invalid, except the last few seconds' worth that a crash, or a trail still
//! being written, leaves unsigned. What no file of the trail can show — its whole tail
//! deleted along with the signatures over it — a witness shows: copies of the checkpoints
//! and digests on another file system (`audit.witness`), checked against the trail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::chain;
use crate::files::{self, Checkpoint, DigestFile, DigestSignature};
use crate::layout::{self, GENESIS_HASH, Kind, Layout};
use crate::sealer::signature_path;
use crate::signing;

pub const VALID: &str = "valid";
pub const NOT_FOUND: &str = "INVALID: not found";
pub const MOVED: &str = "INVALID: has been moved from its original location";
pub const INVALID_FORMAT: &str = "INVALID: invalid format";
pub const BAD_SIGNATURE: &str = "INVALID: signature verification failed";
pub const BAD_HASH: &str = "INVALID: hash value doesn't match";

#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub verbose: bool,
    /// The trail's witness directory, if it has one.
    pub witness: Option<PathBuf>,
}

/// Unsigned records are accepted only at the end of the trail and within this span of the
/// first of them: the writer checkpoints within `audit.checkpoint_interval_ms` (at most a
/// second) of any record unless it stopped, so more than this was signed and the signatures
/// were removed.
const UNSIGNED_TAIL: chrono::TimeDelta = chrono::TimeDelta::seconds(3);

/// The report, line by line as it is printed, and the verdict.
#[derive(Debug, Clone)]
pub struct Report {
    pub lines: Vec<String>,
    pub valid: bool,
    /// Uncompressed bytes of log content checked, for throughput figures.
    pub bytes_checked: u64,
}

#[derive(Default)]
struct Tally {
    total: usize,
    invalid: usize,
}

struct Reporter<'a> {
    options: &'a ValidateOptions,
    lines: Vec<String>,
    digests: Tally,
    logs: Tally,
    checkpoints: Tally,
}

impl Reporter<'_> {
    fn in_window(&self, time: Option<DateTime<Utc>>) -> bool {
        let Some(time) = time else { return true };
        self.options.start.is_none_or(|s| time >= s) && self.options.end.is_none_or(|e| time <= e)
    }

    /// One file's verdict: its problems, or valid.
    fn file(&mut self, kind: &str, location: &str, time: Option<DateTime<Utc>>, problems: &[String]) {
        if !self.in_window(time) {
            return;
        }
        let tally = match kind {
            "Digest file" => &mut self.digests,
            "Checkpoint file" => &mut self.checkpoints,
            _ => &mut self.logs,
        };
        tally.total += 1;
        if problems.is_empty() {
            if self.options.verbose {
                self.lines.push(format!("{kind}\t{location}\t{VALID}"));
            }
        } else {
            tally.invalid += 1;
            for problem in problems {
                self.lines.push(format!("{kind}\t{location}\t{problem}"));
            }
        }
    }

    fn note(&mut self, kind: &str, location: &str, note: &str) {
        self.lines.push(format!("{kind}\t{location}\t{note}"));
    }
}

/// The time in a trail file's name (`…_20261129T041500123Z_…` or `…_20261129T04Z…`).
fn parse_name_time(path: &Path) -> Option<DateTime<Utc>> {
    let name = path.file_name()?.to_str()?;
    name.split('_').find_map(|part| {
        let stamp = part.split('.').next()?.strip_suffix('Z')?;
        if stamp.len() < 11 || stamp.as_bytes()[8] != b'T' {
            return None;
        }
        let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
        if digits.len() + 1 != stamp.len() {
            return None;
        }
        let padded = format!("{digits:0<17}");
        let number = |range: std::ops::Range<usize>| padded.get(range).and_then(|d| d.parse::<u32>().ok());
        let date = chrono::NaiveDate::from_ymd_opt(number(0..4)? as i32, number(4..6)?, number(6..8)?)?;
        let time = chrono::NaiveTime::from_hms_milli_opt(number(8..10)?, number(10..12)?, number(12..14)?, number(14..17)?)?;
        Some(NaiveDateTime::new(date, time).and_utc())
    })
}

/// The newest public key the trail holds (`DataSandbox-PublicKey/`), for validating it when
/// no key is given from elsewhere.
pub fn newest_public_key(layout: &Layout) -> Result<VerifyingKey, String> {
    let mut keys: Vec<PathBuf> = std::fs::read_dir(layout.public_keys())
        .map_err(|e| format!("no public key in `{}` ({e}); pass --public-key", layout.public_keys().display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    keys.sort();
    let path = keys.pop().ok_or_else(|| "the trail holds no public key; pass --public-key".to_owned())?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read the public key `{}`: {e}", path.display()))?;
    crate::signing::parse_public_key(&text).map_err(|e| format!("`{}`: {e}", path.display()))
}

pub fn validate(layout: &Layout, key: &VerifyingKey, options: &ValidateOptions) -> Report {
    let fingerprint = signing::fingerprint(key);
    let mut reporter =
        Reporter { options, lines: Vec::new(), digests: Tally::default(), logs: Tally::default(), checkpoints: Tally::default() };
    let location = |path: &Path| format!("s3://{}/{}", layout.bucket, layout.object_key(path));
    let witnessed = options.witness.as_ref().map(|w| read_witness(layout, w, key, &fingerprint, &mut reporter));
    let all_logs = layout.files(Kind::Log, &[".jsonl", ".json.gz"]).unwrap_or_default();
    let logs: Vec<PathBuf> =
        all_logs.iter().filter(|p| !(p.extension().is_some_and(|e| e == "jsonl") && layout::sealed_name(p).exists())).cloned().collect();

    // Checkpoints: each signed by our key and chained to the one before.
    let mut checkpoints: BTreeMap<u64, Checkpoint> = BTreeMap::new();
    let mut newest_checkpoint: Option<Checkpoint> = None;
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
            if !signed_by(&checkpoint, key, &fingerprint) {
                problems.push(BAD_SIGNATURE.to_owned());
                break;
            }
            if checkpoint.previous_checkpoint_signature != previous_signature {
                problems.push("INVALID: the checkpoint chain is broken before it (a checkpoint or checkpoint file was removed)".to_owned());
            }
            previous_signature = checkpoint.signature.clone();
            checkpoints.insert(checkpoint.sequence_number, checkpoint.clone());
            newest_checkpoint = Some(checkpoint);
        }
        let loc = location(path);
        if !partial.is_empty() && Some(path) == newest_checkpoint_file.as_ref() {
            reporter.note("Checkpoint file", &loc, &format!("partial checkpoint at the end: {} bytes never completed", partial.len()));
        } else if !partial.is_empty() {
            problems.push(INVALID_FORMAT.to_owned());
        }
        reporter.file("Checkpoint file", &loc, parse_name_time(path), &problems);
    }

    // Every log file is read, decompressed and hashed once, in parallel.
    let scans = scan_logs(&logs);
    let content_hashes: std::collections::HashMap<PathBuf, String> =
        scans.iter().filter_map(|scan| scan.content_hash.clone().map(|hash| (scan.path.clone(), hash))).collect();

    // Digests: format, location, signature, chain; then the log files each one lists.
    let mut previous: Option<(String, String, String)> = None; // object, signature, hash
    let mut digest_signed = 0u64;
    let digest_paths = layout.files(Kind::Digest, &[".json.gz"]).unwrap_or_default();
    let digest_objects: Vec<String> = digest_paths.iter().map(|p| layout.object_key(p)).collect();
    for path in &digest_paths {
        let loc = location(path);
        let object = layout.object_key(path);
        let time = parse_name_time(path);
        let bytes = std::fs::read(path).ok().and_then(|b| files::gunzip(&b).ok());
        let Some(digest) = bytes.as_ref().and_then(|b| serde_json::from_slice::<DigestFile>(b).ok()) else {
            reporter.file("Digest file", &loc, time, &[INVALID_FORMAT.to_owned()]);
            previous = None;
            continue;
        };
        let bytes = bytes.expect("parsed above");
        let hash = hex::encode(Sha256::digest(&bytes));
        let mut problems = Vec::new();
        if digest.digest_s3_object != object {
            problems.push(MOVED.to_owned());
        }
        let signature: Option<DigestSignature> = std::fs::read(signature_path(path)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let previous_signature = digest.previous_digest_signature.clone().unwrap_or_else(|| "null".to_owned());
        let signed = signing::digest_string_to_sign(
            &digest.digest_end_time,
            &digest.digest_s3_bucket,
            &digest.digest_s3_object,
            &hash,
            &previous_signature,
        );
        let signature_ok = signature
            .as_ref()
            .is_some_and(|s| digest.digest_public_key_fingerprint == fingerprint && signing::verify(key, signed.as_bytes(), &s.signature));
        if !signature_ok {
            problems.push(BAD_SIGNATURE.to_owned());
        } else {
            digest_signed = digest_signed.max(digest.last_sequence_number);
        }
        // The chain: the digest this one names as previous must be the one before it.
        match (&digest.previous_digest_s3_object, &previous) {
            (Some(named), Some((object, _, previous_hash)))
                if named == object && digest.previous_digest_hash_value.as_deref() != Some(previous_hash.as_str()) =>
            {
                problems.push(format!("{BAD_HASH} for its previous digest"));
            }
            (Some(named), Some((object, _, _))) if named == object => {}
            (Some(named), _) if !digest_objects.contains(named) => {
                reporter.file("Digest file", &format!("s3://{}/{named}", layout.bucket), time, &[NOT_FOUND.to_owned()]);
            }
            (None, Some(_)) => problems.push("INVALID: it starts a new digest chain in the middle of the trail".to_owned()),
            _ => {}
        }
        for entry in &digest.log_files {
            let log_path = layout.root.join(&entry.s3_object);
            let log_loc = format!("s3://{}/{}", entry.s3_bucket, entry.s3_object);
            let log_time = parse_name_time(&log_path);
            match content_hashes.get(&log_path) {
                Some(hash) if *hash == entry.hash_value => {}
                Some(_) => reporter.file("Log file", &log_loc, log_time, &[BAD_HASH.to_owned()]),
                None => {
                    let name = log_path.file_name();
                    let moved = all_logs.iter().any(|p| p.file_name() == name)
                        || find_by_name(&layout.root, name.and_then(|n| n.to_str()).unwrap_or_default());
                    reporter.file("Log file", &log_loc, log_time, &[if moved { MOVED } else { NOT_FOUND }.to_owned()]);
                }
            }
        }
        reporter.file("Digest file", &loc, time, &problems);
        previous = signature.map(|s| (object, s.signature, hash));
    }
    if let Some(named) = newest_checkpoint.as_ref().and_then(|c| c.last_digest_s3_object.clone())
        && !digest_objects.contains(&named)
    {
        reporter.file("Digest file", &format!("s3://{}/{named}", layout.bucket), None, &[NOT_FOUND.to_owned()]);
    }

    // Records: the hash chain across every log file, checked against the signed checkpoints.
    let mut bytes_checked = 0u64;
    let mut last_sequence = 0u64;
    let mut last_hash = decode_hash(GENESIS_HASH);
    let mut last_location = None;
    let mut last_event_time: Option<String> = None;
    let mut gaps = Vec::new();
    for scan in &scans {
        for (started, before) in &scan.starts {
            if let Some(stopped) = before.clone().or_else(|| last_event_time.clone()) {
                gaps.push(format!("Auditing was off between {stopped} and {started}: no record, log file or digest covers that time"));
            }
        }
        if scan.last_event_time.is_some() {
            last_event_time.clone_from(&scan.last_event_time);
        }
        let loc = location(&scan.path);
        let time = parse_name_time(&scan.path);
        bytes_checked += scan.bytes;
        let mut problems = Vec::new();
        if let Some(problem) = &scan.format_problem {
            problems.push(problem.clone());
        } else if !scan.links.is_empty() {
            let expected = last_sequence + 1;
            let sequences: Vec<u64> = scan.links.iter().map(|(sequence, _)| *sequence).collect();
            let consecutive = sequences.iter().enumerate().all(|(i, s)| *s == expected + i as u64);
            if !consecutive {
                problems.push(classify_sequence_problem(&sequences, expected));
            } else {
                for (index, (sequence, previous_hash)) in scan.links.iter().enumerate() {
                    let actual_previous = if index == 0 { last_hash } else { scan.line_hashes[index - 1] };
                    if *previous_hash != actual_previous {
                        let previous_checkpointed =
                            checkpoints.get(&(sequence - 1)).is_some_and(|c| decode_hash(&c.record_hash) == actual_previous);
                        let modified = if previous_checkpointed { *sequence } else { sequence - 1 };
                        problems.push(format!("INVALID: record {modified} has been modified"));
                        break;
                    }
                    if let Some(checkpoint) = checkpoints.get(sequence)
                        && decode_hash(&checkpoint.record_hash) != scan.line_hashes[index]
                    {
                        problems
                            .push(format!("INVALID: record {sequence} does not match its signed checkpoint (the records were rewritten)"));
                        break;
                    }
                }
            }
        }
        if let (Some((sequence, _)), Some(hash)) = (scan.links.last(), scan.line_hashes.last()) {
            last_sequence = last_sequence.max(*sequence);
            last_hash = *hash;
        }
        if scan.partial_len > 0 {
            reporter.note(
                "Log file",
                &loc,
                &format!("partial record at the end: {} bytes whose write never completed (never acknowledged)", scan.partial_len),
            );
        }
        reporter.file("Log file", &loc, time, &problems);
        last_location = Some((loc, time));
    }
    if let Some(checkpoint) = &newest_checkpoint
        && checkpoint.sequence_number > last_sequence
    {
        let (loc, time) = last_location.clone().unwrap_or_else(|| (format!("s3://{}/{}", layout.bucket, checkpoint.log_file), None));
        reporter.file(
            "Log file",
            &loc,
            time,
            &[format!(
                "INVALID: truncated: records {}..={} are covered by a signed checkpoint of {} but missing",
                last_sequence + 1,
                checkpoint.sequence_number,
                checkpoint.checkpoint_time
            )],
        );
    }

    // Coverage: every record up to the newest signature is signed through the chain.
    let signed = checkpoints.keys().next_back().copied().unwrap_or(0).max(digest_signed);
    if last_sequence > signed {
        let (loc, time) = last_location.clone().unwrap_or_default();
        let first = event_time_of_record(&scans, signed + 1).and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
        let last = last_event_time.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        let crash_tail = signed > 0 && matches!((first, last), (Some(first), Some(last)) if last - first <= UNSIGNED_TAIL);
        let range = format!("records {}..={last_sequence}", signed + 1);
        if crash_tail {
            reporter.note(
                "Log file",
                &loc,
                &format!(
                    "{range} are not signed yet: written within seconds before the trail stopped or was read (as a crash leaves them)"
                ),
            );
        } else {
            reporter.file(
                "Log file",
                &loc,
                time,
                &[format!(
                    "INVALID: {range} are not covered by any signature (no checkpoint or digest signs them: signatures were removed)"
                )],
            );
        }
    }
    if let Some(witnessed) = &witnessed {
        check_witness(layout, witnessed, &scans, last_sequence, &digest_objects, &mut reporter);
    }

    let mut lines = Vec::new();
    let start = options.start.map_or_else(|| "the beginning".to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let end = options.end.unwrap_or_else(Utc::now).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    lines.push(format!(
        "Validating log files for trail arn:datasandbox:audit:{}:{}:trail/DataSandbox between {start} and {end}",
        layout.region, layout.account_id
    ));
    lines.push(String::new());
    lines.extend(reporter.lines);
    lines.extend(gaps);
    lines.push(String::new());
    let mut valid = true;
    for (name, tally) in [("digest", &reporter.digests), ("log", &reporter.logs), ("checkpoint", &reporter.checkpoints)] {
        let good = tally.total - tally.invalid;
        if tally.invalid > 0 {
            valid = false;
            lines.push(format!("{good}/{} {name} files valid, {}/{} {name} files INVALID", tally.total, tally.invalid, tally.total));
        } else {
            lines.push(format!("{good}/{} {name} files valid", tally.total));
        }
    }
    Report { lines, valid, bytes_checked }
}

/// The `eventTime` of record `sequence`, read again from its file.
fn event_time_of_record(scans: &[LogScan], sequence: u64) -> Option<String> {
    let scan = scans
        .iter()
        .find(|s| s.links.first().is_some_and(|(first, _)| *first <= sequence) && s.links.iter().any(|(n, _)| *n == sequence))?;
    let index = scan.links.iter().position(|(n, _)| *n == sequence)?;
    let sealed = scan.path.extension().is_some_and(|e| e == "gz");
    let bytes = std::fs::read(&scan.path).ok()?;
    let content = if sealed { files::gunzip(&bytes).ok()? } else { bytes };
    let (lines, _) = chain::record_lines(&content, sealed).ok()?;
    event_time_of(lines.get(index)?)
}

/// What the witness holds: its newest checkpoint signed by the trail's key, and its newest
/// digest. Read before the trail itself, so that a trail still being written never looks
/// shorter than its witness (the writer writes records, then the trail's checkpoint, then
/// the witness's copy).
struct Witnessed {
    newest: Option<Checkpoint>,
    newest_digest: Option<String>,
}

/// Whether `checkpoint` carries a valid signature of the key with `fingerprint`.
fn signed_by(checkpoint: &Checkpoint, key: &VerifyingKey, fingerprint: &str) -> bool {
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

fn read_witness(layout: &Layout, witness: &Path, key: &VerifyingKey, fingerprint: &str, reporter: &mut Reporter<'_>) -> Witnessed {
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
fn check_witness(
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

/// Says what happened to a file's sequence numbers, which should run `expected, expected+1, …`.
fn classify_sequence_problem(sequences: &[u64], expected: u64) -> String {
    let mut sorted = sequences.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return format!("INVALID: a record was inserted (sequence {} appears twice)", pair[0]);
    }
    if sorted.first().is_some_and(|first| *first < expected) {
        return format!("INVALID: a record was inserted (sequence {} repeats an earlier one)", sorted[0]);
    }
    let contiguous = sorted.iter().enumerate().all(|(i, s)| *s == expected + i as u64);
    if contiguous {
        let at = sequences.iter().zip(&sorted).find(|(a, b)| a != b).map_or(expected, |(a, _)| *a);
        return format!("INVALID: records are out of order at sequence {at}");
    }
    for (want, sequence) in (expected..).zip(sorted.iter()) {
        if *sequence != want {
            return if *sequence == want + 1 {
                format!("INVALID: record {want} is missing (deleted)")
            } else {
                format!("INVALID: records {want}..={} are missing (deleted)", sequence - 1)
            };
        }
    }
    "INVALID: the sequence numbers are inconsistent".to_owned()
}

fn find_by_name(root: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else { return false };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() { find_by_name(&path, name) } else { path.file_name().and_then(|n| n.to_str()) == Some(name) }
    })
}

/// The trail bucket named by the newest digest, if there is one.
pub fn bucket_of(layout: &Layout) -> Option<String> {
    let newest = layout.files(Kind::Digest, &[".json.gz"]).ok()?.pop()?;
    let bytes = files::gunzip(&std::fs::read(newest).ok()?).ok()?;
    serde_json::from_slice::<DigestFile>(&bytes).ok().map(|d| d.digest_s3_bucket)
}

const START_LOGGING: &[u8] = b"\"eventSource\":\"audit\",\"eventName\":\"StartLogging\"";

/// What validation needs of one log file, computed in one read.
struct LogScan {
    path: PathBuf,
    /// SHA-256 of the uncompressed content, as digests record it (sealed files only).
    content_hash: Option<String>,
    format_problem: Option<String>,
    /// Each record's sequence number and the previous-record hash it claims.
    links: Vec<(u64, [u8; 32])>,
    /// Each record line's own hash.
    line_hashes: Vec<[u8; 32]>,
    partial_len: u64,
    bytes: u64,
    /// Where auditing (re)started: the StartLogging record's time and the time of the record
    /// before it in this file, if any.
    starts: Vec<(String, Option<String>)>,
    last_event_time: Option<String>,
}

/// A record's `eventTime`, read without parsing the record.
fn event_time_of(line: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"eventTime\":\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let end = line[at..].iter().position(|b| *b == b'"')?;
    String::from_utf8(line[at..at + end].to_vec()).ok()
}

fn decode_hash(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    if hex::decode_to_slice(text, &mut out).is_err() {
        // An unparsable hash can never equal a real one: use a value no SHA-256 produces in practice.
        out = [0xff; 32];
    }
    out
}

/// Scans the log files on every core, keeping their order.
fn scan_logs(paths: &[PathBuf]) -> Vec<LogScan> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<Vec<Option<LogScan>>> = std::sync::Mutex::new((0..paths.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = paths.get(index) else { return };
                    let scan = scan_log(path);
                    results.lock().expect("scan results")[index] = Some(scan);
                }
            });
        }
    });
    results.into_inner().expect("scan results").into_iter().map(|scan| scan.expect("every file scanned")).collect()
}

fn scan_log(path: &Path) -> LogScan {
    let sealed = path.extension().is_some_and(|e| e == "gz");
    let mut scan = LogScan {
        path: path.to_owned(),
        content_hash: None,
        format_problem: None,
        links: Vec::new(),
        line_hashes: Vec::new(),
        partial_len: 0,
        bytes: 0,
        starts: Vec::new(),
        last_event_time: None,
    };
    let content = match std::fs::read(path).ok().and_then(|b| if sealed { files::gunzip(&b).ok() } else { Some(b) }) {
        Some(content) => content,
        None => {
            scan.format_problem = Some(INVALID_FORMAT.to_owned());
            return scan;
        }
    };
    scan.bytes = content.len() as u64;
    if sealed {
        scan.content_hash = Some(hex::encode(Sha256::digest(&content)));
    }
    let Ok((lines, partial)) = chain::record_lines(&content, sealed) else {
        scan.format_problem = Some(INVALID_FORMAT.to_owned());
        return scan;
    };
    scan.links.reserve(lines.len());
    scan.line_hashes.reserve(lines.len());
    for (index, line) in lines.iter().enumerate() {
        match chain::parse_link(line) {
            Some(link) => {
                scan.links.push((link.sequence, decode_hash(link.previous_hash)));
                scan.line_hashes.push(Sha256::digest(line).into());
                if line.windows(START_LOGGING.len()).any(|w| w == START_LOGGING) {
                    let before = index.checked_sub(1).and_then(|i| event_time_of(lines[i]));
                    scan.starts.push((event_time_of(line).unwrap_or_default(), before));
                }
            }
            None => {
                scan.format_problem = Some(format!("{INVALID_FORMAT} (line {} has no chain prefix)", index + 1));
                break;
            }
        }
    }
    scan.last_event_time = lines.last().and_then(|l| event_time_of(l));
    let sealed_path = if sealed { path.to_owned() } else { layout::sealed_name(path) };
    let partial_file =
        sealed_path.with_file_name(format!("{}.partial", sealed_path.file_name().and_then(|n| n.to_str()).unwrap_or_default()));
    scan.partial_len =
        if partial.is_empty() { std::fs::metadata(&partial_file).map(|m| m.len()).unwrap_or(0) } else { partial.len() as u64 };
    scan
}
