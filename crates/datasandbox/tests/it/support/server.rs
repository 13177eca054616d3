//! Starting and stopping a real server for a test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_datasandbox");

pub struct Server {
    pub dir: tempfile::TempDir,
    pub api: String,
    child: Child,
    /// The server's own pid: `child`'s, or, on a terminal, that of the child of `script`.
    pid: u32,
    vpc: Vpc,
}

/// A /16 of its own for one test server's instance links. Servers on one host must not
/// share link addresses (each serves its endpoint on its links' host addresses, and refuses
/// an address the host already has), and nextest runs tests in parallel processes: each /16
/// has a lock file, held for as long as the claim lives, and a /16 in which the host already
/// has an address (left by a killed run) is passed over.
pub struct Vpc {
    /// The /16 is `10.<octet>.0.0/16`.
    octet: u8,
    _lock: std::fs::File,
}

impl Vpc {
    pub fn claim() -> Vpc {
        let dir = std::env::temp_dir().join("datasandbox-test-vpcs");
        std::fs::create_dir_all(&dir).expect("make the directory of vpc locks");
        let addresses = Command::new("ip").args(["-o", "-4", "addr", "show"]).output().expect("ip addr show");
        let addresses = String::from_utf8_lossy(&addresses.stdout);
        let start = std::process::id() as usize;
        for i in 0..150 {
            let octet = u8::try_from(100 + (start + i) % 150).expect("below 250");
            if addresses.contains(&format!(" 10.{octet}.")) {
                continue;
            }
            let lock = std::fs::File::options().create(true).truncate(false).write(true).open(dir.join(format!("10.{octet}.lock")));
            let lock = lock.expect("open a vpc lock file");
            if lock.try_lock().is_ok() {
                return Vpc { octet, _lock: lock };
            }
        }
        panic!("no /16 among 10.100–10.249 is free for a test server's instance links");
    }

    /// The `-c` override that gives a server this network.
    pub fn setting(&self) -> String {
        format!("vpc_cidr=10.{}.0.0/16", self.octet)
    }

    /// The network's first address (its prefix is 16 bits).
    pub fn network(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, self.octet, 0, 0)
    }
}

/// The outcome of one CLI call.
#[derive(Debug)]
pub struct Called {
    pub exit: i32,
    pub stdout: Value,
    pub stderr: Value,
}

impl Server {
    pub fn start(overrides: &[&str]) -> Server {
        Server::start_with_env(overrides, &[])
    }

    pub fn start_with_env(overrides: &[&str], env: &[(&str, &str)]) -> Server {
        let (dir, vpc) = (tempfile::tempdir().expect("temp dir"), Vpc::claim());
        let (child, api) = launch_command(dir.path(), &vpc, overrides, env).expect("server starts");
        Server { dir, api, pid: child.id(), child, vpc }
    }

    /// Starts `datasandbox up` the way an operator does, in a terminal: on a pseudo-terminal
    /// that is the server's controlling terminal (`script` from util-linux makes one).
    pub fn start_on_terminal(overrides: &[&str]) -> Server {
        let (dir, vpc) = (tempfile::tempdir().expect("temp dir"), Vpc::claim());
        let (child, api) = launch(dir.path(), &vpc, overrides, &[], How::OnTerminal).expect("server starts on a terminal");
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).expect("script's children");
        let pid = children.split_whitespace().next().and_then(|p| p.parse().ok()).expect("script runs the server");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the server's executable");
        assert_eq!(exe, Path::new(BIN), "script's child is not the server");
        Server { dir, api, pid, child, vpc }
    }

    /// Starts the server through `wrapper`, a command given the server's command line after
    /// its own arguments (which must `exec` it): for a test that changes the server's world,
    /// such as a mount namespace of its own.
    pub fn start_under(wrapper: &[&str], overrides: &[&str]) -> Server {
        let (dir, vpc) = (tempfile::tempdir().expect("temp dir"), Vpc::claim());
        let (child, api) = launch(dir.path(), &vpc, overrides, &[], How::Under(wrapper)).expect("server starts");
        Server { dir, api, pid: child.id(), child, vpc }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Starts a server on a data directory the test prepared (a size-limited file system).
    pub fn start_in(dir: tempfile::TempDir, overrides: &[&str]) -> Server {
        let vpc = Vpc::claim();
        let (child, api) = launch_command(dir.path(), &vpc, overrides, &[]).expect("server starts");
        Server { dir, api, pid: child.id(), child, vpc }
    }

    /// Runs `datasandbox serve` (no defaults written, no deploy) on a data directory the test
    /// prepared, a restored one.
    pub fn serve_in(dir: tempfile::TempDir, overrides: &[&str]) -> Server {
        let vpc = Vpc::claim();
        let (child, api) = launch(dir.path(), &vpc, overrides, &[], How::Serve).expect("serve starts");
        Server { dir, api, pid: child.id(), child, vpc }
    }

    /// Starts a server on a data directory the test prepared, with environment of its own; the
    /// server's log when it does not start (a node refused by the cluster).
    pub fn try_start_in(dir: tempfile::TempDir, overrides: &[&str], env: &[(&str, &str)]) -> Result<Server, String> {
        let vpc = Vpc::claim();
        let (child, api) = launch_command(dir.path(), &vpc, overrides, env)?;
        Ok(Server { dir, api, pid: child.id(), child, vpc })
    }

    pub fn start_with_spec(spec: &str, overrides: &[&str]) -> Server {
        let (dir, vpc) = (tempfile::tempdir().expect("temp dir"), Vpc::claim());
        let path = dir.path().join("datasandbox.toml");
        std::fs::write(&path, spec).expect("write spec");
        let (child, api) = launch_command(dir.path(), &vpc, overrides, &[]).expect("server starts");
        Server { dir, api, pid: child.id(), child, vpc }
    }

    /// The `-c vpc_cidr=…` this server runs with: a deploy of its spec passes it too.
    pub fn vpc(&self) -> String {
        self.vpc.setting()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `sql` on this server's metadata store, whichever backend the run uses.
    pub fn sql(&self, sql: &str) -> String {
        crate::support::backend::sql(self.data_dir(), sql)
    }

    /// How many object bodies this server's object store keeps.
    pub fn blob_count(&self) -> usize {
        crate::support::backend::blob_count(self.data_dir())
    }

    pub fn socket(&self) -> PathBuf {
        self.data_dir().join("control.sock")
    }

    /// Kills the server with SIGKILL (no clean shutdown) and starts it again on the same data.
    pub fn crash_and_restart(&mut self, overrides: &[&str]) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
        let (child, api) = launch_command(self.data_dir(), &self.vpc, overrides, &[]).expect("server restarts");
        self.pid = child.id();
        self.child = child;
        self.api = api;
    }

    /// Starts the server again on the same data directory with environment of its own.
    pub fn restart_with_env(&mut self, overrides: &[&str], env: &[(&str, &str)]) {
        let (child, api) = launch_command(self.data_dir(), &self.vpc, overrides, env).expect("server restarts");
        self.pid = child.id();
        self.child = child;
        self.api = api;
    }

    /// Kills the server with SIGKILL and leaves it down until [`Server::restart`].
    pub fn crash_and_restart_later(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// Starts the server again on the same data directory.
    pub fn restart(&mut self, overrides: &[&str]) {
        let (child, api) = launch_command(self.data_dir(), &self.vpc, overrides, &[]).expect("server restarts");
        self.pid = child.id();
        self.child = child;
        self.api = api;
    }

    /// Starts the server again on the same data directory; its log if it does not start.
    pub fn try_restart(&mut self, overrides: &[&str]) -> Result<(), String> {
        let (child, api) = launch_command(self.data_dir(), &self.vpc, overrides, &[])?;
        self.pid = child.id();
        self.child = child;
        self.api = api;
        Ok(())
    }

    /// Stops the server with SIGINT and waits for it; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.pid.to_string();
        Command::new("kill").args(["-INT", &pid]).status().expect("kill -INT");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop within 10 s of SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `datasandbox call <action> --input <json>` as the local operator.
    pub fn call(&self, action: &str, input: &Value) -> Called {
        self.cli(&["call", action, "--input", &input.to_string()], &[])
    }

    /// `datasandbox call` over HTTP with a bearer token.
    pub fn call_as(&self, token: &str, action: &str, input: &Value) -> Called {
        let endpoint = format!("http://{}", self.api);
        self.cli(&["call", action, "--input", &input.to_string(), "--endpoint", &endpoint], &[("DATASANDBOX_TOKEN", token)])
    }

    pub fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Called {
        let mut command = Command::new(BIN);
        command.arg("--data-dir").arg(self.data_dir()).args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        let output: Output = command.output().expect("run the CLI");
        let parse =
            |bytes: &[u8]| serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
        Called { exit: output.status.code().unwrap_or(-1), stdout: parse(&output.stdout), stderr: parse(&output.stderr) }
    }

    /// Calls as the operator and returns the result, failing the test on any error.
    pub fn ok(&self, action: &str, input: Value) -> Value {
        let called = self.call(action, &input);
        assert_eq!(called.exit, 0, "{action} {input} failed: {:?}", called.stderr);
        called.stdout
    }

    /// A bearer token for a user with the custom (streaming URL) access mode.
    pub fn token_for(&self, user: &str) -> String {
        let out = self.ok("identity:CreateSessionToken", serde_json::json!({ "UserId": user }));
        out["Token"].as_str().expect("token").to_owned()
    }

    /// Audit records, newest first, matching the given lookup attributes.
    pub fn audit(&self, attributes: &[(&str, &str)]) -> Vec<Value> {
        let attributes: Vec<Value> =
            attributes.iter().map(|(k, v)| serde_json::json!({ "AttributeKey": k, "AttributeValue": v })).collect();
        let out = self.ok("audit:LookupEvents", serde_json::json!({ "LookupAttributes": attributes, "MaxResults": 1000 }));
        out["Events"].as_array().cloned().unwrap_or_default()
    }

    /// The one audit record of a request.
    pub fn audit_record(&self, request_id: &str) -> Value {
        let records = self.audit(&[("RequestId", request_id)]);
        assert_eq!(records.len(), 1, "expected one audit record for request {request_id}, found {records:#?}");
        records.into_iter().next().expect("one record")
    }
}

/// How much of each log a failed test prints.
const LOG_TAIL_LINES: usize = 60;

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Server {
    /// What a failed test leaves behind for whoever reads CI's output: the sessions, the
    /// instances, the tail of the server's log and of each instance's own logs (the
    /// launcher's, the kiosk browser's). The only window into a machine that is gone.
    fn report_for_a_failed_test(&self) {
        let log = std::fs::read_to_string(self.data_dir().join("server.log")).unwrap_or_default();
        eprintln!("---- the server's log (last {LOG_TAIL_LINES} lines) ----\n{}", tail(&log, LOG_TAIL_LINES));
        let sessions = self
            .call("streaming:DescribeSessions", &serde_json::json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet" }));
        eprintln!("---- the default stack's sessions ----\n{} {}", sessions.stdout, sessions.stderr);
        let recent = self.call("audit:LookupEvents", &serde_json::json!({ "MaxResults": 40 }));
        let recent: Vec<String> = recent.stdout["Events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{} {} {} {} {}",
                    e["eventTime"], e["eventName"], e["userIdentity"]["userName"], e["sourceIPAddress"], e["errorCode"]
                )
            })
            .collect();
        eprintln!("---- the newest audit records ----\n{}", recent.join("\n"));
        let instances = self.call("streaming:DescribeInstances", &serde_json::json!({}));
        eprintln!("---- instances ----\n{}", instances.stdout);
        let ids = instances.stdout["Instances"].as_array().cloned().unwrap_or_default();
        for id in ids.iter().filter_map(|i| i["InstanceId"].as_str()) {
            let script = format!(
                "for f in /tmp/*.log; do [ -f \"$f\" ] && echo \"== $f\" && tail -n {LOG_TAIL_LINES} \"$f\"; done; ps -eo pid,etime,args | cut -c1-160"
            );
            let inside = self.cli(&["instances", "exec", id, "--", "/bin/sh", "-c", &script], &[]);
            eprintln!("---- inside {id} ----\n{}", inside.stdout.as_str().map_or_else(|| inside.stdout.to_string(), str::to_owned));
        }
    }
}

impl Drop for Server {
    /// A clean stop, so that the server ends its instances; a kill if it does not stop.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report_for_a_failed_test();
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-INT", &self.pid.to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        detach_leftover_mounts(self.dir.path());
    }
}

/// Detaches what a server killed mid-test left mounted under its data directory (its
/// instances' bounded directories and dataset mounts, which only its next start would
/// release): the temporary directory can then be removed, and the host's mount table does not
/// grow run after run.
fn detach_leftover_mounts(data_dir: &Path) {
    let Some(prefix) = data_dir.to_str() else { return };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut leftovers: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(prefix) && m[prefix.len()..].starts_with('/'))
        .collect();
    // Deepest first.
    leftovers.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in leftovers {
        let _ = Command::new("umount").args(["-l", mount]).status();
    }
}

/// Starts `datasandbox up` on `vpc` and waits for its `ready` line; returns the API address.
/// On failure returns the server's log.
fn launch_command(data_dir: &Path, vpc: &Vpc, overrides: &[&str], env: &[(&str, &str)]) -> Result<(Child, String), String> {
    launch(data_dir, vpc, overrides, env, How::Plain)
}

/// How a server is started.
#[derive(Clone, Copy)]
enum How<'a> {
    Plain,
    /// On a pseudo-terminal of its own (`script`).
    OnTerminal,
    /// Through a wrapper command that execs it.
    Under(&'a [&'a str]),
    /// `serve` rather than `up`.
    Serve,
}

fn launch(data_dir: &Path, vpc: &Vpc, overrides: &[&str], env: &[(&str, &str)], how: How<'_>) -> Result<(Child, String), String> {
    let terminal = matches!(how, How::OnTerminal);
    let verb = if matches!(how, How::Serve) { "serve" } else { "up" };
    let mut args: Vec<String> =
        vec!["--data-dir".into(), data_dir.display().to_string(), verb.into(), "-c".into(), "server.api_listen=127.0.0.1:0".into()];
    args.extend(["-c".into(), vpc.setting()]);
    let backends = crate::support::backend::for_server(data_dir);
    for o in backends.overrides.iter().map(String::as_str).chain(overrides.iter().copied()) {
        args.extend(["-c".into(), (*o).to_owned()]);
    }
    let mut command = if terminal {
        // `script -e -c 'exec <command line>'`: the server gets a new pseudo-terminal as its
        // controlling terminal, its output copied to ours. `exec`, so that the server is
        // script's child whatever `$SHELL` is (dash, as CI's shell, forks for `-c` without it).
        let line: Vec<String> = std::iter::once(BIN.to_owned()).chain(args).map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
        let mut command = Command::new("script");
        command.args(["-q", "-f", "-e", "-c", &format!("exec {}", line.join(" ")), "/dev/null"]).stdin(Stdio::piped());
        command
    } else if let How::Under([program, arguments @ ..]) = how {
        let mut command = Command::new(program);
        command.args(arguments.iter()).arg(BIN).args(args);
        command
    } else {
        let mut command = Command::new(BIN);
        command.args(args);
        command
    };
    command.envs(backends.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).envs(env.iter().copied());
    // The server's log goes to `server.log` in its data directory, written as it comes: a pipe
    // nobody read would fill up and stall the server mid-test.
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("server.log")).map_err(|e| e.to_string())?;
    let mut child = command.stdout(Stdio::piped()).stderr(log).spawn().map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end, after the ready line too, so the server never writes into a closed pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // On a terminal the server's log shares the terminal with its ready line.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first = rx.recv_timeout(Duration::from_secs(30));
    while terminal && first.as_ref().is_ok_and(|line| !line.starts_with("ready ")) {
        first = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
    match first {
        Ok(line) if line.starts_with("ready ") => {
            let api = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("api=http://").or_else(|| w.strip_prefix("api=https://")))
                .expect("ready line names the api")
                .to_owned();
            Ok((child, api))
        }
        other => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
            Err(format!("no ready line ({other:?}); its log:\n{log}"))
        }
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `seconds`.
pub fn eventually<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {seconds} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
}
