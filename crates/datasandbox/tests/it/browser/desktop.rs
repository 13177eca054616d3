//! Pixel streaming in a real browser: headless Chromium (Debian's, driven by Playwright from
//! npm) opens a streaming URL of the default spec; the session page shows the instance's
//! display through noVNC and the gateway's bridge, and on it the kiosk browser inside the
//! instance has JupyterLab loaded. The notebook proxy's audit shows that JupyterLab was
//! fetched from the instance's own address under the session's correlation id, and the
//! notebook URL, taken out of the instance, opens nowhere else.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::browser::Browser;
use crate::support::http;
use crate::support::server::Server;
use crate::support::server::eventually;
use crate::support::streaming::{redeem, streaming_url};

/// Where screenshots go for CI to keep: `$DATASANDBOX_ARTIFACTS`, else `target/artifacts`.
fn artifact(name: &str) -> PathBuf {
    let dir = std::env::var_os("DATASANDBOX_ARTIFACTS")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts"), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("make the artifacts directory");
    dir.join(name)
}

#[test]
fn a_streaming_url_shows_jupyterlab_in_the_workspace_browser() {
    // The default spec: pixel streaming (DESKTOP), the fleet's image built by the deploy
    // from the desktop recipe, the notebook as the stack's application.
    let server = Server::start(&[]);
    // The first session after `ready`: `up` prepared every image, so none is built now.
    let opened = std::time::Instant::now();
    let mut browser = Browser::open(&streaming_url(&server, "dana"));
    browser.expect("streaming", 240);

    let sessions = server.ok(
        "streaming:DescribeSessions",
        json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet", "UserId": "dana", "AuthenticationType": "API" }),
    );
    let session = sessions["Sessions"][0].clone();
    let (id, address) = (session["Id"].as_str().expect("id"), session["NetworkAccessConfiguration"]["EniPrivateIpAddress"].clone());
    let redeemed = server.audit(&[("EventName", "RedeemStreamingURL"), ("Username", "dana")]);
    let correlation = redeemed[0]["correlationId"].as_str().expect("the session's correlation id").to_owned();

    // JupyterLab, loaded by the kiosk browser: its requests came through the endpoint on the
    // instance's link, from the instance's address, under the session's correlation id.
    let requests = eventually(240, "JupyterLab's requests from the kiosk browser", || {
        let records: Vec<Value> =
            server.audit(&[("EventName", "NotebookRequest")]).into_iter().filter(|r| r["requestParameters"]["SessionId"] == id).collect();
        let loaded = |path: &str| records.iter().any(|r| r["requestParameters"]["Path"] == path);
        // The launcher tab's icons come last, once JupyterLab has drawn its shell.
        (loaded("lab") && loaded("api/kernelspecs") && loaded("kernelspecs/python3/logo-svg.svg")).then_some(records)
    });
    for record in &requests {
        assert_eq!(record["sourceIPAddress"], address, "{record}");
        assert_eq!(record["correlationId"], correlation.as_str(), "{record}");
        assert!(record["errorCode"].is_null(), "{record}");
    }

    // The same pixels in the user's browser: JupyterLab's launcher on the canvas, known by
    // the Python logos' yellow (its splash screen has none; an empty display one colour).
    let screenshot = artifact("pixel-session-jupyterlab.png");
    let shot = eventually(120, "JupyterLab painted on the streamed display", || {
        browser.send(&format!("shot {}", screenshot.display()));
        let shot = browser.expect("shot", 60);
        (shot["yellow"].as_u64().unwrap_or(0) >= 200).then_some(shot)
    });
    eprintln!("screenshot {} ({} colours sampled, {} yellow pixels)", screenshot.display(), shot["colors"], shot["yellow"]);
    eprintln!("first session: streaming URL opened → JupyterLab painted in {:.1} s (target < 15 s)", opened.elapsed().as_secs_f64());

    // The notebook URL, read inside the instance, is useless anywhere else: a fresh one made
    // for this session is refused to another user's browser on the gateway, and to the host
    // itself speaking to the endpoint's address.
    let instance = session["InstanceId"].as_str().expect("instance");
    let log = server.cli(&["instances", "exec", instance, "--", "cat", "/tmp/launcher.log"], &[]);
    let log = log.stdout.as_str().map_or_else(|| log.stdout.to_string(), str::to_owned);
    assert!(log.contains("opened your notebook in the workspace's browser"), "{log}");
    // The very URL the launcher opened, copied out of the workspace: refused outside it.
    let taken = log.split_whitespace().find(|w| w.contains("/notebook-auth/")).expect("the URL in the launcher's log");
    let eve = redeem(&server, "eve");
    let copied = http::tcp(&server.api)
        .expect("connect")
        .request("GET", &taken[taken.find("/notebook-auth/").expect("path")..], &[("cookie", &format!("ds_session={eve}"))], b"")
        .expect("request");
    assert_eq!(copied.status, 403, "{}", String::from_utf8_lossy(&copied.body));
    assert_eq!(copied.json()["Code"], "NotebookURLBoundToInstance");
    let notebooks = server.ok("notebooks:ListNotebookInstances", json!({}));
    let notebook = notebooks["NotebookInstances"][0]["NotebookInstanceName"].as_str().expect("dana's notebook").to_owned();
    let fresh =
        server.ok("notebooks:CreatePresignedNotebookInstanceUrl", json!({ "NotebookInstanceName": notebook, "StreamingSessionId": id }));
    let url = fresh["AuthorizedUrl"].as_str().expect("url");
    let endpoint = url.trim_start_matches("http://").split('/').next().expect("host:port");
    assert!(endpoint.starts_with("10."), "a pixel session's notebook URL points at the instance's endpoint: {url}");
    let path = &url[url.find("/notebook-auth/").expect("a notebook URL")..];
    let outside =
        http::tcp(&server.api).expect("connect").request("GET", path, &[("cookie", &format!("ds_session={eve}"))], b"").expect("request");
    assert_eq!(outside.status, 403, "{}", String::from_utf8_lossy(&outside.body));
    assert_eq!(outside.json()["Code"], "NotebookURLBoundToInstance");
    let from_host = http::tcp(endpoint).expect("the endpoint listens on the link").request("GET", path, &[], b"").expect("request");
    assert_eq!(from_host.status, 401, "{}", String::from_utf8_lossy(&from_host.body));
    let refusals = server.audit(&[("EventName", "RedeemPresignedNotebookInstanceUrl")]);
    assert!(
        refusals.iter().any(|r| r["errorCode"] == "NotebookURLBoundToInstance" && r["userIdentity"]["userName"] == "eve"),
        "{refusals:#?}"
    );
    assert!(
        refusals.iter().any(|r| r["errorCode"].is_string() && r["sourceIPAddress"] != address && r["userIdentity"]["userName"].is_null()),
        "{refusals:#?}"
    );

    // Reloading the page (it lives at /session once the URL is spent) returns to the same
    // session and display.
    browser.send("reload");
    let reloaded = browser.expect("reloaded", 90);
    assert!(reloaded["url"].as_str().is_some_and(|u| u.ends_with("/session")), "{reloaded}");
    let again = server.ok(
        "streaming:DescribeSessions",
        json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet", "UserId": "dana", "AuthenticationType": "API" }),
    );
    assert_eq!(again["Sessions"][0]["Id"], session["Id"], "the same session after the reload");

    // The page's clipboard box pastes UTF-8 text into the workspace: noVNC and Xvnc speak the
    // extended clipboard through the gateway's filter (classic cut text is Latin-1 only).
    browser.send("paste grüße aus dem Labor ✓");
    browser.expect("pasted", 30);
    eventually(20, "the pasted text in the instance's X clipboard", || {
        let out =
            server.cli(&["instances", "exec", instance, "--", "/bin/sh", "-c", "DISPLAY=:1 timeout 5 xclip -selection clipboard -o"], &[]);
        (out.stdout.as_str() == Some("grüße aus dem Labor ✓")).then_some(())
    });
    let passed = server.audit(&[("EventName", "ClipboardTransferred")]);
    assert!(
        passed.iter().any(|r| r["requestParameters"]["SessionId"] == id && r["requestParameters"]["Direction"] == "FROM_LOCAL_DEVICE"),
        "{passed:#?}"
    );

    // The page's end button ends the session.
    browser.send("end");
    let ended = browser.expect("ended", 60);
    assert!(ended["text"].as_str().unwrap_or_default().contains("USER_ENDED"), "{ended}");
}
