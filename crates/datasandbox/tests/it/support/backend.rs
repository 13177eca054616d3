//! Which backends a test server runs on. By default the embedded ones (SQLite and files in the
//! data directory). With `DATASANDBOX_TEST_POSTGRES` (a server URL without a database, e.g.
//! `postgres://postgres@127.0.0.1:5433`) and `DATASANDBOX_TEST_S3` (an S3 endpoint, e.g.
//! `http://127.0.0.1:5000`), every server gets a database and a bucket of its own on them:
//! `scripts/test` runs the whole suite a second time that way, against a cluster and an S3
//! server it started for the run. Both names come from the data directory, so a restart on the
//! same directory finds the same database and bucket.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::Command;

/// The `-c` overrides and environment that put a server on this run's backends.
pub struct Backends {
    pub overrides: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// True when this run is on the scale-out backends.
pub fn scale_out() -> bool {
    std::env::var_os("DATASANDBOX_TEST_POSTGRES").is_some()
}

/// A name for the server on `data_dir`, stable across its restarts: `<prefix><16 hex digits>`.
fn name_for(data_dir: &Path, prefix: &str) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    format!("{prefix}{:016x}", hasher.finish())
}

/// The scale-out settings for the server on `data_dir`, making its database and bucket the
/// first time; nothing for the embedded defaults.
pub fn for_server(data_dir: &Path) -> Backends {
    let mut backends = Backends { overrides: Vec::new(), env: Vec::new() };
    if let Ok(server) = std::env::var("DATASANDBOX_TEST_POSTGRES") {
        let database = name_for(data_dir, "ds_");
        create_database(&server, &database);
        backends.overrides.push(format!("metadata.url={}/{database}", server.trim_end_matches('/')));
    }
    if let Ok(endpoint) = std::env::var("DATASANDBOX_TEST_S3") {
        let bucket = name_for(data_dir, "ds-");
        create_bucket(&endpoint, &bucket);
        backends.overrides.extend([
            "storage.backend=s3".to_owned(),
            format!("storage.s3.endpoint={endpoint}"),
            format!("storage.s3.bucket={bucket}"),
            "storage.s3.allow_http=true".to_owned(),
        ]);
        // moto takes any credentials; a real deployment gives the server its own.
        backends
            .env
            .extend([("AWS_ACCESS_KEY_ID".to_owned(), "testing".to_owned()), ("AWS_SECRET_ACCESS_KEY".to_owned(), "testing".to_owned())]);
    }
    backends
}

/// `CREATE DATABASE`, unless a restart finds it made.
pub fn create_database(server: &str, database: &str) {
    let exists = psql(server, &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"));
    if exists.trim() != "1" {
        psql(server, &format!("CREATE DATABASE {database}"));
    }
}

fn psql(server: &str, sql: &str) -> String {
    psql_at(&format!("{}/postgres", server.trim_end_matches('/')), sql)
}

/// Runs `sql` on the database at `url`; what it printed, trimmed.
pub fn psql_at(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args([url, "-At", "-c", sql]).output().expect("psql");
    assert!(out.status.success(), "psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Makes the bucket (moto takes unsigned requests; an existing bucket is fine).
pub fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read, Write};
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the test S3 server");
    write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 200") || reply.contains("BucketAlreadyOwnedByYou"), "cannot create bucket {bucket}: {reply}");
}

/// Runs `sql` on the metadata store of the server on `data_dir`, as a test reaching past the
/// API (moving time, counting rows); returns what it printed, trimmed.
pub fn sql(data_dir: &Path, sql: &str) -> String {
    match std::env::var("DATASANDBOX_TEST_POSTGRES") {
        Ok(server) => psql_at(&format!("{}/{}", server.trim_end_matches('/'), name_for(data_dir, "ds_")), sql),
        Err(_) => {
            let out = Command::new("sqlite3")
                .arg(data_dir.join("metadata.db"))
                .arg(format!("PRAGMA busy_timeout = 5000; {sql}"))
                .output()
                .expect("sqlite3 (scripts/test installs it)");
            assert!(out.status.success(), "sqlite3 `{sql}`: {}", String::from_utf8_lossy(&out.stderr));
            // The pragma prints the timeout it set before the statement's own output.
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim().strip_prefix("5000").unwrap_or(text.trim()).trim().to_owned()
        }
    }
}

/// How many object bodies (blobs) the server on `data_dir` keeps: files under `objects/`
/// (without the object store's temporary `#` files), or keys under `blobs/` in its bucket.
pub fn blob_count(data_dir: &Path) -> usize {
    let Ok(endpoint) = std::env::var("DATASANDBOX_TEST_S3") else {
        let files = crate::support::files::walk(&data_dir.join("objects"));
        return files.iter().filter(|p| !p.to_string_lossy().contains('#')).count();
    };
    let bucket = name_for(data_dir, "ds-");
    let (mut count, mut token) = (0, None::<String>);
    loop {
        let query = token
            .as_ref()
            .map_or_else(String::new, |t| format!("&continuation-token={}", t.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")));
        let reply = get(&endpoint, &format!("/{bucket}?list-type=2&prefix=blobs/{query}"));
        count += reply.matches("<Key>").count();
        token = reply.split("<NextContinuationToken>").nth(1).and_then(|rest| rest.split('<').next()).map(str::to_owned);
        if token.is_none() {
            return count;
        }
    }
}

fn get(endpoint: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the test S3 server");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    reply
}
