//! The user-facing side: opening a streaming URL (`GET /streaming/<token>`) redeems it (the
//! `streaming:RedeemStreamingURL` action), sets the session cookie (`ds_session`, HttpOnly,
//! SameSite Strict) and returns the session page; the page holds a WebSocket (`/session/ws`)
//! whose presence is the session's CONNECTED state, which carries the user's input for the
//! idle timeout and brings warnings and the end; `GET /session/status` and
//! `POST /session/end` are the session's own actions, authenticated by the cookie.
//!
//! The session page (`session_page.html`) shows a pixel session's display with noVNC, which
//! `build.rs` embeds from `web/node_modules` and `/assets/novnc/` serves. Its My Files panel
//! is `/session/files` (the home folder, through the control plane's streaming files, which
//! call the storage actions as the session's user and refuse what the stack's `FILE_UPLOAD` /
//! `FILE_DOWNLOAD` forbid) and `/session/printouts/<name>` (the session's print folder,
//! handed over only with `PRINTING_TO_LOCAL_DEVICE`, read without following links).

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use control::{ControlPlane, Credentials, Request};
use serde_json::json;

use crate::cookies::cookie_named;

const COOKIE: &str = "ds_session";
const PAGE: &str = include_str!("session_page.html");

pub(crate) fn routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router
        .route("/streaming/{token}", get(open_url))
        .route("/session", get(page))
        .route("/session/status", get(status))
        .route("/session/end", post(end))
        .route("/session/handoff", post(hand_off))
        .route("/session/handoff/{code}", get(accept_handoff))
        .route("/session/ws", get(live))
        .route("/session/files", get(list_files))
        .route("/session/files/{*name}", get(download_file).put(upload_file))
        .route("/session/printouts/{name}", get(download_printout))
        .route("/session/export", post(request_export))
        .route("/assets/novnc/{*path}", get(novnc))
}

fn error_reply(err: control::ActionError) -> Response {
    (
        StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json!({ "Code": err.code, "Message": err.message })),
    )
        .into_response()
}

/// The browser behind a session-page request: its session cookie, address and user agent.
struct PageCaller {
    cookie: String,
    ip: String,
    agent: String,
}

impl PageCaller {
    fn client(&self) -> control::FileClient<'_> {
        control::FileClient { cookie: &self.cookie, source_ip: &self.ip, user_agent: &self.agent }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PageCaller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Response> {
        let cookie = cookie(&parts.headers).ok_or_else(|| (StatusCode::UNAUTHORIZED, "no session cookie").into_response())?;
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        Ok(PageCaller { cookie, ip: peer.ip().to_string(), agent: user_agent(&parts.headers) })
    }
}

/// My Files: the home folder's listing and what the stack allows.
async fn list_files(State(control): State<ControlPlane>, caller: PageCaller) -> Response {
    match control.session_files(&caller.client()).await {
        Ok(listing) => axum::Json(listing).into_response(),
        Err(err) => error_reply(err),
    }
}

/// My Files' "Request export" (`{Name, Justification}`): the file goes to the airlock, whose
/// checks and reviewers decide whether it leaves.
async fn request_export(State(control): State<ControlPlane>, caller: PageCaller, body: Body) -> Response {
    let asked: serde_json::Value = match axum::body::to_bytes(body, 16 * 1024).await.ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        Some(asked) => asked,
        None => return error_reply(control::ActionError::validation("send {\"Name\": …, \"Justification\": …} as JSON")),
    };
    let (name, why) = (asked["Name"].as_str().unwrap_or_default(), asked["Justification"].as_str().unwrap_or_default());
    match control.request_session_export(&caller.client(), name, why).await {
        Ok(done) => axum::Json(done).into_response(),
        Err(err) => error_reply(err),
    }
}

async fn upload_file(
    State(control): State<ControlPlane>,
    caller: PageCaller,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let limit = control.spec().max_object_size as usize;
    // A body declared too large is refused before any of it is read.
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return error_reply(control::ActionError::too_large(format!("a file larger than {limit} bytes cannot be uploaded")));
    }
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        return error_reply(control::ActionError::too_large(format!("a file larger than {limit} bytes cannot be uploaded")));
    };
    match control.upload_session_file(&caller.client(), &name, body).await {
        Ok(done) => axum::Json(done).into_response(),
        Err(err) => error_reply(err),
    }
}

async fn download_file(State(control): State<ControlPlane>, caller: PageCaller, Path(name): Path<String>) -> Response {
    attachment(&name, control.download_session_file(&caller.client(), &name).await)
}

/// A printout of the session, if the stack lets printing reach the user's device.
async fn download_printout(State(control): State<ControlPlane>, caller: PageCaller, Path(name): Path<String>) -> Response {
    attachment(&name, control.download_printout(&caller.client(), &name).await)
}

/// A file handed to the user's device: always a download, never rendered in the gateway's origin.
fn attachment(name: &str, body: Result<Bytes, control::ActionError>) -> Response {
    match body {
        Ok(body) => {
            let file = name.rsplit('/').next().unwrap_or("file").replace(['"', '\\'], "_");
            let disposition = header::HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
                .unwrap_or(header::HeaderValue::from_static("attachment"));
            (
                [
                    (header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream")),
                    (header::CONTENT_DISPOSITION, disposition),
                    (header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff")),
                    (header::CACHE_CONTROL, header::HeaderValue::from_static("no-store")),
                ],
                body,
            )
                .into_response()
        }
        Err(err) => error_reply(err),
    }
}

include!(concat!(env!("OUT_DIR"), "/novnc.rs"));

/// noVNC's modules, embedded at build time (see `build.rs`).
async fn novnc(Path(path): Path<String>) -> Response {
    match NOVNC.iter().find(|(name, _)| *name == path) {
        Some((name, body)) => {
            let kind = if name.ends_with(".js") { "text/javascript; charset=utf-8" } else { "text/plain; charset=utf-8" };
            ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=3600")], *body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

pub(crate) fn cookie(headers: &HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE)
}

fn user_agent(headers: &HeaderMap) -> String {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("browser").to_owned()
}

/// One action for a browser: its address and user agent, the raw JSON body.
pub(crate) async fn call(
    control: &ControlPlane,
    credentials: Credentials,
    peer: SocketAddr,
    headers: &HeaderMap,
    action: &str,
    body: Bytes,
) -> control::Response {
    control
        .call(Request {
            credentials,
            source_ip: peer.ip().to_string(),
            user_agent: user_agent(headers),
            action: action.to_owned(),
            body: Ok(body),
        })
        .await
}

fn json_body(value: &serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

fn error_page(status: u16, code: &str, message: &str, request_id: &str) -> Response {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>DataSandbox</title><h1>This link cannot open a session</h1><p><b>{}</b>: {}</p><p><small>Request {}</small></p>",
        escape(code),
        escape(message),
        escape(request_id)
    );
    (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), Html(body)).into_response()
}

async fn open_url(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = call(
        &control,
        Credentials::StreamingUrl(token.clone()),
        peer,
        &headers,
        "streaming:RedeemStreamingURL",
        json_body(&json!({ "Token": token })),
    )
    .await;
    match response.result {
        Ok(session) => {
            // The URL is spent: the page moves itself to `/session` (history.replaceState), so
            // that reloading it works.
            let cookie = session["Cookie"].as_str().unwrap_or_default();
            let mut page = Html(PAGE).into_response();
            let value = format!("{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict");
            if let Ok(value) = header::HeaderValue::from_str(&value) {
                page.headers_mut().insert(header::SET_COOKIE, value);
            }
            page.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            page
        }
        Err(err) => error_page(err.status, err.code.as_str(), &err.message, &response.request_id),
    }
}

/// An action's result as JSON, or its error as `{Code, Message, RequestId}` with its status.
pub(crate) fn json_reply(response: control::Response) -> Response {
    match response.result {
        Ok(value) => axum::Json(value).into_response(),
        Err(err) => (
            StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(json!({ "Code": err.code, "Message": err.message, "RequestId": response.request_id })),
        )
            .into_response(),
    }
}

fn session_credentials(headers: &HeaderMap) -> Credentials {
    match cookie(headers) {
        Some(cookie) => Credentials::SessionCookie(cookie),
        None => Credentials::Anonymous,
    }
}

/// The session page again, for the browser that holds the session's cookie (from the portal's
/// "My sessions", or after closing the tab); it shows what the cookie allows.
async fn page() -> Response {
    let mut page = Html(PAGE).into_response();
    page.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    page
}

async fn status(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    json_reply(call(&control, session_credentials(&headers), peer, &headers, "streaming:GetSessionStatus", json_body(&json!({}))).await)
}

/// The one-time URL that opens this session on the node that runs its instance.
async fn hand_off(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    json_reply(call(&control, session_credentials(&headers), peer, &headers, "streaming:HandOffSession", json_body(&json!({}))).await)
}

/// A handoff code spent on this node: the session's cookie for this origin, then its page.
/// Like a streaming URL, the code is a one-time bearer link to one session.
async fn accept_handoff(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(code): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response =
        call(&control, Credentials::SessionHandoff(code), peer, &headers, "streaming:AcceptSessionHandoff", json_body(&json!({}))).await;
    match response.result {
        Ok(session) => {
            let cookie = session["Cookie"].as_str().unwrap_or_default();
            let mut reply = (StatusCode::SEE_OTHER, [(header::LOCATION, "/session")]).into_response();
            if let Ok(value) = header::HeaderValue::from_str(&format!("{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict")) {
                reply.headers_mut().insert(header::SET_COOKIE, value);
            }
            reply.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            reply
        }
        Err(err) => error_page(err.status, err.code.as_str(), &err.message, &response.request_id),
    }
}

async fn end(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: Body) -> Response {
    let body = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let input: serde_json::Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    json_reply(call(&control, session_credentials(&headers), peer, &headers, "streaming:ExpireSession", json_body(&input)).await)
}

async fn live(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(cookie) = cookie(&headers) else {
        return (StatusCode::UNAUTHORIZED, "no session cookie").into_response();
    };
    let connection = match control.connect_session(&cookie, &peer.ip().to_string()).await {
        Ok(connection) => connection,
        Err(err) => return (StatusCode::from_u16(err.status).unwrap_or(StatusCode::FORBIDDEN), err.message).into_response(),
    };
    // The page only ever sends small input notices; nothing large is buffered for it.
    upgrade.max_message_size(4096).on_upgrade(move |socket| serve_live(control, connection, socket))
}

async fn serve_live(control: ControlPlane, mut connection: control::SessionConnection, mut socket: WebSocket) {
    if let Ok(status) = control.session_status(&connection.session_id).await {
        let _ = socket.send(Message::Text(json!({ "type": "status", "Status": status }).to_string().into())).await;
    }
    loop {
        tokio::select! {
            event = connection.events.recv() => {
                let Ok(event) = event else { break };
                let kind = event["type"].as_str().unwrap_or_default().to_owned();
                if kind == "state"
                    && let Ok(status) = control.session_status(&connection.session_id).await
                {
                    let _ = socket.send(Message::Text(json!({ "type": "status", "Status": status }).to_string().into())).await;
                    continue;
                }
                if socket.send(Message::Text(event.to_string().into())).await.is_err() || kind == "disconnect" || kind == "ended" {
                    break;
                }
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => connection.input(),
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    connection.close().await;
}
