//! Finding 2: granted datasets were copied into `instances/<id>/data` world-readable (0755
//! directories, 0444 files) under a listable `instances/`, so any host user could read every
//! running session's data. They are now a mount there, inside a directory only the instance's
//! ids enter, that answers no one else.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::json;

use crate::support::instances::{DATASET_SPEC, create, sh};
use crate::support::server::Server;

/// Runs a command as `nobody`, an ordinary host user with no part in DataSandbox.
fn as_nobody(command: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/sh", "-c", command])
        .output()
        .expect("setpriv (util-linux)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Whether something is mounted on `dir` (read from the mount table, touching nothing under it).
fn sandbox_mounted(dir: &std::path::Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    mounts.lines().any(|l| l.split(' ').nth(1) == dir.to_str())
}

#[test]
fn f02_another_host_user_cannot_read_an_instances_datasets() {
    let server = Server::start_with_spec(DATASET_SPEC, &[]);
    assert_eq!(server.cli(&["image", "build", "base"], &[]).exit, 0);
    server.ok(
        "storage:PutObject",
        json!({ "Bucket": "research", "Key": "trials/readme.txt", "Body": crate::support::server::b64(b"secret rows\n") }),
    );
    let hana = create(&server, "hana");
    assert_eq!(hana["Datasets"][0]["State"], "MOUNTED", "{hana}");
    let id = hana["InstanceId"].as_str().expect("id");
    let instances = server.data_dir().join("instances");
    let file = instances.join(id).join("data/trials/readme.txt");
    assert!(sandbox_mounted(&instances.join(id).join("data")), "the test's premise: the dataset mount is at {}", file.display());

    // A host user can neither list the instances, nor enter one, nor read a dataset's file by
    // its path.
    for attack in [
        format!("ls {}", instances.display()),
        format!("ls {}", instances.join(id).display()),
        format!("cat {}", file.display()),
        format!("ls {}", instances.join(id).join("display").display()),
    ] {
        let (succeeded, out) = as_nobody(&attack);
        assert!(!succeeded, "a host user ran `{attack}`: {out}");
    }
    // The shapes that make it so: `instances/` traversable only, the instance's directory its
    // own, the mount's files its workspace user's (as the instance sees them).
    let mode = |path: &std::path::Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o7777;
    assert_eq!(mode(&instances), 0o711);
    assert_eq!(mode(&instances.join(id)), 0o700);
    let (_, shape) = sh(&server, &hana, "stat -c '%a %u' /data/trials/readme.txt /data/trials");
    assert_eq!(shape.trim(), "444 1000\n555 1000");
    // Not even the host's root reads through the mount (a backup or a scanner walking the
    // data directory would read in the analyst's name): refused, unread, unrecorded.
    let opened_before = server.audit(&[("EventName", "DatasetFileOpened")]).len();
    let by_root = std::fs::read(&file).expect_err("the host's root read a dataset's file through the mount");
    assert_eq!(by_root.kind(), std::io::ErrorKind::PermissionDenied, "{by_root}");
    // And were the instance's directory ever opened to others, the mount itself still answers
    // no one but the instance's ids: nothing is read, and nothing is recorded.
    std::fs::set_permissions(instances.join(id), std::fs::Permissions::from_mode(0o711)).expect("loosen");
    let (read, out) = as_nobody(&format!("cat {}", file.display()));
    std::fs::set_permissions(instances.join(id), std::fs::Permissions::from_mode(0o700)).expect("restore");
    assert!(!read && out.contains("Permission denied"), "{out}");
    assert_eq!(server.audit(&[("EventName", "DatasetFileOpened")]).len(), opened_before);

    // The instance's user still reads it.
    assert_eq!(sh(&server, &hana, "cat /data/trials/readme.txt").1, "secret rows\n");
    server.ok("streaming:TerminateInstance", json!({ "InstanceId": hana["InstanceId"] }));
}
