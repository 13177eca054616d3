//! Finding 18 (the trail under deletion): records no signature covers never validate, and a
//! witness on another file system, holding copies of the checkpoints and digests, shows the
//! deletion of the trail's whole tail.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::support::files::copy_dir;
use crate::support::server::BIN;
use crate::support::server::Server;
use crate::support::tmpfs::Tmpfs;
use crate::support::trail::{Validation, build_trail, digest_files, edit_log, files_ending, log_files, validate};

fn validate_with_witness(trail: &Path, public_key: &Path, witness: &Path) -> Validation {
    let output = Command::new(BIN)
        .args(["audit", "validate", "--trail-dir"])
        .arg(trail)
        .arg("--public-key")
        .arg(public_key)
        .arg("--witness")
        .arg(witness)
        .output()
        .expect("run validate");
    Validation { exit: output.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&output.stdout).into_owned() }
}

#[test]
fn f18_deleting_every_signature_and_then_truncating_a_log_never_validates() {
    let (trail, key) = build_trail();
    for digest in digest_files(trail.path()) {
        std::fs::remove_file(format!("{}.sig", digest.display())).expect("remove signature");
        std::fs::remove_file(digest).expect("remove digest");
    }
    for checkpoint in files_ending(trail.path(), ".jsonl", "/DataSandbox-Checkpoint/") {
        std::fs::remove_file(checkpoint).expect("remove checkpoint file");
    }
    // The newest records cut: the tail of the last file with several, and every file after it.
    let logs = log_files(trail.path());
    let several = logs
        .iter()
        .rposition(|f| crate::support::trail::gunzip(&std::fs::read(f).expect("read")).windows(2).any(|w| w == b",\n"))
        .expect("a log file with several records");
    edit_log(&logs[several], |lines| lines.truncate(1));
    for later in &logs[several + 1..] {
        std::fs::remove_file(later).expect("remove");
    }
    let result = validate(trail.path(), &key);
    assert_eq!(result.exit, 1, "a trail with no signature left validated:\n{}", result.stdout);
    assert!(result.stdout.contains("records 1..="), "the report does not name the unsigned range:\n{}", result.stdout);
    assert!(result.stdout.contains("not covered by any signature"), "{}", result.stdout);
}

#[test]
fn f18_a_witness_shows_that_the_whole_tail_of_the_trail_was_deleted() {
    let witness = Tmpfs::mount("8m");
    let setting = format!("audit.witness={}", witness.path().display());
    let mut server = Server::start(&[&setting, "audit.checkpoint_interval_ms=50"]);
    server.ok("parameters:PutParameter", json!({ "Name": "/f18/before", "Value": "v", "Type": "String" }));
    assert!(server.stop().success());
    // What the trail held then: the state an intruder will put back.
    let earlier = tempfile::tempdir().expect("temp dir");
    copy_dir(&server.data_dir().join("trail"), earlier.path());
    server.restart(&[&setting, "audit.checkpoint_interval_ms=50"]);
    for n in 0..5 {
        server.ok("parameters:PutParameter", json!({ "Name": format!("/f18/hidden{n}"), "Value": "v", "Type": "String" }));
    }
    assert!(server.stop().success());
    let key = files_ending(earlier.path(), ".pub", "DataSandbox-PublicKey").pop().expect("public key");

    // Against the trail as it was left, the witness agrees.
    let trail = server.data_dir().join("trail");
    let whole = validate_with_witness(&trail, &key, witness.path());
    assert_eq!(whole.exit, 0, "{}", whole.stdout);

    // The intruder deletes everything written since: the trail is whole and signed as far as it goes.
    std::fs::remove_dir_all(&trail).expect("remove the trail");
    copy_dir(earlier.path(), &trail);
    let alone = validate(&trail, &key);
    assert_eq!(alone.exit, 0, "the earlier trail is itself valid:\n{}", alone.stdout);

    let witnessed = validate_with_witness(&trail, &key, witness.path());
    assert_eq!(witnessed.exit, 1, "the witness did not show the deleted tail:\n{}", witnessed.stdout);
    assert!(witnessed.stdout.contains("witness"), "{}", witnessed.stdout);
    assert!(witnessed.stdout.contains("missing"), "{}", witnessed.stdout);
}
