//! What `input()` reads in a notebook's kernel, as the trail keeps it: the answer to a password
//! prompt only as its length and SHA-256, whatever the prompt's size; any other answer whole,
//! as the code it may be (a pdb command runs Python).

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::code_audit::{kernel, read_until, reply_to};
use crate::support::http;
use crate::support::notebooks::direct_notebook_server;
use crate::support::server::eventually;

/// A cell that asks for input, in the legacy protocol.
fn asking(msg_id: &str, code: &str) -> Value {
    json!({ "channel": "shell", "header": { "msg_id": msg_id, "msg_type": "execute_request", "session": "s1", "username": "test",
        "version": "5.3", "date": "" }, "parent_header": {}, "metadata": {},
        "content": { "code": code, "silent": false, "store_history": true, "user_expressions": {}, "allow_stdin": true, "stop_on_error": true } })
}

/// Attack: a prompt over the 64 KiB the proxy reads of a kernel's frame (the user's own code
/// can print one) was not taken for a password prompt, and the password typed at it was
/// recorded in the clear.
#[test]
fn a_password_typed_at_any_prompt_is_recorded_as_its_length_and_hash_only() {
    let server = direct_notebook_server(&[]);
    let kernel = kernel(&server);
    let path = format!("{}api/kernels/{}/channels", kernel.base, kernel.id);
    let mut socket = http::websocket(&kernel.at, &path, &kernel.cookie, None, Duration::from_secs(30)).expect("ws");
    // (cell, what it runs, what is typed, whether the kernel asks for a password). The long
    // prompt comes after one that asked for no password, as the proxy last read.
    let cases = [
        ("short", "import getpass; getpass.getpass('Password: ')", "hunter2-short-7f1c", true),
        ("plain", "input('Name: ')", "nora-answer-3c9b", false),
        ("long", "import getpass; getpass.getpass('P' * 100_000 + ': ')", "hunter2-long-8e2d", true),
    ];
    for (cell, code, typed, password) in cases {
        socket.send(tungstenite::Message::Text(asking(cell, code).to_string().into())).expect("send");
        let asked = read_until(&mut socket, |m| m["header"]["msg_type"] == "input_request").pop().expect("the prompt");
        assert_eq!(asked["content"]["password"], password, "{cell}: the kernel's prompt");
        let answer = json!({ "channel": "stdin", "header": { "msg_id": format!("{cell}-typed"), "msg_type": "input_reply", "session": "s1",
            "username": "test", "version": "5.3", "date": "" }, "parent_header": asked["header"], "metadata": {}, "content": { "value": typed } });
        socket.send(tungstenite::Message::Text(answer.to_string().into())).expect("send");
        let reply = reply_to(&mut socket, cell, "execute_reply");
        assert_eq!(reply["content"]["status"], "ok", "{cell}: {reply}");
    }
    // The answer's record, by the message that carried it.
    let typed_record = |event: &str, cell: &str| {
        eventually(10, &format!("the {event} record of what was typed in `{cell}`"), || {
            let records = server.audit(&[("EventName", event)]);
            records.into_iter().find(|r| r["requestParameters"]["MessageId"] == format!("{cell}-typed").as_str())
        })
    };
    for (cell, typed) in [("short", "hunter2-short-7f1c"), ("long", "hunter2-long-8e2d")] {
        let record = typed_record("KernelInput", cell);
        let kept = &record["requestParameters"];
        assert_eq!(
            (kept["InputBytes"].as_u64(), kept["InputSha256"].as_str()),
            (Some(typed.len() as u64), Some(hex::encode(Sha256::digest(typed)).as_str()))
        );
    }
    let plain = typed_record("ExecuteCode", "plain");
    assert_eq!(
        (plain["requestParameters"]["Kind"].as_str(), plain["requestParameters"]["Code"].as_str()),
        (Some("input_reply"), Some("nora-answer-3c9b"))
    );
    let lines = crate::support::trail::trail_lines(server.data_dir());
    for secret in ["hunter2-short-7f1c", "hunter2-long-8e2d"] {
        assert!(!lines.iter().any(|l| l.contains(secret)), "a password typed is in the trail: {secret}");
    }
}
