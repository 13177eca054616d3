//! The scale-out figures (issue 18), side by side in one run against the release binary, each
//! on backends this benchmark starts for itself: a PostgreSQL 15 cluster (Debian's, with its
//! durable defaults) and an S3 server (moto).
//!
//! 1. Redemption latency on SQLite and on PostgreSQL: an ALWAYS_ON fleet with a warm instance
//!    for every user, users one at a time; the clock runs from opening the URL
//!    (`GET /streaming/<token>`) to `/session/status` first reporting ACTIVE, as in the sessions
//!    benchmark. Sessions are not ended in between, so no instance starts or stops while the
//!    clock runs. Objects are local files in both: only the metadata store differs.
//! 2. ALWAYS_ON redemptions per second: bursts in which twelve users per node open their URLs
//!    at the same moment (spread over the nodes' APIs), each finding a warm instance; the clock
//!    runs from the moment they are let go to the last one ACTIVE. On one node; on two nodes
//!    sharing one PostgreSQL database and one bucket (one fleet spanning both, each node handing
//!    out its own instances); and on two nodes apart (a database and bucket each, redeemed at
//!    the same time). Both nodes share this host's cores: "apart" shows what sharing the host
//!    costs, and "one store" against "apart" what coordinating through PostgreSQL costs.
//! 3. Audit records appended per second, measured through the server: eight clients call
//!    `parameters:GetParameter` (one durable audit record each, nothing else written) on a
//!    server with the trail and objects on local files, on one with them in the S3 bucket, and
//!    on one with PostgreSQL as well. The trail rotates every second, so sealing (and, with S3,
//!    uploading) happens inside the measured window; the objects the trail left in the bucket
//!    are counted after the run, which shows whether the S3 path was taken at all.
//!
//! `cargo bench -p datasandbox --bench scaleout` (as root: instances; `postgresql-15`; moto from
//! `target/ci-venv`, or installed from PyPI into `target/bench-venv`). Progress on stderr;
//! `SCALEOUT_PARTS=2,3` runs only those parts.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

#[path = "support/server.rs"]
#[allow(dead_code, reason = "shared by the benchmarks, which use different parts")]
mod server;

#[path = "support/backends.rs"]
mod backends;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use backends::{Postgres, S3};
use server::{Launch, Server, Start, Vpc};

/// Redemptions per backend in part 1, each with a warm instance of its own: no instance starts
/// or stops while they are measured.
const LATENCY_SESSIONS: usize = 40;
/// Users per node who redeem at once in each of part 2's bursts.
const BURST_PER_NODE: usize = 12;
/// Part 2's bursts. Each node holds a warm instance for every user of every burst, so no
/// instance starts or stops while the bursts run (a replacement would compete for the cores).
const BURSTS: usize = 3;
/// Part 3's clients, warm-up and measured window.
const AUDIT_CLIENTS: usize = 8;
const AUDIT_WARMUP: Duration = Duration::from_secs(1);
const AUDIT_WINDOW: Duration = Duration::from_secs(4);
/// Each node's own instance id pool: two nodes on one host must not hand out the same host ids.
const ID_SLOTS_PER_NODE: u32 = 256;

/// How long a user waits for ACTIVE before the benchmark calls the redemption failed.
const REDEMPTION_DEADLINE: Duration = Duration::from_secs(30);

const STACK: &str = "datasandbox-stack";
const FLEET: &str = "datasandbox-fleet";

fn main() {
    let began = Instant::now();
    progress("starting PostgreSQL and moto");
    let postgres = Postgres::start();
    let s3 = S3::start();
    println!("Scale-out benchmark (release binary; PostgreSQL 15 with fsync and synchronous_commit on; moto as S3; {} cores)", cores());

    let parts = std::env::var("SCALEOUT_PARTS").unwrap_or_else(|_| "1,2,3".to_owned());
    let part = |n: &str| parts.split(',').any(|p| p.trim() == n);
    let latency = if part("1") { redemption_latency(&postgres) } else { Vec::new() };
    let rates = if part("2") { redemption_rates(&postgres, &s3) } else { Vec::new() };
    let audit = if part("3") { audit_rates(&postgres, &s3) } else { Vec::new() };

    print_latency(&latency);
    print_rates(&rates);
    print_audit(&audit);
    progress(&format!("done in {:.0} s", began.elapsed().as_secs_f64()));
}

fn print_latency(latency: &[(&str, Vec<Duration>)]) {
    if latency.is_empty() {
        return;
    }
    println!();
    println!(
        "1. Redemption → ACTIVE, ALWAYS_ON, {LATENCY_SESSIONS} users one at a time, each finding a warm instance (objects on local files)"
    );
    println!("   {:<12} {:>9} {:>9} {:>9}", "metadata", "p50 ms", "p99 ms", "max ms");
    for (name, times) in latency {
        println!("   {name:<12} {:>9.1} {:>9.1} {:>9.1}", percentile(times, 0.5), percentile(times, 0.99), percentile(times, 1.0));
    }
}

fn print_rates(rates: &[Rate]) {
    if rates.is_empty() {
        return;
    }
    println!();
    println!(
        "2. ALWAYS_ON redemptions per second, PostgreSQL + S3: {BURSTS} bursts of {BURST_PER_NODE} users per node at once, a warm instance for each"
    );
    println!(
        "   {:<20} {:>9} {:>14} {:>10} {:>14} {:>11}",
        "nodes", "sessions", "redemptions/s", "per node", "per node vs 1", "races lost"
    );
    let one_node = rates.iter().find(|r| r.topology == Topology::OneNode && r.failure.is_none()).map(Rate::per_node);
    for rate in rates {
        if let Some(failure) = &rate.failure {
            println!("   {:<20} FAILED: {failure}", rate.topology.label());
            continue;
        }
        let ratio = one_node.map_or_else(|| "-".to_owned(), |one| format!("{:.2}×", rate.per_node() / one));
        println!(
            "   {:<20} {:>9} {:>14.1} {:>10.1} {:>14} {:>11}",
            rate.topology.label(),
            rate.sessions,
            rate.per_second(),
            rate.per_node(),
            ratio,
            rate.races_lost
        );
    }
    println!("   (target for 2 nodes, one store: ≥ 0.8× per node; both nodes share this host's cores; a race lost is an instance");
    println!("   a node gave to a session another node had served first, then stopped)");
    // What coordination alone costs: the same two nodes on this host, sharing one store or not.
    let of = |topology: Topology| rates.iter().find(|r| r.topology == topology && r.failure.is_none()).map(Rate::per_second);
    if let (Some(sharing), Some(apart)) = (of(Topology::TwoNodesSharing), of(Topology::TwoNodesApart)) {
        println!("   coordination: 2 nodes sharing one store ÷ 2 nodes apart = {:.2} (1.00: sharing costs nothing)", sharing / apart);
    }
}

fn print_audit(audit: &[AuditRun]) {
    if audit.is_empty() {
        return;
    }
    println!();
    println!(
        "3. Audit appends through the server: {AUDIT_CLIENTS} clients calling GetParameter (one fsynced record each) for {} s, trail rotated every second",
        AUDIT_WINDOW.as_secs()
    );
    println!("   {:<30} {:>10} {:>9} {:>9} {:>22}", "trail", "records/s", "p50 ms", "p99 ms", "trail objects in S3");
    for run in audit {
        let objects = run.trail_objects.map_or_else(|| "-".to_owned(), |n| n.to_string());
        println!(
            "   {:<30} {:>10.0} {:>9.2} {:>9.2} {:>22}",
            run.name,
            run.latencies.len() as f64 / AUDIT_WINDOW.as_secs_f64(),
            percentile(&run.latencies, 0.5),
            percentile(&run.latencies, 0.99),
            objects
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Redemption latency, SQLite vs PostgreSQL.

fn redemption_latency(postgres: &Postgres) -> Vec<(&'static str, Vec<Duration>)> {
    let mut results = Vec::new();
    for (name, overrides) in [("SQLite", Vec::new()), ("PostgreSQL", vec![format!("metadata.url={}", postgres.database("latency"))])] {
        progress(&format!("1. redemption latency on {name}: {LATENCY_SESSIONS} sessions"));
        let vpc = Vpc::claim();
        let server = Server::launch(Launch {
            images: &["base"],
            octet: vpc.octet,
            overrides: [fleet_overrides(LATENCY_SESSIONS), overrides].concat(),
            env: Vec::new(),
            start: Start::Up,
        });
        wait_for_capacity(&server, LATENCY_SESSIONS as i64);
        let mut times = Vec::with_capacity(LATENCY_SESSIONS);
        for n in 0..LATENCY_SESSIONS {
            let path = streaming_path(&server, &format!("latency{n}"));
            let started = Instant::now();
            redeem(&server.api, &path, Duration::from_millis(1))
                .unwrap_or_else(|status| panic!("a session on {name} never became ACTIVE: {status}"));
            times.push(started.elapsed());
        }
        times.sort_unstable();
        progress(&format!("1. {name}: p50 {:.1} ms, p99 {:.1} ms", percentile(&times, 0.5), percentile(&times, 0.99)));
        results.push((name, times));
    }
    results
}

// ---------------------------------------------------------------------------------------------
// 2. ALWAYS_ON redemptions per second on one node and on two.

/// How part 2's nodes hold their backends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// One node on a database and bucket of its own.
    OneNode,
    /// Two nodes sharing one database and one bucket: one fleet spanning both.
    TwoNodesSharing,
    /// Two nodes each on a database and bucket of its own, redeemed at the same time: what
    /// sharing this host's cores costs, without any coordination.
    TwoNodesApart,
}

impl Topology {
    fn nodes(self) -> usize {
        if self == Topology::OneNode { 1 } else { 2 }
    }

    /// The prefix of its databases' and buckets' names.
    fn store_name(self) -> &'static str {
        match self {
            Topology::OneNode => "one",
            Topology::TwoNodesSharing => "shared",
            Topology::TwoNodesApart => "apart",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Topology::OneNode => "1 node",
            Topology::TwoNodesSharing => "2 nodes, one store",
            Topology::TwoNodesApart => "2 nodes, apart",
        }
    }
}

struct Rate {
    topology: Topology,
    sessions: usize,
    elapsed: Duration,
    /// Instances given a session another node had already served.
    races_lost: usize,
    /// Why the topology could not be measured: the benchmark goes on to the next.
    failure: Option<String>,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.sessions as f64 / self.elapsed.as_secs_f64()
    }

    fn per_node(&self) -> f64 {
        self.per_second() / self.topology.nodes() as f64
    }
}

/// Nodes started for part 2, and the fleets whose warm capacity is waited for: each fleet is
/// asked through one node, for the instances all its nodes hold.
struct Nodes {
    servers: Vec<Server>,
    fleets: Vec<(usize, i64)>,
    /// Each fleet's database.
    databases: Vec<String>,
    _vpcs: Vec<Vpc>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // Later nodes first: the first node's directory holds the spec and key they copied.
        while self.servers.pop().is_some() {}
    }
}

impl Nodes {
    /// Sizes each fleet once all its nodes are in the nodes table: a node alone would warm the
    /// whole fleet and, when the next joins, stop its surplus one at a time, which is a join's
    /// cost and not a redemption's.
    fn size_fleets(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let nodes = self.servers[0].call("cluster:DescribeNodes", json!({}));
            let active = nodes["Nodes"].as_array().map_or(0, |n| n.iter().filter(|n| n["State"] == "ACTIVE").count());
            if active >= self.servers.len() / self.fleets.len() {
                break;
            }
            assert!(Instant::now() < deadline, "the nodes never all joined: {nodes}");
            std::thread::sleep(Duration::from_millis(50));
        }
        for (server, desired) in &self.fleets {
            self.servers[*server]
                .call("streaming:UpdateFleet", json!({ "Name": FLEET, "ComputeCapacity": { "DesiredInstances": desired } }));
        }
    }

    /// Waits until each fleet has all its instances running, less those `bursts` took.
    fn wait_for_capacity(&self, bursts: usize) {
        let nodes_per_fleet = self.servers.len() / self.fleets.len();
        for (server, desired) in &self.fleets {
            wait_for_capacity(&self.servers[*server], desired - (bursts * BURST_PER_NODE * nodes_per_fleet) as i64);
        }
    }

    /// Races lost between nodes: instances given a session that another instance serves (a
    /// node assigns its own instance, then finds the session taken, and stops the instance,
    /// which now knows the session's user).
    fn races_lost(&self) -> usize {
        let sql = "SELECT count(*) FROM instances i JOIN sessions s ON s.session_id = i.session_id \
                   WHERE s.instance_id IS DISTINCT FROM i.instance_id";
        self.databases.iter().map(|database| backends::psql(database, sql).parse::<usize>().expect("a count")).sum()
    }

    fn users_per_burst(&self) -> usize {
        BURST_PER_NODE * self.servers.len()
    }
}

fn redemption_rates(postgres: &Postgres, s3: &S3) -> Vec<Rate> {
    let mut rates = Vec::new();
    for topology in [Topology::OneNode, Topology::TwoNodesSharing, Topology::TwoNodesApart] {
        let nodes = start_nodes(postgres, s3, topology);
        nodes.size_fleets();
        progress(&format!("2. {}: waiting for {} warm instances", topology.label(), nodes.users_per_burst() * BURSTS));
        nodes.wait_for_capacity(0);
        let mut rate = Rate { topology, sessions: 0, elapsed: Duration::ZERO, races_lost: 0, failure: None };
        for burst in 0..BURSTS {
            let users = nodes.users_per_burst();
            let outcome = burst_of_redemptions(&nodes.servers, users, burst);
            if let Some(status) = outcome.stuck.first() {
                let failure = format!("{} of {users} sessions not ACTIVE after {} s", outcome.stuck.len(), REDEMPTION_DEADLINE.as_secs());
                progress(&format!("2. {}: FAILED, {failure}; the first: {status}", topology.label()));
                rate.failure = Some(failure);
                break;
            }
            rate.sessions += outcome.sessions.len();
            rate.elapsed += outcome.elapsed;
            let settled = Instant::now();
            // An instance stopped after losing a race to another node is replaced first.
            nodes.wait_for_capacity(burst + 1);
            progress(&format!(
                "2. {}: burst {} of {BURSTS}: {users} users ACTIVE in {:.0} ms; the fleet settled {:.1} s after",
                topology.label(),
                burst + 1,
                outcome.elapsed.as_secs_f64() * 1000.0,
                settled.elapsed().as_secs_f64()
            ));
        }
        rate.races_lost = nodes.races_lost();
        progress(&format!(
            "2. {}: {} redemptions in {:.2} s = {:.1}/s",
            topology.label(),
            rate.sessions,
            rate.elapsed.as_secs_f64(),
            rate.per_second()
        ));
        rates.push(rate);
    }
    rates
}

/// Starts the nodes of `topology`, each with its own VPC range and instance id pool, their
/// fleets empty until [`Nodes::size_fleets`].
fn start_nodes(postgres: &Postgres, s3: &S3, topology: Topology) -> Nodes {
    let mut nodes = Nodes { servers: Vec::new(), fleets: Vec::new(), databases: Vec::new(), _vpcs: Vec::new() };
    let shared = topology == Topology::TwoNodesSharing;
    let per_fleet = BURSTS * BURST_PER_NODE * if shared { 2 } else { 1 };
    let mut store = None;
    for index in 0..topology.nodes() {
        progress(&format!("2. {}: starting node {}", topology.label(), index + 1));
        let name = format!("{}{index}", topology.store_name());
        if store.is_none() || !shared {
            store = Some((postgres.database(&name), s3.bucket(&name)));
            nodes.fleets.push((index, per_fleet as i64));
            nodes.databases.extend(store.as_ref().map(|(database, _)| database.clone()));
        }
        let (database, (storage, env)) = store.clone().expect("a store for the node");
        let overrides = [
            fleet_overrides(0),
            storage,
            vec![
                format!("metadata.url={database}"),
                format!("cluster.node=node-{}", index + 1),
                format!("sandbox.id_base={}", (1u32 << 30) + index as u32 * ID_SLOTS_PER_NODE * 65_536),
                format!("sandbox.id_slots={ID_SLOTS_PER_NODE}"),
            ],
        ]
        .concat();
        let start = match nodes.servers.first() {
            Some(first_node) if shared => Start::JoinAs { first_node },
            _ => Start::Up,
        };
        let vpc = Vpc::claim();
        let server = Server::launch(Launch { images: &["base"], octet: vpc.octet, overrides, env, start });
        nodes._vpcs.push(vpc);
        nodes.servers.push(server);
    }
    nodes
}

/// What one burst of redemptions came to.
struct Burst {
    /// Each ACTIVE session, with the index of the node it was opened on.
    sessions: Vec<(usize, String)>,
    /// From the moment the users were let go to the last one ACTIVE.
    elapsed: Duration,
    /// The statuses of the sessions that never became ACTIVE.
    stuck: Vec<Value>,
}

/// `users` users, spread round-robin over the nodes' APIs, open their URLs at the same moment.
/// The URLs are made before the clock starts.
fn burst_of_redemptions(servers: &[Server], users: usize, burst: usize) -> Burst {
    let starting_line = Arc::new(Barrier::new(users + 1));
    let clients: Vec<_> = (0..users)
        .map(|user| {
            let server = user % servers.len();
            let api = servers[server].api.clone();
            let path = streaming_path(&servers[server], &format!("burst{burst}u{user}"));
            let starting_line = starting_line.clone();
            std::thread::spawn(move || {
                starting_line.wait();
                let session = redeem(&api, &path, Duration::from_millis(2));
                (server, session, Instant::now())
            })
        })
        .collect();
    starting_line.wait();
    let started = Instant::now();
    let mut outcome = Burst { sessions: Vec::with_capacity(users), elapsed: Duration::ZERO, stuck: Vec::new() };
    for client in clients {
        match client.join().expect("a redeeming client") {
            (server, Ok(session), active_at) => {
                outcome.elapsed = outcome.elapsed.max(active_at - started);
                outcome.sessions.push((server, session));
            }
            (_, Err(status), _) => outcome.stuck.push(status),
        }
    }
    outcome
}

// ---------------------------------------------------------------------------------------------
// 3. Audit appends, local trail vs S3-backed.

struct AuditRun {
    name: &'static str,
    latencies: Vec<Duration>,
    /// Objects under the bucket's `trail/` prefix after the run; `None` for a local trail.
    trail_objects: Option<usize>,
}

/// One server of part 3: where its trail and objects live.
struct AuditSetup {
    name: &'static str,
    overrides: Vec<String>,
    env: Vec<(String, String)>,
    /// The bucket holding its trail, when it is S3-backed.
    bucket: Option<&'static str>,
}

fn audit_rates(postgres: &Postgres, s3: &S3) -> Vec<AuditRun> {
    let rotate = vec!["audit.rotate_interval_seconds=1".to_owned(), "audit.digest_interval_seconds=1".to_owned()];
    let (s3_storage, s3_env) = s3.bucket("audit-s3");
    let (scale_out_storage, scale_out_env) = s3.bucket("audit-scale-out");
    let scale_out_metadata = vec![format!("metadata.url={}", postgres.database("audit"))];
    let setups = [
        AuditSetup { name: "local files, SQLite", overrides: Vec::new(), env: Vec::new(), bucket: None },
        AuditSetup { name: "S3 (moto), SQLite", overrides: s3_storage, env: s3_env, bucket: Some("audit-s3") },
        AuditSetup {
            name: "S3 (moto), PostgreSQL",
            overrides: [scale_out_storage, scale_out_metadata].concat(),
            env: scale_out_env,
            bucket: Some("audit-scale-out"),
        },
    ];
    let mut results = Vec::new();
    for setup in setups {
        progress(&format!("3. audit appends with the trail on {}", setup.name));
        let vpc = Vpc::claim();
        let overrides = [rotate.clone(), setup.overrides].concat();
        let server = Server::launch(Launch { images: &[], octet: vpc.octet, overrides, env: setup.env, start: Start::Up });
        server.call("parameters:PutParameter", json!({ "Name": "/bench/p", "Value": "value", "Type": "String" }));
        let latencies = audited_calls(&server);
        progress(&format!("3. {}: {:.0} records/s", setup.name, latencies.len() as f64 / AUDIT_WINDOW.as_secs_f64()));
        // What the sealer had uploaded by the end of the window, give or take the last second.
        let trail_objects = setup.bucket.map(|bucket| s3.count_objects(bucket, "trail/"));
        results.push(AuditRun { name: setup.name, latencies, trail_objects });
    }
    results
}

/// `AUDIT_CLIENTS` clients call GetParameter on the control socket as fast as replies come, for
/// the warm-up and the window; returns the latencies of the calls sent inside the window.
fn audited_calls(server: &Server) -> Vec<Duration> {
    let socket = server.dir.path().join("control.sock");
    let started = Instant::now();
    let clients: Vec<_> = (0..AUDIT_CLIENTS)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut connection = http::unix(&socket).expect("connect");
                let mut latencies = Vec::new();
                loop {
                    let elapsed = started.elapsed();
                    if elapsed > AUDIT_WARMUP + AUDIT_WINDOW {
                        return latencies;
                    }
                    let sent = Instant::now();
                    let reply = connection.call("parameters:GetParameter", &json!({ "Name": "/bench/p" }), None).expect("call");
                    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
                    if elapsed > AUDIT_WARMUP {
                        latencies.push(sent.elapsed());
                    }
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = clients.into_iter().flat_map(|c| c.join().expect("a calling client")).collect();
    latencies.sort_unstable();
    latencies
}

// ---------------------------------------------------------------------------------------------
// Shared.

/// An ALWAYS_ON fleet of `desired` whose sessions start a shell in direct mode (no display):
/// the session's own start is measured, not an application's.
fn fleet_overrides(desired: usize) -> Vec<String> {
    vec![
        "fleet_type=ALWAYS_ON".to_owned(),
        format!("fleets.{FLEET}.desired_instances={desired}"),
        format!("stacks.{STACK}.application=shell"),
        "stream_view=DIRECT".to_owned(),
    ]
}

/// A new streaming URL for `user`, made through `server`'s control socket; its path.
fn streaming_path(server: &Server, user: &str) -> String {
    let reply =
        server.call("streaming:CreateStreamingURL", json!({ "StackName": STACK, "FleetName": FLEET, "UserId": user, "Validity": 600 }));
    let url = reply["StreamingURL"].as_str().expect("a streaming URL");
    url[url.find("/streaming/").expect("a streaming path")..].to_owned()
}

/// Opens the URL at `path` on `api` as a browser would, then asks for the session's status
/// every `poll` on one kept-alive connection until it is ACTIVE; the session's id, or the
/// status it was left in when `REDEMPTION_DEADLINE` passed.
fn redeem(api: &str, path: &str, poll: Duration) -> Result<String, Value> {
    let opened = http::tcp(api).expect("connect").request("GET", path, &[], b"").expect("open the URL");
    assert_eq!(opened.status, 200, "{}", String::from_utf8_lossy(&opened.body));
    let cookie = opened
        .headers
        .iter()
        .find(|(name, _)| name == "set-cookie")
        .and_then(|(_, value)| value.split(';').next().map(str::to_owned))
        .expect("a session cookie");
    let mut connection = http::tcp(api).expect("connect");
    let deadline = Instant::now() + REDEMPTION_DEADLINE;
    loop {
        let status = connection.request("GET", "/session/status", &[("cookie", &cookie)], b"").expect("session status").json();
        if status["State"] == "ACTIVE" {
            return Ok(status["SessionId"].as_str().expect("a session id").to_owned());
        }
        if Instant::now() > deadline {
            return Err(status);
        }
        std::thread::sleep(poll);
    }
}

fn wait_for_capacity(server: &Server, available: i64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let fleets = server.call("streaming:DescribeFleets", json!({}));
        let fleet: &Value = &fleets["Fleets"][0];
        if fleet["State"] == "RUNNING" && fleet["ComputeCapacityStatus"]["Available"] == available {
            return;
        }
        assert!(Instant::now() < deadline, "the fleet never reached {available} available: {fleet}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1))).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A line on stderr, with the seconds since the benchmark began.
fn progress(message: &str) {
    static BEGAN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let began = BEGAN.get_or_init(Instant::now);
    eprintln!("scaleout {:6.1} s: {message}", began.elapsed().as_secs_f64());
}
