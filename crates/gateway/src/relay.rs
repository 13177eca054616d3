//! The notebook relay: how a session on one node reaches a notebook that runs on another.
//!
//! A notebook's volume is on one node's disk and its Jupyter listens on a Unix socket there,
//! while the browser that opens it (in a pixel session, the kiosk browser of an instance whose
//! only route is its own node's endpoint) may be on any node. That node's notebook proxy does
//! everything it does for a local notebook (the cookie, the session, the transfer controls,
//! the audit record), then forwards the request here, to the relay of the notebook's node,
//! over TLS 1.3 in which both ends prove they are nodes of this cluster and the client checks
//! it reached the node it meant (`control::NodeTls`). The relay adds Jupyter's token and
//! passes the request (or the WebSocket) to the socket; it answers only for notebooks that run
//! on this node, and nothing but a node's certificate gets a request through.
//!
//! It listens only on a PostgreSQL store (a SQLite store has one node), on
//! `cluster.relay_listen` (default: the API's address, any free port), and publishes where
//! other nodes reach it in `nodes.relay_address`.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use control::ControlPlane;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;

/// How long a node has to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves the relay on `listener` for as long as the server runs.
pub async fn serve_relay(control: ControlPlane, listener: TcpListener) {
    let acceptor = tokio_rustls::TlsAcceptor::from(control.node_tls().server.clone());
    let router = Router::new().route("/notebook/{name}/{*rest}", any(relayed)).with_state(control);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "the notebook relay cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::warn!(%peer, error = %err, "refused a connection to the notebook relay: not a node of this cluster");
                    return;
                }
                Err(_) => return,
            };
            let app = TowerToHyperService::new(router);
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                hyper::service::Service::call(&app, request.map(Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HANDSHAKE);
            let _ = builder.serve_connection(TokioIo::new(tls), service).with_upgrades().await;
        });
    }
}

/// Binds the relay where the spec says (default: the API's address, any free port) and
/// returns the listener and the address other nodes reach it at.
pub async fn bind_relay(control: &ControlPlane, api: std::net::SocketAddr) -> std::io::Result<(TcpListener, String)> {
    let cluster = &control.spec().cluster;
    let listen = cluster.relay_listen.unwrap_or_else(|| std::net::SocketAddr::new(api.ip(), 0));
    let listener = TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    let address = match &cluster.relay_address {
        Some(address) => address.clone(),
        None if bound.ip().is_unspecified() => format!("{}:{}", host_name(), bound.port()),
        None => bound.to_string(),
    };
    Ok((listener, address))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "localhost".into())
}

/// A request another node relays for a notebook that runs here.
async fn relayed(State(control): State<ControlPlane>, Path((name, rest)): Path<(String, String)>, request: Request) -> Response {
    let Some(upstream) = control.local_notebook(&name) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "Code": "ResourceNotFoundException", "Message": format!("notebook `{name}` does not run on this node") })),
        )
            .into_response();
    };
    let (mut parts, body) = request.into_parts();
    // On as it came (the sending node judged it, and Jupyter decodes it once).
    let (rest, _) = crate::jupyter::raw_and_judged(&parts.uri, &name, &rest);
    let query = parts.uri.query().unwrap_or_default().to_owned();
    if parts.headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")) {
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        // The session's node audits what the browser runs; the relay only carries it.
        return crate::jupyter::bridge(&control, &upstream, (&name, &rest, &query), &parts.headers, upgrade, None).await;
    }
    match crate::jupyter::forward(&control, &upstream, &name, &rest, &query, parts, body).await {
        Ok(response) => response,
        Err(err) => (StatusCode::BAD_GATEWAY, format!("the notebook did not answer: {err}")).into_response(),
    }
}
