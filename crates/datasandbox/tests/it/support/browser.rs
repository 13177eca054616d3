//! The one way a test starts a Chromium: Playwright scripts of `web/tests/` driving Debian's
//! Chromium, either one-shot ([`run_flow`]) or interactively ([`Browser`]).
//!
//! Two Chromiums at once (each with a session's instance behind it) starve each other on a
//! two-core machine, so `.config/nextest.toml` runs the tests under the `browser` module one at
//! a time. A filter of module names drifts silently when a module is renamed or a browser test
//! is written elsewhere; here every launch goes through [`node_driving_chromium`], which fails
//! the test unless its name starts with `browser::`, the very thing the filter selects.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

/// The prefix of every test that may start a Chromium; `.config/nextest.toml` puts exactly the
/// tests whose names start with it in the serialised `browser` test group.
const BROWSER_TEST_PREFIX: &str = "browser::";

/// The command that runs `web/tests/<script>` under node, after checking that the running test
/// is one the `browser` test group serialises. libtest names each test's thread after the test
/// (`browser::portal::a_local_user_…`), so the check needs no list to keep up to date.
fn node_driving_chromium(script: &str) -> Command {
    let test = std::thread::current().name().unwrap_or_default().to_owned();
    assert!(
        test.starts_with(BROWSER_TEST_PREFIX),
        "`{test}` starts a Chromium (web/tests/{script}) but is not in the `browser` module: browser tests must live under \
         tests/it/browser/ so that .config/nextest.toml's `test(/^browser::/)` runs them one at a time"
    );
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web");
    assert!(web.join("node_modules/playwright-core").is_dir(), "the browser tests need `npm ci --prefix web` (scripts/test runs it)");
    let mut command = Command::new("node");
    command.arg(web.join("tests").join(script));
    command
}

/// Where screenshots go for CI to keep: `$DATASANDBOX_ARTIFACTS`, else `target/artifacts`.
pub(crate) fn artifacts() -> PathBuf {
    let dir = std::env::var_os("DATASANDBOX_ARTIFACTS")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts"), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("make the artifacts directory");
    dir
}

/// Runs a browser flow, `web/tests/<script>` (Playwright driving Debian's Chromium), with
/// `args` and the screenshot directory last; returns the events it printed, one JSON object a
/// line. A failed flow fails the test with its events, its errors and `context()`.
pub(crate) fn run_flow(script: &str, args: &[&str], context: impl Fn() -> String) -> Vec<Value> {
    run_flow_with_env(script, args, &[], context)
}

/// [`run_flow`] with `env` besides the test's (`HOME` for a trust store of its own).
pub(crate) fn run_flow_with_env(script: &str, args: &[&str], env: &[(&str, &str)], context: impl Fn() -> String) -> Vec<Value> {
    let out = node_driving_chromium(script).args(args).arg(artifacts()).envs(env.iter().copied()).output().expect("run node");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(out.status.success(), "{script} failed: {events:?} {} {}", String::from_utf8_lossy(&out.stderr), context());
    events
}

/// A browser, driven by a script of `web/tests/` (`session.mjs` unless said otherwise) over
/// its standard input and output.
pub(crate) struct Browser {
    child: Child,
    commands: ChildStdin,
    events: mpsc::Receiver<Value>,
}

impl Browser {
    pub(crate) fn open(url: &str) -> Browser {
        Browser::run("session.mjs", url)
    }

    pub(crate) fn run(script: &str, url: &str) -> Browser {
        Browser::run_with_env(script, url, &[])
    }

    /// A browser whose process has `env` besides the test's (`HOME` for a trust store of its own).
    pub(crate) fn run_with_env(script: &str, url: &str, env: &[(&str, &str)]) -> Browser {
        let mut child = node_driving_chromium(script)
            .arg(url)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run node (apt-get install nodejs)");
        let commands = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&line).unwrap_or(json!({ "event": "output", "line": line })));
            }
        });
        Browser { child, commands, events }
    }

    /// The next event named `name` within `seconds`; page errors are reported, not skipped.
    pub(crate) fn expect(&self, name: &str, seconds: u64) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let event = self.events.recv_timeout(left).unwrap_or_else(|_| panic!("the browser did not report `{name}` within {seconds} s"));
            assert_ne!(event["event"], "error", "the browser failed: {event}");
            if event["event"] == name {
                return event;
            }
            eprintln!("browser: {event}");
        }
    }

    pub(crate) fn send(&mut self, command: &str) {
        writeln!(self.commands, "{command}").expect("the browser driver reads commands");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.commands, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
