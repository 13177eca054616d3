//! Finding 13: what the trail must hold and must not hold — no secret given as a spec
//! override, the text (hash) of every policy that takes effect, and key destruction as its
//! own event. (Service events recorded before their effect, and refused when they cannot
//! be, are the rows of finding 5, which makes the trail unwritable.)

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::server::Server;
use crate::support::server::eventually;
use crate::support::trail::trail_lines;

#[test]
fn f13_a_secret_given_as_a_spec_override_never_reaches_the_trail() {
    const SECRET: &str = "f13-oidc-client-secret-4b1d";
    let server = Server::start(&["oidc.issuer=http://127.0.0.1:9", "oidc.client_id=datasandbox", &format!("oidc.client_secret={SECRET}")]);
    // The deploy of `up` is recorded with its overrides.
    let deployed = eventually(10, "the deploy's record", || {
        trail_lines(server.data_dir()).into_iter().find(|l| l.contains("\"eventName\":\"Deploy\""))
    });
    let record: Value = serde_json::from_str(&deployed).expect("record");
    let overrides = record["requestParameters"]["Overrides"].to_string();
    assert!(overrides.contains("oidc.client_id"), "the overrides' names are recorded: {overrides}");
    server.ok("parameters:PutParameter", json!({ "Name": "/f13/after", "Value": "v", "Type": "String" }));
    let leaked: Vec<String> = trail_lines(server.data_dir()).into_iter().filter(|l| l.contains(SECRET)).collect();
    assert!(leaked.is_empty(), "the client secret is in the trail:\n{}", leaked.join("\n"));
    let index = std::fs::read(server.data_dir().join("audit-index.db")).expect("index");
    assert!(!index.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the client secret is in the audit index");
}

#[test]
fn f13_the_text_of_every_policy_that_takes_effect_is_bound_by_the_trail() {
    let server = Server::start(&[]);
    let text = std::fs::read_to_string(server.data_dir().join("datasandbox.toml")).expect("spec");
    let spec = model::spec::Spec::parse(&text, &[]).expect("spec parses");
    assert!(!spec.policies.is_empty());
    let lines = eventually(10, "the policies' record", || {
        let lines = trail_lines(server.data_dir());
        lines.iter().any(|l| l.contains("PoliciesActivated")).then_some(lines)
    });
    for policy in &spec.policies {
        let hash = hex::encode(Sha256::digest(policy.text.as_bytes()));
        assert!(
            lines.iter().any(|l| l.contains(&hash)),
            "policy `{}` (SHA-256 {hash}) took effect without a record of its text",
            policy.name
        );
    }
    // The record comes before the authorizer changes: nothing is decided under unrecorded policies.
    let activated = lines.iter().position(|l| l.contains("PoliciesActivated")).expect("activated");
    let deploy = lines.iter().position(|l| l.contains("\"eventName\":\"Deploy\"")).expect("deploy");
    assert!(activated < deploy, "the policies were recorded after the deploy that applied them");
}

#[test]
fn f13_a_key_destroyed_when_its_deletion_falls_due_is_recorded_as_its_own_event() {
    let server = Server::start(&[]);
    let key = server.ok("keys:CreateKey", json!({ "Description": "f13" }));
    let key_id = key["KeyMetadata"]["KeyId"].as_str().expect("key id").to_owned();
    server.ok("keys:ScheduleKeyDeletion", json!({ "KeyId": key_id, "PendingWindowInDays": 7 }));
    // Seven days pass.
    server.sql(&format!("UPDATE keys SET deletion_date = 1 WHERE key_id = '{key_id}';"));
    // Someone else's request is what finds the deletion due.
    let described = server.call("keys:DescribeKey", &json!({ "KeyId": key_id }));
    assert_eq!(described.stderr["Code"], "NotFoundException", "{:?}", described);
    let records = eventually(10, "a record of the key's destruction", || {
        let records = server.audit(&[("EventName", "KeyDeleted")]);
        (!records.is_empty()).then_some(records)
    });
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["eventSource"], "keys");
    assert_eq!(records[0]["requestParameters"]["KeyId"], key_id.as_str());
    assert!(records[0]["errorCode"].is_null(), "{:#?}", records[0]);
}

#[test]
fn f13_a_session_connection_is_refused_when_it_cannot_be_recorded() {
    use crate::support::tmpfs::{Tmpfs, fill};
    let mut tmpfs = Tmpfs::mount("256m");
    let filler = tmpfs.path().join("filler");
    let overrides = ["stacks.datasandbox-stack.application=shell", "stream_view=DIRECT"];
    let server = Server::start_in(tmpfs.take_dir(), &overrides);
    assert_eq!(server.cli(&["image", "build", "base"], &[]).exit, 0);
    let cookie = crate::support::streaming::redeem(&server, "f13-connect");
    crate::support::streaming::active(&server, &cookie, 30);
    // The disk fills up (a notebook writing into a directory on it): the trail is on its reserve.
    fill(&filler);
    let connected = crate::support::http::websocket(
        &server.api,
        "/session/ws",
        &format!("ds_session={cookie}"),
        None,
        std::time::Duration::from_millis(500),
    );
    match connected {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503, "{response:?}"),
        Err(other) => panic!("the connection failed for another reason: {other}"),
        Ok(_) => panic!("the session's page connected while its connection could not be recorded"),
    }
    // The refusal is what the trail holds.
    let lines = trail_lines(server.data_dir());
    let refused = lines.iter().rev().find(|l| l.contains("\"eventName\":\"SessionConnected\"")).expect("a record of the connection");
    assert!(refused.contains("\"errorCode\":\"ServiceUnavailable\""), "{refused}");
    std::fs::remove_file(&filler).expect("free the space");
}

/// A client that hangs up as soon as its call is sent cannot leave an effect without its
/// record: the call runs to its end, record included, whoever is left to hear the answer.
#[test]
fn f13_a_client_that_hangs_up_mid_call_leaves_no_write_unrecorded() {
    use std::io::Write;
    let server = Server::start(&[]);
    for n in 0..60 {
        let mut stream = std::os::unix::net::UnixStream::connect(server.socket()).expect("connect");
        let body = json!({ "Bucket": "datasandbox-home", "Key": format!("f13/hangup/{n:02}"), "Body": "aGk=" }).to_string();
        let request = format!(
            "POST /api/storage/PutObject HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        // Gone at once, before any answer (some after a moment, to meet the call mid-way).
        if n % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_micros(200 * (n % 10)));
        }
        drop(stream);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let listed = server.ok("storage:ListObjectsV2", json!({ "Bucket": "datasandbox-home", "Prefix": "f13/hangup/" }));
    let written: Vec<&str> = listed["Contents"].as_array().map_or(Vec::new(), |c| c.iter().filter_map(|o| o["Key"].as_str()).collect());
    let recorded: std::collections::HashSet<String> = server
        .audit(&[("EventName", "PutObject")])
        .iter()
        .filter(|r| r.get("errorCode").is_none())
        .filter_map(|r| r["requestParameters"]["Key"].as_str().map(str::to_owned))
        .collect();
    let unrecorded: Vec<&&str> = written.iter().filter(|key| !recorded.contains(**key)).collect();
    eprintln!("{} of 60 writes whose clients hung up took effect", written.len());
    assert!(unrecorded.is_empty(), "objects written with no record of their write: {unrecorded:?}");
}

/// A caller's input with a NUL character in it (`\u0000` in its JSON) came back raw in its
/// refusal's message and in the ARN of the resource it named, and PostgreSQL's text holds no
/// NUL: on the scale-out backends such a row failed the index's whole batch, at every retry,
/// and the index took no record after it, so LookupEvents and `audit trace` lost sight of
/// whatever anyone did next. Where it reached the store, the call failed as an internal error.
/// Now every such request is refused as invalid, saying where the NUL is, alike on both
/// backends; its refusal is recorded and indexed, and so is everything after it.
#[test]
fn f13_a_nul_in_a_callers_input_is_refused_and_does_not_stop_the_index() {
    let server = Server::start(&[]);
    let token = server.token_for("f13-nul");
    let calls = [
        ("keys:DescribeKey", json!({ "KeyId": "f13\u{0}nul" }), "KeyId"),
        ("streaming:DescribeSessions", json!({ "StackName": "f13\u{0}nul", "FleetName": "f" }), "StackName"),
        (
            "audit:LookupEvents",
            json!({ "LookupAttributes": [{ "AttributeKey": "X\u{0}", "AttributeValue": "v" }] }),
            "LookupAttributes[0].AttributeKey",
        ),
    ];
    for (action, input, path) in &calls {
        let refused = server.call_as(&token, action, input);
        assert_eq!(refused.stderr["Code"], "ValidationException", "{action}: {refused:?}");
        let message = refused.stderr["Message"].as_str().expect("a message");
        assert!(message.contains("NUL") && message.contains(&format!("`{path}`")), "{action}: {message}");
    }
    // The operator's writes and reads, which reached the store.
    let put = server.call("parameters:PutParameter", &json!({ "Name": "/f13/nul", "Value": "a\u{0}b", "Type": "String" }));
    assert_eq!(put.stderr["Code"], "ValidationException", "{put:?}");
    let listed = server.call("storage:ListObjectsV2", &json!({ "Bucket": "datasandbox-home", "Prefix": "a\u{0}" }));
    assert_eq!(listed.stderr["Code"], "ValidationException", "{listed:?}");
    // NULs hidden in what the server decodes: a pagination token, a ciphertext's key id, a
    // sign-in's name (each reached the store, and failed there as an internal error).
    let token_of_nul = server.call("storage:ListObjectsV2", &json!({ "Bucket": "datasandbox-home", "ContinuationToken": "AA" }));
    assert_eq!(token_of_nul.stderr["Code"], "ValidationException", "{token_of_nul:?}");
    let sessions = server.call("streaming:DescribeSessions", &json!({ "StackName": "s", "FleetName": "f", "NextToken": "MSAA" }));
    assert_eq!(sessions.stderr["Code"], "ValidationException", "{sessions:?}");
    let mut blob = b"DSK1\x03a\0b\x00\x00\x00\x01".to_vec();
    blob.extend([7u8; 48]);
    let decrypted = server.call("keys:Decrypt", &json!({ "CiphertextBlob": crate::support::server::b64(&blob) }));
    assert_eq!(decrypted.stderr["Code"], "InvalidCiphertextException", "{decrypted:?}");
    let endpoint = format!("http://{}", server.api);
    let sign_in = json!({ "UserName": "f13\u{0}", "Password": "correct horse battery staple" }).to_string();
    let signed_in = server.cli(&["call", "identity:SignIn", "--input", &sign_in, "--endpoint", &endpoint], &[]);
    assert_eq!(signed_in.stderr["Code"], "NotAuthorizedException", "{signed_in:?}");
    server.ok("parameters:PutParameter", json!({ "Name": "/f13/after-nul", "Value": "v", "Type": "String" }));
    let after = eventually(20, "the record of the write after the NULs in the index", || {
        let records = server.audit(&[("EventName", "PutParameter")]);
        records.into_iter().find(|r| r["requestParameters"]["Name"] == "/f13/after-nul")
    });
    assert!(after["errorCode"].is_null(), "{after:#}");
    // Each refusal is recorded with what the caller sent, NUL and all, and found.
    let refusal = server.audit(&[("EventName", "DescribeKey")]).into_iter().find(|r| r["requestParameters"]["KeyId"] == "f13\u{0}nul");
    let refusal = refusal.expect("the DescribeKey refusal in the index");
    assert_eq!(refusal["errorCode"], "ValidationException", "{refusal:#}");
    let by_user = server.audit(&[("Username", "f13-nul")]);
    let refused: Vec<&str> =
        by_user.iter().filter(|r| r["errorCode"] == "ValidationException").filter_map(|r| r["eventName"].as_str()).collect();
    assert_eq!(refused.len(), calls.len(), "{by_user:#?}");
}
