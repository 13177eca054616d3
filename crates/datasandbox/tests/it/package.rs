//! The Debian package, as an operator installs it: `scripts/package` builds it (scripts/test
//! does, before the tests), and here it installs on this Debian with its declared
//! dependencies, its unit passes `systemd-analyze verify`, the quick start still works with the
//! installed binary, and the unit's own command runs as systemd would run it (no terminal: JSON
//! logs; SIGHUP reloads without stopping; SIGTERM stops it cleanly). Then it is removed.
//!
//! It changes the host (`dpkg -i`), so it runs in the embedded suite only.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::backend::scale_out;
use crate::support::server::Vpc;

const UNIT: &str = "/lib/systemd/system/datasandbox.service";

fn run(program: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn package() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debian");
    let found =
        std::fs::read_dir(&dir).ok().into_iter().flatten().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "deb"));
    found.unwrap_or_else(|| panic!("no package in {}: run `scripts/package --profile dev` (scripts/test does)", dir.display()))
}

/// Starts `command`, reads its standard output until the `ready` line; its stderr is a pipe.
fn until_ready(mut command: Command) -> (Child, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the installed binary");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = lines.next().and_then(Result::ok).unwrap_or_default();
    std::thread::spawn(move || lines.for_each(drop));
    assert!(ready.starts_with("ready api=http://"), "no ready line: {ready:?}");
    let api = ready.split_whitespace().find_map(|w| w.strip_prefix("api=http://")).expect("api").to_owned();
    (child, api)
}

fn signal(child: &Child, name: &str) {
    assert_eq!(run("kill", &[&format!("-{name}"), &child.id().to_string()]).0, 0);
}

#[test]
fn the_package_installs_its_unit_verifies_and_the_server_runs_as_systemd_would_run_it() {
    if scale_out() {
        return;
    }
    let deb = package();
    let (code, said) = run("dpkg", &["-i", deb.to_str().expect("path")]);
    assert_eq!(code, 0, "dpkg -i: {said}");
    let (code, depends) = run("dpkg-deb", &["-f", deb.to_str().expect("path"), "Depends"]);
    assert!(code == 0 && depends.contains("nftables") && depends.contains("gocryptfs"), "undeclared run-time dependencies: {depends}");
    let (code, version) = run("/usr/bin/datasandbox", &["--version"]);
    assert!(code == 0 && version.starts_with("datasandbox "), "{version}");
    let (code, said) = run("systemd-analyze", &["verify", UNIT]);
    assert_eq!(code, 0, "systemd-analyze verify {UNIT}: {said}");
    let unit = std::fs::read_to_string(UNIT).expect("the installed unit");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart").to_owned();
    assert_eq!(exec, "/usr/bin/datasandbox --data-dir /var/lib/datasandbox serve");
    assert!(unit.contains("Restart=on-failure") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"), "{unit}");

    // The quick start, with the installed binary.
    let (vpc, data) = (Vpc::claim(), tempfile::tempdir().expect("data dir"));
    let dir = data.path().to_str().expect("path");
    let settings = ["-c", "server.api_listen=127.0.0.1:0", "-c", "fleet_type=ON_DEMAND", "-c", &vpc.setting()];
    let mut up = Command::new("/usr/bin/datasandbox");
    up.args(["--data-dir", dir, "up"]).args(settings);
    let (mut child, _) = until_ready(up);
    signal(&child, "INT");
    assert!(child.wait().expect("up stops").success(), "up did not stop cleanly");

    // The unit's command on that data directory, with no terminal, as systemd runs it.
    let mut words: Vec<&str> = exec.split_whitespace().collect();
    words[2] = dir;
    let mut serve = Command::new(words[0]);
    serve.args(&words[1..]).args(settings).env("DATASANDBOX_LOG", "info");
    let (mut child, api) = until_ready(serve);
    let mut log = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    log.read_line(&mut first).expect("a log line");
    let line: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert!(line["level"].is_string() && line["fields"]["message"].is_string(), "{line}");
    std::thread::spawn(move || log.lines().for_each(drop));
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(300));
    let (code, said) = run("curl", &["-sf", &format!("http://{api}/healthz")]);
    assert_eq!(code, 0, "the server stopped at a reload: {said}");
    assert!(child.try_wait().expect("wait").is_none(), "SIGHUP stopped the server");
    signal(&child, "TERM");
    assert!(child.wait().expect("serve stops").success(), "serve did not stop cleanly on SIGTERM");

    let (code, said) = run("dpkg", &["-r", "datasandbox"]);
    assert_eq!(code, 0, "dpkg -r: {said}");
    assert!(!std::path::Path::new("/usr/bin/datasandbox").exists());
}
