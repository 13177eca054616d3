//! The notebook proxy. Notebooks are served from an origin of their own (the notebook
//! listener: `server.notebook_listen`, reached as `server.notebook_url`), never from the
//! gateway's main origin, so that a notebook's pages (whatever a kernel's output puts in them)
//! cannot act on the portal's, console's or session's pages and actions.
//!
//! `GET /notebook-auth/<token>` on the main origin opens a presigned notebook URL in the
//! browser of the session it was made for (its session cookie) and hands the notebook's
//! cookie over to the notebook origin through a single-use, one-minute code
//! (`/notebook-open/<code>` there, which sets it); everything under `/notebook/<name>/` on the
//! notebook origin then goes to the notebook's Jupyter over its Unix socket (HTTP and the
//! kernels' WebSockets), with Jupyter's own token added here — the browser never sees it.
//! The session page frames the notebook origin, which lets only the main origin frame it.
//!
//! Jupyter authenticates the proxy by its token, and a token-authenticated request skips
//! Jupyter's XSRF and origin checks (that is Jupyter's design), so its XSRF check, on, guards
//! nothing that reaches it through here. The proxy is where those checks are made: the
//! notebook cookie is SameSite=Strict on the notebook origin, every WebSocket upgrade and
//! state-changing request must carry that origin's `Origin` (`origin.rs`), and the browser's
//! cookies never reach Jupyter, nor Jupyter's the browser.
//!
//! File transfer controls, from the session's settings, on Jupyter's real routes: with
//! FILE_DOWNLOAD disabled, `/files/`, `/nbconvert/`, `?download=…` and contents-API reads that
//! return a file's content are refused; with FILE_UPLOAD disabled, contents-API writes of
//! files (not notebooks) are refused. A body judged is one the proxy could read as JSON, or
//! it is refused (never passed unjudged); answers come uncompressed (the browser's
//! `Accept-Encoding` is not passed on). These hold for pixel sessions, whose notebook opens in
//! the instance's browser; a DIRECT session with either setting disabled gets no notebook URL
//! at all (the user's browser is the user's device, where they cannot hold). Each request and
//! each refusal is audited. Jupyter's cookies stay here: its `Set-Cookie` never reaches the
//! browser.
//!
//! In a pixel session the same routes are served on the endpoint of the session's instance
//! link instead (`endpoint_routes`): the presigned URL points there and is redeemed by the
//! kiosk browser, known only by the link it speaks on (`Credentials::InstanceLink`); the URL
//! and the notebook access it grants carry that instance's address, so from anywhere else
//! they are refused (`NotebookURLBoundToInstance`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use control::{ControlPlane, Credentials, NotebookRecord, NotebookTarget};
use serde_json::json;

mod judge;
mod routes;
use judge::{judge_download, judge_upload, launch_judge, read_and_judge};
use routes::{kernel_of, read_only, terminal_of};

/// On the main origin: presigned URLs are redeemed here, with the session's cookie, and the
/// session page finds its notebook again after a reload.
pub(crate) fn routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router.route("/notebook-auth/{token}", get(open_url)).route("/session/notebook", get(session_notebook))
}

/// On the notebook origin: the hand-over of a notebook's cookie, then the notebook.
pub(crate) fn origin_routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router.route("/notebook-open/{code}", get(open_handoff)).route("/notebook/{name}/{*rest}", any(proxy))
}

/// Where the two origins are: the listeners' ports and the configured URLs.
#[derive(Clone, Debug)]
pub(crate) struct Origins {
    pub main_port: u16,
    pub notebook_port: u16,
    pub public_url: Option<String>,
    pub notebook_url: Option<String>,
    /// Whether the listeners speak TLS themselves.
    pub tls: bool,
}

impl Origins {
    /// The host the browser used (from `Host`), without its port.
    fn host_of(headers: &HeaderMap) -> String {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
        match host.rsplit_once(':') {
            Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => name.to_owned(),
            _ => host.to_owned(),
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls || self.public_url.as_deref().is_some_and(|u| u.starts_with("https://")) { "https" } else { "http" }
    }

    /// The notebook origin, as a browser that reached this request's host finds it.
    pub fn notebook_base(&self, headers: &HeaderMap) -> String {
        self.notebook_url.clone().unwrap_or_else(|| format!("{}://{}:{}", self.scheme(), Self::host_of(headers), self.notebook_port))
    }

    /// The main origin, as seen from a request on the notebook origin: the only page that may
    /// frame a notebook.
    pub fn main_base(&self, headers: &HeaderMap) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("{}://{}:{}", self.scheme(), Self::host_of(headers), self.main_port))
    }
}

/// Notebook cookies on their way from the main origin to the notebook origin (single-use
/// codes, for a minute), and where each session's notebook is (for its page after a reload).
#[derive(Clone, Default)]
pub(crate) struct Handoffs(Arc<Mutex<HandoffState>>);

#[derive(Default)]
struct HandoffState {
    codes: HashMap<String, Handoff>,
    /// By session cookie: the notebook's page on the notebook origin.
    labs: HashMap<String, String>,
}

struct Handoff {
    name: String,
    cookie: String,
    max_age: i64,
    expires: std::time::Instant,
}

/// How long a hand-over code lives; and how many of each kind are kept at most.
const HANDOFF_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
const HANDOFF_LIMIT: usize = 10_000;

impl Handoffs {
    fn state(&self) -> std::sync::MutexGuard<'_, HandoffState> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn give(&self, handoff: Handoff, session_cookie: &str, lab: String) -> String {
        let mut raw = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        let code: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let mut state = self.state();
        let now = std::time::Instant::now();
        state.codes.retain(|_, h| h.expires > now);
        if state.codes.len() >= HANDOFF_LIMIT || state.labs.len() >= HANDOFF_LIMIT {
            state.codes.clear();
            state.labs.clear();
        }
        state.codes.insert(code.clone(), handoff);
        state.labs.insert(session_cookie.to_owned(), lab);
        code
    }

    fn take(&self, code: &str) -> Option<Handoff> {
        self.state().codes.remove(code).filter(|h| h.expires > std::time::Instant::now())
    }
}

/// The same on the endpoint of an instance link, for the kiosk browser of a pixel session:
/// its presigned URL opens only here, known by the link it comes from.
pub(crate) fn endpoint_routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router.route("/notebook-auth/{token}", get(open_url_in_instance)).route("/notebook/{name}/{*rest}", any(proxy))
}

use crate::cookies::cookie_named;

fn notebook_cookie(name: &str) -> String {
    format!("ds_nb_{}", name.replace('-', "_"))
}

/// On the main origin: the presigned URL redeemed with the session's cookie, then the
/// notebook's cookie handed to the notebook origin.
async fn open_url(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(origins): axum::Extension<Origins>,
    axum::Extension(handoffs): axum::Extension<Handoffs>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(session_cookie) = cookie_named(&headers, "ds_session") else {
        return redeem(control, Credentials::Anonymous, peer, token, headers).await;
    };
    let (name, cookie, max_age) = match redeemed(&control, Credentials::SessionCookie(session_cookie.clone()), peer, token, &headers).await
    {
        Ok(redeemed) => redeemed,
        Err(refused) => return refused,
    };
    let base = origins.notebook_base(&headers);
    let lab = format!("{base}/notebook/{name}/lab");
    let handoff = Handoff { name, cookie, max_age, expires: std::time::Instant::now() + HANDOFF_LIFETIME };
    let code = handoffs.give(handoff, &session_cookie, lab);
    Redirect::to(&format!("{base}/notebook-open/{code}")).into_response()
}

/// On the notebook origin: the hand-over code becomes the notebook's cookie, here.
async fn open_handoff(axum::Extension(handoffs): axum::Extension<Handoffs>, Path(code): Path<String>) -> Response {
    match handoffs.take(&code) {
        Some(handoff) => with_notebook_cookie(&handoff.name, &handoff.cookie, handoff.max_age),
        None => refuse("this notebook link has been used or has expired; open the notebook from your session"),
    }
}

/// Where the session's notebook is on the notebook origin, for its page after a reload (the
/// presigned URL is spent by then): `{"Url": …}`, or 404 before it was opened.
async fn session_notebook(axum::Extension(handoffs): axum::Extension<Handoffs>, headers: HeaderMap) -> Response {
    let lab = cookie_named(&headers, "ds_session").and_then(|cookie| handoffs.state().labs.get(&cookie).cloned());
    match lab {
        Some(url) => axum::Json(json!({ "Url": url })).into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(json!({ "Code": "ResourceNotFoundException", "Message": "no notebook opened yet" })))
            .into_response(),
    }
}

async fn open_url_in_instance(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    redeem(control, Credentials::InstanceLink { source_ip: peer.ip().to_string() }, peer, token, headers).await
}

/// A notebook's cookie set on this origin, and the browser sent to the notebook.
fn with_notebook_cookie(name: &str, value: &str, max_age: i64) -> Response {
    let cookie = format!("{}={value}; Path=/notebook/{name}/; HttpOnly; SameSite=Strict; Max-Age={max_age}", notebook_cookie(name));
    let mut reply = Redirect::to(&format!("/notebook/{name}/lab")).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        reply.headers_mut().insert(header::SET_COOKIE, value);
    }
    reply
}

/// Redeems a presigned URL: the notebook's name, cookie and the cookie's lifetime, or the
/// refusal as the browser should get it.
async fn redeemed(
    control: &ControlPlane,
    credentials: Credentials,
    peer: SocketAddr,
    token: String,
    headers: &HeaderMap,
) -> Result<(String, String, i64), Response> {
    let response = control
        .call(control::Request {
            credentials,
            source_ip: peer.ip().to_string(),
            user_agent: headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("browser").to_owned(),
            action: "notebooks:RedeemPresignedNotebookInstanceUrl".into(),
            body: Ok(Bytes::from(json!({ "Token": token }).to_string())),
        })
        .await;
    match response.result {
        Ok(out) => Ok((
            out["NotebookInstanceName"].as_str().unwrap_or_default().to_owned(),
            out["Cookie"].as_str().unwrap_or_default().to_owned(),
            out["MaxAgeSeconds"].as_i64().unwrap_or(0),
        )),
        Err(err) => Err((
            StatusCode::from_u16(err.status).unwrap_or(StatusCode::FORBIDDEN),
            axum::Json(json!({ "Code": err.code, "Message": err.message, "RequestId": response.request_id })),
        )
            .into_response()),
    }
}

/// Redeems a presigned URL on the origin that serves the notebook (an instance's endpoint).
async fn redeem(control: ControlPlane, credentials: Credentials, peer: SocketAddr, token: String, headers: HeaderMap) -> Response {
    match redeemed(&control, credentials, peer, token, &headers).await {
        Ok((name, cookie, max_age)) => with_notebook_cookie(&name, &cookie, max_age),
        Err(refused) => refused,
    }
}

/// A request refused because its audit record could not be written (the trail's disk is full).
fn unrecorded(err: control::ActionError) -> Response {
    (
        StatusCode::from_u16(err.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        axum::Json(json!({ "Code": err.code, "Message": err.message })),
    )
        .into_response()
}

fn refuse(message: &str) -> Response {
    (StatusCode::FORBIDDEN, axum::Json(json!({ "Code": "AccessDeniedException", "Message": message }))).into_response()
}

/// Why a request is refused before it reaches Jupyter, if it is: the download routes.
fn refused_route(target: &NotebookTarget, rest: &str, query: &str) -> Option<&'static str> {
    let download_query = query.split('&').any(|p| p == "download=1" || p == "download=true");
    let route = rest.starts_with("files/") || rest.starts_with("nbconvert/") || download_query;
    if !target.download && route {
        return Some("file download is disabled for this session (FILE_DOWNLOAD)");
    }
    // No route of Jupyter's needs to climb: `..` would lead its handlers (lab settings, for
    // one) out of their directories, into the server's own files.
    if rest.split('/').any(|segment| segment == "..") || rest.contains('\\') {
        return Some("a path that climbs (`..`) or holds a backslash is refused");
    }
    // A kernel spec's own file (what the platform's kernel is started with, whether it has a
    // debugger): the browser needs only the logos beside it.
    if rest.starts_with("kernelspecs/") && rest.trim_end_matches('/').ends_with("/kernel.json") {
        return Some("a kernel spec's own file is not served (its logos are)");
    }
    let terminals = rest.starts_with("api/terminals") || rest.starts_with("terminals/");
    (!target.terminal && terminals).then_some("terminals are off for this session's stack (TERMINAL)")
}

async fn proxy(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    origins: Option<axum::Extension<Origins>>,
    Path((name, rest)): Path<(String, String)>,
    request: Request,
) -> Response {
    // On the notebook origin, only the main origin's session page may frame the notebook
    // (Jupyter's own policy says `'self'`); on an instance's endpoint, only the notebook itself.
    let ancestors = match &origins {
        Some(axum::Extension(origins)) => format!("frame-ancestors 'self' {}", origins.main_base(request.headers())),
        None => "frame-ancestors 'self'".to_owned(),
    };
    let mut response = proxied(control, peer, name, rest, request).await;
    // Jupyter's own directives stay (its `sandbox` keeps a served HTML file from running script
    // on the notebook origin); only its frame-ancestors is replaced.
    let jupyters = response.headers().get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let policy = with_frame_ancestors(jupyters, &ancestors);
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// `policy` with its `frame-ancestors` directive (if any) replaced by `ancestors`.
fn with_frame_ancestors(policy: &str, ancestors: &str) -> String {
    let mut directives: Vec<&str> =
        policy.split(';').map(str::trim).filter(|d| !d.is_empty() && !d.to_ascii_lowercase().starts_with("frame-ancestors")).collect();
    directives.push(ancestors);
    directives.join("; ")
}

async fn proxied(control: ControlPlane, peer: SocketAddr, name: String, rest: String, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // The path goes on as the browser sent it, so that Jupyter decodes it exactly once; it is
    // judged fully decoded, so that no encoding (`%2566iles/`) slips a route past the checks.
    let (raw, rest) = crate::jupyter::raw_and_judged(&parts.uri, &name, &rest);
    let Some(cookie) = cookie_named(&parts.headers, &notebook_cookie(&name)) else {
        return refuse("no access to this notebook; open it from your session");
    };
    let target = match control.notebook_target(&name, &cookie, &peer.ip().to_string()).await {
        Ok(target) => target,
        Err(err) => {
            return (StatusCode::from_u16(err.status).unwrap_or(StatusCode::FORBIDDEN), error_body(err.code.as_str(), &err.message))
                .into_response();
        }
    };
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let method = parts.method.clone();
    if let Some(why) = refused_route(&target, &rest, &crate::jupyter::decoded_fully(&query)) {
        let _ = control.record_notebook_access(&target, &name, method.as_str(), &rest, NotebookRecord::Refused(why)).await;
        return refuse(why);
    }
    // Kernel channels and other WebSockets are bridged, not forwarded.
    if parts.headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        return bridged(&control, &target, (&name, &raw, &rest, &query), parts).await;
    }
    let body = match judged_body(&control, &target, &name, (&method, &rest), body).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let forward = crate::jupyter::forward(&control, &target.upstream, &name, &raw, &query, parts, body);
    let forwarded = if read_only(&method, &rest, &query) {
        // A read of Jupyter's own changes nothing: it goes to Jupyter while its record is
        // written, and its answer reaches the browser only once the record is durable. On the
        // trail's reserve, the record is its refusal and nothing is forwarded, as below.
        let record = match control.record_notebook_read(&target, &name, method.as_str(), &rest).await {
            Ok(record) => record,
            Err(err) => return unrecorded(err),
        };
        let forwarded = forward.await;
        if let Err(err) = record.durable().await {
            return unrecorded(err);
        }
        forwarded
    } else {
        // Anything else reaches Jupyter only once its record is durable.
        if let Err(err) = control.record_notebook_access(&target, &name, method.as_str(), &rest, NotebookRecord::Forwarded).await {
            return unrecorded(err);
        }
        forward.await
    };
    let response = match forwarded {
        Ok(response) => response,
        Err(err) => {
            return (StatusCode::BAD_GATEWAY, error_body("BadGateway", &format!("the notebook did not answer: {err}"))).into_response();
        }
    };
    if rest.starts_with("api/contents") && !target.download {
        return contents_answer(&control, &target, (&name, &rest), &method, response).await;
    }
    if rest.starts_with("api/kernelspecs") && !target.debugger && method == Method::GET {
        return specs_without_debugger(response).await;
    }
    response
}

/// A contents-API answer when downloads are disabled: a file's content in a read's answer is
/// refused, and any call's error loses Jupyter's message, which can quote what it read (a file
/// read, or copied, as a notebook that is not one answers a 400 quoting its first characters).
async fn contents_answer(
    control: &ControlPlane,
    target: &NotebookTarget,
    (name, rest): (&str, &str),
    method: &Method,
    response: Response,
) -> Response {
    let (mut parts, body) = response.into_parts();
    let status = parts.status;
    if judge::withholds(status) {
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(judge::error_withheld(status, Bytes::new())));
    }
    if method != Method::GET {
        return Response::from_parts(parts, body);
    }
    let (bytes, why) = read_and_judge(body, judge_download).await;
    if let Some(why) = why {
        let _ = control.record_notebook_access(target, name, "GET", rest, NotebookRecord::Refused(why)).await;
        return refuse(why);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Jupyter's kernel specs, for a session whose stack does not enable `DEBUGGER`: JupyterLab
/// offers its debugger for a kernel whose spec says it has one, which every spec says once
/// any stack enables it.
async fn specs_without_debugger(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, judge::INSPECT_LIMIT).await else {
        return (StatusCode::BAD_GATEWAY, error_body("BadGateway", "the notebook's kernel specs could not be read")).into_response();
    };
    match crate::jupyter::specs_without_debugger(&bytes) {
        Some(said) => {
            // Jupyter's length and validator are of what it sent, not of this.
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::ETAG);
            Response::from_parts(parts, Body::from(said))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// A WebSocket to the notebook (`path`: its name, the path as it came and as judged, and the
/// query), bridged once its record is durable; a kernel's channels and a terminal's input
/// are audited frame by frame.
async fn bridged(control: &ControlPlane, target: &NotebookTarget, path: (&str, &str, &str, &str), mut parts: Parts) -> Response {
    let (name, raw, rest, query) = path;
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    if let Err(err) = control.record_notebook_access(target, name, "WEBSOCKET", rest, NotebookRecord::Forwarded).await {
        return unrecorded(err);
    }
    // A kernel's channels: what the browser runs there is recorded before it is forwarded.
    let audited = kernel_of(rest)
        .map(|kernel| crate::jupyter::Audited::Kernel(target, kernel))
        .or_else(|| terminal_of(rest).map(|terminal| crate::jupyter::Audited::Terminal(target, terminal)));
    crate::jupyter::bridge(control, &target.upstream, (name, raw, query), &parts.headers, upgrade, audited).await
}

/// The request's body, once judged where it must be: an upload when uploads are disabled (a
/// contents-API write whose model is a file; a notebook's save is allowed), and any request
/// that starts a kernel or a terminal. Refused: the refusal, recorded.
async fn judged_body(
    control: &ControlPlane,
    target: &NotebookTarget,
    name: &str,
    (method, rest): (&Method, &str),
    body: Body,
) -> Result<Body, Response> {
    let upload = rest.starts_with("api/contents") && !target.upload && (method == Method::PUT || method == Method::POST);
    let Some(judge) = (if upload { Some(judge_upload as judge::Judge) } else { launch_judge(method, rest) }) else {
        return Ok(body);
    };
    let (bytes, why) = read_and_judge(body, judge).await;
    if let Some(why) = why {
        let _ = control.record_notebook_access(target, name, method.as_str(), rest, NotebookRecord::Refused(why)).await;
        return Err(refuse(why));
    }
    Ok(Body::from(bytes))
}

/// The JSON error body the API answers with.
fn error_body(code: &str, message: &str) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "Code": code, "Message": message }))
}

/// Finding 8 of the security review: what the proxy cannot read, it does not pass.
#[cfg(test)]
mod attack_f08 {
    use super::judge::{DOWNLOAD_DISABLED, UNREADABLE, UPLOAD_DISABLED};
    use super::*;
    use crate::jupyter::passed_to_jupyter;

    /// Jupyter serves a notebook's files with `sandbox allow-scripts`: an HTML file opened from
    /// the notebook must not run script on the notebook origin (where every notebook lives).
    #[test]
    fn attack_f09_jupyters_sandbox_survives_the_frame_ancestors_rewrite() {
        let jupyters = "frame-ancestors 'self'; report-uri /notebook/nb/api/security/csp-report; sandbox allow-scripts";
        let policy = with_frame_ancestors(jupyters, "frame-ancestors 'self' http://gw:8750");
        assert_eq!(policy, "report-uri /notebook/nb/api/security/csp-report; sandbox allow-scripts; frame-ancestors 'self' http://gw:8750");
        assert_eq!(with_frame_ancestors("", "frame-ancestors 'self'"), "frame-ancestors 'self'");
    }

    #[test]
    fn attack_f08_an_upload_serde_cannot_parse_is_refused_not_passed() {
        // Python's json reads these; serde_json does not. Each was forwarded unjudged.
        for body in [
            r#"{"type":"file","format":"text","content":"from my laptop","x":NaN}"#.as_bytes(),
            r#"{"type":"file","format":"text","content":"\udc00"}"#.as_bytes(),
            &[b'['; 200][..],
            b"\x1f\x8b compressed",
        ] {
            assert_eq!(judge_upload(body), Some(UNREADABLE), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(judge_upload(br#"{"type":"file","format":"text","content":"x"}"#), Some(UPLOAD_DISABLED));
        assert_eq!(judge_upload(br#"{"type":"notebook","content":{"cells":[]}}"#), None);
    }

    #[test]
    fn attack_f08_an_answer_serde_cannot_parse_is_refused_and_answers_come_uncompressed() {
        assert_eq!(judge_download(b"\x1f\x8b\x08 gzip of a file model"), Some(UNREADABLE));
        assert_eq!(judge_download(br#"{"type":"file","content":"secret"}"#), Some(DOWNLOAD_DISABLED));
        assert_eq!(judge_download(br#"{"type":"directory","content":[]}"#), None);
        assert!(!passed_to_jupyter(&header::ACCEPT_ENCODING), "the browser's Accept-Encoding reaches Jupyter");
        assert!(!passed_to_jupyter(&header::COOKIE));
        assert!(passed_to_jupyter(&header::CONTENT_TYPE));
    }
}
