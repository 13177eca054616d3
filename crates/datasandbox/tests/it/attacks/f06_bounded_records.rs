//! Finding 6: one request must not write an unbounded record. Member names, error messages
//! and every string in a record are capped, and the reply says what was cut.

use serde_json::{Value, json};

use crate::support::http;
use crate::support::server::Server;
use crate::support::trail::line_of;

/// The largest record a request may cause.
const RECORD_LIMIT: usize = 64 * 1024;

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
