//! How much a session recording weighs: a scripted JupyterLab session at 1280×800 (the default
//! spec's desktop, the notebook in the kiosk browser), recorded by the gateway, in MB per hour.
//! Target: ≤ 150 MB/h.
//!
//! `cargo bench -p datasandbox --bench recording` (root; the default spec's images are built
//! by `up` on first use). The script: JupyterLab loads; a notebook is opened from the
//! launcher; then a cell is typed (at about ten keys a second) and run every few seconds, its
//! output printed below it, for `TYPING`. Segments roll every 30 s here (the spec's timeouts
//! are scaled by a tenth), so the typing's own rate is measured from the segments within it.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

#[path = "support/server.rs"]
#[allow(dead_code, reason = "shared by the benchmarks, which use different parts")]
mod server;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use server::Server;

const TYPING: Duration = Duration::from_secs(180);
const PASSWORD: &str = "correct horse battery staple";
/// Where the launcher's "Python 3 (ipykernel)" notebook card is on a 1280×800 display.
const NOTEBOOK_CARD: (u16, u16) = (452, 210);
const SHIFT: u32 = 0xffe1;
const RETURN: u32 = 0xff0d;

fn main() {
    println!("Recording size benchmark (release binary): a scripted JupyterLab session at 1280×800, recorded by the gateway");
    let server = Server::start(
        &[],
        230 + std::process::id() % 20,
        &["stacks.datasandbox-stack.session_recording=true", "streaming.timeout_scale_ms=100"],
    );
    let auditor = auditor(&server);
    let (id, cookie) = open_session(&server);
    let mut display = http::websocket(&server.api, &format!("/stream/{id}"), &cookie, Some("binary"), Duration::from_millis(50))
        .expect("the session's stream");
    handshake(&mut display);
    let started = Instant::now();
    eprintln!("waiting 45 s for JupyterLab to load in the kiosk browser…");
    pump(&mut display, Duration::from_secs(45));
    click(&mut display, NOTEBOOK_CARD);
    pump(&mut display, Duration::from_secs(8));
    let typing_from = now_ms();
    let mut cell = 0;
    while Instant::now() < started + Duration::from_secs(53) + TYPING {
        cell += 1;
        type_text(&mut display, &format!("values = [x ** 2 for x in range({cell} * 1000)]; print(len(values), sum(values), values[-3:])"));
        chord(&mut display, SHIFT, RETURN);
        pump(&mut display, Duration::from_secs(2));
        if cell % 10 == 0 {
            eprintln!("typed and ran {cell} cells ({} s)", started.elapsed().as_secs());
        }
    }
    let typing_to = now_ms();
    server.call("streaming:ExpireSession", json!({ "SessionId": id }));
    let segments = last_segments(&server, &auditor, &id);
    report(&segments, typing_from, typing_to, cell);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64
}

fn auditor(server: &Server) -> String {
    server.call("identity:CreateLocalUser", json!({ "UserName": "aude", "Password": PASSWORD, "Roles": ["auditor"] }));
    let reply =
        http::tcp(&server.api).expect("connect").call("identity:SignIn", &json!({ "UserName": "aude", "Password": PASSWORD }), None);
    reply.expect("sign in").json()["Token"].as_str().expect("token").to_owned()
}

/// A session of the default stack, ACTIVE: its id and the cookie (`ds_session=…`).
fn open_session(server: &Server) -> (String, String) {
    let url = server.call(
        "streaming:CreateStreamingURL",
        json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet", "UserId": "bench", "Validity": 600 }),
    )["StreamingURL"]
        .as_str()
        .expect("url")
        .to_owned();
    let opened =
        http::tcp(&server.api).expect("connect").request("GET", &url[url.find("/streaming/").expect("path")..], &[], b"").expect("open");
    let cookie =
        opened.headers.iter().find(|(n, _)| n == "set-cookie").and_then(|(_, v)| v.split(';').next().map(str::to_owned)).expect("cookie");
    let started = Instant::now();
    loop {
        let status = server.get("/session/status", &cookie).json();
        if status["State"] == "ACTIVE" {
            return (status["SessionId"].as_str().expect("id").to_owned(), cookie);
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no session: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

type Display = tungstenite::WebSocket<TcpStream>;

fn send(display: &mut Display, bytes: &[u8]) {
    display.send(tungstenite::Message::Binary(bytes.to_vec().into())).expect("send");
}

/// Reads what the display sends (only cut text: this client asks for no updates) for `time`.
fn pump(display: &mut Display, time: Duration) {
    let until = Instant::now() + time;
    while Instant::now() < until {
        match display.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(err) => panic!("the stream ended: {err}"),
        }
    }
}

fn handshake(display: &mut Display) {
    let mut got = Vec::new();
    let mut step = |display: &mut Display, need: usize, reply: &[u8]| {
        while got.len() < need {
            if let Ok(tungstenite::Message::Binary(data)) = display.read() {
                got.extend_from_slice(&data);
            }
        }
        got.drain(..need);
        send(display, reply);
    };
    step(display, 12, b"RFB 003.008\n");
    step(display, 2, &[1]);
    step(display, 4, &[1]);
}

fn key(display: &mut Display, keysym: u32, down: bool) {
    let mut event = vec![4, u8::from(down), 0, 0];
    event.extend_from_slice(&keysym.to_be_bytes());
    send(display, &event);
}

fn chord(display: &mut Display, modifier: u32, keysym: u32) {
    key(display, modifier, true);
    key(display, keysym, true);
    key(display, keysym, false);
    key(display, modifier, false);
}

/// Types `text` at about ten keys a second (printable ASCII: its keysyms are its codes).
fn type_text(display: &mut Display, text: &str) {
    for byte in text.bytes() {
        let shifted = b"~!@#$%^&*()_+{}|:\"<>?".contains(&byte) || byte.is_ascii_uppercase();
        if shifted {
            key(display, SHIFT, true);
        }
        key(display, u32::from(byte), true);
        key(display, u32::from(byte), false);
        if shifted {
            key(display, SHIFT, false);
        }
        pump(display, Duration::from_millis(100));
    }
}

fn click(display: &mut Display, (x, y): (u16, u16)) {
    for mask in [0u8, 1, 0] {
        let mut event = vec![5, mask];
        event.extend_from_slice(&x.to_be_bytes());
        event.extend_from_slice(&y.to_be_bytes());
        send(display, &event);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The recording's segments once its last is stored.
fn last_segments(server: &Server, auditor: &str, id: &str) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let reply =
            http::tcp(&server.api).expect("connect").call("streaming:DescribeRecordings", &json!({ "SessionId": id }), Some(auditor));
        let segments = reply.expect("describe").json()["Segments"].as_array().cloned().unwrap_or_default();
        if segments.last().is_some_and(|s| s["EndsRecording"] == true) {
            return segments;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the recording did not end: {segments:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn millis(text: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text.as_str().expect("a time")).expect("rfc3339").timestamp_millis()
}

fn report(segments: &[Value], typing_from: i64, typing_to: i64, cells: usize) {
    let bytes = |s: &Value| s["Bytes"].as_i64().expect("bytes");
    let total: i64 = segments.iter().map(bytes).sum();
    let span = millis(&segments.last().expect("a segment")["EndTime"]) - millis(&segments[0]["StartTime"]);
    let typing: Vec<&Value> =
        segments.iter().filter(|s| millis(&s["StartTime"]) >= typing_from && millis(&s["EndTime"]) <= typing_to).collect();
    let typing_bytes: i64 = typing.iter().map(|s| bytes(s)).sum();
    let typing_span: i64 = typing.iter().map(|s| millis(&s["EndTime"]) - millis(&s["StartTime"])).sum();
    let per_hour = |bytes: i64, ms: i64| bytes as f64 / 1e6 / (ms.max(1) as f64 / 3.6e6);
    println!(
        "  whole session: {} segments, {:.2} MB over {:.0} s → {:.1} MB/h",
        segments.len(),
        total as f64 / 1e6,
        span as f64 / 1e3,
        per_hour(total, span)
    );
    println!(
        "  typing and running {cells} cells: {} whole segments, {:.2} MB over {:.0} s → {:.1} MB/h (target ≤ 150 MB/h)",
        typing.len(),
        typing_bytes as f64 / 1e6,
        typing_span as f64 / 1e3,
        per_hour(typing_bytes, typing_span)
    );
}
