//! The seed's session flow, timed (release binary, as root, images built):
//!
//! - `session.json` written by the instance → `session_url.txt` read by the instance, over 200
//!   runs of the launcher inside the instance (it reports the time from the start of its
//!   upload to the answer it read, polling every 10 ms), so it covers the upload, the
//!   notification, the validator's checks, the presigned URL, the answer's upload and the
//!   launcher's reading it — everything but the notebook's first start, which happens before.
//! - Opening the notebook URL → Jupyter's `/api/status` answering through the proxy, p50.
//! - A user's first session → their notebook ready (a fresh notebook: a sandbox, an encrypted
//!   volume and JupyterLab starting), beside JupyterHub's published spawn times.
//!
//! `cargo bench -p datasandbox --bench notebooks`.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

#[path = "support/server.rs"]
#[allow(dead_code, reason = "shared by the benchmarks, which use different parts")]
mod server;

use std::time::{Duration, Instant};

use serde_json::json;

use server::Server;

const RUNS: usize = 200;

/// The direct flow (the notebook in the user's browser), as the seed's lambda path works.
fn start() -> Server {
    Server::start(
        &["base", "notebook"],
        150 + std::process::id() % 50,
        &["stream_view=DIRECT", "stacks.datasandbox-stack.user_settings.FILE_DOWNLOAD=ENABLED"],
    )
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn main() {
    let server = start();
    println!("Notebook flow benchmark (release binary)");
    let first = first_session(&server);
    launcher_round_trips(&server, &first.instance);
    notebook_url_opens(&server, &first);
}

/// The user's first session, once its notebook is ready.
struct FirstSession {
    cookie: String,
    instance: String,
    session: String,
}

/// A first session: the user's notebook is made and started on first use, timed from opening
/// the streaming URL to the notebook URL being ready.
fn first_session(server: &Server) -> FirstSession {
    let url = server.cli(&["streaming-url", "--user", "bench"]);
    let path = &url.trim()[url.find("/streaming/").expect("path")..];
    let started = Instant::now();
    let opened = http::tcp(&server.api).expect("connect").request("GET", path, &[], b"").expect("open");
    let cookie =
        opened.headers.iter().find(|(n, _)| n == "set-cookie").and_then(|(_, v)| v.split(';').next().map(str::to_owned)).expect("cookie");
    let status = loop {
        let status = server.get("/session/status", &cookie).json();
        if status["NotebookUrl"].is_string() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "no notebook: {status}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let first = started.elapsed();
    println!(
        "first session → notebook URL ready (instance, launcher, validator, new notebook: sandbox + gocryptfs + JupyterLab): {:.2} s   \
         JupyterHub (published): 12-55 s per spawn",
        first.as_secs_f64()
    );
    let instance = status["InstanceId"].as_str().expect("instance").to_owned();
    let session = status["SessionId"].as_str().expect("session").to_owned();
    FirstSession { cookie, instance, session }
}

/// session.json → session_url.txt, measured inside the instance by the launcher itself: from
/// the start of its upload to the answer it read (it polls every 10 ms by default).
fn launcher_round_trips(server: &Server, instance: &str) {
    let script = format!(
        r#"while IFS='=' read -r k v; do export "$k=$v"; done < /run/datasandbox/session.env
export "$(tr '\0' '\n' < /proc/1/environ | grep ^DS_ENDPOINT=)"
for i in $(seq 1 {RUNS}); do
  /run/datasandbox/datasandbox launcher | sed -n 's/.*ready (\([0-9.]*\) ms.*/\1/p'
done"#
    );
    let out = server.cli(&["instances", "exec", instance, "--", "/bin/bash", "-c", &script]);
    let mut millis: Vec<f64> = out.lines().filter_map(|l| l.trim().parse::<f64>().ok()).collect();
    millis.sort_by(f64::total_cmp);
    assert_eq!(millis.len(), RUNS, "{out}");
    println!(
        "session.json written → session_url.txt readable, inside the instance, {RUNS} runs: p50 {:.1} ms  p99 {:.1} ms   \
         target p99 < 50 ms; the seed's Lambda path takes minutes",
        percentile(&millis, 0.5),
        percentile(&millis, 0.99)
    );
}

/// Opening a notebook URL → /api/status through the proxy, on the notebooks' own origin: the
/// main origin redeems the URL and hands over to the notebook origin with a one-time code.
fn notebook_url_opens(server: &Server, first: &FirstSession) {
    let notebooks = server.call("notebooks:ListNotebookInstances", json!({}));
    let notebook = notebooks["NotebookInstances"][0]["NotebookInstanceName"].as_str().expect("the session's notebook").to_owned();
    let location = |reply: &http::Reply| reply.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone()).expect("location");
    let mut opens = Vec::new();
    for _ in 0..50 {
        let presigned = server.call(
            "notebooks:CreatePresignedNotebookInstanceUrl",
            json!({ "NotebookInstanceName": notebook, "StreamingSessionId": first.session }),
        );
        let url = presigned["AuthorizedUrl"].as_str().expect("url");
        let started = Instant::now();
        let handoff = location(&server.get(&url[url.find("/notebook-auth/").expect("path")..], &first.cookie));
        let rest = handoff.strip_prefix("http://").expect("the notebook origin");
        let (address, open) = rest.split_at(rest.find('/').expect("a path"));
        let reply = http::tcp(address).expect("connect").request("GET", open, &[], b"").expect("request");
        let notebook_cookie = reply
            .headers
            .iter()
            .find(|(n, _)| n == "set-cookie")
            .and_then(|(_, v)| v.split(';').next().map(str::to_owned))
            .expect("cookie");
        let path = format!("{}api/status", location(&reply).trim_end_matches("lab"));
        let status = http::tcp(address).expect("connect").request("GET", &path, &[("cookie", &notebook_cookie)], b"").expect("request");
        assert_eq!(status.status, 200);
        opens.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    opens.sort_by(f64::total_cmp);
    println!(
        "notebook URL opened → Jupyter /api/status 200 through the proxy: p50 {:.1} ms  p99 {:.1} ms",
        percentile(&opens, 0.5),
        percentile(&opens, 0.99)
    );
}
