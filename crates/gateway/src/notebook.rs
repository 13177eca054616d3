//! The notebook proxy: `GET /notebook-auth/<token>` opens a presigned notebook URL in the
//! browser of the session it was made for and sets that notebook's cookie; everything under
//! `/notebook/<name>/` then goes to the notebook's Jupyter over its Unix socket (HTTP and the
//! kernels' WebSockets), with Jupyter's own token added here — the browser never sees it.
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

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use control::{ControlPlane, Credentials, NotebookTarget};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

/// Bodies the proxy reads to judge them (contents-API requests and answers when a transfer
/// setting is disabled): larger ones are refused. Everything else streams through.
const INSPECT_LIMIT: usize = 16 * 1024 * 1024;

const UPLOAD_DISABLED: &str = "file upload is disabled for this session (FILE_UPLOAD)";
const DOWNLOAD_DISABLED: &str = "file download is disabled for this session (FILE_DOWNLOAD)";
const UNREADABLE: &str = "the body cannot be judged (not JSON this proxy reads), and file transfer is disabled for this session";
const TOO_LARGE: &str = "the body is too large to judge (16 MiB), and file transfer is disabled for this session";

/// Why a contents-API write is refused when uploads are disabled, if it is: a file (by type or
/// base64 format), or anything that is not a JSON object this proxy reads (Jupyter's parser
/// accepts more than serde's: `NaN`, lone surrogates, deep nesting).
fn judge_upload(body: &[u8]) -> Option<&'static str> {
    let Ok(Value::Object(model)) = serde_json::from_slice::<Value>(body) else { return Some(UNREADABLE) };
    (model.get("type").is_some_and(|t| t == "file") || model.get("format").is_some_and(|f| f == "base64")).then_some(UPLOAD_DISABLED)
}

/// Why a contents-API answer is refused when downloads are disabled, if it is: a file's
/// content, or anything that is not JSON this proxy reads.
fn judge_download(body: &[u8]) -> Option<&'static str> {
    let Ok(model) = serde_json::from_slice::<Value>(body) else { return Some(UNREADABLE) };
    (model["type"] == "file" && !model["content"].is_null()).then_some(DOWNLOAD_DISABLED)
}

/// Whether a browser's request header goes on to Jupyter: not our cookies (Jupyter gets its
/// token instead), not the browser's credentials or host, and no compression (an answer the
/// proxy must judge is read as it comes).
fn passed_to_jupyter(name: &header::HeaderName) -> bool {
    ![header::COOKIE, header::AUTHORIZATION, header::HOST, header::ACCEPT_ENCODING].contains(name)
}

pub(crate) fn routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router.route("/notebook-auth/{token}", get(open_url)).route("/notebook/{name}/{*rest}", any(proxy))
}

/// The same on the endpoint of an instance link, for the kiosk browser of a pixel session:
/// its presigned URL opens only here, known by the link it comes from.
pub(crate) fn endpoint_routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router.route("/notebook-auth/{token}", get(open_url_in_instance)).route("/notebook/{name}/{*rest}", any(proxy))
}

use crate::cookie_named;

fn notebook_cookie(name: &str) -> String {
    format!("ds_nb_{}", name.replace('-', "_"))
}

async fn open_url(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let credentials = match cookie_named(&headers, "ds_session") {
        Some(cookie) => Credentials::SessionCookie(cookie),
        None => Credentials::Anonymous,
    };
    redeem(control, credentials, peer, token, headers).await
}

async fn open_url_in_instance(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    redeem(control, Credentials::InstanceLink { source_ip: peer.ip().to_string() }, peer, token, headers).await
}

async fn redeem(control: ControlPlane, credentials: Credentials, peer: SocketAddr, token: String, headers: HeaderMap) -> Response {
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
        Ok(out) => {
            let name = out["NotebookInstanceName"].as_str().unwrap_or_default();
            let cookie = format!(
                "{}={}; Path=/notebook/{name}/; HttpOnly; SameSite=Strict; Max-Age={}",
                notebook_cookie(name),
                out["Cookie"].as_str().unwrap_or_default(),
                out["MaxAgeSeconds"].as_i64().unwrap_or(0)
            );
            let mut reply = Redirect::to(&format!("/notebook/{name}/lab")).into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                reply.headers_mut().insert(header::SET_COOKIE, value);
            }
            reply
        }
        Err(err) => (
            StatusCode::from_u16(err.status).unwrap_or(StatusCode::FORBIDDEN),
            axum::Json(json!({ "Code": err.code, "Message": err.message, "RequestId": response.request_id })),
        )
            .into_response(),
    }
}

fn refuse(message: &str) -> Response {
    (StatusCode::FORBIDDEN, axum::Json(json!({ "Code": "AccessDeniedException", "Message": message }))).into_response()
}

/// Why a request is refused before it reaches Jupyter, if it is: the download routes.
fn refused_route(target: &NotebookTarget, rest: &str, query: &str) -> Option<&'static str> {
    let download_query = query.split('&').any(|p| p == "download=1" || p == "download=true");
    let route = rest.starts_with("files/") || rest.starts_with("nbconvert/") || download_query;
    (!target.download && route).then_some("file download is disabled for this session (FILE_DOWNLOAD)")
}

async fn proxy(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((name, rest)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let Some(cookie) = cookie_named(&parts.headers, &notebook_cookie(&name)) else {
        return refuse("no access to this notebook; open it from your session");
    };
    let target = match control.notebook_target(&name, &cookie, &peer.ip().to_string()).await {
        Ok(target) => target,
        Err(err) => {
            return (
                StatusCode::from_u16(err.status).unwrap_or(StatusCode::FORBIDDEN),
                axum::Json(json!({ "Code": err.code, "Message": err.message })),
            )
                .into_response();
        }
    };
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let method = parts.method.clone();
    if let Some(why) = refused_route(&target, &rest, &query) {
        control.record_notebook_access(&target, &name, method.as_str(), &rest, Some(why)).await;
        return refuse(why);
    }
    // Kernel channels and other WebSockets are bridged, not forwarded.
    if parts.headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        control.record_notebook_access(&target, &name, "WEBSOCKET", &rest, None).await;
        return bridge(target, &name, &rest, &query, &parts.headers, upgrade).await;
    }
    let contents = rest.starts_with("api/contents");
    // Uploads: a contents-API write whose model is a file (a notebook's save is allowed).
    let body = if contents && !target.upload && (method == Method::PUT || method == Method::POST) {
        let (bytes, why) = match axum::body::to_bytes(body, INSPECT_LIMIT).await {
            Ok(bytes) => {
                let why = judge_upload(&bytes);
                (bytes, why)
            }
            Err(_) => (Bytes::new(), Some(TOO_LARGE)),
        };
        if let Some(why) = why {
            control.record_notebook_access(&target, &name, method.as_str(), &rest, Some(why)).await;
            return refuse(why);
        }
        Body::from(bytes)
    } else {
        body
    };
    control.record_notebook_access(&target, &name, method.as_str(), &rest, None).await;
    let response = match forward(&target, &name, &rest, &query, parts, body).await {
        Ok(response) => response,
        Err(err) => {
            return (
                StatusCode::BAD_GATEWAY,
                axum::Json(json!({ "Code": "BadGateway", "Message": format!("the notebook did not answer: {err}") })),
            )
                .into_response();
        }
    };
    // Downloads through the contents API: a file's content in the answer.
    if contents && !target.download && method == Method::GET {
        let (parts, body) = response.into_parts();
        let (bytes, why) = match axum::body::to_bytes(body, INSPECT_LIMIT).await {
            Ok(bytes) => {
                let why = judge_download(&bytes);
                (bytes, why)
            }
            Err(_) => (Bytes::new(), Some(TOO_LARGE)),
        };
        if let Some(why) = why {
            control.record_notebook_access(&target, &name, "GET", &rest, Some(why)).await;
            return refuse(why);
        }
        return Response::from_parts(parts, Body::from(bytes));
    }
    response
}

async fn forward(
    target: &NotebookTarget,
    name: &str,
    rest: &str,
    query: &str,
    parts: axum::http::request::Parts,
    body: Body,
) -> Result<Response, String> {
    let stream = tokio::net::UnixStream::connect(&target.socket).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let path = if query.is_empty() { format!("/notebook/{name}/{rest}") } else { format!("/notebook/{name}/{rest}?{query}") };
    let mut request = hyper::Request::builder().method(parts.method).uri(path);
    for (key, value) in parts.headers.iter().filter(|(key, _)| passed_to_jupyter(key)) {
        request = request.header(key, value);
    }
    let request = request
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("token {}", target.token))
        .body(body)
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let (mut parts, incoming) = response.into_parts();
    // Jupyter's cookies (`_xsrf`, its login) are not the browser's business.
    parts.headers.remove(header::SET_COOKIE);
    Ok(Response::from_parts(parts, Body::new(incoming)))
}

async fn bridge(target: NotebookTarget, name: &str, rest: &str, query: &str, headers: &HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    let path = if query.is_empty() { format!("/notebook/{name}/{rest}") } else { format!("/notebook/{name}/{rest}?{query}") };
    let protocols = headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    let stream = match tokio::net::UnixStream::connect(&target.socket).await {
        Ok(stream) => stream,
        Err(err) => return (StatusCode::BAD_GATEWAY, format!("the notebook did not answer: {err}")).into_response(),
    };
    let mut request = tungstenite::http::Request::builder()
        .uri(format!("ws://localhost{path}"))
        .header("host", "localhost")
        .header("authorization", format!("token {}", target.token))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tungstenite::handshake::client::generate_key());
    if let Some(protocols) = &protocols {
        request = request.header("sec-websocket-protocol", protocols.as_bytes());
    }
    let Ok(request) = request.body(()) else {
        return (StatusCode::BAD_REQUEST, "bad WebSocket request").into_response();
    };
    let (upstream, answer) = match tokio_tungstenite::client_async(request, stream).await {
        Ok(pair) => pair,
        Err(err) => return (StatusCode::BAD_GATEWAY, format!("the notebook refused the WebSocket: {err}")).into_response(),
    };
    let upgrade = match answer.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()) {
        Some(chosen) => upgrade.protocols([chosen.to_owned()]),
        None => upgrade,
    };
    upgrade.on_upgrade(move |browser| relay(browser, upstream))
}

/// Passes frames both ways until either side closes.
async fn relay(browser: WebSocket, upstream: tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>) {
    let (mut to_browser, mut from_browser) = browser.split();
    let (mut to_upstream, mut from_upstream) = upstream.split();
    let up = async {
        while let Some(Ok(message)) = from_browser.next().await {
            let forwarded = match message {
                Message::Text(text) => tungstenite::Message::Text(text.as_str().into()),
                Message::Binary(bytes) => tungstenite::Message::Binary(bytes),
                Message::Ping(bytes) => tungstenite::Message::Ping(bytes),
                Message::Pong(bytes) => tungstenite::Message::Pong(bytes),
                Message::Close(_) => break,
            };
            if to_upstream.send(forwarded).await.is_err() {
                break;
            }
        }
        let _ = to_upstream.close().await;
    };
    let down = async {
        while let Some(Ok(message)) = from_upstream.next().await {
            let forwarded = match message {
                tungstenite::Message::Text(text) => Message::Text(text.as_str().into()),
                tungstenite::Message::Binary(bytes) => Message::Binary(bytes),
                tungstenite::Message::Ping(bytes) => Message::Ping(bytes),
                tungstenite::Message::Pong(bytes) => Message::Pong(bytes),
                tungstenite::Message::Close(_) | tungstenite::Message::Frame(_) => break,
            };
            if to_browser.send(forwarded).await.is_err() {
                break;
            }
        }
        let _ = to_browser.close().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Finding 8 of the security review: what the proxy cannot read, it does not pass.
#[cfg(test)]
mod attack_f08 {
    use super::*;

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
