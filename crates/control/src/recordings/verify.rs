//! `recordings verify`: checks a session's segments offline, from their stored bytes alone,
//! with the nodes' public keys (no data key, no server). Each segment's hash chain and
//! signature, then the order between them: each names the one before by its hash, the first
//! names none, the last ends the recording. The trail's `RecordingSegmentSealed` records, when
//! given, must name the same hashes. Every problem names its segment.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use super::format::{self, Parsed};

/// One stored segment: the name it was found under, and its bytes.
pub struct SegmentFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// What the check found, a line per segment and per problem.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub valid: bool,
    pub segments: usize,
    /// Segments sealed after their recorder stopped (a crash): valid, but their last seconds lost.
    pub incomplete: Vec<u64>,
}

/// The trail's records of a recording's sealed segments: each segment's SHA-256 as recorded
/// (more than one when records disagree).
pub type Sealings = BTreeMap<u64, Vec<String>>;

/// Checks `files` (in the order of their names) as the whole recording of `session_id`.
/// `keys` finds a public key by its fingerprint; `sealed` is what the trail recorded of each
/// segment (`None`: the trail is not consulted, and nothing shows a cut tail).
pub fn verify(session_id: &str, files: &[SegmentFile], keys: &dyn Fn(&str) -> Option<VerifyingKey>, sealed: Option<&Sealings>) -> Report {
    let mut report = Report { valid: true, segments: files.len(), ..Report::default() };
    let problem = |report: &mut Report, line: String| {
        report.valid = false;
        report.lines.push(line);
    };
    if files.is_empty() {
        problem(&mut report, format!("session {session_id}: no segment to check"));
        return report;
    }
    let mut previous: Option<String> = None;
    let mut last_ends = false;
    for (position, file) in files.iter().enumerate() {
        let position = position as u64;
        let sha = hex::encode(Sha256::digest(&file.bytes));
        let parsed = match format::parse(&file.bytes) {
            Ok(parsed) => parsed,
            Err(err) => {
                problem(&mut report, format!("segment {position} ({}): {err}", file.name));
                previous = Some(sha);
                last_ends = false;
                continue;
            }
        };
        let header = &parsed.header;
        let mut problems = Vec::new();
        if header.session_id != session_id {
            problems.push(format!("it belongs to session {}", header.session_id));
        }
        if header.segment != position {
            problems.push(if header.segment > position {
                format!("it holds segment {}: segment {position} is missing or out of order", header.segment)
            } else {
                format!("it holds segment {}: segments are out of order or repeated", header.segment)
            });
        }
        if position > 0 && header.prev_segment_sha256 != previous {
            problems.push(
                "it does not follow the segment before it (the hash it names differs): a segment was removed, swapped or changed".into(),
            );
        } else if position == 0 && header.prev_segment_sha256.is_some() {
            problems.push("it names a segment before it, but it is the first here: an earlier segment is missing".into());
        }
        problems.extend(check_segment(&parsed, &file.bytes, keys));
        if let Some(sealed) = sealed {
            match sealed.get(&header.segment).map(Vec::as_slice) {
                None | Some([]) => problems.push("the trail has no record of its sealing".into()),
                Some([recorded]) if *recorded == sha => {}
                Some([recorded]) => problems.push(format!("its SHA-256 {sha} differs from the trail's record ({recorded})")),
                Some(several) => problems.push(format!("the trail records it sealed {} times with different hashes", several.len())),
            }
        }
        last_ends = parsed.trailer.as_ref().is_some_and(|t| t.ends_recording);
        if parsed.trailer.as_ref().is_some_and(|t| !t.complete) {
            report.incomplete.push(header.segment);
        }
        if problems.is_empty() {
            let chunks = parsed.chunks.len();
            let note = if report.incomplete.last() == Some(&header.segment) { " (INCOMPLETE: sealed after a crash)" } else { "" };
            report.lines.push(format!("segment {position} ({}): valid, {chunks} chunks, SHA-256 {sha}{note}", file.name));
        }
        for line in problems {
            problem(&mut report, format!("segment {position} ({}): {line}", file.name));
        }
        previous = Some(sha);
    }
    let present = files.len() as u64;
    if let Some((&missing, _)) = sealed.and_then(|sealed| sealed.range(present..).next()) {
        problem(&mut report, format!("segment {missing}: missing (the trail records it as sealed)"));
    } else if !last_ends {
        problem(
            &mut report,
            format!("segment {}: missing, or the recording is not over (segment {} does not end it)", present, present - 1),
        );
    }
    report
}

/// What is wrong within one segment: its chain, its trailer, its signature.
fn check_segment(parsed: &Parsed, bytes: &[u8], keys: &dyn Fn(&str) -> Option<VerifyingKey>) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(problem) = &parsed.problem {
        problems.push(problem.clone());
    }
    let Some(trailer) = &parsed.trailer else {
        if parsed.problem.is_none() {
            problems.push(format!("it has no trailer: cut off after chunk {} (truncated)", parsed.chunks.len()));
        }
        return problems;
    };
    if trailer.chain != hex::encode(parsed.chain(bytes)) || trailer.chunks as usize != parsed.chunks.len() {
        problems.push("its trailer does not match its chunks (a chunk was removed or the trailer replaced)".into());
    }
    match keys(&trailer.signer) {
        None => problems.push(format!("it is signed by key {}, which no node of this trail published", trailer.signer)),
        Some(key) if !audit::verify_signature(&key, trailer.string_to_sign(&parsed.header).as_bytes(), &trailer.signature) => {
            problems.push("its signature does not verify".into())
        }
        Some(_) => {}
    }
    problems
}
