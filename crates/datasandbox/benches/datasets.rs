//! The dataset mount beside reading the same files natively. As root (instances, FUSE), against
//! the release binary; `sqlite3` on the PATH (large objects are made in place, below).
//!
//! `cargo bench -p datasandbox --bench datasets` prints, in one run:
//! 1. a 1 GiB file read sequentially (`dd bs=1M`) through an instance's `/data` (every read
//!    counted, and through passthrough with `read_audit = "opens"`) and natively (the same blob
//!    file, from the host), page cache warm and cold; target ≥ 70 %;
//! 2. open latency p50/p99 through the mount (each open decided and recorded) and of a file in
//!    the instance's own `/tmp`, and what the mount adds;
//! 3. a 10,000-entry dataset: its listing when the session starts, and a listing with every
//!    entry's attributes inside (what `ls -l` does; target ≤ 1 s);
//! 4. a session start with a 10 GB dataset: what copy-at-start cost at the least (writing the
//!    10 GB, measured as `cp` of the object's body) beside mounting it.
//!
//! Objects larger than an API call carries are made as the tests make them: written small,
//! then their blob grown in place and their size set in the metadata store.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use more of it")]
mod http;

#[path = "support/server.rs"]
#[allow(dead_code, reason = "shared by the benchmarks, which use different parts")]
mod server;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use server::{Launch, Server, Start};

const SPEC: &str = r#"[[buckets]]
name = "datasandbox-home"
home_folders = true

[[buckets]]
name = "research"

[datasets.trials]
bucket = "research"
prefix = "trials/"

# The same objects, read through passthrough (opens recorded, reads not counted).
[datasets.fast]
bucket = "research"
prefix = "trials/"
read_audit = "opens"

[[policies]]
name = "operator-admin"
text = 'permit (principal is DataSandbox::Operator, action, resource);'

[[policies]]
name = "trials-readers"
text = """
permit (
  principal == DataSandbox::User::"reader",
  action in [DataSandbox::Action::"storage:GetObject", DataSandbox::Action::"storage:ListObjectsV2"],
  resource in DataSandbox::Bucket::"research"
);"""
"#;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn put(server: &Server, key: &str, body: &[u8]) {
    server.call("storage:PutObject", json!({ "Bucket": "research", "Key": key, "Body": b64(body) }));
}

/// The blob file of `key`, after setting its size in the metadata store to `size`.
fn resize(server: &Server, key: &str, size: u64) -> PathBuf {
    let db = server.dir.path().join("metadata.db");
    let sql = format!("UPDATE objects SET size = {size} WHERE key = '{key}'; SELECT blob FROM objects WHERE key = '{key}';");
    let out = Command::new("sqlite3").arg(&db).arg(sql).output().expect("sqlite3 (apt-get install sqlite3)");
    assert!(out.status.success(), "sqlite3: {}", String::from_utf8_lossy(&out.stderr));
    let blob = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    server.dir.path().join("objects/blobs").join(&blob[..2]).join(&blob)
}

/// Runs a shell script in the instance as its user; its standard output.
fn inside(server: &Server, instance: &str, script: &str) -> String {
    let out = server.cli(&["instances", "exec", instance, "--", "/bin/bash", "-c", script]);
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::String(text)) => text,
        _ => out,
    }
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// MB/s from dd's last line ("… bytes … copied, 1.23 s, 870 MB/s").
fn dd_rate(report: &str) -> f64 {
    let line = report.lines().rev().find(|l| l.contains("copied")).unwrap_or_default();
    let bytes: f64 = line.split_whitespace().next().and_then(|b| b.parse().ok()).unwrap_or(0.0);
    let seconds: f64 = line.split(',').nth(2).and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(f64::NAN);
    bytes / seconds / 1e6
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let octet = 100 + std::process::id() % 50;
    let server =
        Server::launch(Launch { images: &["base"], octet, overrides: Vec::new(), env: Vec::new(), start: Start::UpWithSpec(SPEC) });
    let (big, ten) = objects(&server);
    let started = Instant::now();
    let created = server.call("streaming:CreateInstance", json!({ "UserId": "reader" }));
    let create_time = started.elapsed();
    let instance = created["Instance"]["InstanceId"].as_str().expect("an instance").to_owned();
    let mounted = &created["Instance"]["Datasets"][0];
    assert_eq!(mounted["State"], "MOUNTED", "{created}");
    sequential_reads(&server, &instance, &big);
    open_latency(&server, &instance);
    listing(&server, &instance, &mounted["MountMillis"]);
    session_start(&server, &ten, create_time, &mounted["MountMillis"]);
    let records = server.call(
        "audit:LookupEvents",
        json!({ "LookupAttributes": [{ "AttributeKey": "EventName", "AttributeValue": "DatasetFileOpened" }], "MaxResults": 1000 }),
    );
    println!("DatasetFileOpened records written during the run: {}", records["Events"].as_array().map_or(0, Vec::len));
    server.call("streaming:TerminateInstance", json!({ "InstanceId": instance }));
    std::thread::sleep(Duration::from_millis(200));
}

/// The objects: 1 GiB of random bytes, a small one, 10,000 small ones, a 10 GB one (sparse);
/// the blob files of the first and the last.
fn objects(server: &Server) -> (PathBuf, PathBuf) {
    // Larger than the bodies the metadata store keeps (32 KiB): each has a blob file to grow.
    put(server, "trials/big.bin", &[b'x'; 40 * 1024]);
    let big = resize(server, "trials/big.bin", 1 << 30);
    let filled = Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", big.display()))
        .args(["bs=1M", "count=1024", "status=none"])
        .status();
    assert!(filled.expect("dd").success());
    put(server, "trials/small.csv", b"id,value\n1,2\n");
    let started = Instant::now();
    for n in 0..10_000 {
        put(server, &format!("trials/many/{n:05}.csv"), b"id\n1\n");
    }
    println!("10,000 objects written in {:.1} s", started.elapsed().as_secs_f64());
    put(server, "trials/ten.bin", &[b'x'; 40 * 1024]);
    let ten = resize(server, "trials/ten.bin", 10_000_000_000);
    std::fs::OpenOptions::new().write(true).open(&ten).expect("blob").set_len(10_000_000_000).expect("grow sparse");
    (big, ten)
}

/// 1. Sequential reads, through the mount (counted, and passthrough) and natively.
fn sequential_reads(server: &Server, instance: &str, big: &std::path::Path) {
    println!("\n1 GiB sequential read (dd bs=1M), MB/s:");
    for cache in ["warm", "cold"] {
        let (mut through, mut passthrough, mut native) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            if cache == "cold" {
                drop_caches();
            }
            through.push(dd_rate(&inside(server, instance, "dd if=/data/trials/big.bin of=/dev/null bs=1M 2>&1")));
            if cache == "cold" {
                drop_caches();
            }
            passthrough.push(dd_rate(&inside(server, instance, "dd if=/data/fast/big.bin of=/dev/null bs=1M 2>&1")));
            if cache == "cold" {
                drop_caches();
            }
            let out = Command::new("dd").arg(format!("if={}", big.display())).args(["of=/dev/null", "bs=1M"]).output().expect("dd");
            native.push(dd_rate(&String::from_utf8_lossy(&out.stderr)));
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let runs = |v: &[f64]| v.iter().map(|r| r.round()).collect::<Vec<_>>();
        println!(
            "  page cache {cache}: mount {:>6.0} {:?}, {:.0} % of native | passthrough {:>6.0} {:?}, {:.0} % | native {:>6.0} {:?}   target ≥ 70 %",
            best(&through),
            runs(&through),
            100.0 * best(&through) / best(&native),
            best(&passthrough),
            runs(&passthrough),
            100.0 * best(&passthrough) / best(&native),
            best(&native),
            runs(&native),
        );
    }
}

/// 2. Open latency, through the mount and of a file in the instance's own `/tmp`.
fn open_latency(server: &Server, instance: &str) {
    let script = "python3 - <<'EOF'\nimport time\ndef lat(p):\n  out=[]\n  for _ in range(300):\n    t=time.perf_counter(); f=open(p,'rb'); out.append((time.perf_counter()-t)*1000); f.close()\n  out.sort(); return out[150], out[int(299*0.99)]\nopen('/tmp/native.csv','w').write('id,value\\n1,2\\n')\nprint(*lat('/data/trials/small.csv'), *lat('/tmp/native.csv'))\nEOF";
    let figures: Vec<f64> = inside(server, instance, script).split_whitespace().filter_map(|v| v.parse().ok()).collect();
    if let [mount50, mount99, native50, native99] = figures[..] {
        println!(
            "\nopen() latency, ms (300 opens): mount p50 {mount50:.3} p99 {mount99:.3}; /tmp p50 {native50:.3} p99 {native99:.3}; added p50 {:.3} p99 {:.3}",
            mount50 - native50,
            mount99 - native99
        );
    } else {
        println!("\nopen() latency: unreadable figures {figures:?}");
    }
}

/// 3. A 10,000-entry listing with every entry's attributes, inside.
fn listing(server: &Server, instance: &str, mount_millis: &Value) {
    let mut lists = Vec::new();
    for _ in 0..5 {
        let out = inside(
            server,
            instance,
            "python3 -c 'import os,time\nt=time.perf_counter()\nn=sum(1 for e in os.scandir(\"/data/trials/many\") if e.stat())\nprint(n, time.perf_counter()-t)'",
        );
        let seconds: f64 = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
        lists.push(seconds);
    }
    lists.sort_by(f64::total_cmp);
    println!(
        "\n10,000 entries: listed and mounted at session start with the rest in {} ms (10,023 objects, twice: both datasets); listing with attributes inside: p50 {:.3} s, worst {:.3} s of 5   target ≤ 1 s",
        mount_millis,
        percentile(&lists, 0.5),
        lists[lists.len() - 1]
    );
}

/// 4. Session start with a 10 GB dataset: mounted, beside what copying it cost at the least.
fn session_start(server: &Server, ten: &std::path::Path, create_time: Duration, mount_millis: &Value) {
    let copy = server.dir.path().join("copy-at-start.bin");
    drop_caches();
    let started = Instant::now();
    let copied = Command::new("cp").arg("--sparse=never").arg(ten).arg(&copy).status().expect("cp");
    let _ = Command::new("sync").status();
    let copy_time = started.elapsed();
    let _ = std::fs::remove_file(&copy);
    assert!(copied.success());
    println!(
        "\nsession start with a 10 GB dataset (and 1 GiB, 10,000 files beside it): CreateInstance {:.0} ms, of which listing and mounting {} ms; copy-at-start would first have written 10 GB: {:.1} s (cp of the body)",
        create_time.as_secs_f64() * 1000.0,
        mount_millis,
        copy_time.as_secs_f64()
    );
}
