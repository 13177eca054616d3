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
//! - A kernel round trip (`execute_request` of `pass` → its `execute_reply`), straight to
//!   Jupyter's socket, through JupyterHub's configurable-http-proxy (npm) and through the
//!   proxy, whose executed-code audit records every request before forwarding it: p50 and p99
//!   of each, measured alternately in the same run.
//! - `GET api/status` throughput from 16 clients, the same three ways: 16 kept-alive connections
//!   on one thread, as the issue's `wrk -t1 -c16` measured them.
//!
//! `cargo bench -p datasandbox --bench notebooks [-- launcher|opens|kernel|throughput]`.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

#[path = "support/chp.rs"]
mod chp;

#[path = "support/load.rs"]
mod load;

#[path = "support/server.rs"]
#[allow(dead_code, reason = "shared by the benchmarks, which use different parts")]
mod server;

use std::time::{Duration, Instant};

use serde_json::json;

use load::Target;
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
    // `cargo bench --bench notebooks -- throughput` runs only the parts whose name holds it.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let chosen = |part: &str| only.is_empty() || only.iter().any(|o| part.contains(o.as_str()));
    if chosen("launcher") {
        launcher_round_trips(&server, &first.instance);
    }
    if chosen("opens") {
        notebook_url_opens(&server, &first);
    }
    if chosen("kernel") {
        kernel_round_trips(&server, &first);
    }
    if chosen("throughput") {
        proxy_throughput(&server, &first);
    }
}

/// Where a throughput run sends its requests.
#[derive(Clone)]
enum Via {
    /// Jupyter's own socket, with its token.
    Straight,
    /// configurable-http-proxy at this address, with Jupyter's token.
    Chp(String),
    /// The notebook proxy, with the notebook's cookie (each request recorded).
    Proxy,
}

/// `GET api/status` from 16 clients on kept-alive connections, straight to Jupyter's socket,
/// through configurable-http-proxy and through the notebook proxy (each request recorded): a
/// second each way in turn (the order rotating), five turns a round, three rounds; then all
/// three rounds together.
/// This machine's rate drifts by a fifth within a minute: ways measured a second apart, turn by
/// turn, meet the same drift, where 5 s of each way one after the other did not.
fn proxy_throughput(server: &Server, first: &FirstSession) {
    const CLIENTS: usize = 16;
    let (notebook, address, base, cookie) = open_notebook(server, first);
    let socket = server.dir.path().join("notebooks").join(&notebook).join("run/jupyter.sock");
    let (jupyter, token) = jupyter_server(&notebook);
    let token = format!("token {token}");
    let chp = chp::start(&socket);
    // Each way's requests' times, the connections they took, and the CPU time Jupyter and the
    // proxy in front of it (none straight) ran meanwhile.
    let run = |via: Via, seconds: Duration| {
        let proxy = match &via {
            Via::Straight => None,
            Via::Chp(_) => chp.as_ref().map(chp::Chp::pid),
            Via::Proxy => Some(server.pid()),
        };
        let cpu_before = (cpu_time(jupyter), proxy.map(cpu_time));

        let deadline = Instant::now() + seconds;
        let (target, header) = match &via {
            Via::Straight => (Target::Unix(socket.clone()), ("authorization", token.as_str())),
            Via::Chp(at) => (Target::Tcp(at.clone()), ("authorization", token.as_str())),
            Via::Proxy => (Target::Tcp(address.clone()), ("cookie", cookie.as_str())),
        };
        let (times, connections) = load::statuses(&target, CLIENTS, &format!("{base}api/status"), header, deadline);
        Way {
            times,
            connections,
            jupyter_cpu: cpu_time(jupyter) - cpu_before.0,
            proxy_cpu: proxy.zip(cpu_before.1).map_or(Duration::ZERO, |(pid, before)| cpu_time(pid) - before),
        }
    };
    const ROUNDS: usize = 3;
    const TURNS: usize = 5;
    const TURN: Duration = Duration::from_secs(1);
    let round_seconds = TURN.as_secs_f64() * TURNS as f64;
    let (mut all_direct, mut all_peer, mut all_proxied) = (Way::default(), Way::default(), Way::default());
    for round in 1..=ROUNDS {
        let (mut direct, mut peer, mut proxied) = (Way::default(), Way::default(), Way::default());
        // The order turns with each turn: a way measured right after configurable-http-proxy
        // meets what its thousands of connections a second left Jupyter to clean up.
        for turn in 0..TURNS {
            for way in 0..3 {
                match ((turn + way) % 3, &chp) {
                    (0, _) => direct.add(run(Via::Straight, TURN)),
                    (1, Some(chp)) => peer.add(run(Via::Chp(chp.address.clone()), TURN)),
                    (1, None) => {}
                    _ => proxied.add(run(Via::Proxy, TURN)),
                }
            }
        }
        let measured_peer = (!peer.times.is_empty()).then_some((peer.times.as_slice(), peer.connections));
        let line = throughput_line(&direct.times, measured_peer, &proxied.times, round_seconds);
        println!("GET api/status, {CLIENTS} clients kept alive, {TURNS} turns of {} s each way, round {round}: {line}", TURN.as_secs());
        all_direct.add(direct);
        all_peer.add(peer);
        all_proxied.add(proxied);
    }
    let seconds = round_seconds * ROUNDS as f64;
    let peer = (!all_peer.times.is_empty()).then_some((all_peer.times.as_slice(), 0));
    let line = throughput_line(&all_direct.times, peer, &all_proxied.times, seconds);
    println!("GET api/status, {CLIENTS} clients kept alive, all {ROUNDS} rounds together: {line}");
    let peer = (!all_peer.times.is_empty()).then(|| format!("; through configurable-http-proxy 5 {}", spread(&all_peer.times)));
    println!(
        "GET api/status, time per request, all {ROUNDS} rounds: straight {}{}; through the notebook proxy {}",
        spread(&all_direct.times),
        peer.unwrap_or_default(),
        spread(&all_proxied.times)
    );
    let peer = if all_peer.times.is_empty() {
        "configurable-http-proxy not measured".to_owned()
    } else {
        format!("through configurable-http-proxy 5: {}", all_peer.cpu_line(seconds))
    };
    println!(
        "GET api/status, CPU time per request, all {ROUNDS} rounds: straight: {}; {peer}; through the notebook proxy, its audit included: {}",
        all_direct.cpu_line(seconds),
        all_proxied.cpu_line(seconds)
    );
}

/// One way's throughput run: each request's time, the connections the clients made, and the
/// CPU time Jupyter and the proxy in front of it ran meanwhile.
#[derive(Default)]
struct Way {
    times: Vec<f64>,
    connections: usize,
    jupyter_cpu: Duration,
    proxy_cpu: Duration,
}

impl Way {
    fn add(&mut self, other: Way) {
        self.times.extend(other.times);
        self.connections += other.connections;
        self.jupyter_cpu += other.jupyter_cpu;
        self.proxy_cpu += other.proxy_cpu;
    }

    /// The proxy's and Jupyter's CPU time per request, and how much of its core Jupyter had
    /// over `seconds` (a proxy that crowds Jupyter off its core lowers the throughput too).
    fn cpu_line(&self, seconds: f64) -> String {
        let requests = self.times.len().max(1) as f64;
        let per = |cpu: Duration| cpu.as_secs_f64() * 1e6 / requests;
        let jupyter =
            format!("Jupyter {:.0} µs/request, {:.0}% of a core", per(self.jupyter_cpu), self.jupyter_cpu.as_secs_f64() / seconds * 100.0);
        if self.proxy_cpu.is_zero() { jupyter } else { format!("{:.0} µs/request + {jupyter}", per(self.proxy_cpu)) }
    }
}

/// Where a way's request times lie: p50, p90, p99 and p99.9, in milliseconds.
fn spread(times: &[f64]) -> String {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let [p50, p90, p99, p999] = [0.5, 0.9, 0.99, 0.999].map(|q| percentile(&sorted, q));
    format!("p50 {p50:.1} / p90 {p90:.1} / p99 {p99:.1} / p99.9 {p999:.1} ms")
}

/// One line of throughput figures: each way's rate and p99 over `seconds`, and the proxy's
/// share of Jupyter straight, beside the target.
fn throughput_line(direct: &[f64], peer: Option<(&[f64], usize)>, proxied: &[f64], seconds: f64) -> String {
    let figures = |times: &[f64]| {
        let mut sorted = times.to_vec();
        sorted.sort_by(f64::total_cmp);
        (sorted.len() as f64 / seconds, percentile(&sorted, 0.99))
    };
    let ((direct, direct_p99), (proxied, proxied_p99)) = (figures(direct), figures(proxied));
    let peer = peer.map_or("configurable-http-proxy not measured".to_owned(), |(times, connections)| {
        let (rate, p99) = figures(times);
        let connections = if connections > 0 { format!(", {connections} connections") } else { String::new() };
        format!("configurable-http-proxy 5 {rate:.0} req/s (p99 {p99:.1} ms{connections}) = {:.0}%", rate / direct * 100.0)
    });
    format!(
        "Jupyter straight {direct:.0} req/s (p99 {direct_p99:.1} ms); {peer}; the notebook proxy, every request recorded, {proxied:.0} req/s \
         (p99 {proxied_p99:.1} ms) = {:.0}% of straight   target ≥ 90%, p99 ≤ straight + 3 ms",
        proxied / direct * 100.0
    )
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

/// The session's notebook, opened on the notebook origin: its name, the origin's address, the
/// notebook's base path there and its cookie.
fn open_notebook(server: &Server, first: &FirstSession) -> (String, String, String, String) {
    let notebooks = server.call("notebooks:ListNotebookInstances", json!({}));
    let notebook = notebooks["NotebookInstances"][0]["NotebookInstanceName"].as_str().expect("the session's notebook").to_owned();
    let location = |reply: &http::Reply| reply.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone()).expect("location");
    let presigned = server.call(
        "notebooks:CreatePresignedNotebookInstanceUrl",
        json!({ "NotebookInstanceName": notebook, "StreamingSessionId": first.session }),
    );
    let url = presigned["AuthorizedUrl"].as_str().expect("url");
    let handoff = location(&server.get(&url[url.find("/notebook-auth/").expect("path")..], &first.cookie));
    let rest = handoff.strip_prefix("http://").expect("the notebook origin");
    let (address, open) = rest.split_at(rest.find('/').expect("a path"));
    let reply = http::tcp(address).expect("connect").request("GET", open, &[], b"").expect("request");
    let cookie =
        reply.headers.iter().find(|(n, _)| n == "set-cookie").and_then(|(_, v)| v.split(';').next().map(str::to_owned)).expect("cookie");
    (notebook, address.to_owned(), location(&reply).trim_end_matches("lab").to_owned(), cookie)
}

/// Jupyter's token for `notebook`, read as root from its server's own file system.
fn jupyter_token(notebook: &str) -> String {
    jupyter_server(notebook).1
}

/// The process of `notebook`'s Jupyter server (as this host numbers it) and its token.
fn jupyter_server(notebook: &str) -> (u32, String) {
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        // Python itself, not the sandbox's init that started it.
        let program = cmdline.split('\0').next().unwrap_or_default();
        if program.ends_with("python")
            && cmdline.contains("jupyter")
            && cmdline.contains(notebook)
            && let Ok(token) = std::fs::read_to_string(entry.path().join("root/run/datasandbox/jupyter-token"))
            && let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok())
        {
            return (pid, token.trim().to_owned());
        }
    }
    panic!("no Jupyter server of {notebook} found")
}

/// CPU time a process has run, all its threads together (the scheduler's own count, in ns).
fn cpu_time(pid: u32) -> Duration {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    let nanos: u64 = tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()))
        .sum();
    Duration::from_nanos(nanos)
}

/// One `execute_request` of `pass` (or, `audited` false, a `kernel_info_request`, which the
/// audit passes unrecorded) and the wait for its reply; the round trip in ms.
fn round_trip<S: std::io::Read + std::io::Write>(socket: &mut tungstenite::WebSocket<S>, n: usize, audited: bool) -> f64 {
    let id = format!("rt-{n}");
    let (kind, content) = if audited {
        (
            "execute_request",
            json!({ "code": "pass", "silent": false, "store_history": false, "user_expressions": {}, "allow_stdin": false, "stop_on_error": true }),
        )
    } else {
        ("kernel_info_request", json!({}))
    };
    let message = json!({
        "header": { "msg_id": id, "username": "bench", "session": "b", "msg_type": kind, "version": "5.3", "date": "" },
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [], "content": content,
    });
    let reply_kind = kind.replace("_request", "_reply");
    let started = Instant::now();
    socket.send(tungstenite::Message::Text(message.to_string().into())).expect("send");
    loop {
        let Ok(tungstenite::Message::Text(text)) = socket.read() else { continue };
        let reply: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        if reply["parent_header"]["msg_id"] == id.as_str() && reply["header"]["msg_type"] == reply_kind.as_str() {
            return started.elapsed().as_secs_f64() * 1000.0;
        }
    }
}

/// The WebSocket handshake of a kernel's `channels` at `host`, with Jupyter's token.
fn channels_request(host: &str, channels: &str, token: &str) -> tungstenite::http::Request<()> {
    tungstenite::http::Request::builder()
        .uri(format!("ws://{host}{channels}"))
        .header("host", host)
        .header("authorization", format!("token {token}"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tungstenite::handshake::client::generate_key())
        .body(())
        .expect("request")
}

/// Kernel round trips straight to Jupyter's Unix socket and through the audited proxy.
fn kernel_round_trips(server: &Server, first: &FirstSession) {
    let (notebook, address, base, cookie) = open_notebook(server, first);
    let headers = [("cookie", cookie.as_str()), ("content-type", "application/json")];
    let started =
        http::tcp(&address).expect("connect").request("POST", &format!("{base}api/kernels"), &headers, b"{\"name\": \"python3\"}");
    let kernel = started.expect("start a kernel").json()["id"].as_str().expect("kernel id").to_owned();
    let channels = format!("{base}api/kernels/{kernel}/channels");
    let mut proxied = http::websocket(&address, &channels, &cookie, None, Duration::from_secs(30)).expect("the proxied channels");
    let socket = server.dir.path().join("notebooks").join(&notebook).join("run/jupyter.sock");
    let token = jupyter_token(&notebook);
    let stream = std::os::unix::net::UnixStream::connect(&socket).expect("Jupyter's socket");
    let (mut direct, _) = tungstenite::client(channels_request("localhost", &channels, &token), stream).expect("the channels, straight");
    // The peer: configurable-http-proxy in front of the same Jupyter, over TCP as the proxy is.
    let chp = chp::start(&socket);
    let mut peer = chp.as_ref().map(|chp| {
        let stream = std::net::TcpStream::connect(&chp.address).expect("configurable-http-proxy");
        stream.set_nodelay(true).expect("nodelay");
        tungstenite::client(channels_request(&chp.address, &channels, &token), stream)
            .expect("the channels, through configurable-http-proxy")
            .0
    });
    for n in 0..20 {
        round_trip(&mut direct, n, true);
        round_trip(&mut proxied, 1000 + n, true);
        if let Some(peer) = &mut peer {
            round_trip(peer, 6000 + n, true);
        }
    }
    // Four series, interleaved: execute (recorded by the proxy) and kernel_info (not), each
    // straight and proxied. The proxy's own cost is kernel_info's difference; the audit's is
    // what execute's difference adds to it.
    let mut series: [Vec<f64>; 5] = Default::default();
    for n in 0..300 {
        series[0].push(round_trip(&mut direct, 2000 + n, true));
        series[1].push(round_trip(&mut proxied, 3000 + n, true));
        series[2].push(round_trip(&mut direct, 4000 + n, false));
        series[3].push(round_trip(&mut proxied, 5000 + n, false));
        if let Some(peer) = &mut peer {
            series[4].push(round_trip(peer, 7000 + n, true));
        }
    }
    for one in &mut series {
        one.sort_by(f64::total_cmp);
    }
    let [straight, audited, info_straight, info_proxied, through_peer] = &series;
    let records = server.call(
        "audit:LookupEvents",
        json!({ "LookupAttributes": [{ "AttributeKey": "EventName", "AttributeValue": "ExecuteCode" }], "MaxResults": 1000 }),
    );
    let p50 = |s: &Vec<f64>| percentile(s, 0.5);
    println!(
        "kernel round trip (execute_request `pass` → execute_reply), 300 each, interleaved: Jupyter straight p50 {:.2} ms p99 {:.2} ms; \
         through the proxy, recorded, p50 {:.2} ms p99 {:.2} ms (p50 +{:.2} ms); {} ExecuteCode records",
        p50(straight),
        percentile(straight, 0.99),
        p50(audited),
        percentile(audited, 0.99),
        p50(audited) - p50(straight),
        records["Events"].as_array().map_or(0, Vec::len),
    );
    if !through_peer.is_empty() {
        println!(
            "kernel round trip (execute_request `pass`) through configurable-http-proxy 5, interleaved with the above: p50 {:.2} ms p99 {:.2} ms",
            p50(through_peer),
            percentile(through_peer, 0.99)
        );
    }
    println!(
        "kernel round trip (kernel_info_request, not recorded): straight p50 {:.2} ms, proxied p50 {:.2} ms (the proxy's hop +{:.2} ms); \
         the audit's own cost at p50: +{:.2} ms (target within 1 ms)",
        p50(info_straight),
        p50(info_proxied),
        p50(info_proxied) - p50(info_straight),
        (p50(audited) - p50(straight)) - (p50(info_proxied) - p50(info_straight)),
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
