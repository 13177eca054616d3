//! The scale-out backends for a benchmark, started for its run and removed after it: a
//! PostgreSQL cluster (Debian's, `initdb` into a temporary directory as the `postgres` user,
//! which PostgreSQL insists on, on a free loopback port) and an S3 server (moto, from PyPI).
//!
//! The cluster keeps PostgreSQL's durable defaults (`fsync` and `synchronous_commit` on), unlike
//! the test script's cluster, which turns `fsync` off: a benchmark should show what a
//! deployment pays for each commit.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL cluster of the benchmark's own, stopped and removed when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("temp dir");
        run(Command::new("chown").arg("postgres:postgres").arg(dir.path()), "chown the cluster's directory to postgres");
        let data = dir.path().join("data");
        run(
            as_postgres(&postgres_bin("initdb")).arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"]),
            "initdb",
        );
        let port = free_port();
        // Three servers with a pool of 16 each, and room for psql.
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200", dir.path().display());
        run(
            as_postgres(&postgres_bin("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-o", &options, "-l"])
                .arg(dir.path().join("log"))
                .args(["-w", "start"]),
            "pg_ctl start",
        );
        Postgres { dir, port }
    }

    /// A new, empty database; its URL, for `metadata.url`.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-At", "-c", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("psql (apt-get install postgresql-client)");
        assert!(out.status.success(), "CREATE DATABASE {name}: {}", String::from_utf8_lossy(&out.stderr));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

/// Runs `sql` on the database at `url` (as [`Postgres::database`] gave it); what it printed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args([url, "-At", "-c", sql]).output().expect("psql");
    assert!(out.status.success(), "psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&postgres_bin("pg_ctl")).arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "stop"]).output();
    }
}

/// An S3 server (moto), killed when dropped.
pub struct S3 {
    child: Child,
    pub endpoint: String,
}

impl S3 {
    /// Starts moto: the test venv's (`scripts/test` installs it into `target/ci-venv`), or one
    /// installed from PyPI into `target/bench-venv` on first use.
    pub fn start() -> S3 {
        let port = free_port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "moto_server never listened on {address}");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3 { child, endpoint: format!("http://{address}") }
    }

    /// Makes `bucket` (moto takes unsigned requests) and returns the overrides and environment
    /// that put a server's objects and trail in it.
    pub fn bucket(&self, bucket: &str) -> (Vec<String>, Vec<(String, String)>) {
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect to moto");
        write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("write");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read");
        assert!(reply.starts_with("HTTP/1.1 200"), "cannot create bucket {bucket}: {reply}");
        let overrides = vec![
            "storage.backend=s3".to_owned(),
            format!("storage.s3.endpoint={}", self.endpoint),
            format!("storage.s3.bucket={bucket}"),
            "storage.s3.allow_http=true".to_owned(),
        ];
        // moto takes any credentials; a real deployment gives the server its own.
        let env = vec![("AWS_ACCESS_KEY_ID".to_owned(), "testing".to_owned()), ("AWS_SECRET_ACCESS_KEY".to_owned(), "testing".to_owned())];
        (overrides, env)
    }

    /// Keys under `prefix` in `bucket` (moto answers unsigned ListObjectsV2), following
    /// continuation tokens.
    pub fn count_objects(&self, bucket: &str, prefix: &str) -> usize {
        let address = self.endpoint.trim_start_matches("http://");
        let (mut count, mut token) = (0, None::<String>);
        loop {
            let query = token.as_ref().map_or_else(String::new, |t| format!("&continuation-token={}", percent_encode(t)));
            let mut stream = std::net::TcpStream::connect(address).expect("connect to moto");
            write!(stream, "GET /{bucket}?list-type=2&prefix={prefix}{query} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .expect("write");
            let mut reply = String::new();
            stream.read_to_string(&mut reply).expect("read");
            assert!(reply.starts_with("HTTP/1.1 200"), "listing {bucket}: {reply}");
            count += reply.matches("<Key>").count();
            token = reply.split("<NextContinuationToken>").nth(1).and_then(|rest| rest.split('<').next()).map(str::to_owned);
            if token.is_none() {
                return count;
            }
        }
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let tests = target.join("ci-venv/bin/moto_server");
    if tests.exists() {
        return tests;
    }
    let venv = target.join("bench-venv");
    let program = venv.join("bin/moto_server");
    if !program.exists() {
        eprintln!("installing moto from PyPI into {}", venv.display());
        if !venv.join("bin/pip").exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv), "python3 -m venv");
        }
        run(Command::new(venv.join("bin/pip")).args(["install", "-q", "moto[server]"]), "pip install moto[server]");
    }
    program
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The newest installed PostgreSQL's program `name`.
fn postgres_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql)")
        .flatten()
        .map(|entry| entry.path().join("bin").join(name))
        .filter(|path| path.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql"))
}

fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}
