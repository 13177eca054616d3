//! Throughput and latency of actions through the whole pipeline (socket → authenticate →
//! Cedar → execute → fsynced audit record → reply), against the release binary.
//!
//! `cargo bench -p datasandbox --bench actions` prints one line per workload (`-- PutObject`
//! runs only the workloads so named). Each client (a connection; all of them on one thread, as
//! `wrk -t1` runs them) sends its next action once it has the answer to the last: 8 clients
//! measure a load bound by the latency of each action, and PutObject runs again with 32, enough
//! to keep every stage of the pipeline busy on this machine's two cores (its throughput at
//! saturation). Figures, not assertions: this is a benchmark, not a test.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

#[path = "support/load.rs"]
#[allow(dead_code, reason = "shared by the benchmarks, which use different parts")]
mod load;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use load::Target;

/// Clients that each wait for their answer before they send again: a latency-bound load.
const CLIENTS: usize = 8;
/// Enough clients to keep every stage of the pipeline busy: the throughput at saturation.
const SATURATING: usize = 32;
const WARMUP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Command::new(env!("CARGO_BIN_EXE_datasandbox"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["up", "-c", "server.api_listen=127.0.0.1:0"])
        .env("DATASANDBOX_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut ready = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut ready).expect("ready line");
    assert!(ready.starts_with("ready "), "unexpected first line: {ready}");
    let socket = dir.path().join("control.sock");

    let mut setup = http::unix(&socket).expect("connect");
    let put = setup.call("parameters:PutParameter", &json!({ "Name": "/bench/p", "Value": "value", "Type": "String" }), None).expect("put");
    assert_eq!(put.status, 200);

    println!(
        "DataSandbox action benchmark: clients on the control socket, each waiting for its answer; {}s per workload, auditing on (fsync per batch)",
        MEASURE.as_secs()
    );
    println!("{:<28} {:>8} {:>10} {:>10} {:>10} {:>10}", "workload", "clients", "actions/s", "p50 ms", "p99 ms", "max ms");
    // `cargo bench --bench actions -- PutObject` runs only the workloads whose name holds it.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let bench = Bench { socket, only };
    bench.run("GetParameter", CLIENTS, |_, _| ("parameters:GetParameter", json!({ "Name": "/bench/p" })));
    // A write to the metadata store without an object body: what a PutObject costs beyond it.
    bench.run("PutParameter", CLIENTS, |client, n| {
        ("parameters:PutParameter", json!({ "Name": format!("/bench/{client}/{n}"), "Value": "v", "Type": "String" }))
    });
    let body = base64_of(&[0x5a; 4096]);
    for clients in [CLIENTS, SATURATING] {
        let body = body.clone();
        bench.run("PutObject 4 KiB", clients, move |client, n| {
            ("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": format!("bench/{clients}/{client}/{n}"), "Body": body }))
        });
    }

    let _ = Command::new("kill").args(["-INT", &server.id().to_string()]).status();
    let _ = server.wait();
}

/// The server's socket, and the workloads asked for (all if none).
struct Bench {
    socket: std::path::PathBuf,
    only: Vec<String>,
}

impl Bench {
    fn run(&self, name: &str, clients: usize, request: impl Fn(usize, usize) -> (&'static str, Value) + 'static) {
        if self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str())) {
            run(name, &self.socket, clients, request);
        }
    }
}

fn run(name: &str, socket: &std::path::Path, clients: usize, request: impl Fn(usize, usize) -> (&'static str, Value) + 'static) {
    let start = Instant::now();
    let http = move |client, n| {
        let (action, input) = request(client, n);
        let (service, action) = action.split_once(':').expect("service:Action");
        let body = input.to_string();
        format!(
            "POST /api/{service}/{action} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let (mut latencies, _) = load::run(&Target::Unix(socket.to_owned()), clients, http, (start + WARMUP, start + WARMUP + MEASURE));
    latencies.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{:<28} {:>8} {:>10.0} {:>10.2} {:>10.2} {:>10.2}",
        name,
        clients,
        latencies.len() as f64 / MEASURE.as_secs_f64(),
        at(0.50),
        at(0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
