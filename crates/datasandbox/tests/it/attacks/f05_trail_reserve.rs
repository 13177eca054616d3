//! Finding 5 (the trail's part): filling the disk must not stop the trail. The trail keeps
//! preallocated room of its own; once it writes into it, every action is refused — and that
//! refusal is recorded — until the operator frees space, and the records of ends (the
//! server's stop) are still written.

use serde_json::json;

use crate::support::http;
use crate::support::server::Server;
use crate::support::server::eventually;
use crate::support::tmpfs::{Tmpfs, fill};
use crate::support::trail::{files_ending, validate};
use crate::support::trail::{line_of, trail_lines};

fn put(server: &Server, name: &str) -> (u16, serde_json::Value) {
    let mut connection = http::unix(&server.socket()).expect("connect");
    let reply = connection.call("parameters:PutParameter", &json!({ "Name": name, "Value": "v", "Type": "String" }), None).expect("call");
    (reply.status, reply.json())
}

#[test]
fn f05_a_full_disk_neither_silences_the_trail_nor_lets_actions_through_unrecorded() {
    let mut tmpfs = Tmpfs::mount("160m");
    let filler = tmpfs.path().join("filler");
    let mut server = Server::start_in(tmpfs.take_dir(), &["audit.checkpoint_interval_ms=50"]);
    let (status, _) = put(&server, "/f05/before");
    assert_eq!(status, 200);

    fill(&filler);
    let (status, refused) = put(&server, "/f05/while-full");
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["Code"], "ServiceUnavailable", "{refused}");
    // The refusal itself is in the trail, written from its reserve.
    let line = line_of(server.data_dir(), refused["RequestId"].as_str().expect("request id"));
    assert!(line.contains("\"errorCode\":\"ServiceUnavailable\""), "{line}");

    // Space freed: the trail takes its reserve back and actions run again.
    std::fs::remove_file(&filler).expect("free the space");
    eventually(10, "actions to run again once space is freed", || (put(&server, "/f05/after").0 == 200).then_some(()));
    // The index (which could not be written meanwhile) catches up: the refusal can be looked up.
    let request_id = refused["RequestId"].as_str().expect("request id");
    eventually(10, "the refusal in the audit index", || (server.audit(&[("RequestId", request_id)]).len() == 1).then_some(()));

    // Full again, and the server stops: the end of auditing is still recorded.
    fill(&filler);
    assert_eq!(put(&server, "/f05/full-again").0, 503);
    assert!(server.stop().success());
    let lines = trail_lines(server.data_dir());
    assert!(lines.last().is_some_and(|l| l.contains("\"eventName\":\"StopLogging\"")), "the stop is not the trail's last record");
    let trail = server.data_dir().join("trail");
    let key = files_ending(&trail, ".pub", "DataSandbox-PublicKey").pop().expect("public key");
    std::fs::remove_file(&filler).expect("free the space");
    let checked = validate(&trail, &key);
    assert_eq!(checked.exit, 0, "{}", checked.stdout);
}
