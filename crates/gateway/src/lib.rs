//! The HTTP faces of the control plane: `POST /api/<service>/<Action>` for remote clients on
//! TCP (bearer tokens), the same API on the operator's Unix socket `<data-dir>/control.sock`
//! (authenticated by peer credentials) and, per instance, on its link's host address (the
//! endpoint: the instance's credential plus the address of the link it speaks on); and
//! `GET /healthz` and `GET /openapi.json` (and `GET /metrics` on the operator's socket only).
//! This is the only crate that knows axum.
//!
//! Bodies are read with a limit derived from `storage.max_object_size`, and every error is
//! rendered as `{Code, Message, RequestId}`. The pages (portal, console, session, notebook
//! proxy, federated sign-in) live in modules of their own, each with its cookie.

mod console;
mod cookies;
mod federation;
mod forwarded;
mod jupyter;
mod listen;
mod notebook;
mod openapi;
mod operator;
mod origin;
mod portal;
mod recorder;
mod relay;
mod rfb;
mod session;
mod sign_in;
mod stream;
mod tls;
mod upstreams;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use control::{ActionError, ControlPlane, Credentials, Request};
use serde_json::json;
use tokio::net::{TcpListener, UnixListener};

pub use listen::Listener;
pub use relay::{bind_relay, serve_relay};
pub use tls::{LocalAuthority, ServerTls, local_authority};

use listen::{PeerCredentials, Stopping};
use sign_in::sign_in_credentials;

/// Serves the API and the pages on `tcp`, notebooks on `notebooks` (an origin of their own)
/// and the operator's API on `unix` until `shutdown` completes, then drains open requests.
pub async fn serve(
    control: ControlPlane,
    tcp: Listener,
    notebooks: Listener,
    unix: UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = control.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.begin_stopping();
        let _ = stop_tx.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let origins = notebook::Origins {
        main_port: tcp.local_addr()?.port(),
        notebook_port: notebooks.local_addr()?.port(),
        public_url: control.spec().public_url.clone(),
        notebook_url: control.spec().notebook_url.clone(),
        tls: matches!(tcp, Listener::Tls(..)),
    };
    let handoffs = notebook::Handoffs::default();
    // Outermost, so that every layer and handler sees the client's address.
    let trusted = forwarded::Trusted::new(&control.spec().trusted_proxies);
    let https_behind_proxy = control.spec().public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let tcp_app = console::routes(federation::routes(portal::routes(stream::routes(notebook::routes(session::routes(public_routes(
        Router::new().route("/api/{service}/{action}", post(tcp_call)),
    )))))))
    .layer(axum::Extension(Stopping(stop_rx.clone())))
    .layer(axum::Extension(origins.clone()))
    .layer(axum::Extension(handoffs.clone()))
    .layer(axum::middleware::from_fn_with_state(origin::Check::main(&control), origin::guard))
    .layer(axum::middleware::from_fn(origin::no_foreign_frames))
    .layer(axum::middleware::from_fn_with_state(trusted.clone(), forwarded::client_address))
    .with_state(control.clone());
    let notebook_app = notebook::origin_routes(Router::new())
        .layer(axum::Extension(origins))
        .layer(axum::Extension(handoffs))
        .layer(axum::middleware::from_fn_with_state(origin::Check::notebooks(&control), origin::guard))
        .layer(axum::middleware::from_fn_with_state(trusted, forwarded::client_address))
        .with_state(control.clone());
    // Metrics are the operator's: on the control socket only (see `operator_routes`).
    let unix_app = operator_routes(public_routes(Router::new().route("/api/{service}/{action}", post(unix_call)))).with_state(control);
    let (a, b, c) = tokio::join!(
        tcp.serve(tcp_app, wait(stop_rx.clone()), https_behind_proxy),
        notebooks.serve(notebook_app, wait(stop_rx.clone()), https_behind_proxy),
        listen::serve(unix, unix_app, wait(stop_rx))
    );
    a.and(b).and(c)
}

/// What anyone may read: health and the API's description.
fn public_routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router
        .route("/healthz", get(|| async { axum::Json(json!({ "status": "ok" })) }))
        .route("/openapi.json", get(|| async { axum::Json(openapi::document()) }))
}

/// What only the operator reads, through the control socket (owner-only): the metrics, which
/// tell who is active, how much and how often (`curl --unix-socket <data-dir>/control.sock
/// http://localhost/metrics`).
fn operator_routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    operator::routes(router.route("/metrics", get(metrics)))
}

async fn metrics(State(control): State<ControlPlane>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], control.render_metrics()).into_response()
}

async fn tcp_call(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((service, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if service == "identity" && action == "SignIn" {
        return sign_in(control, peer, &headers, body).await;
    }
    // A malformed Authorization header is an invalid token, not an absent one.
    let credentials = match headers.get(header::AUTHORIZATION) {
        Some(_) => Credentials::Bearer(bearer(&headers)),
        None => Credentials::Anonymous,
    };
    handle(control, credentials, peer.ip().to_string(), &headers, service, action, body).await
}

/// `identity:SignIn`: the name, password and code in the body are the credentials, taken out
/// of the input so that no record ever holds them; what remains (`DurationSeconds`) is the input.
async fn sign_in(control: ControlPlane, peer: SocketAddr, headers: &HeaderMap, body: Body) -> Response {
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let (credentials, input) = sign_in_credentials(&bytes, peer);
    handle(control, credentials, peer.ip().to_string(), headers, "identity".into(), "SignIn".into(), Body::from(input.to_string())).await
}

/// The endpoint: the API as instances reach it, on one link's host address, authenticated by
/// the instance credential and the link the call arrives on.
pub fn endpoint_server(control: ControlPlane) -> control::EndpointServer {
    Box::new(move |listener: TcpListener| {
        let app = notebook::endpoint_routes(Router::new().route("/api/{service}/{action}", post(endpoint_call)))
            .layer(axum::middleware::from_fn_with_state(origin::Check::endpoint(&control), origin::guard))
            .with_state(control.clone());
        tokio::spawn(async move {
            if let Err(err) = listen::serve(listener, app, std::future::pending()).await {
                tracing::error!(error = %err, "the endpoint stopped");
            }
        })
    })
}

async fn endpoint_call(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((service, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let token = bearer(&headers);
    let credentials = Credentials::Instance { token, source_ip: peer.ip().to_string() };
    handle(control, credentials, peer.ip().to_string(), &headers, service, action, body).await
}

/// The token of an `Authorization: Bearer …` header, or empty.
fn bearer(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

async fn unix_call(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<PeerCredentials>,
    Path((service, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let credentials = match peer.uid {
        Some(uid) => Credentials::Peer { uid },
        None => Credentials::Anonymous,
    };
    handle(control, credentials, "control.sock".to_owned(), &headers, service, action, body).await
}

async fn handle(
    control: ControlPlane,
    credentials: Credentials,
    source_ip: String,
    headers: &HeaderMap,
    service: String,
    action: String,
    body: Body,
) -> Response {
    // Base64 makes bodies a third larger; leave room for the JSON around them.
    let limit = (control.spec().max_object_size as usize).saturating_mul(4) / 3 + 64 * 1024;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        ActionError::too_large(format!(
            "the request body exceeds {limit} bytes (storage.max_object_size is {} bytes before base64)",
            control.spec().max_object_size
        ))
    };
    let body = match declared {
        Some(length) if length > limit => Err(too_large()),
        _ => axum::body::to_bytes(body, limit).await.map_err(|err| {
            if std::error::Error::source(&err).is_some_and(|s| s.to_string().contains("length limit"))
                || err.to_string().contains("length limit")
            {
                too_large()
            } else {
                ActionError::serialization(format!("the request body could not be read: {err}"))
            }
        }),
    };
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown").to_owned();
    let response = control.call(Request { credentials, source_ip, user_agent, action: format!("{service}:{action}"), body }).await;
    let request_id = HeaderValue::from_str(&response.request_id).expect("a uuid is a valid header value");
    match response.result {
        Ok(value) => {
            let mut reply = axum::Json(value).into_response();
            reply.headers_mut().insert("x-amzn-requestid", request_id);
            reply
        }
        Err(err) => {
            let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut reply =
                (status, axum::Json(json!({ "Code": err.code, "Message": err.message, "RequestId": response.request_id }))).into_response();
            reply.headers_mut().insert("x-amzn-requestid", request_id);
            reply
        }
    }
}
