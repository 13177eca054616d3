//! The executed-code audit, against a real Jupyter server behind the notebook proxy: a cell
//! gives the same `ExecuteCode` record under the legacy protocol and under
//! `v1.kernel.websocket.jupyter.org`, its reply's status and count join it by message id, a
//! 5 MiB cell sent in fragments is hashed whole, and what the proxy cannot read as Jupyter
//! does is refused and closes the socket, unrun.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::notebooks::{execute, open_notebook, send};
use crate::support::http;
use crate::support::notebooks::direct_notebook_server;
use crate::support::server::{Server, eventually};
use crate::support::streaming::{redeem, status};
use crate::support::tmpfs::{Tmpfs, fill};

/// A session's notebook, opened on its origin, and a kernel started there.
pub(crate) struct Kernel {
    pub(crate) at: String,
    pub(crate) base: String,
    pub(crate) cookie: String,
    pub(crate) id: String,
    session: String,
}

pub(crate) fn kernel(server: &Server) -> Kernel {
    let cookie = redeem(server, "nora");
    let url = eventually(180, "the notebook URL", || status(server, &cookie)["NotebookUrl"].as_str().map(str::to_owned));
    let session = status(server, &cookie)["SessionId"].as_str().expect("session id").to_owned();
    let (at, base, notebook_cookie) = open_notebook(server, &cookie, &url);
    let started = send(&at, "POST", &format!("{base}api/kernels"), &notebook_cookie, &json!({ "name": "python3" }));
    assert_eq!(started.status, 201, "{}", String::from_utf8_lossy(&started.body));
    let id = started.json()["id"].as_str().expect("kernel id").to_owned();
    Kernel { at, base, cookie: notebook_cookie, id, session }
}

fn execute_request(msg_id: &str, code: &str) -> [Value; 4] {
    [
        json!({ "msg_id": msg_id, "username": "test", "session": "s1", "msg_type": "execute_request", "version": "5.3", "date": "" }),
        json!({}),
        json!({ "cellId": "cell-1" }),
        json!({ "code": code, "silent": false, "store_history": true, "user_expressions": {}, "allow_stdin": false, "stop_on_error": true }),
    ]
}

/// The parts of a v1 frame: channel, then header, parent header, metadata, content.
fn v1_parts(frame: &[u8]) -> Vec<&[u8]> {
    let word = |at: usize| u64::from_le_bytes(frame[at..at + 8].try_into().expect("8 bytes")) as usize;
    let count = word(0);
    let offsets: Vec<usize> = (0..count).map(|i| word(8 * (i + 1))).collect();
    offsets.windows(2).map(|w| &frame[w[0]..w[1]]).collect()
}

/// Runs `code` over the v1 protocol (in 64 KiB fragments when `fragmented`); the reply's
/// content.
fn execute_v1(kernel: &Kernel, msg_id: &str, code: &str, fragmented: bool) -> Value {
    let path = format!("{}api/kernels/{}/channels", kernel.base, kernel.id);
    let mut socket = http::websocket(&kernel.at, &path, &kernel.cookie, Some(control::V1_PROTOCOL), Duration::from_secs(120))
        .expect("kernel WebSocket through the proxy");
    let [header, parent, metadata, content] = execute_request(msg_id, code);
    let frame = control::v1_frame("shell", [&header, &parent, &metadata, &content]);
    if fragmented {
        let pieces: Vec<&[u8]> = frame.chunks(64 << 10).collect();
        for (index, piece) in pieces.iter().enumerate() {
            let opcode = if index == 0 { OpCode::Data(Data::Binary) } else { OpCode::Data(Data::Continue) };
            let part = Frame::message(piece.to_vec(), opcode, index + 1 == pieces.len());
            socket.send(tungstenite::Message::Frame(part)).expect("send a fragment");
        }
    } else {
        socket.send(tungstenite::Message::Binary(frame.into())).expect("send");
    }
    v1_reply(&mut socket, msg_id, "execute_reply")
}

/// The content of the `msg_type` answer to `msg_id` on a v1-protocol kernel socket.
fn v1_reply(socket: &mut tungstenite::WebSocket<std::net::TcpStream>, msg_id: &str, msg_type: &str) -> Value {
    loop {
        let frame = match socket.read() {
            Ok(tungstenite::Message::Binary(frame)) => frame,
            Ok(_) => continue,
            Err(err) => panic!("the kernel's channel ended before the reply: {err}"),
        };
        let parts = v1_parts(&frame);
        let header: Value = serde_json::from_slice(parts[1]).expect("header");
        let parent: Value = serde_json::from_slice(parts[2]).expect("parent header");
        if parent["msg_id"] == msg_id && header["msg_type"] == msg_type {
            return serde_json::from_slice(parts[4]).expect("content");
        }
    }
}

/// The record of one kind for a message id, once it is in the index.
fn record(server: &Server, event: &str, msg_id: &str) -> Value {
    eventually(10, &format!("the {event} record of {msg_id}"), || {
        server.audit(&[("EventName", event)]).into_iter().find(|r| r["requestParameters"]["MessageId"] == msg_id)
    })
}

#[test]
fn every_cell_is_recorded_before_it_runs_under_both_protocols_and_its_result_joins_it() {
    let server = direct_notebook_server(&["stacks.datasandbox-stack.user_settings.DEBUGGER=ENABLED"]);
    let kernel = kernel(&server);

    // The same cell, once on each protocol.
    assert_eq!(execute(&kernel.at, &kernel.base, &kernel.cookie, &kernel.id, "6*7"), "42");
    let reply = execute_v1(&kernel, "v1-cell", "6*7", false);
    assert_eq!(reply["status"], "ok", "{reply}");
    let legacy = record(&server, "ExecuteCode", "m1");
    let v1 = record(&server, "ExecuteCode", "v1-cell");
    let (legacy_asked, v1_asked) = (&legacy["requestParameters"], &v1["requestParameters"]);
    for field in
        ["Kind", "Code", "CodeBytes", "CodeSha256", "CodeTruncated", "Silent", "KernelId", "UserId", "SessionId", "NotebookInstanceName"]
    {
        assert_eq!(legacy_asked[field], v1_asked[field], "{field}: {legacy_asked} vs {v1_asked}");
    }
    assert_eq!((v1_asked["Code"].as_str(), v1_asked["Kind"].as_str()), (Some("6*7"), Some("execute_request")));
    assert_eq!(v1_asked["CodeSha256"], hex::encode(Sha256::digest(b"6*7")));
    assert_eq!((v1_asked["KernelId"].as_str(), v1_asked["SessionId"].as_str()), (Some(kernel.id.as_str()), Some(kernel.session.as_str())));
    assert_eq!((legacy_asked["Protocol"].as_str(), v1_asked["Protocol"].as_str()), (Some("legacy"), Some(control::V1_PROTOCOL)));
    assert_eq!(v1_asked["CellId"], "cell-1", "the client's cell id, as it claims it");
    // The reply's status and count join the record by message id; outputs are never recorded.
    let result = record(&server, "ExecuteCodeResult", "v1-cell");
    assert_eq!(result["requestParameters"]["Status"], "ok");
    assert_eq!(result["requestParameters"]["ExecutionCount"], reply["execution_count"]);
    execute(&kernel.at, &kernel.base, &kernel.cookie, &kernel.id, "print('OUTPUT-' + 'MARKER-9f3e')");
    let lines = crate::support::trail::trail_lines(server.data_dir());
    assert!(lines.iter().any(|l| l.contains("print('OUTPUT-' + 'MARKER-9f3e')")), "the cell is in the trail");
    assert!(!lines.iter().any(|l| l.contains("OUTPUT-MARKER-9f3e")), "an output is in the trail");
    // Recorded before it ran: the request's record precedes its result's.
    assert!(v1["eventTime"].as_str() <= result["eventTime"].as_str());

    // A 5 MiB cell, sent in 64 KiB fragments, is hashed whole; the record keeps its start.
    let big = format!("x = '{}'\nlen(x)", "a".repeat(5 << 20));
    let reply = execute_v1(&kernel, "big-cell", &big, true);
    assert_eq!(reply["status"], "ok", "{reply}");
    let asked = record(&server, "ExecuteCode", "big-cell")["requestParameters"].clone();
    assert_eq!(asked["CodeBytes"], big.len());
    assert_eq!(asked["CodeSha256"], hex::encode(Sha256::digest(big.as_bytes())));
    assert_eq!(asked["CodeTruncated"], true);
    // Its first 64 KiB, in the pieces the trail keeps whole: the first in the record, the
    // others in the records that follow it.
    let mut texts: Vec<Value> = server
        .audit(&[("EventName", "ExecuteCodeText")])
        .into_iter()
        .filter(|r| r["requestParameters"]["MessageId"] == "big-cell")
        .collect();
    texts.sort_by_key(|t| t["requestParameters"]["From"].as_u64());
    let mut kept = asked["Code"].as_str().expect("code").to_owned();
    for text in &texts {
        kept.extend(text["requestParameters"]["Parts"].as_array().expect("parts").iter().map(|p| p.as_str().expect("a piece")));
    }
    assert_eq!(kept.as_str(), &big[..64 << 10]);

    // A cell whose text would erase the trace's line above it, printed raw, and reverse what
    // follows (attack).
    execute(&kernel.at, &kernel.base, &kernel.cookie, &kernel.id, "x = 1  # \u{1b}[1A\u{1b}[2K\u{202e}hidden");

    // The session's timeline shows the code in order with everything else.
    let traced = server.cli(&["audit", "trace", "--session", &kernel.session], &[]);
    let text = traced.stdout.as_str().map_or_else(|| traced.stdout.to_string(), str::to_owned);
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("`{needle}` is not in the trace: {text}"));
    assert!(at("[m1] 6*7") < at("[m1] ok #0") && at("[m1] ok #0") < at("[v1-cell] 6*7"), "{text}");
    assert!(!text.contains(['\u{1b}', '\u{202e}']), "a terminal's control sequence printed raw: {text:?}");
    at(r"x = 1  # \u{1b}[1A\u{1b}[2K\u{202e}hidden");
    // The status polls that waited for the notebook are one line with their count; `--all`
    // shows each.
    assert!(text.contains("streaming:GetSessionStatus ×"), "{text}");
    let all = server.cli(&["audit", "trace", "--session", &kernel.session, "--all"], &[]);
    let all = all.stdout.as_str().map_or_else(|| all.stdout.to_string(), str::to_owned);
    assert!(!all.contains(" ×") && all.lines().count() > text.lines().count(), "{all}");

    // The stack enables the debugger: the kernel and its spec say it has one, as they came.
    assert_eq!(kernel_info(&kernel)["content"]["supported_features"], json!(["kernel subshells", "debugger"]));
    assert_eq!(spec_says_debugger(&kernel), [json!(true), json!(true)]);
    // It starts. Every debugger request is recorded whole
    // (several carry code); one whose content is a string (which the kernel would decode into
    // the request) is refused.
    debugger_starts(&kernel);
    let path = format!("{}api/kernels/{}/channels", kernel.base, kernel.id);
    let mut socket = http::websocket(&kernel.at, &path, &kernel.cookie, None, Duration::from_secs(30)).expect("ws");
    let content = json!({ "seq": 1, "type": "request", "command": "evaluate", "arguments": { "expression": "secret_probe_17" } });
    let debug = |content: &Value| json!({ "channel": "control", "header": { "msg_id": "dbg-1", "msg_type": "debug_request" }, "parent_header": {}, "metadata": {}, "content": content });
    socket.send(tungstenite::Message::Text(debug(&content).to_string().into())).expect("send");
    let evaluate = record(&server, "ExecuteCode", "dbg-1");
    assert_eq!(evaluate["requestParameters"]["Kind"], "debug:evaluate");
    assert!(evaluate["requestParameters"]["Code"].as_str().is_some_and(|c| c.contains("secret_probe_17")), "{evaluate}");
    socket.send(tungstenite::Message::Text(debug(&json!(content.to_string())).to_string().into())).expect("send");
    assert_eq!(close_code(&mut socket), Some(1008), "a content sent as a string");

    // A module planted in the notebook's folder does not run when a kernel starts there.
    let plant = json!({ "type": "file", "format": "text", "content": "open('/home/user/work/planted.txt', 'w').write('ran')\n" });
    let put = send(&kernel.at, "PUT", &format!("{}api/contents/ipykernel_launcher.py", kernel.base), &kernel.cookie, &plant);
    assert!(put.status == 200 || put.status == 201, "{}", String::from_utf8_lossy(&put.body));
    let opened = json!({ "path": "probe.ipynb", "type": "notebook", "name": "", "kernel": { "name": "python3" } });
    let opened = send(&kernel.at, "POST", &format!("{}api/sessions", kernel.base), &kernel.cookie, &opened);
    assert_eq!(opened.status, 201, "{}", String::from_utf8_lossy(&opened.body));
    let beside = opened.json()["kernel"]["id"].as_str().expect("kernel id").to_owned();
    // (It starts in that folder, where `python -m` would look first.)
    assert_eq!(execute(&kernel.at, &kernel.base, &kernel.cookie, &beside, "import os; os.getcwd()"), "'/home/user/work'");
    let planted = execute(&kernel.at, &kernel.base, &kernel.cookie, &beside, "import os; os.path.exists('/home/user/work/planted.txt')");
    assert_eq!(planted, "False", "the planted launcher ran at the kernel's start");

    // What Jupyter would not read as the proxy does is refused, unrun, and the socket closes.
    let mut socket = http::websocket(&kernel.at, &path, &kernel.cookie, Some(control::V1_PROTOCOL), Duration::from_secs(30)).expect("ws");
    socket.send(tungstenite::Message::Text("{\"header\": {\"msg_type\": \"execute_request\"}}".into())).expect("send");
    assert_eq!(close_code(&mut socket), Some(1008));
    let refused = eventually(10, "the refusal's record", || server.audit(&[("EventName", "KernelMessageRefused")]).into_iter().next());
    assert_eq!(refused["errorCode"], "ValidationException", "{refused}");
    // An apply_request (a pickled function) is refused too.
    let mut socket = http::websocket(&kernel.at, &path, &kernel.cookie, None, Duration::from_secs(30)).expect("ws");
    let apply = json!({ "channel": "shell", "header": { "msg_id": "a1", "msg_type": "apply_request" }, "parent_header": {}, "metadata": {}, "content": {} });
    socket.send(tungstenite::Message::Text(apply.to_string().into())).expect("send");
    assert_eq!(close_code(&mut socket), Some(1008));
}

/// Reads until the server closes the socket (30 s at most: pings would keep a read waiting for
/// ever); the close code.
pub(crate) fn close_code(socket: &mut tungstenite::WebSocket<std::net::TcpStream>) -> Option<u16> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < deadline, "the socket was not closed within 30 s");
        match socket.read() {
            Ok(tungstenite::Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(err) => panic!("the socket ended without a close frame: {err}"),
        }
    }
}

#[test]
fn a_cell_whose_record_cannot_be_written_is_dropped_unrun_and_the_socket_closes() {
    // The trail on a small file system of its own, which the test fills.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("trail")).expect("trail dir");
    let tmpfs = Tmpfs::mount_at(&dir.path().join("trail"), "64m");
    let server = crate::support::notebooks::direct_notebook_server_in(dir, &["audit.checkpoint_interval_ms=50"]);
    let kernel = kernel(&server);
    assert_eq!(execute(&kernel.at, &kernel.base, &kernel.cookie, &kernel.id, "6*7"), "42");
    execute(&kernel.at, &kernel.base, &kernel.cookie, &kernel.id, "open('/home/user/work/held.txt', 'w').write('HELD-MARKER-5521')");

    // A socket open before the trail fills (once it is full, opening one is refused too).
    let path = format!("{}api/kernels/{}/channels", kernel.base, kernel.id);
    let mut socket = http::websocket(&kernel.at, &path, &kernel.cookie, Some(control::V1_PROTOCOL), Duration::from_secs(30)).expect("ws");
    let filler = tmpfs.path().join("filler");
    fill(&filler);
    let [header, parent, metadata, content] = execute_request("unrecorded", "open('/home/user/work/ran.txt', 'w').write('ran')");
    socket.send(tungstenite::Message::Binary(control::v1_frame("shell", [&header, &parent, &metadata, &content]).into())).expect("send");
    assert_eq!(close_code(&mut socket), Some(1011), "the socket closes as the record fails");
    // A read goes to Jupyter while its record is written, but its answer waits for the record:
    // unrecorded, the file's content never reaches the browser.
    let read = crate::notebooks::get(&kernel.at, &format!("{}api/contents/held.txt", kernel.base), &kernel.cookie);
    assert_eq!(read.status, 503, "{}", String::from_utf8_lossy(&read.body));
    assert!(!String::from_utf8_lossy(&read.body).contains("HELD-MARKER-5521"), "an unrecorded read was answered");

    // Space back: the cell never ran, and the next one runs and is recorded.
    std::fs::remove_file(&filler).expect("free the space");
    let ran = eventually(20, "the proxy to answer again", || {
        let reply = crate::notebooks::get(&kernel.at, &format!("{}api/contents/ran.txt", kernel.base), &kernel.cookie);
        (reply.status != 503).then_some(reply.status)
    });
    assert_eq!(ran, 404, "the unrecorded cell ran");
    // The trail says so: the cell's record is the refusal, written from its reserve.
    let refused: Vec<Value> =
        server.audit(&[("EventName", "ExecuteCode")]).into_iter().filter(|r| r["requestParameters"]["MessageId"] == "unrecorded").collect();
    assert!(refused.iter().all(|r| r["errorCode"] == "ServiceUnavailable"), "{refused:#?}");
    assert_eq!(execute_v1(&kernel, "after", "1+1", false)["status"], "ok");
    record(&server, "ExecuteCode", "after");
}

/// Jupyter's terminals: off unless the stack enables `TERMINAL`, and then every line typed is
/// recorded (`notebooks:TerminalInput`) before the shell has it.
#[test]
fn terminals_open_only_where_the_stack_allows_them_and_every_line_typed_is_recorded() {
    let server = direct_notebook_server(&["stacks.datasandbox-stack.user_settings.TERMINAL=ENABLED"]);
    let nora = kernel(&server);
    let line = "echo term-marker-$((6*7))\r";
    let terminal = type_in_terminal(&nora, line, |seen| seen.contains("term-marker-42")).0;
    let typed = server.audit(&[("EventName", "TerminalInput")]);
    assert_eq!(typed.len(), 1, "{typed:#?}");
    let parameters = &typed[0]["requestParameters"];
    assert_eq!(parameters["Code"], line, "{parameters}");
    assert_eq!((&parameters["TerminalName"], &parameters["SessionId"]), (&json!(terminal), &json!(nora.session)), "{parameters}");
    assert_eq!(parameters["CodeSha256"], hex::encode(Sha256::digest(line.as_bytes())));
    assert!(!typed[0].to_string().contains("term-marker-42"), "the terminal's output reached the trail");

    // Once the stack turns them off, a new session does not reach them, though its notebook's
    // server (the same, still running) has them: refused by the proxy, and recorded.
    let off = json!({ "Name": "datasandbox-stack", "UserSettings": [{ "Action": "TERMINAL", "Permission": "DISABLED" }] });
    server.ok("streaming:UpdateStack", off);
    let cookie = redeem(&server, "nora");
    let url = eventually(180, "the new session's notebook URL", || status(&server, &cookie)["NotebookUrl"].as_str().map(str::to_owned));
    let (at, base, notebook_cookie) = open_notebook(&server, &cookie, &url);
    let refused = send(&at, "POST", &format!("{base}api/terminals"), &notebook_cookie, &json!({}));
    assert_eq!(refused.status, 403, "{}", String::from_utf8_lossy(&refused.body));
    let records = server.audit(&[("EventName", "NotebookRequest")]);
    assert!(records.iter().any(|r| r["requestParameters"]["Path"] == "api/terminals" && r["errorCode"].is_string()), "{records:#?}");
}

/// What a kernel's or a terminal's code finds when it looks for a way around the proxy: the
/// server's token, socket and memory, the kernels' connection files, memory and ports, a
/// kernel spec or links it plants for the server, the debugger's port — each refused, while
/// both kernels compute.
#[test]
fn the_users_code_reaches_no_connection_file_no_kernel_port_and_not_the_server() {
    let server = direct_notebook_server(&["stacks.datasandbox-stack.user_settings.TERMINAL=ENABLED"]);
    let nora = kernel(&server);
    let other = send(&nora.at, "POST", &format!("{}api/kernels", nora.base), &nora.cookie, &json!({ "name": "python3" }));
    assert_eq!(other.status, 201, "{}", String::from_utf8_lossy(&other.body));
    let other = other.json()["id"].as_str().expect("kernel id").to_owned();
    assert_eq!(execute(&nora.at, &nora.base, &nora.cookie, &other, "6*7"), "42");
    let found = execute(&nora.at, &nora.base, &nora.cookie, &nora.id, PROBE);
    let found: Value = serde_json::from_str(found.trim_matches('\'')).expect("the probe's JSON");
    assert_eq!(found["groups"], json!([1000, 1000, 1000]), "the kernel kept another group: {found}");
    for door in ["token", "run", "socket", "server_environ", "server_mem", "server_fds"] {
        assert_eq!(found[door], "PermissionError", "{door} was open to the kernel: {found}");
    }
    assert_eq!(found["servers"], 1, "{found}");
    assert_eq!(found["connection_files"], json!([]), "{found}");
    assert!(found["ports"].as_u64().is_some_and(|n| n >= 10), "two kernels' ports were expected: {found}");
    assert_eq!(found["reached"], json!([]), "the kernel reached kernel ports: {found}");
    assert_eq!(found["siblings"], 1, "the other kernel was expected: {found}");
    assert_eq!(found["sibling_fds"], "PermissionError", "another kernel's files were open to the kernel: {found}");
    assert_eq!(found["sibling_mem"], "PermissionError", "another kernel's memory was open to the kernel: {found}");
    assert_eq!(found["cwd"], "/home/user/work", "{found}");

    // What the kernel plants for the server: a kernel spec where Jupyter and IPython look for
    // them, and links in the notebook's folder to the server's files.
    execute(&nora.at, &nora.base, &nora.cookie, &nora.id, PLANT);
    let planted = send(&nora.at, "POST", &format!("{}api/kernels", nora.base), &nora.cookie, &json!({ "name": "planted" }));
    assert!(planted.status >= 400, "the server started a planted kernel spec: {}", String::from_utf8_lossy(&planted.body));
    let specs = crate::notebooks::get(&nora.at, &format!("{}api/kernelspecs", nora.base), &nora.cookie).json();
    assert_eq!(
        specs["kernelspecs"].as_object().map(|k| k.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["python3".to_owned()]),
        "{specs}"
    );
    let logo = crate::notebooks::get(&nora.at, &format!("{}kernelspecs/python3/logo-svg.svg", nora.base), &nora.cookie);
    assert_eq!(logo.status, 200, "the platform's kernel has no logo for JupyterLab's launcher");
    for path in ["token", "runtime/jpserver-2.json", "config"] {
        let read = crate::notebooks::get(&nora.at, &format!("{}api/contents/{path}?content=1", nora.base), &nora.cookie);
        assert_ne!(read.status, 200, "the server read {path} through a link: {}", String::from_utf8_lossy(&read.body));
        let copy = send(&nora.at, "POST", &format!("{}api/contents/", nora.base), &nora.cookie, &json!({ "copy_from": path }));
        assert!(copy.status >= 400, "the server copied {path} through a link: {}", String::from_utf8_lossy(&copy.body));
    }
    // What the browser asks the server to start: only the platform's kernel, and a terminal's
    // own shell; and no route climbs out of its directory.
    let commanded = json!({ "shell_command": ["/opt/jupyter/bin/python", "-c", "open('/home/user/work/ran', 'w')"] });
    let terminal = send(&nora.at, "POST", &format!("{}api/terminals", nora.base), &nora.cookie, &commanded);
    assert_eq!(terminal.status, 403, "a terminal with a command of the browser's: {}", String::from_utf8_lossy(&terminal.body));
    let other = send(&nora.at, "POST", &format!("{}api/kernels", nora.base), &nora.cookie, &json!({ "name": "python3", "kernel_id": "x" }));
    assert_eq!(other.status, 403, "a kernel id of the browser's: {}", String::from_utf8_lossy(&other.body));
    let climbing = format!("{}lab/api/settings/..%2F..%2F..%2F..%2F..%2F..%2F..%2Frun%2Fjupyter%2Fruntime:jpserver-2", nora.base);
    let climbed = crate::notebooks::get(&nora.at, &climbing, &nora.cookie);
    assert_eq!(climbed.status, 403, "a settings path out of its directory: {}", String::from_utf8_lossy(&climbed.body));
    // Deleting works (no trash, which the server would find through links).
    let deleted = send(&nora.at, "DELETE", &format!("{}api/contents/spec.json", nora.base), &nora.cookie, &json!({}));
    assert_eq!(deleted.status, 204, "{}", String::from_utf8_lossy(&deleted.body));
    execute(&nora.at, &nora.base, &nora.cookie, &nora.id, "import json; json.dump({}, open('/home/user/work/spec.json', 'w'))");
    let renamed =
        send(&nora.at, "PATCH", &format!("{}api/contents/spec.json", nora.base), &nora.cookie, &json!({ "path": "config/spec.json" }));
    assert!(renamed.status >= 400, "the server moved a file through a link: {}", String::from_utf8_lossy(&renamed.body));

    // The debugger is off for this stack: the kernel has no debugpy to start, and the proxy
    // refuses a debug request, answering as the kernel would (a failed reply, then idle, under
    // the kernel's session) with the socket left open. JupyterLab asks whenever a kernel says it
    // has a debugger, which every kernel says once any stack enables it: a closed socket would
    // break the notebook.
    assert_eq!(found["debugger"], false, "{found}");
    let path = format!("{}api/kernels/{}/channels", nora.base, nora.id);
    let mut socket = http::websocket(&nora.at, &path, &nora.cookie, None, Duration::from_secs(30)).expect("kernel WebSocket");
    socket.send(tungstenite::Message::Text(kernel_info_request("before-debug").to_string().into())).expect("send");
    let before = reply_to(&mut socket, "before-debug", "kernel_info_reply");
    socket.send(tungstenite::Message::Text(debug_initialize().to_string().into())).expect("send");
    let reply = reply_to(&mut socket, "dbg-init", "debug_reply");
    assert_eq!(
        (&reply["channel"], &reply["content"]["success"], &reply["content"]["command"]),
        (&json!("control"), &json!(false), &json!("initialize"))
    );
    assert!(reply["content"]["message"].as_str().is_some_and(|m| m.contains("(DEBUGGER)")), "{reply}");
    assert_eq!(reply["header"]["session"], before["header"]["session"], "the answer comes under the kernel's session");
    // The socket still reaches the kernel; the request did not (the kernel would have said it
    // was busy with it, then idle: only the proxy's idle is there).
    socket.send(tungstenite::Message::Text(kernel_info_request("after-debug").to_string().into())).expect("send");
    let mut heard = read_until(&mut socket, |m| m["content"]["execution_state"] == "idle" && m["parent_header"]["msg_id"] == "after-debug");
    // The reply and the status come on different channels, in either order.
    let is_reply = |m: &Value| m["header"]["msg_type"] == "kernel_info_reply" && m["parent_header"]["msg_id"] == "after-debug";
    if !heard.iter().any(is_reply) {
        heard.extend(read_until(&mut socket, is_reply));
    }
    let replied = heard.iter().find(|m| m["header"]["msg_type"] == "kernel_info_reply" && m["parent_header"]["msg_id"] == "after-debug");
    assert_eq!(replied.map(|m| &m["content"]["status"]), Some(&json!("ok")), "{heard:?}");
    let of_debug: Vec<&Value> = heard.iter().filter(|m| m["parent_header"]["msg_id"] == "dbg-init").collect();
    assert!(
        of_debug.len() == 1 && of_debug[0]["header"]["msg_type"] == "status" && of_debug[0]["header"]["username"] == "datasandbox",
        "{of_debug:?}"
    );
    let refused = server.audit(&[("EventName", "KernelMessageRefused")]);
    assert!(
        refused.iter().any(|r| r["errorMessage"].as_str().is_some_and(|m| m.contains("(DEBUGGER)"))
            && r["requestParameters"]["Command"] == "initialize"
            && r["requestParameters"]["MessageId"] == "dbg-init"),
        "{refused:#?}"
    );

    // A terminal's shell is in the workspace group alone, and reads nothing of the server's.
    let line = "echo door-$(id -G | tr ' ' +)-$(cat /run/datasandbox/jupyter-token /run/jupyter/runtime/*.json 2>/dev/null | wc -c)-end\r";
    let seen = type_in_terminal(&nora, line, |seen| seen.contains("-end") && seen.contains("door-1")).1;
    assert!(seen.contains("door-1000-0-end"), "the terminal's shell: {seen}");
}

/// Where one stack enables the debugger, every kernel has one (the notebook server starts
/// them all alike) and says so; a session of another stack is told its kernel has none, in
/// either protocol, so that JupyterLab does not offer a debugger the proxy would refuse.
#[test]
fn a_kernel_is_said_to_have_no_debugger_where_the_sessions_stack_does_not_enable_it() {
    let server = direct_notebook_server(&[
        "stacks.debugging-stack.user_settings.DEBUGGER=ENABLED",
        "stacks.debugging-stack.user_settings.FILE_DOWNLOAD=ENABLED",
    ]);
    let kernel = kernel(&server);
    let has =
        execute(&kernel.at, &kernel.base, &kernel.cookie, &kernel.id, "__import__('ipykernel.debugger').debugger._is_debugpy_available");
    assert_eq!(has, "True", "the kernel was expected to have the debugger another stack enables");
    let said = kernel_info(&kernel);
    assert_eq!(
        (&said["content"]["status"], &said["content"]["supported_features"]),
        (&json!("ok"), &json!(["kernel subshells"])),
        "{said}"
    );
    assert_eq!(said["content"]["implementation"], "ipython", "the rest of the reply as it came: {said}");
    // JupyterLab 4 reads it from the kernel's spec; the spec's own file is not served.
    assert_eq!(spec_says_debugger(&kernel), [json!(false), json!(false)]);
    let file = crate::notebooks::get(&kernel.at, &format!("{}kernelspecs/python3/kernel.json", kernel.base), &kernel.cookie);
    assert_eq!(file.status, 403, "{}", String::from_utf8_lossy(&file.body));
    // Output that only says the words reaches the browser as printed, small or large.
    let said = execute(&kernel.at, &kernel.base, &kernel.cookie, &kernel.id, "'kernel_info_reply ' * 8000");
    assert_eq!(said, format!("'{}'", "kernel_info_reply ".repeat(8000)));

    let path = format!("{}api/kernels/{}/channels", kernel.base, kernel.id);
    let mut socket = http::websocket(&kernel.at, &path, &kernel.cookie, Some(control::V1_PROTOCOL), Duration::from_secs(30)).expect("ws");
    let request = kernel_info_request("v1-info");
    let frame = control::v1_frame("shell", [&request["header"], &request["parent_header"], &request["metadata"], &request["content"]]);
    socket.send(tungstenite::Message::Binary(frame.into())).expect("send");
    let content = v1_reply(&mut socket, "v1-info", "kernel_info_reply");
    assert_eq!((&content["status"], &content["supported_features"]), (&json!("ok"), &json!(["kernel subshells"])), "{content}");
}

/// What the kernel specs the browser gets say of the debugger: in the listing, and alone.
fn spec_says_debugger(kernel: &Kernel) -> [Value; 2] {
    let listing = crate::notebooks::get(&kernel.at, &format!("{}api/kernelspecs", kernel.base), &kernel.cookie).json();
    let alone = crate::notebooks::get(&kernel.at, &format!("{}api/kernelspecs/python3", kernel.base), &kernel.cookie).json();
    [listing["kernelspecs"]["python3"]["spec"]["metadata"]["debugger"].clone(), alone["spec"]["metadata"]["debugger"].clone()]
}

/// The kernel's `kernel_info_reply`, as the browser gets it over the legacy protocol.
fn kernel_info(kernel: &Kernel) -> Value {
    let path = format!("{}api/kernels/{}/channels", kernel.base, kernel.id);
    let mut socket = http::websocket(&kernel.at, &path, &kernel.cookie, None, Duration::from_secs(30)).expect("kernel WebSocket");
    socket.send(tungstenite::Message::Text(kernel_info_request("info").to_string().into())).expect("send");
    reply_to(&mut socket, "info", "kernel_info_reply")
}

/// Opens a terminal in the kernel's notebook, types `line` and reads its output until `done`
/// says so (30 s at most): the terminal's name and what it printed.
fn type_in_terminal(kernel: &Kernel, line: &str, done: impl Fn(&str) -> bool) -> (String, String) {
    let created = send(&kernel.at, "POST", &format!("{}api/terminals", kernel.base), &kernel.cookie, &json!({}));
    assert_eq!(created.status, 200, "{}", String::from_utf8_lossy(&created.body));
    let terminal = created.json()["name"].as_str().expect("terminal name").to_owned();
    let path = format!("{}terminals/websocket/{terminal}", kernel.base);
    let mut socket = http::websocket(&kernel.at, &path, &kernel.cookie, None, Duration::from_secs(30)).expect("the terminal's socket");
    socket.send(tungstenite::Message::Text(json!(["stdin", line]).to_string().into())).expect("type a line");
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done(&seen) {
        assert!(std::time::Instant::now() < deadline, "the shell did not answer: {seen}");
        if let Ok(tungstenite::Message::Text(text)) = socket.read() {
            let message: Value = serde_json::from_str(&text).unwrap_or_default();
            if message[0] == "stdout" {
                seen.push_str(message[1].as_str().unwrap_or_default());
            }
        }
    }
    (terminal, seen)
}

/// A debugger's first request, `initialize`, as JupyterLab sends it on the control channel.
fn debug_initialize() -> Value {
    let initialize = json!({ "seq": 1, "type": "request", "command": "initialize",
        "arguments": { "clientID": "test", "adapterID": "python", "pathFormat": "path", "linesStartAt1": true, "columnsStartAt1": true } });
    json!({ "channel": "control", "header": { "msg_id": "dbg-init", "msg_type": "debug_request", "session": "s1", "username": "test", "version": "5.3", "date": "" },
        "parent_header": {}, "metadata": {}, "content": initialize, "buffers": [] })
}

/// Starts the kernel's debugger and waits for its answer: the kernel reaches its own shell
/// socket inside the process (its code may not connect to the address its ports are on).
fn debugger_starts(kernel: &Kernel) {
    let path = format!("{}api/kernels/{}/channels", kernel.base, kernel.id);
    let mut socket = http::websocket(&kernel.at, &path, &kernel.cookie, None, Duration::from_secs(30)).expect("kernel WebSocket");
    socket.send(tungstenite::Message::Text(debug_initialize().to_string().into())).expect("send");
    let reply = reply_to(&mut socket, "dbg-init", "debug_reply");
    assert_eq!(reply["content"]["success"], true, "the debugger did not start: {reply}");
}

/// Reads a legacy-protocol kernel socket until the `msg_type` reply to `msg_id` (30 s at most).
pub(crate) fn reply_to(socket: &mut tungstenite::WebSocket<std::net::TcpStream>, msg_id: &str, msg_type: &str) -> Value {
    read_until(socket, |m| m["header"]["msg_type"] == msg_type && m["parent_header"]["msg_id"] == msg_id).pop().expect("the reply")
}

/// The messages a legacy-protocol kernel socket sends until one `done` says is the last (30 s
/// at most), that one included.
pub(crate) fn read_until(socket: &mut tungstenite::WebSocket<std::net::TcpStream>, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut read = Vec::new();
    loop {
        assert!(std::time::Instant::now() < deadline, "the awaited message did not come: {read:?}");
        let message: Value = match socket.read() {
            Ok(tungstenite::Message::Text(text)) => serde_json::from_str(&text).expect("JSON"),
            Ok(_) => continue,
            Err(e) => panic!("the socket ended before the awaited message: {e}; read {read:?}"),
        };
        let last = done(&message);
        read.push(message);
        if last {
            return read;
        }
    }
}

/// A `kernel_info_request` with id `msg_id`, in the legacy protocol.
fn kernel_info_request(msg_id: &str) -> Value {
    json!({ "channel": "shell", "header": { "msg_id": msg_id, "msg_type": "kernel_info_request", "session": "s1",
        "username": "test", "version": "5.3", "date": "" }, "parent_header": {}, "metadata": {}, "content": {} })
}

/// Run in a kernel: a kernel spec planted where Jupyter and IPython look, and links in the
/// notebook's folder to the server's token, runtime and configuration directories.
const PLANT: &str = r#"
import json, os
for d in ('/home/user/.ipython/kernels/planted', '/home/user/.local/share/jupyter/kernels/planted'):
    os.makedirs(d, exist_ok=True)
    json.dump({'argv': ['/bin/sh', '-c', 'id > /home/user/work/planted-ran'], 'display_name': 'x', 'language': 'sh'}, open(d + '/kernel.json', 'w'))
os.symlink('/run/datasandbox/jupyter-token', '/home/user/work/token')
os.symlink('/run/jupyter/runtime', '/home/user/work/runtime')
os.symlink('/run/jupyter/config', '/home/user/work/config')
json.dump({}, open('/home/user/work/spec.json', 'w'))
"#;

/// Run in a kernel: every way it might reach the server or another kernel, and what came of it.
const PROBE: &str = r#"
import glob, json, os, socket
def attempt(f):
    try:
        f()
        return 'opened'
    except OSError as e:
        return type(e).__name__
def cmdline(p):
    try:
        return open(f'/proc/{p}/cmdline', 'rb').read()
    except OSError:
        return b''
servers = [p for p in os.listdir('/proc') if p.isdigit() and cmdline(p).startswith(b'/opt/jupyter/bin/python\0-I\0-m\0jupyterlab')]
siblings = [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid() and b'ipykernel.kernelapp' in cmdline(p)]
ports = [int(l.split()[1].split(':')[1], 16) for l in open('/proc/net/tcp').read().splitlines()[1:]
         if l.split()[3] == '0A' and l.split()[1].split(':')[0] == '0200007F']
def connect(port):
    s = socket.socket()
    s.settimeout(2)
    s.connect(('127.0.0.2', port))
json.dumps({
    'groups': list(os.getresgid()),
    'token': attempt(lambda: open('/run/datasandbox/jupyter-token').read()),
    'run': attempt(lambda: os.listdir('/run/jupyter')),
    'socket': attempt(lambda: socket.socket(socket.AF_UNIX).connect('/run/jupyter/jupyter.sock')),
    'servers': len(servers),
    'server_environ': attempt(lambda: open(f'/proc/{servers[0]}/environ').read()),
    'server_mem': attempt(lambda: open(f'/proc/{servers[0]}/mem', 'rb').read(1)),
    'server_fds': attempt(lambda: os.listdir(f'/proc/{servers[0]}/fd')),
    'connection_files': [f for d in ('/home/user', '/tmp', '/run') for f in glob.glob(d + '/**/kernel-*.json', recursive=True)],
    'ports': len(ports),
    'reached': [p for p in ports if attempt(lambda: connect(p)) == 'opened'],
    'siblings': len(siblings),
    'sibling_fds': attempt(lambda: [open(f'/proc/{siblings[0]}/fd/{n}').read() for n in os.listdir(f'/proc/{siblings[0]}/fd')]),
    'sibling_mem': attempt(lambda: open(f'/proc/{siblings[0]}/mem', 'rb').read(1)),
    'cwd': os.getcwd(),
    'debugger': __import__('ipykernel.debugger').debugger._is_debugpy_available,
})
"#;
