//! Datasets mounted lazily: each instance's `/data` is a FUSE mount served by a daemon on the
//! host, which lists what the user may list, asks the control plane at every open (the
//! policies decide, the open is recorded with the process behind it), sums up what was read
//! at close, refuses and records every change, and fails closed when it dies.

use std::time::Instant;

use serde_json::{Value, json};

use crate::support::backend::{scale_out, sql};
use crate::support::instances::{DATASET_SPEC, create, endpoint_call, sh};
use crate::support::server::{Server, b64, eventually};

fn put(server: &Server, key: &str, body: &[u8]) {
    server.ok("storage:PutObject", json!({ "Bucket": "research", "Key": key, "Body": b64(body) }));
}

fn dataset_server(spec: &str) -> Server {
    dataset_server_with(spec, &[])
}

fn dataset_server_with(spec: &str, overrides: &[&str]) -> Server {
    let server = Server::start_with_spec(spec, overrides);
    assert_eq!(server.cli(&["image", "build", "base"], &[]).exit, 0);
    server
}

/// The records named `event` about `key` (the mount's own events), oldest first.
fn events(server: &Server, event: &str, key: &str) -> Vec<Value> {
    let mut found: Vec<Value> =
        server.audit(&[("EventName", event)]).into_iter().filter(|r| r["requestParameters"]["Key"] == key).collect();
    found.reverse();
    found
}

/// The `DatasetFileClosed` records of `key` once there are `n`: a file's release reaches the
/// mount after its process let go of it, so a summary may follow the command by a moment.
fn summaries(server: &Server, key: &str, n: usize) -> Vec<Value> {
    eventually(10, "the files' summaries", || {
        let closed = events(server, "DatasetFileClosed", key);
        (closed.len() >= n).then_some(closed)
    })
}

/// Makes `key` an object of `size` bytes in the index, as if a dataset that large were stored:
/// the object is written with a blob of its own (larger than the bodies the metadata store
/// keeps), then its size set in the metadata store and, on the embedded backend, its blob
/// grown in place (sparse) to match. Returns whether the body was grown.
fn grow_sparse(server: &Server, key: &str, size: u64) -> bool {
    put(server, key, &[b'x'; 40 * 1024]);
    let blob = sql(
        server.data_dir(),
        &format!("UPDATE objects SET size = {size} WHERE key = '{key}'; SELECT blob FROM objects WHERE key = '{key}';"),
    );
    if scale_out() {
        return false;
    }
    let path = server.data_dir().join("objects/blobs").join(&blob[..2]).join(&blob);
    std::fs::OpenOptions::new().write(true).open(&path).expect("the blob").set_len(size).expect("grow the blob sparse");
    true
}

#[test]
fn a_granted_dataset_appears_at_once_whatever_its_size() {
    let server = dataset_server(DATASET_SPEC);
    put(&server, "trials/readme.txt", b"read me\n");
    let grown = grow_sparse(&server, "trials/huge.bin", 1 << 40);
    let started = Instant::now();
    let hana = create(&server, "hana");
    let created = started.elapsed();
    let mounted = &hana["Datasets"][0];
    assert_eq!(mounted["State"], "MOUNTED", "{hana}");
    assert_eq!(mounted["Bytes"], json!((1u64 << 40) + 8), "{hana}");
    assert!(mounted["MountMillis"].as_u64().expect("how long the mount took") < 100, "{hana}");
    assert_eq!(sh(&server, &hana, "stat -c %s /data/trials/huge.bin").1.trim(), (1u64 << 40).to_string());
    eprintln!("CreateInstance with a 1 TiB dataset: {created:?}; the mount's own share: {} ms", mounted["MountMillis"]);
    if !grown {
        // An S3 server holds no sparse body to read from.
        return;
    }
    // Nothing was copied: a read 700 GiB in fetches what it asks for.
    let (code, out) = sh(&server, &hana, "dd if=/data/trials/huge.bin bs=1M skip=700000 count=2 2>/dev/null | wc -c");
    assert_eq!((code, out.trim()), (0, "2097152"));
    let closed = summaries(&server, "trials/huge.bin", 1);
    assert_eq!(closed.len(), 1, "{closed:#?}");
    let start = 700_000u64 << 20;
    assert_eq!(closed[0]["requestParameters"]["Ranges"], json!([[start, start + (2 << 20)]]));
}

#[test]
fn each_open_is_recorded_with_its_process_and_each_close_with_what_was_read() {
    let server = dataset_server(DATASET_SPEC);
    put(&server, "trials/2026/results.csv", b"id,score\n1,0.9\n");
    let hana = create(&server, "hana");
    let (code, out) = sh(&server, &hana, "cat /data/trials/2026/results.csv");
    assert_eq!((code, out.as_str()), (0, "id,score\n1,0.9\n"));
    let opened = events(&server, "DatasetFileOpened", "trials/2026/results.csv");
    let closed = summaries(&server, "trials/2026/results.csv", 1);
    assert_eq!(opened.len(), 1, "{opened:#?}");
    let open = &opened[0];
    assert_eq!(open["userIdentity"]["userName"], "hana");
    assert_eq!(open["sourceIPAddress"], hana["PrivateIpAddress"]);
    assert_eq!(open["requestParameters"]["Dataset"], "trials");
    assert_eq!(open["requestParameters"]["InstanceId"], hana["InstanceId"]);
    let process = &open["requestParameters"]["Process"];
    // As the instance names it (its `/usr` is the host's, bound in).
    assert_eq!(process["Executable"], "/usr/bin/cat", "{open}");
    assert!(process["Pid"].as_i64().is_some_and(|pid| pid > 1), "the pid inside the instance: {open}");
    assert_ne!(process["Pid"], process["HostPid"]);
    let close = &closed[0]["requestParameters"];
    assert_eq!(close["Granularity"], "ranges");
    assert_eq!(close["BytesRead"], 15);
    assert_eq!(close["Ranges"], json!([[0, 15]]));
    assert_eq!(close["Sparse"], false);
    assert_eq!(close["OpenedBy"], open["requestID"]);
    assert_eq!(close["ReadBy"], json!([]), "the opener alone read");
    assert!(open["requestParameters"]["ETag"].as_str().is_some_and(|e| !e.is_empty()), "which content was opened: {open}");

    // A descriptor the opener hands on: the process that read through it is named too.
    let (code, out) = sh(&server, &hana, "bash -c 'exec 3</data/trials/2026/results.csv; cat <&3'");
    assert_eq!((code, out.as_str()), (0, "id,score\n1,0.9\n"));
    let opened = events(&server, "DatasetFileOpened", "trials/2026/results.csv");
    let closed = summaries(&server, "trials/2026/results.csv", 2);
    assert_eq!(opened[1]["requestParameters"]["Process"]["Executable"], "/usr/bin/bash");
    assert_eq!(closed[1]["requestParameters"]["ReadBy"][0]["Executable"], "/usr/bin/cat", "{closed:#?}");

    // Reads the kernel makes for a copy (`sendfile`, `copy_file_range`) are counted like any
    // other, open by open.
    let (code, out) = sh(
        &server,
        &hana,
        "cp /data/trials/2026/results.csv /tmp/a; python3 -c 'import os\nfd=os.open(\"/data/trials/2026/results.csv\",os.O_RDONLY)\nprint(os.sendfile(os.open(\"/tmp/b\",os.O_WRONLY|os.O_CREAT),fd,0,100))'",
    );
    assert_eq!((code, out.trim()), (0, "15"), "{out}");
    let closed = summaries(&server, "trials/2026/results.csv", 4);
    let counted: Vec<&Value> = closed[2..].iter().map(|c| &c["requestParameters"]["BytesRead"]).collect();
    assert_eq!(counted, vec![&json!(15), &json!(15)], "{closed:#?}");

    // A process that is gone before its file is released is still the one named.
    let (code, out) = sh(&server, &hana, "python3 -c 'open(\"/data/trials/2026/results.csv\").read()'");
    assert_eq!(code, 0, "{out}");
    let opened = events(&server, "DatasetFileOpened", "trials/2026/results.csv");
    let executable = opened.last().expect("the open")["requestParameters"]["Process"]["Executable"].as_str().unwrap_or_default().to_owned();
    assert!(executable.starts_with("/usr/bin/python3"), "{executable}");

    // The trace of her session shows both, in order, beside the rest.
    let session = hana["InstanceId"].as_str().expect("id");
    let trace = server.cli(&["audit", "trace", "--user", "hana", "--all"], &[]);
    let text = trace.stdout.to_string();
    assert!(text.contains("trials/2026/results.csv by /usr/bin/cat (pid "), "{session}: {text}");
    assert!(text.contains("trials/2026/results.csv read 15 bytes in [[0,15]]"), "{session}: {text}");
}

#[test]
fn every_change_is_refused_read_only_and_recorded() {
    let server = dataset_server(DATASET_SPEC);
    put(&server, "trials/readme.txt", b"read me\n");
    let hana = create(&server, "hana");
    for (attack, operation) in [
        ("echo x >> /data/trials/readme.txt", "open for writing"),
        ("rm -f /data/trials/readme.txt", "unlink"),
        ("chmod 666 /data/trials/readme.txt", "chmod"),
        ("touch /data/trials/new", "create"),
        ("mkdir /data/trials/mine", "mkdir"),
    ] {
        let (code, out) = sh(&server, &hana, &format!("( {attack} ) 2>&1; echo \"exit $?\""));
        assert_eq!(code, 0);
        assert!(out.contains("Read-only file system") && !out.ends_with("exit 0\n"), "`{attack}`: {out}");
        let refused: Vec<Value> = server
            .audit(&[("EventName", "DatasetWriteRefused")])
            .into_iter()
            .filter(|r| r["requestParameters"]["Operation"] == operation)
            .collect();
        assert!(!refused.is_empty(), "`{attack}` was not recorded as `{operation}`");
        assert_eq!(refused[0]["errorCode"], "AccessDeniedException");
        assert_eq!(refused[0]["userIdentity"]["userName"], "hana");
    }
    assert_eq!(sh(&server, &hana, "cat /data/trials/readme.txt").1, "read me\n");
    // The mount's actions are its own: the instance's credential cannot write such records.
    let forged =
        json!({ "Dataset": "trials", "Bucket": "research", "Key": "trials/readme.txt", "InstanceId": "i-0", "Process": { "HostPid": 1 } });
    let call = endpoint_call("storage:DatasetFileOpened", &forged, true);
    let (_, out) = sh(&server, &hana, &call);
    assert!(out.ends_with("\n403"), "{out}");
}

#[test]
fn a_dataset_read_through_passthrough_still_decides_and_records_each_open() {
    let spec = DATASET_SPEC.replace("prefix = \"trials/\"\n", "prefix = \"trials/\"\nread_audit = \"opens\"\n");
    assert_ne!(spec, DATASET_SPEC, "the test's premise: the dataset is read through passthrough");
    let server = dataset_server(&spec);
    // Larger than the bodies kept in the metadata store (32 KiB), which are read in ranges.
    let rows = format!("id\n{}", "1\n".repeat(20_000));
    put(&server, "trials/rows.csv", rows.as_bytes());
    let hana = create(&server, "hana");
    assert!(sh(&server, &hana, "cat /data/trials/rows.csv").1 == rows);
    let opened = events(&server, "DatasetFileOpened", "trials/rows.csv");
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0]["requestParameters"]["Process"]["Executable"], "/usr/bin/cat");
    let closed = summaries(&server, "trials/rows.csv", 1);
    assert_eq!(closed.len(), 1);
    if scale_out() {
        // A body in an S3 bucket has no file to pass through to: its reads are counted.
        assert_eq!(closed[0]["requestParameters"]["Granularity"], "ranges", "{closed:#?}");
        assert_eq!(closed[0]["requestParameters"]["BytesRead"], rows.len());
        return;
    }
    // The kernel read the body itself: the summary says only that the file was open.
    assert_eq!(closed[0]["requestParameters"]["Granularity"], "open", "{closed:#?}");
    assert_eq!(closed[0]["requestParameters"]["BytesRead"], Value::Null);
}

#[test]
fn the_mount_acts_with_the_instances_current_credential_as_it_rotates() {
    let server = dataset_server_with(DATASET_SPEC, &["sandbox.credential_lifetime_seconds=3"]);
    put(&server, "trials/readme.txt", b"read me\n");
    let hana = create(&server, "hana");
    let first = sh(&server, &hana, "cat /run/datasandbox/credential").1;
    eventually(15, "a rotated credential", || (sh(&server, &hana, "cat /run/datasandbox/credential").1 != first).then_some(()));
    // Past the first credential's expiry, files still open: the mount took the new one.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(sh(&server, &hana, "cat /data/trials/readme.txt").1, "read me\n");
    let opened = events(&server, "DatasetFileOpened", "trials/readme.txt");
    assert_eq!(opened.last().expect("the open")["errorCode"], Value::Null, "{opened:#?}");
}

const DENY_ONE_FILE: &str = r#"
[[policies]]
name = "not-the-key-file"
text = """
forbid (
  principal == DataSandbox::User::"hana",
  action == DataSandbox::Action::"storage:GetObject",
  resource
) when { resource.key == "trials/key.csv" };"""
"#;

#[test]
fn a_policy_that_denies_one_file_denies_that_file_alone_at_open() {
    let server = dataset_server(&format!("{DATASET_SPEC}{DENY_ONE_FILE}"));
    put(&server, "trials/key.csv", b"name,id\n");
    put(&server, "trials/rows.csv", b"id\n1\n");
    let hana = create(&server, "hana");
    let (code, out) = sh(&server, &hana, "cat /data/trials/key.csv 2>&1; echo \"exit $?\"; cat /data/trials/rows.csv");
    assert_eq!(code, 0);
    assert!(out.contains("Permission denied") && out.contains("exit 1") && out.ends_with("id\n1\n"), "{out}");
    let denied = events(&server, "DatasetFileOpened", "trials/key.csv");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["errorCode"], "AccessDeniedException");
    assert!(events(&server, "DatasetFileClosed", "trials/key.csv").is_empty());
    assert_eq!(events(&server, "DatasetFileOpened", "trials/rows.csv")[0]["errorCode"], Value::Null);
}

#[test]
fn a_dead_daemon_fails_every_read_and_says_so_and_the_instance_cannot_reach_it() {
    let server = dataset_server(DATASET_SPEC);
    put(&server, "trials/readme.txt", b"read me\n");
    let hana = create(&server, "hana");
    let id = hana["InstanceId"].as_str().expect("id").to_owned();
    let daemon = daemon_of(&id);
    // From inside, the daemon is not there to see or signal.
    let (code, out) = sh(&server, &hana, &format!("ls /proc | grep -x {daemon}; kill -9 {daemon} 2>&1; echo \"exit $?\""));
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("exit 1\n") && !out.starts_with(&daemon.to_string()), "{out}");
    assert_eq!(sh(&server, &hana, "cat /data/trials/readme.txt").1, "read me\n");

    let killed = std::process::Command::new("kill").args(["-9", &daemon.to_string()]).status().expect("kill");
    assert!(killed.success());
    let unavailable = eventually(20, "the record of the mount's end", || {
        let found = server.audit(&[("EventName", "DatasetAuditUnavailable")]);
        (!found.is_empty()).then_some(found)
    });
    assert_eq!(unavailable[0]["requestParameters"]["InstanceId"], id.as_str());
    let opens_before = events(&server, "DatasetFileOpened", "trials/readme.txt").len();
    let (code, out) = sh(&server, &hana, "cat /data/trials/readme.txt 2>&1; echo \"exit $?\"; ls /data 2>&1; true");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Transport endpoint is not connected") && out.contains("exit 1"), "{out}");
    assert_eq!(events(&server, "DatasetFileOpened", "trials/readme.txt").len(), opens_before, "a read was served unrecorded");
    server.ok("streaming:TerminateInstance", json!({ "InstanceId": id }));
    assert!(!server.data_dir().join("instances").join(&id).exists());
}

/// The host pid of the dataset daemon of instance `id`.
fn daemon_of(id: &str) -> u32 {
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.len() > 2 && args[1] == b"dataset-mount" && args[2] == id.as_bytes() {
            return pid;
        }
    }
    panic!("no dataset daemon for {id}");
}
