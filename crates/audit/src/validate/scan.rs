//! Reading log files for validation: each file is read, decompressed, hashed and split into
//! chain links once, on every core, and the checks work from these scans.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::report::INVALID_FORMAT;
use crate::chain;
use crate::files;
use crate::layout;

const START_LOGGING: &[u8] = b"\"eventSource\":\"audit\",\"eventName\":\"StartLogging\"";

/// What validation needs of one log file, computed in one read.
pub(crate) struct LogScan {
    pub(crate) path: PathBuf,
    /// SHA-256 of the uncompressed content, as digests record it (sealed files only).
    pub(crate) content_hash: Option<String>,
    pub(crate) format_problem: Option<String>,
    /// Each record's sequence number and the previous-record hash it claims.
    pub(crate) links: Vec<(u64, [u8; 32])>,
    /// Each record line's own hash.
    pub(crate) line_hashes: Vec<[u8; 32]>,
    pub(crate) partial_len: u64,
    pub(crate) bytes: u64,
    /// Where auditing (re)started: the StartLogging record's time and the time of the record
    /// before it in this file, if any.
    pub(crate) starts: Vec<(String, Option<String>)>,
    pub(crate) last_event_time: Option<String>,
}

/// Scans the log files on every core, keeping their order.
pub(crate) fn scan_logs(paths: &[PathBuf]) -> Vec<LogScan> {
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

/// A record's `eventTime`, read without parsing the record.
fn event_time_of(line: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"eventTime\":\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let end = line[at..].iter().position(|b| *b == b'"')?;
    String::from_utf8(line[at..at + end].to_vec()).ok()
}

pub(crate) fn decode_hash(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    if hex::decode_to_slice(text, &mut out).is_err() {
        // An unparsable hash can never equal a real one: use a value no SHA-256 produces in practice.
        out = [0xff; 32];
    }
    out
}

/// The `eventTime` of record `sequence`, read again from its file.
pub(crate) fn event_time_of_record(scans: &[LogScan], sequence: u64) -> Option<String> {
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
