//! Backup and restore, as an operator moves a data directory to a new host: a backup taken
//! while objects are written (and the same object overwritten, so that blobs are released
//! mid-backup), restored into a new directory that `serve` comes up on with every object,
//! parameter and record, its trail valid. The keys are sealed: never in the clear in the
//! backup, and a wrong passphrase restores nothing. On the scale-out backends `backup` refuses
//! and says whose backups cover what.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;

use crate::support::backend::scale_out;
use crate::support::files::walk;
use crate::support::server::{BIN, Server, b64, unb64};

const HOME: &str = "datasandbox-home";
/// Objects written before the backup, 1 MiB each: enough that the backup takes a while.
const BEFORE: usize = 48;

fn body(name: &str) -> Vec<u8> {
    name.bytes().cycle().take(1024 * 1024).collect()
}

/// `datasandbox --data-dir <dir> <args>`: (exit code, stdout, stderr).
fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("--data-dir").arg(dir).args(args).output().expect("run datasandbox");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_backup_taken_while_writing_restores_into_a_new_directory_that_serves_it_all() {
    // A session whose workspace writes into its home folder all along (its sync uploads).
    let server = crate::support::streaming::server(&[]);
    let session = crate::support::streaming::active(&server, &crate::support::streaming::redeem(&server, "ida"), 120);
    let instance = session["InstanceId"].as_str().expect("instance").to_owned();
    let scratch = tempfile::tempdir().expect("scratch");
    server.ok("parameters:PutParameter", json!({ "Name": "/db/password", "Value": "s3cr3t", "Type": "SecureString" }));
    for index in 0..BEFORE {
        let file = scratch.path().join("object");
        std::fs::write(&file, body(&format!("before-{index}"))).expect("write");
        let (code, _, err) =
            run(server.data_dir(), &["storage", "cp", file.to_str().expect("path"), &format!("ds://{HOME}/before/{index}")]);
        assert_eq!(code, 0, "{err}");
    }

    // A writer, until the backup is over: new objects, and one object overwritten again and again.
    let (stop, written) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let writer = {
        let (stop, written, dir) = (stop.clone(), written.clone(), server.data_dir().to_owned());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let n = written.load(Ordering::Acquire);
                // New objects small (their bodies in the metadata store), the one overwritten
                // larger than that (a blob of its own, released at each overwrite).
                let busy = format!("busy {n} ").repeat(4096);
                for (key, text) in [(format!("during/{n}"), format!("during {n}")), ("busy".to_owned(), busy)] {
                    let input = json!({ "Bucket": HOME, "Key": key, "Body": b64(text.as_bytes()) }).to_string();
                    let (code, _, err) = run(&dir, &["call", "storage:PutObject", "--input", &input]);
                    assert_eq!(code, 0, "{err}");
                }
                written.fetch_add(1, Ordering::AcqRel);
            }
        })
    };
    let workspace = {
        let (stop, dir) = (stop.clone(), server.data_dir().to_owned());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                let script = format!("echo {n} > /home/user/MyFiles/HomeFolder/note-{n}.txt");
                let (code, _, err) = run(&dir, &["instances", "exec", &instance, "--", "/bin/sh", "-c", &script]);
                assert_eq!(code, 0, "{err}");
                n += 1;
            }
            n
        })
    };
    // Both writing, and the workspace's sync has uploaded some of its notes already.
    let home = format!("user/custom/{}/", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"ida")));
    crate::support::server::eventually(30, "the workspace's first notes in storage", || {
        let listed = server.ok("storage:ListObjectsV2", json!({ "Bucket": HOME, "Prefix": home }));
        (listed["KeyCount"].as_u64().unwrap_or(0) >= 3 && written.load(Ordering::Acquire) > 0).then_some(())
    });
    let passphrase = scratch.path().join("passphrase");
    std::fs::write(&passphrase, "correct horse battery staple\n").expect("write");
    let to = scratch.path().join("backup");
    let started = written.load(Ordering::Acquire);
    let (code, out, err) =
        run(server.data_dir(), &["backup", "--to", to.to_str().expect("path"), "--passphrase-file", passphrase.to_str().expect("path")]);
    let during = written.load(Ordering::Acquire) - started;
    stop.store(true, Ordering::Release);
    writer.join().expect("the writer");
    let notes = workspace.join().expect("the workspace's writer");
    if scale_out() {
        assert_eq!(code, 1, "{out} {err}");
        assert!(err.contains("PostgreSQL") && err.contains("master.key"), "{err}");
        assert!(!to.exists(), "a refused backup left a directory");
        return;
    }
    assert_eq!(code, 0, "{out} {err}");
    assert!(err.contains("backup complete"), "no progress was shown: {err}");
    assert!(during > 0, "nothing was written while the backup ran: the test proves nothing");
    eprintln!("{during} writes while the backup ran, {notes} notes written in the workspace; {err}");
    let records = server.audit(&[("EventName", "CreateBackup")]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(server.audit(&[("EventName", "BackupFinished")])[0]["errorCode"], serde_json::Value::Null);

    // The keys are nowhere in the clear.
    let master = std::fs::read(server.data_dir().join("master.key")).expect("master key");
    for file in walk(&to) {
        let bytes = std::fs::read(&file).expect("read");
        assert!(!bytes.windows(master.len()).any(|w| w == master), "{} holds the master key in the clear", file.display());
    }

    // A wrong passphrase restores nothing; the right one restores into a new directory.
    let wrong = scratch.path().join("wrong");
    std::fs::write(&wrong, "incorrect horse battery").expect("write");
    let target = tempfile::tempdir().expect("target");
    let (code, _, err) =
        run(target.path(), &["restore", "--from", to.to_str().expect("path"), "--passphrase-file", wrong.to_str().expect("path")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("passphrase does not open"), "{err}");
    assert_eq!(std::fs::read_dir(target.path()).expect("dir").count(), 0, "a refused restore wrote something");
    let (code, out, err) =
        run(target.path(), &["restore", "--from", to.to_str().expect("path"), "--passphrase-file", passphrase.to_str().expect("path")]);
    assert_eq!(code, 0, "{out} {err}");
    // …and refuses to overwrite it.
    let (code, _, err) =
        run(target.path(), &["restore", "--from", to.to_str().expect("path"), "--passphrase-file", passphrase.to_str().expect("path")]);
    assert!(code == 1 && err.contains("is not empty"), "{err}");

    let restored = Server::serve_in(target, &[]);
    for index in (0..BEFORE).step_by(7) {
        let got = restored.ok("storage:GetObject", json!({ "Bucket": HOME, "Key": format!("before/{index}") }));
        assert_eq!(unb64(got["Body"].as_str().expect("body")), body(&format!("before-{index}")), "before/{index}");
    }
    let busy = restored.ok("storage:GetObject", json!({ "Bucket": HOME, "Key": "busy" }));
    assert!(String::from_utf8(unb64(busy["Body"].as_str().expect("body"))).expect("text").starts_with("busy "));
    let listed = restored.ok("storage:ListObjectsV2", json!({ "Bucket": HOME, "Prefix": "during/" }));
    for object in listed["Contents"].as_array().expect("contents") {
        let key = object["Key"].as_str().expect("key");
        let got = restored.ok("storage:GetObject", json!({ "Bucket": HOME, "Key": key }));
        assert_eq!(unb64(got["Body"].as_str().expect("body")), key.replace('/', " ").into_bytes(), "{key}");
    }
    let parameter = restored.ok("parameters:GetParameter", json!({ "Name": "/db/password", "WithDecryption": true }));
    assert_eq!(parameter["Parameter"]["Value"], "s3cr3t");
    // The workspace's notes that the snapshot holds, each as it was written.
    let listed = restored.ok("storage:ListObjectsV2", json!({ "Bucket": HOME, "Prefix": home }));
    let kept = listed["Contents"].as_array().expect("contents");
    assert!(!kept.is_empty(), "none of the workspace's notes is in the backup");
    for object in kept {
        let key = object["Key"].as_str().expect("key");
        let n = key.trim_start_matches(&home).trim_start_matches("note-").trim_end_matches(".txt");
        let got = restored.ok("storage:GetObject", json!({ "Bucket": HOME, "Key": key }));
        assert_eq!(unb64(got["Body"].as_str().expect("body")), format!("{n}\n").into_bytes(), "{key}");
    }
    let put = restored.audit(&[("EventName", "PutParameter")]);
    assert!(put.iter().any(|r| r["requestParameters"]["Name"] == "/db/password"), "the parameter's record is gone: {put:?}");
    assert_eq!(restored.audit(&[("EventName", "CreateBackup")]).len(), 1, "the backup's own record is in the backup");
    let validated = restored.cli(&["audit", "validate"], &[]);
    assert_eq!(validated.exit, 0, "{:?}", validated.stdout);
}

/// A data directory nothing serves is backed up by the CLI itself, under its lock; with the
/// keys left out, the restore needs master.key (which vouches for the backup) and serves.
#[test]
fn a_stopped_data_directory_backs_up_without_its_keys_and_restores_with_its_master_key() {
    let mut server = Server::start(&["fleet_type=ON_DEMAND"]);
    server.ok("parameters:PutParameter", json!({ "Name": "/db/password", "Value": "s3cr3t", "Type": "SecureString" }));
    assert!(server.stop().success());
    let scratch = tempfile::tempdir().expect("scratch");
    let to = scratch.path().join("backup");
    let (code, out, err) = run(server.data_dir(), &["backup", "--to", to.to_str().expect("path")]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("--passphrase-file") && err.contains("--without-keys"), "{err}");
    // The backends it runs on, as the operator would pass them (`-c`, like `serve`).
    let backends = crate::support::backend::for_server(server.data_dir()).overrides;
    let mut args = vec!["backup", "--to", to.to_str().expect("path"), "--without-keys"];
    backends.iter().for_each(|o| args.extend(["-c", o.as_str()]));
    let (code, out, err) = run(server.data_dir(), &args);
    if scale_out() {
        assert!(code == 1 && err.contains("PostgreSQL"), "{out} {err}");
        return;
    }
    assert_eq!(code, 0, "{out} {err}");
    assert!(!to.join("keys.sealed").exists());
    let target = tempfile::tempdir().expect("target");
    let (code, _, err) = run(target.path(), &["restore", "--from", to.to_str().expect("path")]);
    assert!(code != 0 && err.contains("--master-key"), "a backup without keys restored with no proof: {err}");
    // Another key does not vouch for the manifest.
    let other = scratch.path().join("other.key");
    std::fs::write(&other, [9u8; 32]).expect("write");
    let (code, _, err) =
        run(target.path(), &["restore", "--from", to.to_str().expect("path"), "--master-key", other.to_str().expect("path")]);
    assert!(code == 1 && err.contains("does not match master.key"), "{err}");
    let master = server.data_dir().join("master.key");
    let (code, _, err) =
        run(target.path(), &["restore", "--from", to.to_str().expect("path"), "--master-key", master.to_str().expect("path")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(target.path().join("master.key")).expect("restored key"), std::fs::read(&master).expect("key"));
    let restored = Server::serve_in(target, &["fleet_type=ON_DEMAND"]);
    let parameter = restored.ok("parameters:GetParameter", json!({ "Name": "/db/password", "WithDecryption": true }));
    assert_eq!(parameter["Parameter"]["Value"], "s3cr3t");
}

/// A changed backup restores nothing and writes nowhere: a manifest that lists a file under a
/// link pointing out of the data directory (its hash set right) is not the one sealed with
/// the keys. (Were it, the entries' own checks refuse it: `backup::restore`'s unit tests.)
#[test]
fn a_changed_backup_restores_nothing_and_writes_nowhere_else() {
    if scale_out() {
        return;
    }
    let mut server = Server::start(&["fleet_type=ON_DEMAND"]);
    assert!(server.stop().success());
    let scratch = tempfile::tempdir().expect("scratch");
    let (to, passphrase) = (scratch.path().join("backup"), scratch.path().join("passphrase"));
    std::fs::write(&passphrase, "correct horse battery staple").expect("write");
    let (code, _, err) =
        run(server.data_dir(), &["backup", "--to", to.to_str().expect("path"), "--passphrase-file", passphrase.to_str().expect("path")]);
    assert_eq!(code, 0, "{err}");
    let manifest_path = to.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest")).expect("json");

    // A file under a link to somewhere else, its hash set right in the manifest.
    let outside = scratch.path().join("outside");
    std::fs::create_dir(&outside).expect("dir");
    std::fs::write(to.join("planted"), b"#!/bin/sh\necho owned\n").expect("write");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"#!/bin/sh\necho owned\n"));
    let entries = manifest["Entries"].as_array_mut().expect("entries");
    entries.push(json!({ "Path": "escape", "Kind": "Link", "Target": outside.to_str().expect("path"), "Mode": 511, "Uid": 0, "Gid": 0 }));
    entries.push(
        json!({ "Path": "escape/planted", "Kind": "File", "Size": 22, "Sha256": sha, "Sparse": false, "Mode": 3565, "Uid": 0, "Gid": 0 }),
    );
    std::fs::rename(to.join("planted"), to.join("escape-planted")).expect("rename");
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
    let target = scratch.path().join("restored");
    let (code, _, err) =
        run(&target, &["restore", "--from", to.to_str().expect("path"), "--passphrase-file", passphrase.to_str().expect("path")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not the one its keys were sealed with"), "{err}");
    assert!(!target.exists() && std::fs::read_dir(&outside).expect("dir").next().is_none(), "a refused restore wrote something");
    let leftovers: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("restoring"))
        .collect();
    assert!(leftovers.is_empty(), "a refused restore left its staging directory");
}
