//! A real S3-compatible server for tests: moto, from PyPI, installed by `scripts/test`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use crate::support::server::eventually;

pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    pub fn start() -> Moto {
        let binary = std::env::var("DATASANDBOX_MOTO_SERVER").unwrap_or_else(|_| {
            let local = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/ci-venv/bin/moto_server");
            assert!(
                std::path::Path::new(local).exists(),
                "moto_server is not installed: run scripts/test, which installs it (this test does not skip)"
            );
            local.to_owned()
        });
        let port = TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("address").port();
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto { port, child };
        eventually(30, "moto_server to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()));
        // moto accepts unsigned requests; create the bucket the backend stores blobs in.
        let reply = moto.request("PUT", "/datasandbox-blobs");
        assert!(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"), "cannot create the S3 bucket: {reply}");
        moto
    }

    fn request(&self, method: &str, path: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port)
            .expect("write");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read");
        reply
    }

    /// Stops the server answering (SIGSTOP) until [`Moto::resume`]: moto keeps its objects in
    /// memory, so an outage is a pause, not a restart.
    pub fn pause(&self) {
        assert!(Command::new("kill").args(["-STOP", &self.child.id().to_string()]).status().expect("kill").success());
    }

    pub fn resume(&self) {
        assert!(Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status().expect("kill").success());
    }

    /// How many objects the S3 bucket holds under `prefix` (up to 1000, one listing).
    pub fn object_count_under(&self, bucket: &str, prefix: &str) -> usize {
        self.request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}")).matches("<Key>").count()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
