//! JupyterHub's proxy, configurable-http-proxy (from npm), in front of a notebook's Jupyter:
//! the peer the notebook proxy is measured beside. Installed once into `target/bench-node`.
//!
//! Its target is the Jupyter's Unix socket, the only way in: there, it asks Jupyter to close
//! each connection and passes Jupyter's `Connection: close` on to the client, so each request
//! it serves costs a TCP connection too (the throughput line says how many it took).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running configurable-http-proxy whose default target is one Jupyter's Unix socket.
pub struct Chp {
    child: Child,
    pub address: String,
}

impl Chp {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Chp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port()
}

/// configurable-http-proxy in front of the Jupyter listening on `socket`, or `None` (said on
/// stderr) where npm cannot install it.
pub fn start(socket: &Path) -> Option<Chp> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-node");
    let bin = root.join("node_modules/.bin/configurable-http-proxy");
    if !bin.exists() {
        eprintln!("installing configurable-http-proxy 5 from npm into {} (once)", root.display());
        let installed = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&root)
            .arg("configurable-http-proxy@5")
            .status();
        if !installed.is_ok_and(|s| s.success()) {
            eprintln!("configurable-http-proxy could not be installed (npm failed): it is left out of the comparison");
            return None;
        }
    }
    let encoded: String = socket
        .to_str()
        .expect("a UTF-8 path")
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let port = free_port();
    let child = Command::new(bin)
        .args(["--ip", "127.0.0.1", "--port", &port.to_string(), "--api-ip", "127.0.0.1", "--api-port", &free_port().to_string()])
        .args(["--default-target", &format!("unix+http://{encoded}"), "--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start configurable-http-proxy");
    let chp = Chp { child, address: format!("127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&chp.address).is_err() {
        assert!(Instant::now() < deadline, "configurable-http-proxy did not listen within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(chp)
}
