//! `datasandbox launcher`, run inside a streaming instance when its session starts (the seed's
//! PowerShell launcher, made right): it reads the session's `DS_*` variables, fetches its
//! configuration from the parameter store, writes `session.json` into the user's home folder
//! with a serializer (as the instance, through the endpoint, which notifies the session
//! validator), and waits for `session_url.txt` or `session_error.json` beside it. It always
//! ends with the notebook or a clear message, never silently.
//!
//! In pixel-streaming mode (`DS_STREAM_VIEW` DESKTOP or APP) the launcher opens the notebook
//! URL in the instance's kiosk browser on the session's display; the URL opens only from this
//! instance's link. In direct mode it reaches the user through their session page. Either way
//! the launcher reports in `/tmp/launcher.log` and on standard output.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use model::session_file::{ERROR_FILE, SESSION_FILE, SessionError, SessionFile, URL_FILE};
use serde_json::{Value, json};

use crate::home_sync::api;

/// The launcher's settings: `/datasandbox/launcher/config` in the parameter store, JSON.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Config {
    #[serde(default = "default_timeout")]
    timeout_seconds: u64,
    #[serde(default = "default_poll")]
    poll_milliseconds: u64,
}

fn default_timeout() -> u64 {
    300
}

fn default_poll() -> u64 {
    10
}

fn say(line: &str) {
    println!("{line}");
    if let Ok(mut log) = std::fs::OpenOptions::new().create(true).append(true).open("/tmp/launcher.log") {
        let _ = writeln!(log, "{line}");
    }
}

pub async fn run() -> ExitCode {
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let endpoint = env("DS_ENDPOINT");
    let (Ok(user), Some(mode)) = (model::UserId::new(env("DS_USER_NAME")), model::AccessMode::parse(&env("DS_USER_ACCESS_MODE"))) else {
        say("launcher: this is not a user's session (DS_USER_NAME and DS_USER_ACCESS_MODE are missing); nothing to launch");
        return ExitCode::from(2);
    };
    let config = match patiently(&endpoint, "parameters:GetParameter", json!({ "Name": "/datasandbox/launcher/config" })).await {
        Ok(found) => match serde_json::from_str::<Config>(found["Parameter"]["Value"].as_str().unwrap_or_default()) {
            Ok(config) => config,
            Err(err) => {
                say(&format!("launcher: /datasandbox/launcher/config is not valid ({err}); using the defaults"));
                Config { timeout_seconds: default_timeout(), poll_milliseconds: default_poll() }
            }
        },
        Err(_) => Config { timeout_seconds: default_timeout(), poll_milliseconds: default_poll() },
    };
    let bucket = std::env::var("DS_HOME_BUCKET").unwrap_or_else(|_| "datasandbox-home".into());
    let Some(prefix) = crate::home_sync::home_prefix(&user, mode) else {
        say("launcher: DS_HOME_PREFIX is not the session's home folder; nothing to launch");
        return ExitCode::from(2);
    };
    let key = |file: &str| format!("{prefix}{file}");
    // Answers to an earlier session must not be taken for this one's.
    for file in [URL_FILE, ERROR_FILE] {
        let _ = api(&endpoint, "storage:DeleteObject", json!({ "Bucket": bucket, "Key": key(file) })).await;
    }
    let claim = SessionFile {
        user_name: user.to_string(),
        session_id: env("DS_SESSION_ID"),
        stack_name: env("DS_STACK_NAME"),
        fleet_name: env("DS_RESOURCE_NAME"),
        access_mode: mode.as_str().to_owned(),
    };
    let body = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&claim).expect("a session file serializes"));
    // Where the answer comes: its token taken before the question is asked, so that an answer
    // as quick as can be is not missed.
    let answers = json!({ "Bucket": bucket, "Prefix": key("session_") });
    let mut token = api(&endpoint, "storage:WaitForChanges", answers.clone()).await.ok().map(|out| out["Token"].clone());
    let started = Instant::now();
    if let Err(err) = patiently(&endpoint, "storage:PutObject", json!({ "Bucket": bucket, "Key": key(SESSION_FILE), "Body": body })).await {
        say(&format!("launcher: cannot write {SESSION_FILE} into your home folder: {err}"));
        return ExitCode::from(1);
    }
    say("launcher: waiting for your notebook");
    let poll = Duration::from_millis(config.poll_milliseconds.clamp(10, 10_000));
    let timeout = Duration::from_secs(config.timeout_seconds);
    while started.elapsed() < timeout {
        // A listing shows whichever answer came (an audited read, like every call).
        let mut listing = answers.clone();
        listing["MaxKeys"] = json!(10);
        let listed = api(&endpoint, "storage:ListObjectsV2", listing).await.unwrap_or_default();
        let present = |file: &str| listed["Contents"].as_array().into_iter().flatten().any(|o| o["Key"] == key(file).as_str());
        if present(URL_FILE)
            && let Some(url) = read(&endpoint, &bucket, &key(URL_FILE)).await
        {
            let waited = started.elapsed().as_secs_f64() * 1000.0;
            say(&format!("launcher: your notebook is ready ({waited:.1} ms after {SESSION_FILE} was written): {}", url.trim()));
            let view = env("DS_STREAM_VIEW");
            if view == "DESKTOP" || view == "APP" {
                return open_in_browser(url.trim()).await;
            }
            return ExitCode::SUCCESS;
        }
        if present(ERROR_FILE)
            && let Some(text) = read(&endpoint, &bucket, &key(ERROR_FILE)).await
        {
            say_refused(&text);
            return ExitCode::from(1);
        }
        let left = timeout.saturating_sub(started.elapsed()).as_secs().clamp(1, 60);
        wait_for_change(&endpoint, &answers, &mut token, left, poll).await;
    }
    say(&format!("launcher: no answer from the session validator within {} s; contact the operator", config.timeout_seconds));
    ExitCode::from(1)
}

fn say_refused(text: &str) {
    match serde_json::from_str::<SessionError>(text) {
        Ok(error) => say(&format!(
            "launcher: the session was refused ({}): {}",
            serde_json::to_value(error.error).unwrap_or(Value::Null),
            error.message
        )),
        Err(_) => say("launcher: the session was refused, with an unreadable reason; contact the operator"),
    }
}

/// The endpoint's long poll on the answers' prefix, until something there changes (or `left`
/// seconds pass); an endpoint that fails it (one that is stopping, say) is asked again after
/// `poll`, and not before a second has passed.
async fn wait_for_change(endpoint: &str, answers: &Value, token: &mut Option<Value>, left: u64, poll: Duration) {
    let mut wait = answers.clone();
    wait["Token"] = token.clone().unwrap_or(Value::Null);
    wait["WaitSeconds"] = json!(left);
    match api(endpoint, "storage:WaitForChanges", wait).await {
        Ok(out) => {
            if token.is_none() {
                // It answered at once (no token yet): list again, then wait with this one.
                tokio::time::sleep(poll).await;
            }
            *token = Some(out["Token"].clone());
        }
        Err(_) => tokio::time::sleep(poll.max(Duration::from_secs(1))).await,
    }
}

/// How long the launcher waits out an endpoint it cannot reach (a control plane restarting).
const PATIENCE: Duration = Duration::from_secs(30);

/// An endpoint call that retries while the endpoint cannot be reached at all, for up to
/// [`PATIENCE`]; any answer, a refusal included, is returned at once.
async fn patiently(endpoint: &str, action: &str, input: Value) -> Result<Value, String> {
    let started = Instant::now();
    loop {
        match api(endpoint, action, input.clone()).await {
            Err(err) if err.contains("\"ConnectionError\"") && started.elapsed() < PATIENCE => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// The display's X socket, made by the session's Xvnc (started beside the home-folder sync).
const X_SOCKET: &str = "/tmp/.X11-unix/X1";
const BROWSER: &str = "/usr/lib/chromium/chromium";

/// Opens `url` in the kiosk browser on the session's display, once the display is up. The
/// browser outlives the launcher (it is the session's application).
async fn open_in_browser(url: &str) -> ExitCode {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::path::Path::new(X_SOCKET).exists() {
        if Instant::now() > deadline {
            say("launcher: the session's display did not start within 30 s; contact the operator");
            return ExitCode::from(1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open("/tmp/browser.log");
    let output = || log.as_ref().ok().and_then(|f| f.try_clone().ok()).map_or_else(std::process::Stdio::null, std::process::Stdio::from);
    let spawned = std::process::Command::new(BROWSER)
        .args(sandbox::image::BROWSER_ARGUMENTS)
        .arg(format!("--window-size={},{}", sandbox::image::DISPLAY_SIZE.0, sandbox::image::DISPLAY_SIZE.1))
        .arg(url)
        .env("DISPLAY", ":1")
        // The session's printer: what the browser prints lands in the session's print folder.
        .env("CUPS_SERVER", crate::printing::CUPS_SOCKET)
        .stdin(std::process::Stdio::null())
        .stdout(output())
        .stderr(output())
        .process_group(0)
        .spawn();
    match spawned {
        Ok(browser) => {
            say(&format!("launcher: opened your notebook in the workspace's browser (pid {})", browser.id()));
            ExitCode::SUCCESS
        }
        Err(err) => {
            say(&format!("launcher: cannot start the browser {BROWSER}: {err}; the fleet's image needs the desktop recipe"));
            ExitCode::from(1)
        }
    }
}

async fn read(endpoint: &str, bucket: &str, key: &str) -> Option<String> {
    let object = api(endpoint, "storage:GetObject", json!({ "Bucket": bucket, "Key": key })).await.ok()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(object["Body"].as_str()?).ok()?;
    String::from_utf8(bytes).ok()
}
