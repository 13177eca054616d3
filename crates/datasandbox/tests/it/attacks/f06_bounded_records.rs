//! Finding 6: one request must not write an unbounded record. Member names, error messages
//! and every string in a record are capped, and the reply says what was cut.

use std::path::Path;

use serde_json::{Value, json};

use crate::Server;
use crate::flows::walk;
use crate::http;

/// The largest record a request may cause.
const RECORD_LIMIT: usize = 64 * 1024;

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
    crate::server::eventually(10, "the request's record in the trail", || trail_lines(data_dir).into_iter().find(|l| l.contains(&needle)))
}

#[test]
fn f06_a_two_megabyte_member_name_writes_a_record_under_64_kib() {
    let server = Server::start(&[]);
    let huge = "A".repeat(2 * 1024 * 1024);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // A member name: serde's "unknown field" message and the parameters' summary carried it whole.
        ("member name", format!("{{\"{huge}\":1}}").into_bytes()),
        (
            "nested member name",
            json!({ "Name": "/p", "Value": "v", "Type": "String", "Tags": [{ huge.clone(): 1 }] }).to_string().into_bytes(),
        ),
        // A value quoted back in the error message.
        ("value in the message", json!({ "Name": format!("/{huge}"), "Value": "v", "Type": "String" }).to_string().into_bytes()),
    ];
    for (what, body) in cases {
        let mut connection = http::unix(&server.socket()).expect("connect");
        let reply =
            connection.request("POST", "/api/parameters/PutParameter", &[("content-type", "application/json")], &body).expect("call");
        assert_eq!(reply.status, 400, "{what}: {}", String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)]));
        let answer: Value = reply.json();
        let message = answer["Message"].as_str().expect("message");
        assert!(message.len() < 4096, "{what}: the reply's message is {} bytes", message.len());
        if what.contains("member name") {
            assert!(message.contains("bytes"), "{what}: the reply does not say what was cut: {message}");
        }
        let line = line_of(server.data_dir(), answer["RequestId"].as_str().expect("request id"));
        assert!(line.len() < RECORD_LIMIT, "{what}: the record is {} bytes", line.len());
        let record: Value = serde_json::from_str(&line).expect("record");
        assert_eq!(record["errorMessage"].as_str(), Some(message), "{what}: the record and the reply differ");
    }
}
