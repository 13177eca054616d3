//! Finding 1: with `datasandbox up` in the operator's terminal, every process of an instance
//! had that terminal as its controlling terminal (and `/dev/tty` inside), so code in a notebook
//! could push keystrokes into the root shell's input with `TIOCSTI`.

use serde_json::json;

use crate::support::instances::{create, sh};
use crate::support::server::Server;

/// The controlling terminal (field 7 of `/proc/<pid>/stat`, `tty_nr`) of a host process.
fn tty_of(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("comm ends") + 2..];
    after_name.split(' ').nth(4).and_then(|t| t.parse().ok()).expect("tty_nr")
}

#[test]
fn f01_an_instance_started_from_the_operators_terminal_cannot_type_into_it() {
    let server = Server::start_on_terminal(&[]);
    assert_ne!(tty_of(server.pid()), 0, "the test's premise: the server runs on a terminal");
    assert_eq!(server.cli(&["image", "build", "base"], &[]).exit, 0);
    let instance = create(&server, "mallory");

    // Inside: no process has a controlling terminal, and there is no /dev/tty to open.
    let (code, ttys) = sh(&server, &instance, "for p in /proc/[0-9]*; do sed 's/.*) //' $p/stat | cut -d' ' -f5; done | sort -u");
    assert_eq!(code, 0, "{ttys}");
    assert_eq!(ttys.trim(), "0", "a process of the instance has a controlling terminal");
    let (code, out) = sh(&server, &instance, "test -e /dev/tty || echo absent");
    assert_eq!((code, out.trim()), (0, "absent"));

    // TIOCSTI and TIOCLINUX are refused by the seccomp filter whatever the descriptor (EPERM,
    // not the ENOTTY a /dev/null would give); with a high bit set in the request too.
    for request in ["0x5412", "0x541C", "0x100005412"] {
        let script = format!(
            "perl -e 'open(my $f, \"<\", \"/dev/null\"); my $c = \"x\"; syscall(16, fileno($f), {request}, $c) == -1 or exit 3; print $!+0'"
        );
        let (code, errno) = sh(&server, &instance, &script);
        assert_eq!((code, errno.trim()), (0, "1"), "ioctl {request} was not refused by the filter");
    }

    // On the host: the instance's helper is in a session of its own, without the terminal,
    // and holds none of the server's standard streams.
    let helpers: Vec<u32> = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            cmdline.windows(14).any(|w| w == b"sandbox-helper") && status.contains(&format!("\nPPid:\t{}\n", server.pid()))
        })
        .collect();
    assert_eq!(helpers.len(), 1, "one instance, one helper");
    assert_eq!(tty_of(helpers[0]), 0, "the helper has the operator's terminal");
    for fd in 0..3 {
        let target = std::fs::read_link(format!("/proc/{}/fd/{fd}", helpers[0])).expect("fd");
        assert!(!target.to_string_lossy().starts_with("/dev/pts"), "the helper's fd {fd} is the terminal: {}", target.display());
    }
    // Its errors have a place of their own, for the operator only.
    let logs = server.data_dir().join("logs/instances");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&logs).expect("the instances' logs").permissions());
    assert_eq!(mode & 0o077, 0, "the instances' logs are readable by others");
    server.ok("streaming:TerminateInstance", json!({ "InstanceId": instance["InstanceId"] }));
}
