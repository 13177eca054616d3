//! The tamper-evident trail: every kind of tampering is detected with the right message, an
//! untouched trail validates, a crash leaves a trail that validates, and `audit trace` draws
//! exactly one person's timeline.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::files::{copy_dir, walk};
use crate::support::http;
use crate::support::nodes::Shared;
use crate::support::server::Server;
use crate::support::trail::{build_trail, digest_files, edit_log, files_ending, gunzip, gzip, log_files, s3_delete, s3_keys, validate};

#[test]
fn every_kind_of_tampering_is_detected_and_an_untouched_trail_validates() {
    let (original, key) = build_trail();
    let pristine = validate(original.path(), &key);
    assert_eq!(pristine.exit, 0, "{}", pristine.stdout);
    assert!(log_files(original.path()).len() >= 3, "the scenario needs several log files");
    assert!(pristine.stdout.contains("digest files valid") && !pristine.stdout.contains("INVALID"), "{}", pristine.stdout);

    type Tamper = Box<dyn Fn(&Path)>;
    // A sealed file after the first with at least three records (how records fall into files
    // depends on timing).
    let middle = |trail: &Path| {
        log_files(trail)
            .into_iter()
            .skip(1)
            .find(|f| String::from_utf8(gunzip(&std::fs::read(f).expect("read"))).expect("utf-8").matches(",\n").count() >= 2)
            .expect("a log file with three records")
    };
    let cases: Vec<(&str, Tamper, &[&str])> = vec![
        (
            "modified record",
            Box::new(move |t| edit_log(&middle(t), |lines| lines[1] = lines[1].replacen("\"eventID\":\"", "\"eventID\":\"0", 1))),
            // Record-level tampering is found by the chain or, when a checkpoint signs the
            // record, by the checkpoint (which depends on how records fell into checkpoints).
            &["INVALID: hash value doesn't match", "has been modified|does not match its signed checkpoint"],
        ),
        (
            "deleted record",
            Box::new(move |t| edit_log(&middle(t), |lines| drop(lines.remove(1)))),
            &["is missing (deleted)|does not match its signed checkpoint"],
        ),
        (
            "inserted record",
            Box::new(move |t| {
                edit_log(&middle(t), |lines| {
                    let copy = lines[1].clone();
                    lines.insert(2, copy);
                })
            }),
            &["a record was inserted|does not match its signed checkpoint"],
        ),
        (
            "reordered records",
            Box::new(move |t| edit_log(&middle(t), |lines| lines.swap(1, 2))),
            &["records are out of order|does not match its signed checkpoint"],
        ),
        (
            "truncated tail",
            Box::new(|t| {
                // Cut the newest records: the tail of the last file with several, and every file after it.
                let files = log_files(t);
                let several = files
                    .iter()
                    .rposition(|f| String::from_utf8(gunzip(&std::fs::read(f).expect("read"))).expect("utf-8").contains(",\n"))
                    .expect("a file with several records");
                edit_log(&files[several], |lines| lines.truncate(1));
                for later in &files[several + 1..] {
                    std::fs::remove_file(later).expect("remove");
                }
            }),
            &["INVALID: truncated"],
        ),
        ("deleted log file", Box::new(move |t| std::fs::remove_file(middle(t)).expect("remove")), &["INVALID: not found"]),
        (
            "moved log file",
            Box::new(move |t| {
                let file = middle(t);
                let elsewhere = t.join("elsewhere");
                std::fs::create_dir_all(&elsewhere).expect("mkdir");
                std::fs::rename(&file, elsewhere.join(file.file_name().expect("name"))).expect("move");
            }),
            &["INVALID: has been moved from its original location"],
        ),
        (
            "modified digest",
            Box::new(|t| {
                // A digest that lists log files (one written while no file was sealed lists
                // none, and emptying it would change nothing), its list emptied.
                let (digest, mut value) = digest_files(t)
                    .into_iter()
                    .map(|d| {
                        let text = String::from_utf8(gunzip(&std::fs::read(&d).expect("read"))).expect("utf-8");
                        (d, serde_json::from_str::<Value>(&text).expect("json"))
                    })
                    .find(|(_, v)| v["logFiles"].as_array().is_some_and(|files| !files.is_empty()))
                    .expect("a digest that lists log files");
                value["logFiles"] = json!([]);
                std::fs::write(&digest, gzip(value.to_string().as_bytes())).expect("write");
            }),
            &["Digest file", "INVALID: signature verification failed"],
        ),
        (
            "deleted digest",
            Box::new(|t| {
                let digest = digest_files(t)[1].clone();
                std::fs::remove_file(&digest).expect("remove");
                let _ = std::fs::remove_file(format!("{}.sig", digest.display()));
            }),
            &["Digest file", "INVALID: not found"],
        ),
        (
            "deleted newest digest",
            Box::new(|t| {
                let digest = digest_files(t).pop().expect("a digest");
                std::fs::remove_file(&digest).expect("remove");
            }),
            &["Digest file", "INVALID: not found"],
        ),
        ("digest signed by another key", Box::new(resign_with_another_key), &["Digest file", "INVALID: signature verification failed"]),
        ("rewritten chain", Box::new(rewrite_chain_of_last_file), &["does not match its signed checkpoint"]),
    ];
    for (what, tamper, phrases) in cases {
        let copy = tempfile::tempdir().expect("temp dir");
        copy_dir(original.path(), copy.path());
        tamper(copy.path());
        let result = validate(copy.path(), &key);
        assert_eq!(result.exit, 1, "{what}: validate passed a tampered trail:\n{}", result.stdout);
        for phrase in phrases {
            // `a|b`: either wording.
            assert!(phrase.split('|').any(|p| result.stdout.contains(p)), "{what}: the report does not say `{phrase}`:\n{}", result.stdout);
        }
        assert!(result.stdout.lines().any(|l| l.contains("files INVALID")), "{what}: no INVALID count:\n{}", result.stdout);
    }
}

/// Re-signs a digest (correctly, with the CloudTrail string to sign) with a key that is not the trail's.
fn resign_with_another_key(trail: &Path) {
    use ed25519_dalek::Signer as _;
    let digest_path = digest_files(trail)[1].clone();
    let bytes = gunzip(&std::fs::read(&digest_path).expect("read"));
    let mut digest: Value = serde_json::from_slice(&bytes).expect("json");
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    digest["digestPublicKeyFingerprint"] = json!(hex::encode(Sha256::digest(other.verifying_key().to_bytes()))[..32].to_owned());
    let bytes = digest.to_string().into_bytes();
    let to_sign = format!(
        "{}\n{}/{}\n{}\n{}",
        digest["digestEndTime"].as_str().expect("end"),
        digest["digestS3Bucket"].as_str().expect("bucket"),
        digest["digestS3Object"].as_str().expect("object"),
        hex::encode(Sha256::digest(&bytes)),
        digest["previousDigestSignature"].as_str().unwrap_or("null")
    );
    let signature = hex::encode(other.sign(to_sign.as_bytes()).to_bytes());
    std::fs::write(&digest_path, gzip(&bytes)).expect("write");
    std::fs::write(
        format!("{}.sig", digest_path.display()),
        json!({ "signature": signature, "signatureAlgorithm": "Ed25519" }).to_string(),
    )
    .expect("write sig");
}

/// An attacker who edits a record and repairs the hash chain after it: only the signed
/// checkpoints (and digests) can tell.
fn rewrite_chain_of_last_file(trail: &Path) {
    let files = log_files(trail);
    let last = files
        .iter()
        .rev()
        .find(|f| String::from_utf8(gunzip(&std::fs::read(f).expect("read"))).expect("utf-8").contains("PutParameter"))
        .expect("a file of actions");
    edit_log(last, |lines| {
        lines[0] = lines[0].replace("PutParameter", "GetParameter");
        for index in 1..lines.len() {
            let previous = hex::encode(Sha256::digest(lines[index - 1].as_bytes()));
            let line = &lines[index];
            let start = line.find("\"previousRecordHash\":\"").expect("chain prefix") + "\"previousRecordHash\":\"".len();
            lines[index] = format!("{}{}{}", &line[..start], previous, &line[start + 64..]);
        }
    });
}

#[test]
fn a_crash_leaves_a_trail_that_validates_with_every_acknowledged_record() {
    let mut server = Server::start(&["audit.checkpoint_interval_ms=50"]);
    let socket = server.socket();
    let mut acknowledged = Vec::new();
    let writers: Vec<_> = (0..3)
        .map(|writer| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut names = Vec::new();
                let Ok(mut connection) = http::unix(&socket) else { return names };
                for n in 0..400 {
                    let name = format!("/crash/w{writer}/p{n}");
                    match connection.call("parameters:PutParameter", &json!({ "Name": name, "Value": "v", "Type": "String" }), None) {
                        Ok(reply) if reply.status == 200 => names.push(name),
                        _ => return names,
                    }
                }
                names
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let trail = server.data_dir().join("trail");
    let key = walk(&trail).into_iter().find(|p| p.extension().is_some_and(|e| e == "pub")).expect("public key");
    server.crash_and_restart_later();
    for writer in writers {
        acknowledged.extend(writer.join().expect("writer"));
    }
    assert!(!acknowledged.is_empty());

    // Straight after the crash, before anything repairs it, the trail validates.
    let crashed = validate(&trail, &key);
    assert_eq!(crashed.exit, 0, "{}", crashed.stdout);
    // An unacknowledged, half-written record at the end is reported, not accepted or dropped.
    let open = files_ending(&trail, ".jsonl", "/DataSandbox/").pop().expect("the open log file");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&open)
        .expect("open")
        .write_all(b"{\"sequenceNumber\":999999,\"previousRe")
        .expect("append");
    let torn = validate(&trail, &key);
    assert_eq!(torn.exit, 0, "{}", torn.stdout);
    assert!(torn.stdout.contains("partial record at the end: 36 bytes"), "{}", torn.stdout);

    // After a restart (which seals the open file) it still validates and says the same.
    server.restart(&[]);
    // Every page: three writers may have had more than one page of records acknowledged.
    let mut records = Vec::new();
    let mut token = None::<String>;
    loop {
        let mut input =
            json!({ "LookupAttributes": [{ "AttributeKey": "EventName", "AttributeValue": "PutParameter" }], "MaxResults": 1000 });
        if let Some(token) = &token {
            input["NextToken"] = json!(token);
        }
        let page = server.ok("audit:LookupEvents", input);
        records.extend(page["Events"].as_array().cloned().unwrap_or_default());
        match page["NextToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    let audited: std::collections::HashSet<&str> =
        records.iter().filter(|r| r.get("errorCode").is_none()).filter_map(|r| r["requestParameters"]["Name"].as_str()).collect();
    for name in &acknowledged {
        assert!(audited.contains(name.as_str()), "acknowledged PutParameter {name} has no audit record");
    }
    let restarted = validate(&trail, &key);
    assert_eq!(restarted.exit, 0, "{}", restarted.stdout);
    assert!(restarted.stdout.contains("Auditing was off between"), "the downtime is not shown:\n{}", restarted.stdout);
    assert!(restarted.stdout.contains("partial record at the end: 36 bytes"), "{}", restarted.stdout);
}

#[test]
fn trace_draws_exactly_one_persons_timeline() {
    let server = Server::start(&[]);
    let alice = server.token_for("alice");
    let bob = server.token_for("bob");
    let prefix = |user: &str| format!("user/custom/{}/", hex::encode(Sha256::digest(user.as_bytes())));
    let mut tcp = http::tcp(&server.api).expect("connect");
    let steps: Vec<(&str, &str, Value, u16)> = vec![
        (
            "alice",
            "storage:PutObject",
            json!({ "Bucket": "datasandbox-home", "Key": format!("{}a.txt", prefix("alice")), "Body": "YQ==" }),
            200,
        ),
        (
            "bob",
            "storage:PutObject",
            json!({ "Bucket": "datasandbox-home", "Key": format!("{}b.txt", prefix("bob")), "Body": "Yg==" }),
            200,
        ),
        ("alice", "storage:GetObject", json!({ "Bucket": "datasandbox-home", "Key": format!("{}a.txt", prefix("alice")) }), 200),
        ("alice", "storage:GetObject", json!({ "Bucket": "datasandbox-home", "Key": format!("{}b.txt", prefix("bob")) }), 403),
        ("bob", "storage:ListObjectsV2", json!({ "Bucket": "datasandbox-home", "Prefix": prefix("bob") }), 200),
        ("alice", "storage:ListObjectsV2", json!({ "Bucket": "datasandbox-home", "Prefix": prefix("alice") }), 200),
    ];
    for (who, action, input, status) in &steps {
        let token = if *who == "alice" { &alice } else { &bob };
        let reply = tcp.call(action, input, Some(token)).expect("call");
        assert_eq!(reply.status, *status, "{who} {action}");
    }
    let traced = server.cli(&["audit", "trace", "--user", "alice", "--json"], &[]);
    assert_eq!(traced.exit, 0, "{:?}", traced.stderr);
    let lines: Vec<Value> = match &traced.stdout {
        Value::String(text) => text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect(),
        one => vec![one.clone()],
    };
    let timeline: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|e| {
            (
                e["userName"].as_str().unwrap_or("-").to_owned(),
                e["action"].as_str().expect("action").to_owned(),
                e["sourceIPAddress"].as_str().unwrap_or("-").to_owned(),
                e["errorCode"].as_str().unwrap_or("ok").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String, String)> = [
        ("root", "identity:CreateSessionToken", "control.sock", "ok"),
        ("alice", "storage:PutObject", "127.0.0.1", "ok"),
        ("alice", "storage:GetObject", "127.0.0.1", "ok"),
        ("alice", "storage:GetObject", "127.0.0.1", "AccessDeniedException"),
        ("alice", "storage:ListObjectsV2", "127.0.0.1", "ok"),
    ]
    .iter()
    .map(|(a, b, c, d)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned(), (*d).to_owned()))
    .collect();
    assert_eq!(timeline, expected);

    // The same timeline from the trail's files alone, after rebuilding the index.
    let reindexed = server.cli(&["audit", "reindex"], &[]);
    assert_eq!(reindexed.exit, 0, "{:?}", reindexed.stderr);
    let again = server.cli(&["audit", "trace", "--user", "alice", "--json"], &[]);
    assert_eq!(again.stdout, traced.stdout);

    // SQL over the index is read-only and one statement.
    let counted = server.cli(
        &[
            "audit",
            "query",
            "SELECT user_name, count(*) AS n FROM events WHERE user_name IN ('alice', 'bob') GROUP BY user_name ORDER BY user_name",
            "--json",
        ],
        &[],
    );
    assert_eq!(counted.exit, 0, "{:?}", counted.stderr);
    let rows: Vec<Value> = match &counted.stdout {
        Value::String(text) => text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect(),
        one => vec![one.clone()],
    };
    assert_eq!(rows, vec![json!({ "user_name": "alice", "n": 4 }), json!({ "user_name": "bob", "n": 2 })]);
    for refused in ["DELETE FROM events", "SELECT 1; DROP TABLE events", "ATTACH DATABASE 'x.db' AS x", "PRAGMA writable_schema = 1"] {
        let called = server.cli(&["audit", "query", refused], &[]);
        assert_eq!((called.exit, called.stderr["Code"].as_str()), (1, Some("ValidationException")), "{refused}");
    }
}

#[test]
fn usage_reports_are_written_only_for_days_with_sessions() {
    let server = Server::start(&[]);
    let quiet = server.ok("audit:GenerateUsageReports", json!({ "Day": "2026-01-15" }));
    assert_eq!(quiet, json!({ "Day": "2026-01-15", "Sessions": 0 }));
    let listed = server.ok("storage:ListObjectsV2", json!({ "Bucket": "datasandbox-reports" }));
    assert_eq!(listed["KeyCount"], 0);
    for (day, phrase) in [("2026-13-01", "is not a date"), ("2999-01-01", "in the future")] {
        let called = server.cli(&["reports", "generate", "--day", day], &[]);
        assert_eq!((called.exit, called.stderr["Code"].as_str()), (1, Some("ValidationException")), "{day}");
        assert!(called.stderr["Message"].as_str().expect("message").contains(phrase), "{day}: {:?}", called.stderr);
    }
}

/// Two nodes on one PostgreSQL database and one bucket: each keeps its own chain and key, any
/// node's LookupEvents finds the other's records, `audit validate` reads both chains from the
/// bucket and reports each, and an object deleted from one node's chain fails that node only.
/// On the run's scale-out backends, or on a PostgreSQL and a moto of the test's own.
#[test]
fn two_nodes_keep_their_own_chains_and_one_trail_spans_them() {
    let shared = Shared::start();
    let overrides = shared.overrides();
    let setting = |name: &str| overrides.iter().find_map(|o| o.strip_prefix(name)).expect("an S3 setting").to_owned();
    let (endpoint, bucket) = (setting("storage.s3.endpoint="), setting("storage.s3.bucket="));
    let mut a = shared.node("a", None, &[]);
    let mut b = shared.node("b", Some(&a), &[]);

    for (server, name) in [(&a, "from-a"), (&b, "from-b")] {
        for n in 0..5 {
            server.ok("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": format!("{name}/{n}.txt"), "Body": "YQ==" }));
        }
    }
    // Node b's records reach the shared index once b's feeder has written them.
    let found = crate::support::server::eventually(10, "node b's record in node a's lookup", || {
        let page = a.ok(
            "audit:LookupEvents",
            json!({ "LookupAttributes": [{ "AttributeKey": "ResourceName", "AttributeValue": "datasandbox-home/from-b/3.txt" }] }),
        );
        page["Events"].as_array().filter(|events| !events.is_empty()).cloned()
    });
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["requestParameters"]["Key"], "from-b/3.txt");
    // Every record of both: the feeders index what is durable a moment later, in order.
    let sql = json!({ "Sql": "SELECT node, COUNT(*) AS n FROM events WHERE event_name = 'PutObject' GROUP BY node ORDER BY node" });
    let both = crate::support::server::eventually(10, "both nodes' five writes in the shared index", || {
        let both = a.ok("audit:Query", sql.clone());
        (both["Rows"] == json!([["a", 5], ["b", 5]])).then_some(both)
    });
    assert_eq!(both["Rows"], json!([["a", 5], ["b", 5]]), "{both}");

    // A clean stop seals, digests and uploads what is left.
    assert!(a.stop().success());
    assert!(b.stop().success());
    let keys = s3_keys(&endpoint, &bucket, "trail/AWSLogs/");
    let public_keys: Vec<&String> = keys.iter().filter(|k| k.contains("/DataSandbox-PublicKey/")).collect();
    assert_eq!(public_keys.len(), 2, "one public key per node: {public_keys:?}");
    assert!(public_keys[0].contains("/a/") && public_keys[1].contains("/b/"), "{public_keys:?}");
    let file = |k: &str| k.rsplit('/').next().unwrap_or_default().to_owned();
    assert_ne!(file(public_keys[0]), file(public_keys[1]), "the nodes sign with different keys");
    assert!(!keys.iter().any(|k| k.ends_with(".jsonl") && k.contains("/DataSandbox/")), "every log is sealed in the bucket: {keys:?}");

    // `audit validate` takes the bucket from the spec and the same overrides as `serve`.
    let mut validate_args = vec!["audit".to_owned(), "validate".to_owned()];
    for o in &overrides {
        validate_args.extend(["-c".to_owned(), o.clone()]);
    }
    let env = shared.env();
    let args: Vec<&str> = validate_args.iter().map(String::as_str).collect();
    let text = |called: &crate::support::server::Called| match &called.stdout {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let clean = a.cli(&args, &env);
    assert_eq!(clean.exit, 0, "{}\n{:?}", text(&clean), clean.stderr);
    assert!(text(&clean).contains("Node a: valid") && text(&clean).contains("Node b: valid"), "{}", text(&clean));

    let sealed_b: Vec<&String> =
        keys.iter().filter(|k| k.contains("/DataSandbox/") && k.contains("/b/") && k.ends_with(".json.gz")).collect();
    assert!(!sealed_b.is_empty(), "{keys:?}");
    s3_delete(&endpoint, &bucket, sealed_b[0]);
    let tampered = a.cli(&args, &env);
    assert_eq!(tampered.exit, 1, "{}", text(&tampered));
    assert!(text(&tampered).contains("Node a: valid") && text(&tampered).contains("Node b: INVALID"), "{}", text(&tampered));
    assert!(text(&tampered).contains(&file(sealed_b[0])), "the missing object is named: {}", text(&tampered));

    // The console's check (audit:ValidateTrail) on any node reads every node's chain from the bucket.
    let c = shared.node("c", Some(&a), &[]);
    let checked = c.ok("audit:ValidateTrail", json!({}));
    let lines: Vec<&str> = checked["Lines"].as_array().expect("lines").iter().filter_map(Value::as_str).collect();
    assert_eq!(checked["Valid"], false, "{lines:#?}");
    assert!(lines.contains(&"Node a: valid") && lines.contains(&"Node b: INVALID"), "{lines:#?}");
}
