//! Streaming sessions as a browser would have them: streaming URLs, opened and redeemed over
//! HTTP, and the session page's status, for every test that needs a session.

use serde_json::{Value, json};

use crate::support::http;
use crate::support::server::{Server, eventually};

pub(crate) const STACK: &str = "datasandbox-stack";

pub(crate) const FLEET: &str = "datasandbox-fleet";

pub(crate) fn streaming_url(server: &Server, user: &str) -> String {
    let out = server.ok("streaming:CreateStreamingURL", json!({ "StackName": STACK, "FleetName": FLEET, "UserId": user, "Validity": 600 }));
    out["StreamingURL"].as_str().expect("url").to_owned()
}

pub(crate) struct Opened {
    pub status: u16,
    pub cookie: Option<String>,
    pub body: String,
}

/// Opens a streaming URL as a browser would.
pub(crate) fn open(server: &Server, url: &str) -> Opened {
    let path = &url[url.find("/streaming/").expect("a streaming URL")..];
    let reply = http::tcp(&server.api).expect("connect").request("GET", path, &[], b"").expect("request");
    let cookie = reply
        .headers
        .iter()
        .find(|(name, _)| name == "set-cookie")
        .and_then(|(_, value)| value.split(';').next()?.strip_prefix("ds_session=").map(str::to_owned));
    Opened { status: reply.status, cookie, body: String::from_utf8_lossy(&reply.body).into_owned() }
}

pub(crate) fn redeem(server: &Server, user: &str) -> String {
    let opened = open(server, &streaming_url(server, user));
    assert_eq!(opened.status, 200, "{}", opened.body);
    opened.cookie.expect("a session cookie")
}

pub(crate) fn status(server: &Server, cookie: &str) -> Value {
    let reply = http::tcp(&server.api)
        .expect("connect")
        .request("GET", "/session/status", &[("cookie", &format!("ds_session={cookie}"))], b"")
        .expect("request");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

pub(crate) fn active(server: &Server, cookie: &str, seconds: u64) -> Value {
    eventually(seconds, "the session to be ACTIVE", || {
        let s = status(server, cookie);
        (s["State"] == "ACTIVE").then_some(s)
    })
}

pub(crate) fn expire(server: &Server, session: &Value) {
    server.ok("streaming:ExpireSession", json!({ "SessionId": session["SessionId"] }));
}

/// A server with the base image built, its default fleet set by `overrides`. Its sessions
/// start a shell, not the notebook launcher: these tests are about sessions, not notebooks.
pub(crate) fn server(overrides: &[&str]) -> Server {
    // Direct mode: no display is started (these tests are about sessions; `stream.rs` streams).
    let mut all = vec![format!("stacks.{STACK}.application=shell"), "stream_view=DIRECT".to_owned()];
    all.extend(overrides.iter().map(|o| (*o).to_owned()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let server = Server::start(&refs);
    assert_eq!(server.cli(&["image", "build", "base"], &[]).exit, 0);
    server
}
