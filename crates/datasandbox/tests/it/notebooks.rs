//! The seed's session flow end to end, against a real Jupyter server: streaming URL → launcher
//! → `session.json` → session validator → `session_url.txt` → the session-bound notebook URL →
//! the proxied Jupyter on its own origin, a kernel computing over its WebSocket, and the
//! end of access with the session. Then the validator's spoofing table.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::http;
use crate::support::notebooks::direct_notebook_server;
use crate::support::server::Server;
use crate::support::server::{b64, eventually, unb64};
use crate::support::streaming::{expire, redeem, status};

/// A GET to `at` (the gateway's main address, or the notebook origin's).
pub(crate) fn get(at: &str, path: &str, cookie: &str) -> http::Reply {
    http::tcp(at).expect("connect").request("GET", path, &[("cookie", cookie)], b"").expect("request")
}

pub(crate) fn send(at: &str, method: &str, path: &str, cookie: &str, body: &Value) -> http::Reply {
    http::tcp(at)
        .expect("connect")
        .request(method, path, &[("cookie", cookie), ("content-type", "application/json")], body.to_string().as_bytes())
        .expect("request")
}

/// Opens the session's notebook URL with its cookie on the main origin, which hands the
/// notebook over to the notebook origin; returns that origin's address, the notebook's path
/// there and its cookie.
pub(crate) fn open_notebook(server: &Server, session_cookie: &str, url: &str) -> (String, String, String) {
    let path = &url[url.find("/notebook-auth/").expect("a notebook URL")..];
    let reply = get(&server.api, path, &format!("ds_session={session_cookie}"));
    assert_eq!(reply.status, 303, "{}", String::from_utf8_lossy(&reply.body));
    let location = |reply: &http::Reply| reply.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone()).expect("location");
    let handoff = location(&reply);
    assert!(!reply.headers.iter().any(|(n, _)| n == "set-cookie"), "the main origin sets no notebook cookie");
    let rest = handoff.strip_prefix("http://").expect("the notebook origin");
    let (address, open) = rest.split_at(rest.find('/').expect("a path"));
    assert_ne!(address, server.api, "notebooks are served from an origin of their own");
    let reply = get(address, open, "");
    assert_eq!(reply.status, 303, "{}", String::from_utf8_lossy(&reply.body));
    let cookie =
        reply.headers.iter().find(|(n, _)| n == "set-cookie").and_then(|(_, v)| v.split(';').next().map(str::to_owned)).expect("cookie");
    // The code works once.
    assert_eq!(get(address, open, "").status, 403);
    (address.to_owned(), location(&reply).trim_end_matches("lab").to_owned(), cookie)
}

fn notebook_url(server: &Server, cookie: &str) -> String {
    eventually(180, "the notebook URL on the session page", || status(server, cookie)["NotebookUrl"].as_str().map(str::to_owned))
}

/// Runs code in a kernel over the proxied WebSocket; returns its `text/plain` result.
pub(crate) fn execute(at: &str, base: &str, cookie: &str, kernel: &str, code: &str) -> String {
    let path = format!("{base}api/kernels/{kernel}/channels");
    let mut socket = http::websocket(at, &path, cookie, None, Duration::from_secs(30)).expect("kernel WebSocket through the proxy");
    let message = json!({
        "header": { "msg_id": "m1", "username": "test", "session": "s1", "msg_type": "execute_request", "version": "5.3", "date": "" },
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": { "code": code, "silent": false, "store_history": false, "user_expressions": {}, "allow_stdin": false, "stop_on_error": true },
    });
    socket.send(tungstenite::Message::Text(message.to_string().into())).expect("send");
    // The result comes on iopub and the reply on shell: two kernel sockets the server merges
    // in no fixed order. Iopub's `idle` follows the result on the same socket, so the call is
    // over once both the reply and that `idle` have come.
    let (mut result, mut replied, mut idle) = (String::new(), false, false);
    while !(replied && idle) {
        let text = match socket.read() {
            Ok(tungstenite::Message::Text(text)) => text,
            Ok(_) => continue,
            Err(e) => panic!("the kernel's channel ended before the reply and idle came (reply {replied}, idle {idle}): {e}"),
        };
        let reply: Value = serde_json::from_str(&text).expect("JSON");
        if reply["parent_header"]["msg_id"] != "m1" {
            continue;
        }
        match reply["header"]["msg_type"].as_str() {
            Some("execute_result") => result = reply["content"]["data"]["text/plain"].as_str().unwrap_or_default().to_owned(),
            Some("error") => panic!("the kernel failed: {}", reply["content"]),
            Some("execute_reply") if reply["content"]["status"] != "ok" => panic!("the kernel failed: {}", reply["content"]),
            Some("execute_reply") => replied = true,
            Some("status") if reply["content"]["execution_state"] == "idle" => idle = true,
            _ => {}
        }
    }
    result
}

/// The token of the Jupyter server that serves `base` (`/notebook/<name>/`), read by the host
/// through that server's root.
fn jupyter_token(base: &str) -> String {
    let pid = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.starts_with(b"/opt/jupyter/bin/python\0") && String::from_utf8_lossy(&cmdline).contains(base)
        })
        .expect("the notebook's Jupyter server");
    let token = std::fs::read_to_string(format!("/proc/{pid}/root/run/datasandbox/jupyter-token")).expect("the token");
    assert_eq!(token.trim().len(), 64, "the token: {token}");
    token.trim().to_owned()
}

#[test]
fn a_streaming_url_leads_to_a_working_notebook_and_access_ends_with_the_session() {
    let server = direct_notebook_server(&[]);
    // A DIRECT notebook stack cannot pretend to hold file transfers.
    let refused = server.call(
        "streaming:UpdateStack",
        &json!({ "Name": "datasandbox-stack", "UserSettings": [{ "Action": "FILE_UPLOAD", "Permission": "DISABLED" }] }),
    );
    assert_eq!(refused.stderr["Code"], "ValidationException", "{:?}", refused.stderr);
    let cookie = redeem(&server, "nora");
    let url = notebook_url(&server, &cookie);
    let session = status(&server, &cookie);
    let (nb, base, notebook_cookie) = open_notebook(&server, &cookie, &url);
    // The main origin serves no notebook.
    assert_eq!(get(&server.api, &format!("{base}api/status"), &notebook_cookie).status, 404);
    let reply = get(&nb, &format!("{base}api/status"), &notebook_cookie);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    // Jupyter's token reaches no page (review finding: JupyterLab's page config and Jupyter's
    // templates, its 404 page among them, carried it for every request the proxy made).
    let token = jupyter_token(&base);
    for (page, status) in [("lab", 200), ("lab/tree/data.csv", 200), ("no-such-page", 404)] {
        let reply = get(&nb, &format!("{base}{page}"), &notebook_cookie);
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, status, "{page}: {text}");
        assert!(text.contains("<html") || text.contains("<!DOCTYPE"), "{page} is a page: {text}");
        assert!(!text.contains(&token), "{page} carries Jupyter's token");
    }
    // The launcher ended with the notebook, and says so.
    let instance = session["InstanceId"].as_str().expect("instance");
    eventually(10, "the launcher's last word", || {
        let log = server.cli(&["instances", "exec", instance, "--", "/bin/cat", "/tmp/launcher.log"], &[]);
        log.stdout.as_str().is_some_and(|l| l.contains("your notebook is ready")).then_some(())
    });

    // A kernel computes, through the proxied WebSocket.
    let kernel = send(&nb, "POST", &format!("{base}api/kernels"), &notebook_cookie, &json!({ "name": "python3" }));
    assert_eq!(kernel.status, 201, "{}", String::from_utf8_lossy(&kernel.body));
    let kernel = kernel.json()["id"].as_str().expect("kernel id").to_owned();
    // The main origin's pages (and any other origin's) cannot drive the notebook.
    let main_origin = format!("http://{}", server.api);
    let foreign = http::tcp(&nb)
        .expect("connect")
        .request(
            "POST",
            &format!("{base}api/kernels"),
            &[("cookie", &notebook_cookie), ("origin", &main_origin), ("content-type", "application/json")],
            b"{}",
        )
        .expect("request");
    assert_eq!(foreign.status, 403, "{}", String::from_utf8_lossy(&foreign.body));
    assert_eq!(execute(&nb, &base, &notebook_cookie, &kernel, "6*7"), "42");
    execute(&nb, &base, &notebook_cookie, &kernel, "open('/home/user/work/data.csv', 'w').write('PLAINTEXT-MARKER-7341,1\\n')");

    // The notebook itself works: a notebook saved and read back through the contents API.
    let notebook = json!({ "type": "notebook", "content": { "cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5 } });
    assert_eq!(send(&nb, "PUT", &format!("{base}api/contents/analysis.ipynb"), &notebook_cookie, &notebook).status, 201);
    assert_eq!(get(&nb, &format!("{base}api/contents/analysis.ipynb"), &notebook_cookie).status, 200);
    // The volume is a disk of the notebook's size (the template's 20 GB): its file system, not
    // the host's, is what the notebook fills.
    let listed = server.ok("streaming:DescribeInstances", json!({}));
    let notebook_instance = listed["Instances"]
        .as_array()
        .expect("instances")
        .iter()
        .find(|i| i["ImageName"] == "datasandbox-notebook" && i["State"] == "RUNNING")
        .and_then(|i| i["InstanceId"].as_str())
        .expect("the notebook's instance")
        .to_owned();
    let df = server.cli(&["instances", "exec", &notebook_instance, "--", "df", "-B1", "--output=size", "/home/user/work"], &[]);
    let size: u64 = df.stdout.as_str().and_then(|t| t.lines().nth(1)).and_then(|l| l.trim().parse().ok()).expect("df's size");
    assert!((19 * 1024 * 1024 * 1024..=20 * 1024 * 1024 * 1024).contains(&size), "volume size {size}");
    // Jupyter's terminals are off for a stack that does not enable them: the proxy refuses.
    let terminal = send(&nb, "POST", &format!("{base}api/terminals"), &notebook_cookie, &json!({}));
    assert_eq!(terminal.status, 403, "{}", String::from_utf8_lossy(&terminal.body));
    assert!(String::from_utf8_lossy(&terminal.body).contains("(TERMINAL)"), "{}", String::from_utf8_lossy(&terminal.body));

    // The notebook URL works once, and only with its session's cookie.
    assert_eq!(get(&server.api, &url[url.find("/notebook-auth/").expect("path")..], &format!("ds_session={cookie}")).status, 403);

    // The session ends: so does notebook access, at once, though the proxy had just passed the
    // cookie's checks (it reuses them for a second, never past a session's change).
    assert_eq!(get(&nb, &format!("{base}api/status"), &notebook_cookie).status, 200);
    expire(&server, &session);
    let reply = get(&nb, &format!("{base}api/status"), &notebook_cookie);
    assert_eq!(reply.status, 403);

    // One correlation id from the URL's redemption to the notebook's kernel and the end.
    eventually(20, "the SessionEnded record", || Some(()).filter(|()| !server.audit(&[("EventName", "SessionEnded")]).is_empty()));
    let traced = server.cli(&["audit", "trace", "--user", "nora", "--json"], &[]);
    let text = match &traced.stdout {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    for name in
        ["RedeemStreamingURL", "PutObject", "SessionValidated", "RedeemPresignedNotebookInstanceUrl", "NotebookRequest", "SessionEnded"]
    {
        assert!(text.contains(&format!(":{name}\"")), "{name} missing from the trace: {text}");
    }
    let by_correlation = server.audit(&[("EventName", "SessionValidated")]);
    let id = by_correlation[0]["correlationId"].as_str().expect("correlation id");
    // Every kind of record under that one id (a query, since status polls can be thousands).
    let query = format!("SELECT DISTINCT event_name FROM events WHERE correlation_id = '{id}'");
    let found = server.cli(&["audit", "query", &query, "--json"], &[]);
    let chain = match &found.stdout {
        Value::String(text) => text.lines().map(|l| serde_json::from_str::<Value>(l).expect("json line")).collect::<Vec<_>>(),
        one => vec![one.clone()],
    };
    for name in [
        "RedeemStreamingURL",
        "PutObject",
        "SessionValidated",
        "CreatePresignedNotebookInstanceUrl",
        "RedeemPresignedNotebookInstanceUrl",
        "NotebookRequest",
        "SessionEnded",
    ] {
        assert!(chain.iter().any(|r| r["event_name"] == name), "{name} is not under the session's correlation id: {chain:?}");
    }

    // Stopped, the notebook's volume holds no plaintext on the host.
    let name = base.trim_start_matches("/notebook/").trim_end_matches('/').to_owned();
    server.ok("notebooks:StopNotebookInstance", json!({ "NotebookInstanceName": name }));
    eventually(30, "the notebook to stop", || {
        let described = server.ok("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": name }));
        (described["NotebookInstanceStatus"] == "Stopped").then_some(())
    });
    let dir = server.data_dir().join("notebooks").join(&name);
    let grep = std::process::Command::new("grep").args(["-r", "-l", "PLAINTEXT-MARKER-7341"]).arg(&dir).output().expect("grep");
    assert!(grep.stdout.is_empty(), "plaintext on the host disk: {}", String::from_utf8_lossy(&grep.stdout));
    let disk = std::fs::metadata(dir.join("volume.img")).expect("the volume's disk");
    assert_eq!(disk.len(), 20 * 1024 * 1024 * 1024, "the template's 20 GB");
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    assert!(!mounts.contains(dir.to_str().expect("utf-8")), "a stopped notebook's volume is not mounted: {mounts}");
}

/// Writes `session.json` from inside an instance, as that instance, into `key`.
fn write_from(server: &Server, instance: &str, key: &str, body: &[u8]) {
    assert_eq!(put_from(server, instance, key, body), json!(200), "{key}");
}

/// `PutObject` from inside an instance; the HTTP status.
fn put_from(server: &Server, instance: &str, key: &str, body: &[u8]) -> Value {
    let input = json!({ "Bucket": "datasandbox-home", "Key": key, "Body": b64(body) });
    let script = format!(
        "E=$(tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^DS_ENDPOINT=//p'); curl -s -o /dev/null -w '%{{http_code}}' -H \"Authorization: Bearer $(cat /run/datasandbox/credential)\" --data-binary @- $E/api/storage/PutObject <<'EOF'\n{input}\nEOF"
    );
    server.cli(&["instances", "exec", instance, "--", "/bin/bash", "-c", &script], &[]).stdout
}

fn home(user: &str) -> String {
    format!("user/custom/{}/", hex::encode(Sha256::digest(user.as_bytes())))
}

/// The validator's answer in a folder: the error code, or `OK`.
fn answer(server: &Server, folder: &str) -> String {
    eventually(60, "the validator's answer", || {
        let error =
            server.call("storage:GetObject", &json!({ "Bucket": "datasandbox-home", "Key": format!("{folder}session_error.json") }));
        if error.exit == 0 {
            let body: Value = serde_json::from_slice(&unb64(error.stdout["Body"].as_str().expect("body"))).expect("JSON");
            server.ok("storage:DeleteObject", json!({ "Bucket": "datasandbox-home", "Key": format!("{folder}session_error.json") }));
            return Some(body["Error"].as_str().expect("code").to_owned());
        }
        let url = server.call("storage:GetObject", &json!({ "Bucket": "datasandbox-home", "Key": format!("{folder}session_url.txt") }));
        // Each answer is taken away once read, so that the next case waits for its own.
        (url.exit == 0).then(|| {
            server.ok("storage:DeleteObject", json!({ "Bucket": "datasandbox-home", "Key": format!("{folder}session_url.txt") }));
            "OK".to_owned()
        })
    })
}

#[test]
fn an_expired_notebook_url_is_refused() {
    // One timeout second lasts 10 ms: the 5-minute notebook URL lasts 3 s; the session stays.
    let server = direct_notebook_server(&[
        "streaming.timeout_scale_ms=10",
        "fleets.datasandbox-fleet.disconnect_timeout=36000",
        "fleets.datasandbox-fleet.idle_disconnect_timeout=0",
    ]);
    let cookie = redeem(&server, "oona");
    let url = notebook_url(&server, &cookie);
    std::thread::sleep(Duration::from_millis(3500));
    let reply = get(&server.api, &url[url.find("/notebook-auth/").expect("path")..], &format!("ds_session={cookie}"));
    assert_eq!(reply.status, 403);
    assert!(String::from_utf8_lossy(&reply.body).contains("ExpiredNotebookURL"), "{}", String::from_utf8_lossy(&reply.body));
    let record = server.audit(&[("EventName", "RedeemPresignedNotebookInstanceUrl")]);
    assert_eq!(record[0]["errorCode"], "ExpiredNotebookURL");
}

#[test]
fn the_session_validator_rejects_every_spoof_with_a_reason() {
    // Launchers are not started for these sessions' users' folders here: the test writes the
    // files itself, from inside the instances, as the instances.
    let server = direct_notebook_server(&["fleet_type=ALWAYS_ON", "fleets.datasandbox-fleet.desired_instances=3"]);
    eventually(60, "warm instances", || {
        let fleets = server.ok("streaming:DescribeFleets", json!({}));
        (fleets["Fleets"][0]["ComputeCapacityStatus"]["Available"] == 3).then_some(())
    });
    let alice_cookie = redeem(&server, "alice");
    let alice = status(&server, &alice_cookie);
    let bob_cookie = redeem(&server, "bob");
    let bob = status(&server, &bob_cookie);
    // Let each launcher's own run finish first.
    for folder in [home("alice"), home("bob")] {
        answer(&server, &folder);
    }
    let a_instance = alice["InstanceId"].as_str().expect("instance");
    let claim = |user: &str, session: &Value| json!({ "UserName": user, "SessionId": session["SessionId"], "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet", "AccessMode": "custom" });
    let key = |user: &str| format!("{}session.json", home(user));
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        ("claims another user, in own folder", key("alice"), claim("bob", &bob).to_string().into_bytes(), "NOT_OWN_FOLDER"),
        ("another user's session id", key("alice"), claim("alice", &bob).to_string().into_bytes(), "UNKNOWN_SESSION"),
        (
            "another stack",
            key("alice"),
            {
                let mut c = claim("alice", &alice);
                c["StackName"] = json!("other-stack");
                c.to_string().into_bytes()
            },
            "UNKNOWN_SESSION",
        ),
        ("malformed JSON", key("alice"), b"{\"UserName\": ".to_vec(), "MALFORMED_SESSION_FILE"),
        (
            "wrongly typed JSON",
            key("alice"),
            br#"{"UserName": 7, "SessionId": [], "StackName": 1, "FleetName": 2, "AccessMode": 3}"#.to_vec(),
            "MALFORMED_SESSION_FILE",
        ),
        ("huge JSON", key("alice"), format!("{{\"UserName\": \"{}\"}}", "x".repeat(40_000)).into_bytes(), "MALFORMED_SESSION_FILE"),
        ("the genuine file", key("alice"), claim("alice", &alice).to_string().into_bytes(), "OK"),
    ];
    for (what, key, body, expected) in cases {
        write_from(&server, a_instance, &key, &body);
        assert_eq!(answer(&server, &home("alice")), expected, "{what}");
        let _ = server
            .call("storage:DeleteObject", &json!({ "Bucket": "datasandbox-home", "Key": format!("{}session_url.txt", home("alice")) }));
    }
    // Written into another user's folder: storage refuses it (on the record), so no validator
    // ever answers into bob's folder.
    assert_eq!(put_from(&server, a_instance, &key("bob"), claim("alice", &alice).to_string().as_bytes()), json!(403));
    let refused = server.audit(&[("EventName", "PutObject")]);
    assert!(
        refused.iter().any(|r| r["errorCode"] == "AccessDeniedException" && r["requestParameters"]["Key"] == key("bob").as_str()),
        "the refused write is on the record"
    );
    // A session's notebook URL opens only in that session's browser, once.
    let url = eventually(60, "alice's notebook URL", || status(&server, &alice_cookie)["NotebookUrl"].as_str().map(str::to_owned));
    let path = &url[url.find("/notebook-auth/").expect("path")..];
    let stolen = get(&server.api, path, &format!("ds_session={bob_cookie}"));
    assert_eq!(stolen.status, 403);
    assert!(String::from_utf8_lossy(&stolen.body).contains("NotebookURLBoundToAnotherSession"));
    assert_eq!(get(&server.api, path, &format!("ds_session={alice_cookie}")).status, 303);
    let replayed = get(&server.api, path, &format!("ds_session={alice_cookie}"));
    assert!(String::from_utf8_lossy(&replayed.body).contains("NotebookURLAlreadyUsed"));
    // Written by someone other than the session's instance: the operator.
    server.ok(
        "storage:PutObject",
        json!({ "Bucket": "datasandbox-home", "Key": key("alice"), "Body": b64(claim("alice", &alice).to_string().as_bytes()) }),
    );
    assert_eq!(answer(&server, &home("alice")), "WRITTEN_BY_ANOTHER_INSTANCE");
    // An ended session.
    expire(&server, &bob);
    let c_cookie = redeem(&server, "carol");
    let carol = status(&server, &c_cookie);
    answer(&server, &home("carol"));
    write_from(&server, carol["InstanceId"].as_str().expect("instance"), &key("carol"), claim("carol", &bob).to_string().as_bytes());
    assert_eq!(answer(&server, &home("carol")), "UNKNOWN_SESSION");
    // Bob's own ended session (its instance is gone; the operator writes the file): told apart
    // from a session that never was.
    server.ok(
        "storage:PutObject",
        json!({ "Bucket": "datasandbox-home", "Key": key("bob"), "Body": b64(claim("bob", &bob).to_string().as_bytes()) }),
    );
    assert_eq!(answer(&server, &home("bob")), "SESSION_EXPIRED");
    // A session still waiting for an instance (PENDING): alice's third, with the fleet full.
    eventually(60, "a free warm instance", || {
        let fleets = server.ok("streaming:DescribeFleets", json!({}));
        (fleets["Fleets"][0]["ComputeCapacityStatus"]["Available"] == 1).then_some(())
    });
    redeem(&server, "alice");
    answer(&server, &home("alice"));
    let _ =
        server.call("storage:DeleteObject", &json!({ "Bucket": "datasandbox-home", "Key": format!("{}session_url.txt", home("alice")) }));
    let waiting_cookie = redeem(&server, "alice");
    let waiting = status(&server, &waiting_cookie);
    assert_eq!(waiting["State"], "PENDING");
    write_from(&server, a_instance, &key("alice"), claim("alice", &waiting).to_string().as_bytes());
    assert_eq!(answer(&server, &home("alice")), "SESSION_NOT_ACTIVE");
    // Every rejection is on the record with its reason.
    let rejected = server.audit(&[("EventName", "SessionRejected")]);
    assert!(rejected.len() >= 7, "{}", rejected.len());
    assert!(rejected.iter().all(|r| r["requestParameters"]["Reason"].is_string()));
}
