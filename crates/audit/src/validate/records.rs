//! The record chain: every record's hash chained to the one before it across every log file,
//! sealed or still open, held against the signed checkpoints; and the coverage check that
//! every record up to the newest signature is signed.

use chrono::{DateTime, Utc};

use super::checkpoints::SignedCheckpoints;
use super::report::{Reporter, location, parse_name_time};
use super::scan::{LogScan, decode_hash, event_time_of_record};
use crate::layout::{GENESIS_HASH, Layout};

/// Unsigned records are accepted only at the end of the trail and within this span of the
/// first of them: the writer checkpoints within `audit.checkpoint_interval_ms` (at most a
/// second) of any record unless it stopped, so more than this was signed and the signatures
/// were removed.
const UNSIGNED_TAIL: chrono::TimeDelta = chrono::TimeDelta::seconds(3);

/// Where the record chain ends, and what walking it found besides per-file verdicts.
pub(crate) struct RecordChain {
    pub(crate) last_sequence: u64,
    last_hash: [u8; 32],
    /// The last log file's location and name time, where problems at the end are reported.
    last_location: Option<(String, Option<DateTime<Utc>>)>,
    last_event_time: Option<String>,
    /// Spans in which auditing was off, one line each.
    pub(crate) gaps: Vec<String>,
    pub(crate) bytes_checked: u64,
}

/// Walks every log file in order, reporting one verdict per file, then reports records a
/// signed checkpoint covers but no file holds (a truncated trail).
pub(crate) fn check_records(
    layout: &Layout,
    scans: &[LogScan],
    checkpoints: &SignedCheckpoints,
    reporter: &mut Reporter<'_>,
) -> RecordChain {
    let mut chain = RecordChain {
        last_sequence: 0,
        last_hash: decode_hash(GENESIS_HASH),
        last_location: None,
        last_event_time: None,
        gaps: Vec::new(),
        bytes_checked: 0,
    };
    for scan in scans {
        chain.check_log(layout, scan, checkpoints, reporter);
    }
    if let Some(checkpoint) = &checkpoints.newest
        && checkpoint.sequence_number > chain.last_sequence
    {
        let (loc, time) = chain.last_location.clone().unwrap_or_else(|| (format!("s3://{}/{}", layout.bucket, checkpoint.log_file), None));
        reporter.file(
            "Log file",
            &loc,
            time,
            &[format!(
                "INVALID: truncated: records {}..={} are covered by a signed checkpoint of {} but missing",
                chain.last_sequence + 1,
                checkpoint.sequence_number,
                checkpoint.checkpoint_time
            )],
        );
    }
    chain
}

impl RecordChain {
    /// One log file: where auditing restarted in it, whether its records continue the chain,
    /// and a note for a record whose write never completed.
    fn check_log(&mut self, layout: &Layout, scan: &LogScan, checkpoints: &SignedCheckpoints, reporter: &mut Reporter<'_>) {
        for (started, before) in &scan.starts {
            if let Some(stopped) = before.clone().or_else(|| self.last_event_time.clone()) {
                self.gaps.push(format!("Auditing was off between {stopped} and {started}: no record, log file or digest covers that time"));
            }
        }
        if scan.last_event_time.is_some() {
            self.last_event_time.clone_from(&scan.last_event_time);
        }
        let loc = location(layout, &scan.path);
        let time = parse_name_time(&scan.path);
        self.bytes_checked += scan.bytes;
        let problems = self.link_problems(scan, checkpoints);
        if let (Some((sequence, _)), Some(hash)) = (scan.links.last(), scan.line_hashes.last()) {
            self.last_sequence = self.last_sequence.max(*sequence);
            self.last_hash = *hash;
        }
        if scan.partial_len > 0 {
            reporter.note(
                "Log file",
                &loc,
                &format!("partial record at the end: {} bytes whose write never completed (never acknowledged)", scan.partial_len),
            );
        }
        reporter.file("Log file", &loc, time, &problems);
        self.last_location = Some((loc, time));
    }

    /// What is wrong with a file's records as a continuation of the chain so far: a format
    /// problem, sequence numbers that do not follow on, or a record whose hash another
    /// record or a signed checkpoint contradicts.
    fn link_problems(&self, scan: &LogScan, checkpoints: &SignedCheckpoints) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(problem) = &scan.format_problem {
            problems.push(problem.clone());
            return problems;
        }
        if scan.links.is_empty() {
            return problems;
        }
        let expected = self.last_sequence + 1;
        let sequences: Vec<u64> = scan.links.iter().map(|(sequence, _)| *sequence).collect();
        let consecutive = sequences.iter().enumerate().all(|(i, s)| *s == expected + i as u64);
        if !consecutive {
            problems.push(classify_sequence_problem(&sequences, expected));
            return problems;
        }
        for (index, (sequence, previous_hash)) in scan.links.iter().enumerate() {
            let actual_previous = if index == 0 { self.last_hash } else { scan.line_hashes[index - 1] };
            if *previous_hash != actual_previous {
                let previous_checkpointed =
                    checkpoints.by_sequence.get(&(sequence - 1)).is_some_and(|c| decode_hash(&c.record_hash) == actual_previous);
                let modified = if previous_checkpointed { *sequence } else { sequence - 1 };
                problems.push(format!("INVALID: record {modified} has been modified"));
                break;
            }
            if let Some(checkpoint) = checkpoints.by_sequence.get(sequence)
                && decode_hash(&checkpoint.record_hash) != scan.line_hashes[index]
            {
                problems.push(format!("INVALID: record {sequence} does not match its signed checkpoint (the records were rewritten)"));
                break;
            }
        }
        problems
    }
}

/// Coverage: every record up to the newest signature (checkpoint or digest) is signed through
/// the chain; records after it are accepted only as the few seconds' tail a crash leaves.
pub(crate) fn check_coverage(
    scans: &[LogScan],
    checkpoints: &SignedCheckpoints,
    digest_signed_through: u64,
    chain: &RecordChain,
    reporter: &mut Reporter<'_>,
) {
    let signed = checkpoints.signed_through().max(digest_signed_through);
    let last_sequence = chain.last_sequence;
    if last_sequence <= signed {
        return;
    }
    let (loc, time) = chain.last_location.clone().unwrap_or_default();
    let first = event_time_of_record(scans, signed + 1).and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
    let last = chain.last_event_time.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let crash_tail = signed > 0 && matches!((first, last), (Some(first), Some(last)) if last - first <= UNSIGNED_TAIL);
    let range = format!("records {}..={last_sequence}", signed + 1);
    if crash_tail {
        reporter.note(
            "Log file",
            &loc,
            &format!("{range} are not signed yet: written within seconds before the trail stopped or was read (as a crash leaves them)"),
        );
    } else {
        reporter.file(
            "Log file",
            &loc,
            time,
            &[format!("INVALID: {range} are not covered by any signature (no checkpoint or digest signs them: signatures were removed)")],
        );
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
