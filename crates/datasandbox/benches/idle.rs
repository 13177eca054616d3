//! Fifty idle sessions: what they cost the host, and what they write to the trail. As root
//! (instances), against the release binary.
//!
//! `cargo bench -p datasandbox --bench idle`. Fifty users each open a session (a shell, in
//! direct mode, with the home-folder sync every session runs); once all are ACTIVE and
//! settled, the benchmark prints the control plane's RSS before and with them, each
//! instance's host overhead (what the host spends beyond the instance's own processes: the
//! server's growth per instance), the instances' own processes' RSS for comparison, and the
//! records the fifty idle sessions write per minute. Targets: ≤ 5 MiB host overhead per idle
//! instance; ≤ 1 record a minute per idle session.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

#[path = "support/server.rs"]
#[allow(dead_code, reason = "shared by the benchmarks, which use different parts")]
mod server;

use std::time::{Duration, Instant};

use serde_json::json;

use server::Server;

const SESSIONS: usize = 50;
const WINDOW: Duration = Duration::from_secs(180);

/// The resident set of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

/// Every process under the instances' cgroups (the instances' own processes).
fn instance_processes() -> Vec<u32> {
    let root = std::path::Path::new("/sys/fs/cgroup/pids/datasandbox");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let procs = std::fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
    }
    pids
}

fn open_session(server: &Server, user: &str) -> String {
    let url = server.call(
        "streaming:CreateStreamingURL",
        json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet", "UserId": user, "Validity": 600 }),
    )["StreamingURL"]
        .as_str()
        .expect("url")
        .to_owned();
    let path = &url[url.find("/streaming/").expect("path")..];
    let opened = http::tcp(&server.api).expect("connect").request("GET", path, &[], b"").expect("open");
    assert_eq!(opened.status, 200, "{}", String::from_utf8_lossy(&opened.body));
    opened.headers.iter().find(|(name, _)| name == "set-cookie").and_then(|(_, v)| v.split(';').next().map(str::to_owned)).expect("cookie")
}

fn active(server: &Server, cookie: &str) -> bool {
    let status =
        http::tcp(&server.api).expect("connect").request("GET", "/session/status", &[("cookie", cookie)], b"").expect("status").json();
    status["State"] == "ACTIVE"
}

fn records_since(server: &Server, since: &str) -> usize {
    let out = server.call("audit:LookupEvents", json!({ "StartTime": since, "MaxResults": 1000, "LookupAttributes": [{ "AttributeKey": "EventSource", "AttributeValue": "storage" }] }));
    out["Events"]
        .as_array()
        .map_or(0, |events| events.iter().filter(|e| e["sourceIPAddress"].as_str().is_some_and(|a| a.starts_with("10."))).count())
}

fn main() {
    let octet = 150 + std::process::id() % 50;
    let overrides = [
        "fleet_type=ON_DEMAND",
        "fleets.datasandbox-fleet.desired_instances=50",
        "stacks.datasandbox-stack.application=shell",
        "stream_view=DIRECT",
    ];
    let server = Server::start(&["base"], octet, &overrides);
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kib(server.pid());
    let started = Instant::now();
    let cookies: Vec<String> = (0..SESSIONS).map(|n| open_session(&server, &format!("idle{n}"))).collect();
    while !cookies.iter().all(|c| active(&server, c)) {
        assert!(started.elapsed() < Duration::from_secs(300), "the sessions did not all become ACTIVE");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("{SESSIONS} sessions ACTIVE in {:.1} s", started.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(20));
    let with = rss_kib(server.pid());
    let own: u64 = instance_processes().iter().map(|pid| rss_kib(*pid)).sum();
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(WINDOW);
    let records = records_since(&server, &since);
    let per_instance = (with.saturating_sub(before)) as f64 / SESSIONS as f64 / 1024.0;
    println!("control plane RSS: {:.1} MiB idle, {:.1} MiB with {SESSIONS} idle sessions", before as f64 / 1024.0, with as f64 / 1024.0);
    println!("host overhead per idle instance (server's growth / {SESSIONS}): {per_instance:.2} MiB   target ≤ 5 MiB");
    println!("the instances' own processes: {:.1} MiB in all, {:.2} MiB each", own as f64 / 1024.0, own as f64 / 1024.0 / SESSIONS as f64);
    let per_minute = records as f64 / SESSIONS as f64 / WINDOW.as_secs_f64() * 60.0;
    println!("records from the idle sessions over {} s: {records}, {per_minute:.2} per session per minute   target ≤ 1", WINDOW.as_secs());
}
