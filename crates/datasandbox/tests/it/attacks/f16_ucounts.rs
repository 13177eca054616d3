//! Finding 16 (the sandbox's part): every instance's user namespace was made by the host's
//! root, so what the kernel counts per user — inotify instances among them — was charged to
//! root: one instance taking all of `fs.inotify.max_user_instances` left the host's root (the
//! control plane, systemd) and every other instance without any.

use std::process::Command;

use crate::support::instances::{create, server_with_image, sh};

/// Whether a new process of the host's root can still make an inotify instance.
fn host_root_can_watch() -> bool {
    let out = Command::new("python3")
        .args(["-c", "import ctypes, sys; sys.exit(0 if ctypes.CDLL(None, use_errno=True).inotify_init() >= 0 else 1)"])
        .status()
        .expect("python3");
    out.success()
}

#[test]
fn f16_an_instance_exhausting_inotify_starves_neither_the_host_nor_other_instances() {
    let server = server_with_image();
    assert!(host_root_can_watch(), "the test's premise");
    let (greedy, other) = (create(&server, "greedy"), create(&server, "other"));
    // Take every inotify instance the kernel allows, and hold them.
    let (code, out) = sh(
        &server,
        &greedy,
        "(perl -e 'my $n = 0; $n++ while syscall(253) >= 0; open(my $f, \">\", \"/tmp/taken\"); print $f $n; close $f; sleep 60' </dev/null >/dev/null 2>&1 &) ; \
         for i in $(seq 100); do [ -s /tmp/taken ] && break; sleep 0.1; done; cat /tmp/taken",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.trim().parse::<u32>().is_ok_and(|n| n > 0), "the instance took {out}");
    assert!(host_root_can_watch(), "the instance took the host root's inotify instances");
    let (code, out) = sh(&server, &other, "perl -e 'syscall(253) >= 0 or exit 1'");
    assert_eq!(code, 0, "another instance was left without inotify: {out}");
}
