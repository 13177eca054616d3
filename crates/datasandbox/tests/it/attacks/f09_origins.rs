//! Finding 9: cookies are SameSite=Strict, which is per site, not per origin, and WebSockets
//! are not subject to CORS: a page on another port of the same host took over sessions. Every
//! WebSocket upgrade and every cookie-authenticated state-changing request now checks `Origin`.

use std::time::Duration;

use serde_json::Value;

use crate::support::http;
use crate::support::streaming::{redeem, server, status};

/// Another port of the same host: the same site, another origin.
const FOREIGN: &str = "http://127.0.0.1:1";

/// A WebSocket handshake as a browser page of `origin` would make it; the refusal's status.
fn websocket(api: &str, path: &str, cookie: &str, origin: Option<&str>) -> Result<(), u16> {
    let stream = std::net::TcpStream::connect(api).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut request = tungstenite::http::Request::builder()
        .uri(format!("ws://{api}{path}"))
        .header("host", api)
        .header("cookie", format!("ds_session={cookie}"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tungstenite::handshake::client::generate_key());
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    // The pixel stream speaks noVNC's subprotocol.
    if path.starts_with("/stream/") {
        request = request.header("sec-websocket-protocol", "binary");
    }
    match tungstenite::client(request.body(()).expect("request"), stream) {
        Ok(_) => Ok(()),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => Err(response.status().as_u16()),
        Err(other) => panic!("handshake: {other:?}"),
    }
}

fn post(api: &str, method: &str, path: &str, cookie: &str, origin: &str, body: &[u8]) -> http::Reply {
    let headers = [("cookie", cookie), ("origin", origin), ("content-type", "application/json")];
    http::tcp(api).expect("connect").request(method, path, &headers, body).expect("request")
}

#[test]
fn f09_a_page_of_another_origin_cannot_use_the_session_or_console_cookies() {
    let server = server(&[]);
    let cookie = redeem(&server, "vic");
    let session = status(&server, &cookie);
    let id = session["SessionId"].as_str().expect("session id").to_owned();
    let own = format!("http://{}", server.api);

    // The session's live socket (its first message names the session) and the pixel stream.
    assert_eq!(websocket(&server.api, "/session/ws", &cookie, Some(FOREIGN)), Err(403), "the live socket opened cross-origin");
    assert_eq!(websocket(&server.api, &format!("/stream/{id}"), &cookie, Some(FOREIGN)), Err(403), "the stream opened cross-origin");
    assert_eq!(websocket(&server.api, "/session/ws", &cookie, Some(&own)), Ok(()), "the session page's own socket");

    // Cookie-authenticated actions.
    let session_cookie = format!("ds_session={cookie}");
    let end = post(&server.api, "POST", "/session/end", &session_cookie, FOREIGN, format!("{{\"SessionId\":\"{id}\"}}").as_bytes());
    assert_eq!(end.status, 403, "{}", String::from_utf8_lossy(&end.body));
    let upload = post(&server.api, "PUT", "/session/files/planted.txt", &session_cookie, FOREIGN, b"planted");
    assert_eq!(upload.status, 403, "{}", String::from_utf8_lossy(&upload.body));
    let console = post(&server.api, "POST", "/console/api/identity/CreateLocalUser", "ds_console=x", FOREIGN, b"{}");
    assert_eq!(console.status, 403);
    assert_eq!(console.json()["Code"], "CrossOriginRequestRefused");
    let launch = post(&server.api, "POST", "/portal/launch", "ds_portal=x", FOREIGN, b"{}");
    assert_eq!(launch.json()["Code"], "CrossOriginRequestRefused");
    assert_ne!(status(&server, &cookie)["State"], Value::from("EXPIRED"), "the session was ended cross-origin");

    let refused = server.audit(&[("EventName", "CrossOriginRequestRefused")]);
    assert!(refused.len() >= 6, "each refusal is recorded: {refused:#?}");
}

#[test]
fn f09_the_main_origin_serves_no_notebook() {
    // Notebook pages (whatever a kernel's output puts in them) on the gateway's origin could
    // call the console's and the session's actions with the user's cookies.
    let server = crate::support::server::Server::start(&[]);
    let reply = http::tcp(&server.api).expect("connect").request("GET", "/notebook/nb-0123456789abcdef/lab", &[], b"").expect("request");
    assert_eq!(reply.status, 404, "{}", String::from_utf8_lossy(&reply.body));
}

/// A page of another origin that frames the portal, console or a session page could lay a
/// decoy over it and have the user's click land on End session or Request export
/// (clickjacking): the main origin's pages are framed by its own pages only.
#[test]
fn f09_no_other_origin_frames_the_main_origins_pages() {
    let server = crate::support::server::Server::start(&[]);
    for path in ["/portal", "/console", "/session/status"] {
        let reply = http::tcp(&server.api).expect("connect").request("GET", path, &[], b"").expect("request");
        let header = |name: &str| reply.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(header("x-frame-options").as_deref(), Some("SAMEORIGIN"), "{path}");
        assert!(header("content-security-policy").is_some_and(|p| p.contains("frame-ancestors 'self'")), "{path}");
    }
}
