//! Redemption of a streaming URL → the session's instance ready (session ACTIVE, its
//! variables in the instance), for ALWAYS_ON and ON_DEMAND fleets, against the release
//! binary; AppStream 2.0's published figures are printed beside. As root (instances).
//!
//! `cargo bench -p datasandbox --bench sessions`. The clock starts when the URL is opened
//! (`GET /streaming/<token>`) and stops when `/session/status` first reports ACTIVE; making the
//! URL and ending the session are outside it. The application's own start is not included.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

#[path = "support/server.rs"]
#[allow(dead_code, reason = "shared by the benchmarks, which use different parts")]
mod server;

use std::time::{Duration, Instant};

use serde_json::json;

use server::Server;

const SESSIONS: usize = 100;

/// A fleet of four whose sessions start a shell, in direct mode (no display): the session's
/// own start is measured, not an application's.
fn start(fleet_type: &str, octet: u32) -> Server {
    let fleet_type = format!("fleet_type={fleet_type}");
    let overrides = [
        fleet_type.as_str(),
        "fleets.datasandbox-fleet.desired_instances=4",
        "stacks.datasandbox-stack.application=shell",
        "stream_view=DIRECT",
    ];
    Server::start(&["base"], octet, &overrides)
}

fn wait_for_capacity(server: &Server, available: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let fleets = server.call("streaming:DescribeFleets", json!({}));
        let fleet = &fleets["Fleets"][0];
        if fleet["State"] == "RUNNING" && fleet["ComputeCapacityStatus"]["Available"] == available {
            return;
        }
        assert!(Instant::now() < deadline, "the fleet never reached {available} available: {fleet}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn measure(fleet_type: &str, octet: u32) -> Vec<Duration> {
    let server = start(fleet_type, octet);
    wait_for_capacity(&server, 4);
    let mut times = Vec::new();
    for n in 0..SESSIONS {
        let url = server.call(
            "streaming:CreateStreamingURL",
            json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet", "UserId": format!("bench{n}"), "Validity": 600 }),
        )["StreamingURL"]
            .as_str()
            .expect("url")
            .to_owned();
        let path = &url[url.find("/streaming/").expect("path")..];
        let started = Instant::now();
        let opened = http::tcp(&server.api).expect("connect").request("GET", path, &[], b"").expect("open");
        assert_eq!(opened.status, 200, "{}", String::from_utf8_lossy(&opened.body));
        let cookie = opened
            .headers
            .iter()
            .find(|(name, _)| name == "set-cookie")
            .and_then(|(_, v)| v.split(';').next().map(str::to_owned))
            .expect("cookie");
        let session = loop {
            let status = http::tcp(&server.api)
                .expect("connect")
                .request("GET", "/session/status", &[("cookie", &cookie)], b"")
                .expect("status")
                .json();
            if status["State"] == "ACTIVE" {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "session never became ACTIVE: {status}");
            std::thread::sleep(Duration::from_millis(1));
        };
        times.push(started.elapsed());
        server.call("streaming:ExpireSession", json!({ "SessionId": session["SessionId"] }));
        // Each redemption finds the fleet as a user would: warm capacity back (ALWAYS_ON).
        wait_for_capacity(&server, 4);
    }
    times.sort_unstable();
    times
}

fn main() {
    println!("Session benchmark: {SESSIONS} sessions per fleet type, redemption → instance ready (release binary, fleet of 4)");
    let octet = 150 + std::process::id() % 50;
    for (fleet_type, target, appstream) in [
        ("ALWAYS_ON", "p50 < 50 ms", "AppStream 2.0: \"instant\" (instances already running)"),
        ("ON_DEMAND", "p50 < 500 ms", "AppStream 2.0: 1-2 minutes (instance started on demand)"),
    ] {
        let times = measure(fleet_type, octet);
        println!(
            "{fleet_type:<10} p50 {:7.1} ms  p95 {:7.1} ms  max {:7.1} ms   target {target};  {appstream}",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            percentile(&times, 1.0)
        );
    }
}
