//! Which browser pages may act with the gateway's cookies.
//!
//! Cookies are SameSite=Strict, which is per *site*: a page on another port of the same host,
//! or on a sibling host name, still gets them on its requests, and WebSockets are not subject
//! to CORS at all. So every WebSocket upgrade, and every state-changing request on the paths
//! that cookies authenticate (`/console/`, `/portal/`, `/session/`, `/notebook/`), must come
//! from a page of this origin: a browser's `Origin` header must name the origin the request
//! was sent to (its `Host`) or that origin's configured URL (`server.public_url`, or
//! `server.notebook_url` on the notebook listener). A foreign one is refused
//! (403 `CrossOriginRequestRefused`) and recorded. A request without `Origin` is not a
//! browser's cross-origin request (browsers always send it on these), so it passes: its
//! sender holds the cookie itself.
//!
//! `/api/` (bearer tokens, never cookies) and `/saml/acs` (the IdP's cross-site form post, by
//! design; bound to the browser by its own cookie) are not checked here.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use control::{ActionError, ControlPlane, ErrorCode};
use serde_json::json;

/// Paths whose requests a cookie authenticates.
const COOKIE_PATHS: &[&str] = &["/console/", "/portal/", "/session/", "/notebook/"];

/// What a listener's guard compares `Origin` with, besides the request's own `Host`: the
/// configured URL of that origin (`server.public_url`, `server.notebook_url`), if any.
#[derive(Clone)]
pub(crate) struct Check {
    control: ControlPlane,
    configured: Option<String>,
}

impl Check {
    pub(crate) fn main(control: &ControlPlane) -> Check {
        Check { control: control.clone(), configured: control.spec().public_url.clone() }
    }

    pub(crate) fn notebooks(control: &ControlPlane) -> Check {
        Check { control: control.clone(), configured: control.spec().notebook_url.clone() }
    }

    pub(crate) fn endpoint(control: &ControlPlane) -> Check {
        Check { control: control.clone(), configured: None }
    }
}

pub(crate) async fn guard(State(check): State<Check>, request: Request, next: Next) -> Response {
    if !checked(request.method(), request.uri().path(), request.headers()) {
        return next.run(request).await;
    }
    let Some(origin) = request.headers().get(header::ORIGIN) else { return next.run(request).await };
    let origin = origin.to_str().unwrap_or("(not text)").to_owned();
    let control = &check.control;
    if same_origin(&origin, request.headers(), check.configured.as_deref()) {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip().to_string());
    let error = ActionError::new(
        403,
        ErrorCode::CrossOriginRequestRefused,
        "this request comes from a page of another origin; open the page from this server".to_owned(),
    );
    let path: String = request.uri().path().chars().take(256).collect();
    let parameters = json!({ "Method": request.method().as_str(), "Path": path, "Origin": origin.chars().take(256).collect::<String>() });
    control.record_refused_request("CrossOriginRequestRefused", &error, parameters, peer.as_deref().unwrap_or("unknown")).await;
    (StatusCode::FORBIDDEN, axum::Json(json!({ "Code": error.code, "Message": error.message }))).into_response()
}

/// Whether a request must come from this origin: a WebSocket upgrade anywhere, or a
/// state-changing method on a cookie's path.
fn checked(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let upgrade = headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let changes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    upgrade || (changes && COOKIE_PATHS.iter().any(|p| path.starts_with(p)))
}

/// Whether `origin` is the one the request was sent to (`Host`, either scheme) or the
/// configured public URL's.
fn same_origin(origin: &str, headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let origin = origin.to_ascii_lowercase();
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    if !matches!(scheme, "http" | "https") {
        return false;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
    if host.as_deref() == Some(authority) {
        return true;
    }
    public_url.is_some_and(|url| {
        let url = url.to_ascii_lowercase();
        let base = url.split_once("://").map(|(s, rest)| (s.to_owned(), rest.split('/').next().unwrap_or_default().to_owned()));
        base.is_some_and(|(s, a)| s == scheme && a == authority)
    })
}

/// The main origin's pages are framed by its own pages only: a page of another origin that
/// frames the portal, console or a session under a decoy could have a click land on End
/// session, Request export or Continue (clickjacking). An answer that says otherwise keeps its
/// own word.
pub(crate) async fn no_foreign_frames(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::X_FRAME_OPTIONS) {
        headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("SAMEORIGIN"));
    }
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static("frame-ancestors 'self'"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, value.parse().expect("header"));
        headers
    }

    #[test]
    fn only_this_origin_may_act() {
        let h = host("gw.example:8750");
        assert!(same_origin("http://gw.example:8750", &h, None));
        assert!(same_origin("https://GW.example:8750", &h, None));
        assert!(!same_origin("http://gw.example:8751", &h, None), "another port is another origin");
        assert!(!same_origin("http://evil.example", &h, None));
        assert!(!same_origin("null", &h, None));
        assert!(same_origin("https://sandbox.corp", &host("10.0.0.5:8750"), Some("https://sandbox.corp")));
        assert!(!same_origin("http://sandbox.corp", &host("10.0.0.5:8750"), Some("https://sandbox.corp")));
        assert!(checked(&Method::GET, "/session/ws", &{
            let mut h = HeaderMap::new();
            h.insert(header::UPGRADE, "websocket".parse().expect("header"));
            h
        }));
        assert!(checked(&Method::POST, "/console/api/identity/CreateLocalUser", &HeaderMap::new()));
        assert!(!checked(&Method::POST, "/api/storage/PutObject", &HeaderMap::new()));
        assert!(!checked(&Method::POST, "/saml/acs", &HeaderMap::new()));
        assert!(!checked(&Method::GET, "/session/files/report.csv", &HeaderMap::new()));
    }
}
