//! The airlock's cost: the checks over a 100 MB CSV (time, and the server's peak resident
//! memory while they run, apart from the copy into the airlock before them, which holds the
//! file once), and the whole path from submission to release with two reviewers,
//! for that file and for a small one, against the release binary with ClamAV scanning.
//!
//! `cargo bench -p datasandbox --bench airlock` prints the figures. Figures, not assertions.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const LARGE: usize = 100 * 1000 * 1000;

/// The release server on `dir`, scanning with the signatures in `database`; its API address.
fn start(dir: &std::path::Path, database: &str) -> (std::process::Child, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_datasandbox"))
        .arg("--data-dir")
        .arg(dir)
        .args(["up", "-c", "server.api_listen=127.0.0.1:0", "-c", "storage.max_object_size=268435456"])
        .args(["-c", "airlock.max_file_bytes=268435456", "-c", &format!("airlock.clamav_database={database}")])
        .env("DATASANDBOX_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut ready = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut ready).expect("ready line");
    let api = ready.split_whitespace().find_map(|w| w.strip_prefix("api=http://")).expect("the API's address").to_owned();
    (server, api)
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let signatures = tempfile::tempdir().expect("temp dir");
    let database = eicar_database(signatures.path());
    let (mut server, api) = start(dir.path(), &database);
    let socket = dir.path().join("control.sock");
    let token = |user: &str, roles: &[&str]| {
        let out = call_unix(&socket, "identity:CreateSessionToken", &json!({ "UserId": user, "Roles": roles }));
        out["Token"].as_str().expect("token").to_owned()
    };
    // Reviewers sign in (their roles come from the user directory, not from an issued token).
    let reviewer = |user: &str| {
        let password = "correct horse battery staple";
        call_unix(&socket, "identity:CreateLocalUser", &json!({ "UserName": user, "Password": password, "Roles": ["reviewer"] }));
        let reply = http::tcp(&api)
            .expect("connect")
            .call("identity:SignIn", &json!({ "UserName": user, "Password": password }), None)
            .expect("sign in");
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        reply.json()["Token"].as_str().expect("token").to_owned()
    };
    let (nora, rita, ravi) = (token("nora", &[]), reviewer("rita"), reviewer("ravi"));

    println!("DataSandbox airlock benchmark: checks (type, polyglot, tables, lineage, ClamAV) and review, through the API");
    println!(
        "{:<22} {:>8} {:>18} {:>9} {:>13} {:>20} {:>12}",
        "file", "add s", "add peak RSS MiB", "checks s", "MB/s checked", "checks peak RSS MiB", "to release s"
    );
    for (name, body) in [("small.csv (1 KiB)", table(1024)), ("large.csv (100 MB)", table(LARGE))] {
        let size = body.len();
        let key = format!("user/custom/{}/{}", sha256_hex(b"nora"), name.split(' ').next().expect("a name"));
        let put = json!({ "Bucket": "datasandbox-home", "Key": key, "Body": base64_of(&body) });
        drop(body);
        call_tcp(&api, &nora, "storage:PutObject", &put);
        drop(put);
        // The peak from here on: the upload's own (a 133 MB JSON body) is not the airlock's.
        let _ = std::fs::write(format!("/proc/{}/clear_refs", server.id()), "5");
        let before = current_rss_kib(server.id());
        let created = call_tcp(
            &api,
            &nora,
            "airlock:CreateRequest",
            &json!({ "Direction": "EXPORT", "Workspace": "datasandbox-stack", "Justification": "bench" }),
        );
        let id = created["RequestId"].as_str().expect("id").to_owned();
        let started = Instant::now();
        call_tcp(&api, &nora, "airlock:AddFile", &json!({ "RequestId": id, "Source": { "Bucket": "datasandbox-home", "Key": key } }));
        let added = started.elapsed();
        let add_peak = peak_rss_kib(server.id());
        // The checks' own peak: from what the copy left resident.
        let _ = std::fs::write(format!("/proc/{}/clear_refs", server.id()), "5");
        let before_checks = current_rss_kib(server.id());
        let checking = Instant::now();
        let submitted = call_tcp(&api, &nora, "airlock:SubmitRequest", &json!({ "RequestId": id }));
        let checked = checking.elapsed();
        let checks_peak = peak_rss_kib(server.id());
        assert_eq!(submitted["State"], "in_review", "{submitted}");
        for reviewer in [&rita, &ravi] {
            call_tcp(&api, reviewer, "airlock:CastVote", &json!({ "RequestId": id, "Decision": "APPROVE" }));
        }
        call_tcp(&api, &rita, "airlock:ReleaseRequest", &json!({ "RequestId": id }));
        let released = checking.elapsed();
        println!(
            "{:<22} {:>8.3} {:>18} {:>9.3} {:>13.1} {:>20} {:>12.3}",
            name,
            added.as_secs_f64(),
            format!("{} (from {})", add_peak / 1024, before / 1024),
            checked.as_secs_f64(),
            size as f64 / 1e6 / checked.as_secs_f64().max(1e-9),
            format!("{} (from {})", checks_peak / 1024, before_checks / 1024),
            released.as_secs_f64(),
        );
    }
    let _ = Command::new("kill").args(["-INT", &server.id().to_string()]).status();
    server.wait_timeout();
}

trait WaitTimeout {
    fn wait_timeout(&mut self);
}

impl WaitTimeout for std::process::Child {
    fn wait_timeout(&mut self) {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.kill();
    }
}

/// A results table of about `bytes`: regions and counts, none of them small.
fn table(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 64);
    out.extend_from_slice(b"region,count,mean\n");
    let mut n = 0u64;
    while out.len() < bytes {
        let _ = writeln!(out, "region-{n:09},{},{}.{}", 100 + n % 9000, 40 + n % 50, n % 10);
        n += 1;
    }
    out
}

/// The server's peak resident memory since it was last reset (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn current_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix(" kB")?.trim().parse().ok()).unwrap_or(0)
}

fn call_unix(socket: &std::path::Path, action: &str, input: &Value) -> Value {
    let reply = http::unix(socket).expect("connect").call(action, input, None).expect("call");
    assert_eq!(reply.status, 200, "{action}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

fn call_tcp(api: &str, token: &str, action: &str, input: &Value) -> Value {
    let reply = http::tcp(api).expect("connect").call(action, input, Some(token)).expect("call");
    assert_eq!(reply.status, 200, "{action}: {}", String::from_utf8_lossy(&reply.body[..reply.body.len().min(2000)]));
    reply.json()
}

/// A ClamAV database holding the EICAR test signature only, readable by `nobody`.
fn eicar_database(dir: &std::path::Path) -> String {
    const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut md5 = Command::new("md5sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("md5sum");
    md5.stdin.take().expect("stdin").write_all(EICAR).expect("write");
    let out = md5.wait_with_output().expect("md5sum");
    let digest = String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("digest").to_owned();
    let file = dir.join("bench.hdb");
    std::fs::write(&file, format!("{digest}:{}:Eicar-Test-Signature\n", EICAR.len())).expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    dir.display().to_string()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
