//! Finding 5 (the instances' part): the host directories an instance can write (its display's
//! socket directory, its print folder, a notebook server's socket directory) were plain
//! directories on the data directory's file system: one `open(...).write(...)` from inside
//! could fill the disk the audit trail lives on. (A notebook's server socket directory is now
//! the server's alone: the user's code cannot write there at all.)

use serde_json::{Value, json};

use crate::support::instances::{create, server_with_image, sh};
use crate::support::server::Server;

/// Writes 300 MiB into `dir` inside the instance; returns what it reports and the bytes that
/// landed.
fn flood(server: &Server, instance: &Value, dir: &str) -> (i32, String) {
    sh(server, instance, &format!("head -c 300M /dev/zero 2>/tmp/flood.err > {dir}/flood; cat /tmp/flood.err; stat -c %s {dir}/flood"))
}

#[test]
fn f05_an_instance_cannot_fill_the_host_disk_through_its_writable_host_directories() {
    let server = server_with_image();
    let instance = create(&server, "mallory");
    for (dir, limit) in [("/run/print", 256u64 << 20), ("/run/display", 1 << 20)] {
        let (_, out) = flood(&server, &instance, dir);
        assert!(out.contains("No space left on device"), "{dir}: {out}");
        let landed: u64 = out.lines().last().and_then(|l| l.trim().parse().ok()).expect("a size");
        assert!(landed <= limit, "{dir}: {landed} bytes landed on the host");
    }
    // The flood stays inside the instance's bounded directories, which end with it.
    let id = instance["InstanceId"].as_str().expect("id").to_owned();
    server.ok("streaming:TerminateInstance", json!({ "InstanceId": id }));
    assert!(!server.data_dir().join("instances").join(&id).exists());
}

#[test]
fn f05_a_notebook_cannot_fill_the_host_disk_through_its_server_socket_directory() {
    let server = crate::support::notebooks::server_with_notebook_image();
    let notebook = crate::support::notebooks::create_notebook(&server, "flood");
    // The user's code may not write there at all (it is the server's: its socket, its
    // kernels' connection files)…
    let (_, out) = flood(&server, &notebook, "/run/jupyter");
    assert!(out.contains("Permission denied"), "{out}");
    // …and what the server itself writes there is bounded all the same.
    let run = server.data_dir().join("notebooks/flood/run");
    let df = std::process::Command::new("df").args(["-B1", "--output=fstype,size"]).arg(&run).output().expect("df");
    let df = String::from_utf8_lossy(&df.stdout).into_owned();
    let (fstype, size) = df.lines().nth(1).and_then(|l| l.split_once(char::is_whitespace)).expect("df's answer");
    assert_eq!(fstype, "tmpfs", "{df}");
    assert!(size.trim().parse::<u64>().is_ok_and(|s| s <= 1 << 20), "{df}");
    server.ok("notebooks:StopNotebookInstance", json!({ "NotebookInstanceName": "flood" }));
}

/// Notebook volumes are sparse images: without a check, their sizes could add up to more than
/// the disk holds, and one user filling theirs would fill the disk under the trail.
#[test]
fn f05_notebook_volumes_cannot_claim_more_than_the_disk_holds() {
    let server = Server::start(&[]);
    let refused = server.call(
        "notebooks:CreateNotebookInstance",
        &json!({ "NotebookInstanceName": "huge", "InstanceType": "stream.standard.small", "VolumeSizeInGB": 16384 }),
    );
    assert_eq!(refused.exit, 1, "a 16 TiB volume was admitted: {refused:?}");
    assert_eq!(refused.stderr["Code"], "ResourceLimitExceeded", "{refused:?}");
    assert!(!server.data_dir().join("notebooks/huge").exists(), "the refused volume left files");
    let listed = server.ok("notebooks:ListNotebookInstances", json!({}));
    assert_eq!(listed["NotebookInstances"], json!([]), "{listed}");
}
