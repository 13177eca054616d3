//! `datasandbox recordings …`: list and export go through the server (auditors only, each
//! export recorded with its justification); verify works offline on an export, with the
//! nodes' public keys and the `RecordingSegmentSealed` records of a copy of the trail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::cli::{EndpointArgs, RecordingsCommand};
use crate::client::{call, fail};

pub async fn run(data_dir: &Path, command: RecordingsCommand) -> ExitCode {
    match command {
        RecordingsCommand::List { session, endpoint } => match describe(data_dir, &endpoint, &session).await {
            Ok(segments) => {
                println!("{:>7}  {:<24}  {:<24}  {:>12}  {:<10}  SHA-256", "SEGMENT", "START", "END", "BYTES", "STATE");
                for s in &segments {
                    let state = if s["Complete"] == true { "complete" } else { "INCOMPLETE" };
                    println!(
                        "{:>7}  {:<24}  {:<24}  {:>12}  {:<10}  {}",
                        s["Segment"],
                        s["StartTime"].as_str().unwrap_or_default(),
                        s["EndTime"].as_str().unwrap_or_default(),
                        s["Bytes"],
                        state,
                        s["Sha256"].as_str().unwrap_or_default()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        RecordingsCommand::Export { session, to, justification, endpoint } => {
            export(data_dir, &endpoint, &session, &to, &justification).await
        }
        RecordingsCommand::Verify { session, from, trail_dir, no_trail } => {
            verify(&session, &from, &trail_dir.unwrap_or_else(|| data_dir.join("trail")), !no_trail)
        }
    }
}

async fn describe(data_dir: &Path, endpoint: &EndpointArgs, session: &str) -> Result<Vec<Value>, ExitCode> {
    let input = Bytes::from(json!({ "SessionId": session }).to_string());
    match call(data_dir, endpoint, "streaming:DescribeRecordings", input).await {
        Ok(out) => Ok(out["Segments"].as_array().cloned().unwrap_or_default()),
        Err(err) => Err(fail(err)),
    }
}

/// Writes each stored segment, as stored, to `<to>/<segment>.dsrec`, with progress on stderr.
async fn export(data_dir: &Path, endpoint: &EndpointArgs, session: &str, to: &Path, justification: &str) -> ExitCode {
    let segments = match describe(data_dir, endpoint, session).await {
        Ok(segments) => segments,
        Err(code) => return code,
    };
    if segments.is_empty() {
        eprintln!("session {session} has no stored recording segment (was its stack recording it, and was its stream opened?)");
        return ExitCode::FAILURE;
    }
    if let Err(err) = std::fs::create_dir_all(to) {
        eprintln!("cannot create `{}`: {err}", to.display());
        return ExitCode::FAILURE;
    }
    for (done, segment) in segments.iter().enumerate() {
        let number = segment["Segment"].as_u64().unwrap_or_default();
        let input = json!({ "SessionId": session, "Segment": number, "Justification": justification });
        let out = match call(data_dir, endpoint, "streaming:ExportRecordingSegment", Bytes::from(input.to_string())).await {
            Ok(out) => out,
            Err(err) => return fail(err),
        };
        let body = base64_decode(out["Body"].as_str().unwrap_or_default());
        let path = to.join(format!("{number:06}.dsrec"));
        if let Err(err) = std::fs::write(&path, &body) {
            eprintln!("cannot write `{}`: {err}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("exported segment {number} ({} of {}, {} bytes) to {}", done + 1, segments.len(), body.len(), path.display());
    }
    println!(
        "exported {} segments of session {session} to {}; check them with `datasandbox recordings verify {session} --from {}`",
        segments.len(),
        to.display(),
        to.display()
    );
    ExitCode::SUCCESS
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
}

/// Checks the segments in `from` offline: with the public keys the trail under `trail_root`
/// publishes, and (`with_trail`) against its records of their sealing, once the trail itself
/// validates.
fn verify(session: &str, from: &Path, trail_root: &Path, with_trail: bool) -> ExitCode {
    let files = match read_segments(from) {
        Ok(files) => files,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let layouts = match audit::discover_layouts(trail_root) {
        Ok(layouts) => layouts,
        Err(err) => {
            eprintln!("{err}: give the trail's directory with --trail-dir");
            return ExitCode::FAILURE;
        }
    };
    let mut trail_valid = true;
    if with_trail {
        match audit::validate_nodes(trail_root, None, None, &audit::ValidateOptions::default()) {
            Ok(report) if report.valid => {}
            Ok(report) => {
                trail_valid = false;
                println!("The trail does not validate, so its records of this recording cannot be trusted:");
                report.lines.iter().filter(|l| l.contains("INVALID")).for_each(|l| println!("  {l}"));
            }
            Err(err) => {
                eprintln!("the trail under `{}` cannot be validated: {err}", trail_root.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let keys = published_keys(&layouts);
    let sealed = with_trail.then(|| sealings(&layouts, session));
    let report = control::recordings_verify::verify(session, &files, &|fingerprint| keys.get(fingerprint).copied(), sealed.as_ref());
    for line in &report.lines {
        println!("{line}");
    }
    let recorded =
        sealed.as_ref().map_or_else(|| "the trail not consulted (--no-trail)".to_owned(), |s| format!("{} recorded in the trail", s.len()));
    let valid = report.valid && trail_valid;
    println!("Session {session}: {} segments, {recorded}: {}", report.segments, if valid { "valid" } else { "INVALID" });
    if valid { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// The export's segments, in the order of their names.
fn read_segments(from: &Path) -> Result<Vec<control::recordings_verify::SegmentFile>, String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(from)
        .map_err(|e| format!("cannot read `{}`: {e}", from.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dsrec"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            Ok(control::recordings_verify::SegmentFile { name: file_name(&path), bytes })
        })
        .collect()
}

/// Every public key each node of the trail published, by fingerprint (a segment signed before
/// a key changed is checked with the key of its time).
fn published_keys(layouts: &[audit::Layout]) -> BTreeMap<String, ed25519_dalek::VerifyingKey> {
    let mut keys = BTreeMap::new();
    for layout in layouts {
        for entry in std::fs::read_dir(layout.public_keys()).into_iter().flatten().flatten() {
            let parsed = std::fs::read_to_string(entry.path()).ok().and_then(|text| audit::parse_public_key(&text).ok());
            if let Some(key) = parsed {
                keys.insert(audit::key_fingerprint(&key), key);
            }
        }
    }
    keys
}

/// The trail's `RecordingSegmentSealed` records of `session`: each segment's hashes.
fn sealings(layouts: &[audit::Layout], session: &str) -> control::recordings_verify::Sealings {
    let mut sealed = control::recordings_verify::Sealings::new();
    for layout in layouts {
        for record in audit::records_containing(layout, "\"RecordingSegmentSealed\"") {
            let parameters = &record["requestParameters"];
            if record["eventName"] == "RecordingSegmentSealed" && parameters["SessionId"] == session {
                let (Some(segment), Some(sha)) = (parameters["Segment"].as_u64(), parameters["Sha256"].as_str()) else { continue };
                let hashes = sealed.entry(segment).or_default();
                if !hashes.iter().any(|h| h == sha) {
                    hashes.push(sha.to_owned());
                }
            }
        }
    }
    sealed
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
