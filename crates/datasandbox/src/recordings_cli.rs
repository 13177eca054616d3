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
        RecordingsCommand::Verify { session, from, trail_dir } => {
            verify(&session, &from, &trail_dir.unwrap_or_else(|| data_dir.join("trail")))
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

/// Checks the segments in `from` against the trail under `trail_root`, offline.
fn verify(session: &str, from: &Path, trail_root: &Path) -> ExitCode {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(from) {
        Ok(entries) => entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "dsrec")).collect(),
        Err(err) => {
            eprintln!("cannot read `{}`: {err}", from.display());
            return ExitCode::FAILURE;
        }
    };
    names.sort();
    let mut files = Vec::new();
    for path in names {
        match std::fs::read(&path) {
            Ok(bytes) => files.push(control::recordings_verify::SegmentFile { name: file_name(&path), bytes }),
            Err(err) => {
                eprintln!("cannot read `{}`: {err}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let layouts = match audit::discover_layouts(trail_root) {
        Ok(layouts) => layouts,
        Err(err) => {
            eprintln!("{err}: give the trail's directory with --trail-dir");
            return ExitCode::FAILURE;
        }
    };
    let keys: BTreeMap<String, ed25519_dalek::VerifyingKey> =
        layouts.iter().filter_map(|l| audit::newest_public_key(l).ok()).map(|k| (audit::key_fingerprint(&k), k)).collect();
    let mut sealed = BTreeMap::new();
    for layout in &layouts {
        for record in audit::records_containing(layout, "\"RecordingSegmentSealed\"") {
            let parameters = &record["requestParameters"];
            if record["eventName"] == "RecordingSegmentSealed" && parameters["SessionId"] == session {
                let (Some(segment), Some(sha)) = (parameters["Segment"].as_u64(), parameters["Sha256"].as_str()) else { continue };
                sealed.insert(segment, sha.to_owned());
            }
        }
    }
    let report = control::recordings_verify::verify(session, &files, &|fingerprint| keys.get(fingerprint).copied(), &sealed);
    for line in &report.lines {
        println!("{line}");
    }
    println!(
        "Session {session}: {} segments, {} recorded in the trail: {}",
        report.segments,
        sealed.len(),
        if report.valid { "valid" } else { "INVALID" }
    );
    if report.valid { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
