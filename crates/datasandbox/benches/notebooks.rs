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

#[path = "../tests/it/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const RUNS: usize = 200;

struct Server {
    dir: tempfile::TempDir,
    api: String,
    child: Child,
}

impl Server {
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_datasandbox")).arg("--data-dir").arg(self.dir.path()).args(args).output().expect("cli");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn call(&self, action: &str, input: Value) -> Value {
        let reply = http::unix(&self.dir.path().join("control.sock")).expect("connect").call(action, &input, None).expect("call");
        assert_eq!(reply.status, 200, "{action}: {}", String::from_utf8_lossy(&reply.body));
        reply.json()
    }

    fn get(&self, path: &str, cookie: &str) -> http::Reply {
        http::tcp(&self.api).expect("connect").request("GET", path, &[("cookie", cookie)], b"").expect("request")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    for recipe in ["base", "notebook"] {
        let built = Command::new(env!("CARGO_BIN_EXE_datasandbox"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["image", "build", recipe])
            .output()
            .expect("build");
        assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    }
    let vpc = format!("vpc_cidr=10.{}.0.0/16", 150 + std::process::id() % 50);
    let mut child = Command::new(env!("CARGO_BIN_EXE_datasandbox"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["up", "-c", "server.api_listen=127.0.0.1:0", "-c", &vpc])
        .env("DATASANDBOX_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut ready).expect("ready line");
    let api = ready.split_whitespace().find_map(|w| w.strip_prefix("api=http://")).expect("api").to_owned();
    Server { dir, api, child }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn main() {
    let server = start();
    println!("Notebook flow benchmark (release binary)");
    // A first session: the user's notebook is made and started on first use.
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

    // session.json → session_url.txt, measured inside the instance by the launcher itself: from
    // the start of its upload to the answer it read (it polls every 10 ms by default).
    let script = format!(
        r#"while IFS='=' read -r k v; do export "$k=$v"; done < /run/datasandbox/session.env
export "$(tr '\0' '\n' < /proc/1/environ | grep ^DS_ENDPOINT=)"
for i in $(seq 1 {RUNS}); do
  /run/datasandbox/datasandbox launcher | sed -n 's/.*ready (\([0-9.]*\) ms.*/\1/p'
done"#
    );
    let out = server.cli(&["instances", "exec", &instance, "--", "/bin/bash", "-c", &script]);
    let mut millis: Vec<f64> = out.lines().filter_map(|l| l.trim().parse::<f64>().ok()).collect();
    millis.sort_by(f64::total_cmp);
    assert_eq!(millis.len(), RUNS, "{out}");
    println!(
        "session.json written → session_url.txt readable, inside the instance, {RUNS} runs: p50 {:.1} ms  p99 {:.1} ms   \
         target p99 < 50 ms; the seed's Lambda path takes minutes",
        percentile(&millis, 0.5),
        percentile(&millis, 0.99)
    );

    // Opening a notebook URL → /api/status through the proxy.
    let mut opens = Vec::new();
    for _ in 0..50 {
        let presigned = server.call(
            "notebooks:CreatePresignedNotebookInstanceUrl",
            json!({ "NotebookInstanceName": format!("nb-{}", &sha256_hex("bench")[..16]), "StreamingSessionId": session }),
        );
        let url = presigned["AuthorizedUrl"].as_str().expect("url");
        let started = Instant::now();
        let reply = server.get(&url[url.find("/notebook-auth/").expect("path")..], &cookie);
        let notebook_cookie = reply
            .headers
            .iter()
            .find(|(n, _)| n == "set-cookie")
            .and_then(|(_, v)| v.split(';').next().map(str::to_owned))
            .expect("cookie");
        let location = reply.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone()).expect("location");
        let status = server.get(&format!("{}api/status", location.trim_end_matches("lab")), &notebook_cookie);
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

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}
