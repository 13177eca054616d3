//! Finding 3: every instance ran as host uid 101000, inside Debian's first subordinate id
//! range (`100000:65536`): the host user owning that range could become "every instance"
//! through `newuidmap` and read decrypted notebooks, drive displays, reach Jupyter sockets.

use std::process::Command;

use crate::support::instances::{create, server_with_image, sh};
use crate::support::server::BIN;

#[test]
fn f03_each_instance_has_host_ids_of_its_own_outside_every_subordinate_range() {
    let server = server_with_image();
    let (a, b) = (create(&server, "alice"), create(&server, "bob"));
    let map = |instance| {
        let (code, map) = sh(&server, instance, "cat /proc/self/uid_map; cat /proc/self/gid_map");
        assert_eq!(code, 0, "{map}");
        let fields: Vec<u64> = map.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        assert_eq!(fields.len(), 6, "{map}");
        assert_eq!(fields[..3], fields[3..], "uids and gids map alike");
        (fields[1], fields[2])
    };
    let ((base_a, count_a), (base_b, count_b)) = (map(&a), map(&b));
    assert_ne!(base_a, base_b, "two instances share host ids");
    assert!(base_a + count_a <= base_b || base_b + count_b <= base_a, "the ranges overlap");
    // Neither lies in a subordinate range any host user owns.
    for file in ["/etc/subuid", "/etc/subgid"] {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let parts: Vec<&str> = line.split(':').collect();
            let (Some(start), Some(count)) =
                (parts.get(1).and_then(|s| s.parse::<u64>().ok()), parts.get(2).and_then(|s| s.parse::<u64>().ok()))
            else {
                continue;
            };
            for (base, size) in [(base_a, count_a), (base_b, count_b)] {
                assert!(base + size <= start || start + count <= base, "{base}+{size} overlaps {file} `{line}`");
            }
        }
    }
}

/// A pool configured over a host user's subordinate range refuses to start, naming the entry.
/// The entry is made in a private mount namespace (a bind over `/etc/subuid`), so the host's
/// own file is untouched.
#[test]
fn f03_a_pool_overlapping_etc_subuid_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let subuid = dir.path().join("subuid");
    std::fs::write(&subuid, "mallory:100000:65536\n").expect("write the fake entry");
    let data = dir.path().join("data");
    let script = format!(
        "mount --bind {} /etc/subuid && exec timeout 20 {BIN} --data-dir {} up -c server.api_listen=127.0.0.1:0 -c sandbox.id_base=131072 -c sandbox.id_slots=4",
        subuid.display(),
        data.display()
    );
    let out = Command::new("unshare").args(["--mount", "--propagation", "private", "/bin/sh", "-c", &script]).output().expect("unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.status.code() != Some(124), "the server started over a subordinate range:\n{stderr}");
    assert!(stderr.contains("/etc/subuid line 1 `mallory:100000:65536`"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"), "it must not serve");
}

/// A notebook's instance gets new host ids at each start; its volume's files stay its user's.
#[test]
fn f03_a_notebook_keeps_its_files_across_starts_on_other_host_ids() {
    use serde_json::json;
    let server = crate::support::notebooks::server_with_notebook_image();
    let first = crate::support::notebooks::create_notebook(&server, "keep");
    let (code, out) = sh(
        &server,
        &first,
        "echo kept > /home/user/work/keep.txt && mkdir -p /home/user/work/dir && set -- $(cat /proc/self/uid_map) && echo $2",
    );
    assert_eq!(code, 0, "{out}");
    let first_base = out.trim().to_owned();
    server.ok("notebooks:StopNotebookInstance", json!({ "NotebookInstanceName": "keep" }));
    // Another instance takes the freed ids, so the notebook starts on others.
    let _other = create(&server, "olive");
    server.ok("notebooks:StartNotebookInstance", json!({ "NotebookInstanceName": "keep" }));
    let second = crate::support::notebooks::notebook_in_service(&server, "keep");
    let (code, out) = sh(
        &server,
        &second,
        "cat /home/user/work/keep.txt && echo more >> /home/user/work/keep.txt && touch /home/user/work/dir/new && set -- $(cat /proc/self/uid_map) && echo $2",
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some("kept"), "{out}");
    assert_ne!(lines.last().copied(), Some(first_base.as_str()), "the notebook started on the same host ids");
    server.ok("notebooks:StopNotebookInstance", json!({ "NotebookInstanceName": "keep" }));
}
