//! The pixel-stream bridge against websockify (PyPI, noVNC's own bridge), both bridging the
//! same RFB server — a session's real Xvnc, through its Unix socket — in the same run:
//!
//! - frame-update throughput: full-screen raw updates (1280×800×4 bytes) pulled as fast as the
//!   client can ask, MB/s;
//! - latency: a 1×1 update request → its answer, p50/p99, beside the display's socket read
//!   directly (so the bridge's added latency shows);
//! - the gateway's CPU and memory per active stream: 8 streams pulling frames for 5 s.
//!
//! `cargo bench -p datasandbox --bench stream` (root; Xvnc from tigervnc-standalone-server;
//! websockify is installed into `target/bench-venv` from PyPI on first use).

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

#[path = "support/server.rs"]
#[allow(dead_code, reason = "shared by the benchmarks, which use different parts")]
mod server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use server::Server;

const WIDTH: u16 = 1280;
const HEIGHT: u16 = 800;
const FRAMES: usize = 60;
const PINGS: usize = 300;
const STREAMS: usize = 8;

/// A byte pipe to an RFB server: a WebSocket through a bridge, or the display's socket.
trait Pipe {
    fn send(&mut self, bytes: &[u8]);
    fn recv(&mut self, into: &mut Vec<u8>);
}

struct Ws(tungstenite::WebSocket<TcpStream>);

impl Pipe for Ws {
    fn send(&mut self, bytes: &[u8]) {
        self.0.send(tungstenite::Message::Binary(bytes.to_vec().into())).expect("send");
    }

    fn recv(&mut self, into: &mut Vec<u8>) {
        match self.0.read().expect("read") {
            tungstenite::Message::Binary(data) => into.extend_from_slice(&data),
            tungstenite::Message::Close(_) => panic!("the bridge closed the stream"),
            _ => {}
        }
    }
}

struct Direct(UnixStream);

impl Pipe for Direct {
    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).expect("send");
    }

    fn recv(&mut self, into: &mut Vec<u8>) {
        let mut buffer = [0u8; 65536];
        let n = self.0.read(&mut buffer).expect("read");
        assert!(n > 0, "the display closed");
        into.extend_from_slice(&buffer[..n]);
    }
}

/// A minimal RFB client: raw encoding only, 32 bits per pixel.
struct Rfb<P: Pipe> {
    pipe: P,
    buffer: Vec<u8>,
}

impl<P: Pipe> Rfb<P> {
    fn new(pipe: P) -> Rfb<P> {
        let mut rfb = Rfb { pipe, buffer: Vec::new() };
        assert_eq!(rfb.take(12), b"RFB 003.008\n");
        rfb.pipe.send(b"RFB 003.008\n");
        let count = rfb.take(1)[0] as usize;
        assert!(rfb.take(count).contains(&1), "no None security type");
        rfb.pipe.send(&[1]);
        rfb.take(4);
        rfb.pipe.send(&[1]);
        let init = rfb.take(24);
        let name = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        rfb.take(name);
        rfb.pipe.send(&[2, 0, 0, 1, 0, 0, 0, 0]); // SetEncodings: raw
        rfb
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buffer.len() < n {
            self.pipe.recv(&mut self.buffer);
        }
        self.buffer.drain(..n).collect()
    }

    /// Asks for a region, not incrementally, and reads the whole update; returns its bytes.
    fn frame(&mut self, w: u16, h: u16) -> usize {
        let mut request = vec![3, 0, 0, 0, 0, 0];
        request.extend_from_slice(&w.to_be_bytes());
        request.extend_from_slice(&h.to_be_bytes());
        self.pipe.send(&request);
        let header = self.take(4);
        assert_eq!(header[0], 0, "a framebuffer update");
        let rectangles = u16::from_be_bytes([header[2], header[3]]);
        let mut bytes = 4;
        for _ in 0..rectangles {
            let rect = self.take(12);
            let (w, h) = (u16::from_be_bytes([rect[4], rect[5]]) as usize, u16::from_be_bytes([rect[6], rect[7]]) as usize);
            assert_eq!(&rect[8..12], &[0, 0, 0, 0], "raw");
            self.take(w * h * 4);
            bytes += 12 + w * h * 4;
        }
        bytes
    }
}

/// CPU seconds a process used so far, and its resident memory in KiB.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok());
    (ticks / 100.0, rss.expect("VmRSS"))
}

fn websockify() -> std::path::PathBuf {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-venv");
    let program = venv.join("bin/websockify");
    if !program.exists() {
        eprintln!("installing websockify from PyPI into {}", venv.display());
        assert!(Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3").success());
        let pip = Command::new(venv.join("bin/pip")).args(["install", "-q", "websockify"]).status().expect("pip");
        assert!(pip.success(), "pip install websockify failed");
    }
    program
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn throughput<P: Pipe>(rfb: &mut Rfb<P>) -> f64 {
    rfb.frame(WIDTH, HEIGHT);
    let started = Instant::now();
    let bytes: usize = (0..FRAMES).map(|_| rfb.frame(WIDTH, HEIGHT)).sum();
    bytes as f64 / started.elapsed().as_secs_f64() / 1e6
}

fn latency<P: Pipe>(rfb: &mut Rfb<P>) -> (f64, f64) {
    let mut times: Vec<f64> = (0..PINGS)
        .map(|_| {
            let started = Instant::now();
            rfb.frame(1, 1);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn main() {
    println!("Stream bridge benchmark (release binary): gateway vs websockify, the same Xvnc ({WIDTH}×{HEIGHT}, raw, 32 bpp)");
    let server =
        Server::start(&["base"], 200 + std::process::id() % 50, &["stream_view=DESKTOP", "stacks.datasandbox-stack.application=shell"]);
    let session = DesktopSession::open(&server);
    let (mut bridge, peer) = start_websockify(&session.socket);
    let streams = Streams { api: &server.api, session: &session, websockify: &peer };
    compare_throughput_and_latency(&streams, &session.socket);
    measure_cost_per_stream(&server, &streams);
    let _ = bridge.kill();
    let _ = bridge.wait();
}

/// A user's desktop session, active, with its display listening.
struct DesktopSession {
    id: String,
    cookie: String,
    /// The display's RFB socket, which both bridges connect to.
    socket: std::path::PathBuf,
}

impl DesktopSession {
    fn open(server: &Server) -> DesktopSession {
        let url = server.call(
            "streaming:CreateStreamingURL",
            json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet", "UserId": "bench", "Validity": 600 }),
        )["StreamingURL"]
            .as_str()
            .expect("url")
            .to_owned();
        let opened = http::tcp(&server.api)
            .expect("connect")
            .request("GET", &url[url.find("/streaming/").expect("path")..], &[], b"")
            .expect("open");
        let cookie = opened
            .headers
            .iter()
            .find(|(n, _)| n == "set-cookie")
            .and_then(|(_, v)| v.split(';').next().map(str::to_owned))
            .expect("cookie");
        let started = Instant::now();
        let session = loop {
            let status = http::tcp(&server.api)
                .expect("connect")
                .request("GET", "/session/status", &[("cookie", &cookie)], b"")
                .expect("status")
                .json();
            if status["State"] == "ACTIVE" {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no session: {status}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let (id, instance) = (session["SessionId"].as_str().expect("id").to_owned(), session["InstanceId"].as_str().expect("instance"));
        let socket = server.dir.path().join("instances").join(instance).join("display/rfb.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the display never listened at {}", socket.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        DesktopSession { id, cookie, socket }
    }
}

/// Starts websockify in front of the display's socket; returns it and the address it listens on.
fn start_websockify(socket: &std::path::Path) -> (std::process::Child, String) {
    let port = 20_000 + std::process::id() % 20_000;
    let bridge = Command::new(websockify())
        .arg(format!("--unix-target={}", socket.display()))
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start websockify");
    let peer = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&peer).is_err() {
        assert!(Instant::now() < deadline, "websockify never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    (bridge, peer)
}

/// Opens RFB streams of the same session through either bridge.
struct Streams<'a> {
    api: &'a str,
    session: &'a DesktopSession,
    websockify: &'a str,
}

impl Streams<'_> {
    fn gateway(&self) -> Rfb<Ws> {
        Rfb::new(Ws(http::websocket(
            self.api,
            &format!("/stream/{}", self.session.id),
            &self.session.cookie,
            Some("binary"),
            Duration::from_secs(30),
        )
        .expect("gateway stream")))
    }

    fn websockify(&self) -> Rfb<Ws> {
        Rfb::new(Ws(http::websocket(self.websockify, "/", "", Some("binary"), Duration::from_secs(30)).expect("websockify stream")))
    }
}

/// Full-frame throughput and 1×1 round trips: the gateway beside websockify, and beside the
/// display's socket read directly.
fn compare_throughput_and_latency(streams: &Streams<'_>, socket: &std::path::Path) {
    let (ours, theirs) = (throughput(&mut streams.gateway()), throughput(&mut streams.websockify()));
    println!(
        "full-frame throughput ({FRAMES} frames of {:.1} MB): gateway {ours:.0} MB/s   websockify {theirs:.0} MB/s",
        f64::from(WIDTH) * f64::from(HEIGHT) * 4.0 / 1e6
    );
    let direct = latency(&mut Rfb::new(Direct(UnixStream::connect(socket).expect("display"))));
    let through_gateway = latency(&mut streams.gateway());
    let through_websockify = latency(&mut streams.websockify());
    println!(
        "1×1 update round trip ({PINGS}): direct socket p50 {:.2} ms p99 {:.2} ms   gateway p50 {:.2} ms p99 {:.2} ms (+{:.2} ms)   websockify p50 {:.2} ms p99 {:.2} ms (+{:.2} ms)",
        direct.0,
        direct.1,
        through_gateway.0,
        through_gateway.1,
        through_gateway.0 - direct.0,
        through_websockify.0,
        through_websockify.1,
        through_websockify.0 - direct.0
    );
}

/// The gateway's CPU and memory per stream while [`STREAMS`] streams pull full frames for 5 s.
fn measure_cost_per_stream(server: &Server, streams: &Streams<'_>) {
    let (cpu_before, rss_before) = usage(server.pid());
    let started = Instant::now();
    let mut rss_during = 0;
    let frames: usize = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(4));
            usage(server.pid()).1
        });
        let workers: Vec<_> = (0..STREAMS)
            .map(|_| {
                scope.spawn(|| {
                    let mut rfb = streams.gateway();
                    let mut frames = 0;
                    while started.elapsed() < Duration::from_secs(5) {
                        rfb.frame(WIDTH, HEIGHT);
                        frames += 1;
                    }
                    frames
                })
            })
            .collect();
        let frames = workers.into_iter().map(|w| w.join().expect("stream")).sum();
        rss_during = sampler.join().expect("sampler");
        frames
    });
    let seconds = started.elapsed().as_secs_f64();
    let (cpu_after, _) = usage(server.pid());
    let rss_after = rss_during;
    println!(
        "{STREAMS} streams pulling full frames for {seconds:.1} s ({:.0} MB/s in all): gateway CPU {:.1}% of a core per stream, memory {:+} KiB per stream (RSS {} KiB idle, {} KiB with the streams open)",
        frames as f64 * f64::from(WIDTH) * f64::from(HEIGHT) * 4.0 / seconds / 1e6,
        (cpu_after - cpu_before) / seconds / STREAMS as f64 * 100.0,
        (rss_after as i64 - rss_before as i64) / STREAMS as i64,
        rss_before,
        rss_after
    );
}
