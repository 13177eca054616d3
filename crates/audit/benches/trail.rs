//! The audit trail's figures on this machine: durable append throughput (group commit), the
//! latency an append adds to an action, validation throughput, and `trace` over 1,000,000
//! records. `cargo bench -p audit --bench trail` prints them; targets: ≥ 50,000 records/s,
//! ≥ 200 MB/s, < 1 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use audit::{Index, Layout, Record, RecordResource, Signer, Trail, TrailOptions, UserIdentity, ValidateOptions};
use serde_json::json;

const TOTAL_RECORDS: usize = 1_000_000;
const USERS: usize = 1000;

fn record(n: usize) -> Record {
    let user = format!("analyst-{:04}", n % USERS);
    Record {
        sequence_number: None,
        previous_record_hash: None,
        event_version: audit::EVENT_VERSION.into(),
        user_identity: UserIdentity {
            kind: "User".into(),
            principal_id: format!("custom:{user}"),
            arn: format!("arn:datasandbox:identity::000000000000:user/custom/{user}"),
            account_id: "000000000000".into(),
            user_name: Some(user.clone()),
            session_context: None,
        },
        event_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        event_source: "storage".into(),
        event_name: "PutObject".into(),
        aws_region: "local".into(),
        source_ip_address: format!("10.10.{}.{}", (n / 250) % 250, n % 250 + 2),
        user_agent: "datasandbox-cli/0.1.0".into(),
        error_code: None,
        error_message: None,
        request_parameters: json!({ "Bucket": "datasandbox-home", "Key": format!("user/custom/{user}/work/{n}.csv"), "Body": "HIDDEN_DUE_TO_SECURITY_REASONS" }),
        response_elements: json!({ "ETag": "\"0123456789abcdef0123456789abcdef\"" }),
        request_id: audit::new_request_id(),
        event_id: format!("10000000-0000-4000-8000-{n:012}"),
        read_only: false,
        resources: vec![RecordResource {
            arn: format!("arn:datasandbox:storage:::datasandbox-home/user/custom/{user}/work/{n}.csv"),
            account_id: "000000000000".into(),
            kind: "DataSandbox::Storage::Object".into(),
        }],
        event_type: "AwsApiCall".into(),
        management_event: false,
        recipient_account_id: "000000000000".into(),
        correlation_id: Some(format!("corr-{user}")),
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Appends from `tasks` concurrent callers for `duration`; returns (records, latencies).
async fn load(trail: &Trail, tasks: usize, duration: Duration, offset: usize) -> (usize, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (trail, stop) = (trail.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = offset + task;
                while !stop.load(Ordering::Relaxed) {
                    let record = record(n);
                    let started = Instant::now();
                    trail.append(&record).await.expect("append");
                    latencies.push(started.elapsed());
                    n += tasks;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.expect("task"));
    }
    all.sort_unstable();
    (all.len(), all)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let layout = Layout {
        root: dir.path().join("trail"),
        account_id: "000000000000".into(),
        region: "local".into(),
        bucket: "bench-trail".into(),
        node: None,
    };
    let secret: [u8; 32] = rand::random();
    let signer = Signer::from_bytes(&secret);
    let public_key = audit::parse_public_key(&signer.public_key_hex()).expect("own key");
    let index = Index::open(&audit::IndexTarget::File(dir.path().join("index.db")), "local").await.expect("index");
    let (index_tx, index_rx) = tokio::sync::mpsc::unbounded_channel();
    let trail = Trail::open(layout.clone(), signer, TrailOptions::default(), Some(index_tx)).expect("trail");
    index.spawn_feeder(index_rx);
    println!("Audit trail benchmark (durable: fdatasync before every acknowledgement; SHA-256 chain; signed checkpoints)");

    if let Ok(endpoint) = std::env::var("DATASANDBOX_TEST_S3") {
        compare_with_bucket(&endpoint).await;
    }

    let mut written = 0;
    for tasks in [8, 64, 512] {
        let window = Duration::from_secs(4);
        let (count, latencies) = load(&trail, tasks, window, written).await;
        written += count;
        println!(
            "append, {tasks:>3} concurrent callers: {:>9.0} records/s   latency p50 {:.2} ms  p99 {:.2} ms",
            count as f64 / window.as_secs_f64(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
    }

    // Fill the trail to a million records for validation and trace.
    let started = Instant::now();
    while written < TOTAL_RECORDS {
        let (count, _) = load(&trail, 512, Duration::from_millis(500), written).await;
        written += count;
    }
    println!("filled to {written} records in {:.1} s", started.elapsed().as_secs_f64());
    let sealed = Instant::now();
    trail.close().expect("close");
    println!("sealed and digested the last file in {:.2} s", sealed.elapsed().as_secs_f64());

    let started = Instant::now();
    let report = audit::validate::validate(&layout, &public_key, &ValidateOptions::default());
    let seconds = started.elapsed().as_secs_f64();
    assert!(report.valid, "{}", report.lines.join("\n"));
    println!(
        "validate: {:.0} MB of log content in {seconds:.2} s = {:.0} MB/s ({})",
        report.bytes_checked as f64 / 1e6,
        report.bytes_checked as f64 / 1e6 / seconds,
        report.lines.last().map_or("", String::as_str)
    );

    let started = Instant::now();
    assert!(index.wait_for(written as u64, Duration::from_secs(600)).await, "the index did not catch up");
    println!("index caught up {:.1} s after the last append", started.elapsed().as_secs_f64());
    for user in ["analyst-0042", "analyst-0999"] {
        let started = Instant::now();
        let events = index.trace(&audit::TraceSelector::User(user.into()), None, None, 1_000_000).await.expect("trace");
        println!(
            "trace --user {user} over {written} records: {} events in {:.1} ms",
            events.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}

/// Append throughput of a local trail and of one copied to an S3 bucket (the scale-out mode),
/// side by side: the bucket is written by the uploader thread, never on an append's path, so
/// the two should match; and how long the last upload takes once the trail closes.
async fn compare_with_bucket(endpoint: &str) {
    let bucket = format!("bench-trail-{}", rand::random::<u32>());
    create_bucket(endpoint, &bucket);
    let trail_bucket = audit::TrailBucket::s3(endpoint, &bucket, "us-east-1", true).expect("bucket");
    for (name, with_bucket) in [("local", None), ("S3-backed", Some(trail_bucket))] {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout {
            root: dir.path().join("trail"),
            account_id: "000000000000".into(),
            region: "local".into(),
            bucket: "bench-trail".into(),
            node: Some("bench".into()),
        };
        let options = TrailOptions { bucket: with_bucket, rotate_bytes: 4 * 1024 * 1024, ..TrailOptions::default() };
        let trail = Trail::open(layout, Signer::from_bytes(&rand::random()), options, None).expect("trail");
        let window = Duration::from_secs(4);
        let (count, latencies) = load(&trail, 64, window, 0).await;
        let closing = Instant::now();
        let closed = trail.clone();
        tokio::task::spawn_blocking(move || closed.close()).await.expect("join").expect("close");
        println!(
            "append, {name:>9} trail,  64 callers: {:>9.0} records/s   latency p50 {:.2} ms  p99 {:.2} ms   close (seal{}) {:.2} s",
            count as f64 / window.as_secs_f64(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            if name == "local" { "" } else { ", last upload" },
            closing.elapsed().as_secs_f64()
        );
    }
}

/// Makes a bucket on the test S3 server (moto takes unsigned requests).
fn create_bucket(endpoint: &str, bucket: &str) {
    use std::io::{Read as _, Write as _};
    let address = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the S3 server");
    write!(stream, "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "cannot create bucket {bucket}: {reply}");
}
