//! Reading, editing and validating the audit trail's files, for the trail tests and the attack
//! rows on records and on the trail itself.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::support::files::{copy_dir, walk};
use crate::support::server::{BIN, Server, eventually};

pub(crate) fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out).expect("gunzip");
    out
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

pub(crate) fn files_ending(dir: &Path, suffix: &str, part: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        walk(dir).into_iter().filter(|p| p.to_string_lossy().ends_with(suffix) && p.to_string_lossy().contains(part)).collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    files
}

pub(crate) fn log_files(trail: &Path) -> Vec<PathBuf> {
    files_ending(trail, ".json.gz", "/DataSandbox/")
}

pub(crate) fn digest_files(trail: &Path) -> Vec<PathBuf> {
    files_ending(trail, ".json.gz", "/DataSandbox-Digest/")
}

/// Rewrites the record lines of a sealed log file.
pub(crate) fn edit_log(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let text = String::from_utf8(gunzip(&std::fs::read(path).expect("read"))).expect("utf-8");
    let body = text.strip_prefix("{\"Records\":[\n").and_then(|t| t.strip_suffix("\n]}\n")).expect("sealed shape");
    let mut lines: Vec<String> = body.split(",\n").map(str::to_owned).collect();
    edit(&mut lines);
    let rebuilt = format!("{{\"Records\":[\n{}\n]}}\n", lines.join(",\n"));
    std::fs::write(path, gzip(rebuilt.as_bytes())).expect("write");
}

pub(crate) struct Validation {
    pub exit: i32,
    pub stdout: String,
}

pub(crate) fn validate(trail: &Path, public_key: &Path) -> Validation {
    let output = Command::new(BIN)
        .args(["audit", "validate", "--trail-dir"])
        .arg(trail)
        .arg("--public-key")
        .arg(public_key)
        .output()
        .expect("run validate");
    Validation { exit: output.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&output.stdout).into_owned() }
}

/// A real trail of several sealed, digested log files, from a server that stopped cleanly.
pub(crate) fn build_trail() -> (tempfile::TempDir, PathBuf) {
    let mut server = Server::start(&["audit.digest_interval_seconds=1", "audit.checkpoint_records=5"]);
    for round in 0..3 {
        for n in 0..12 {
            server.ok("parameters:PutParameter", json!({ "Name": format!("/round{round}/p{n}"), "Value": "v", "Type": "String" }));
        }
        let digests_before = digest_files(&server.data_dir().join("trail")).len();
        eventually(10, "the next digest", || (digest_files(&server.data_dir().join("trail")).len() > digests_before).then_some(()));
    }
    assert!(server.stop().success());
    let copy = tempfile::tempdir().expect("temp dir");
    copy_dir(&server.data_dir().join("trail"), copy.path());
    let key = walk(copy.path()).into_iter().find(|p| p.extension().is_some_and(|e| e == "pub")).expect("public key");
    let key_copy = copy.path().join("trail.pub");
    std::fs::copy(key, &key_copy).expect("copy key");
    (copy, key_copy)
}

/// Every record line of a trail, open and sealed files alike, read from the files themselves.
pub(crate) fn trail_lines(data_dir: &Path) -> Vec<String> {
    use std::io::Read as _;
    let mut lines = Vec::new();
    for path in walk(&data_dir.join("trail")) {
        let name = path.to_string_lossy().into_owned();
        if !name.contains("/DataSandbox/") {
            continue;
        }
        let text = if name.ends_with(".jsonl") {
            std::fs::read_to_string(&path).unwrap_or_default()
        } else if name.ends_with(".json.gz") {
            let mut out = String::new();
            let bytes = std::fs::read(&path).unwrap_or_default();
            let _ = flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut out);
            out
        } else {
            continue;
        };
        lines.extend(text.lines().map(|l| l.trim_end_matches(',').to_owned()).filter(|l| l.starts_with("{\"sequenceNumber\"")));
    }
    let sequence =
        |line: &String| -> u64 { line["{\"sequenceNumber\":".len()..].split(',').next().and_then(|n| n.parse().ok()).unwrap_or(0) };
    lines.sort_by_key(sequence);
    lines
}

/// The trail's line for a request id.
pub(crate) fn line_of(data_dir: &Path, request_id: &str) -> String {
    let needle = format!("\"requestID\":\"{request_id}\"");
    crate::support::server::eventually(10, "the request's record in the trail", || {
        trail_lines(data_dir).into_iter().find(|l| l.contains(&needle))
    })
}

/// One unsigned request to the test S3 server (moto takes them), answered whole.
fn s3_request(endpoint: &str, method: &str, target: &str) -> String {
    use std::io::{Read as _, Write as _};
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the test S3 server");
    write!(stream, "{method} {target} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 2"), "{method} {target}: {reply}");
    reply
}

/// The keys under `prefix` in a bucket of the test S3 server.
pub(crate) fn s3_keys(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let reply = s3_request(endpoint, "GET", &format!("/{bucket}?list-type=2&max-keys=1000&prefix={prefix}"));
    assert!(!reply.contains("<IsTruncated>true</IsTruncated>"), "more keys than one page");
    reply.split("<Key>").skip(1).filter_map(|part| part.split("</Key>").next()).map(str::to_owned).collect()
}

/// Deletes an object from the test S3 server, signed as any client would (moto refuses an
/// unsigned DELETE), with boto3 from the test venv that holds moto.
pub(crate) fn s3_delete(endpoint: &str, bucket: &str, key: &str) {
    let python = std::env::var("DATASANDBOX_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = "import sys, boto3\n\
                  s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\n\
                  s3.delete_object(Bucket=sys.argv[2], Key=sys.argv[3])\n";
    let out = Command::new(python).args(["-c", script, endpoint, bucket, key]).output().expect("run python");
    assert!(out.status.success(), "delete {key}: {}", String::from_utf8_lossy(&out.stderr));
}
