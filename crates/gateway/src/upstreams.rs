//! Kept-alive connections to the Jupyter servers of this node's notebooks. A request proxied to
//! a notebook here reuses an idle HTTP/1.1 connection to that notebook's Unix socket when one
//! is open, as configurable-http-proxy does over TCP: a connection made per request costs
//! Jupyter (one Python thread) more than the request itself.
//!
//! Connections are pooled by socket (the request URI's host is the socket's path, hex-encoded),
//! so a connection carries only one notebook's requests, each with that notebook's token. A
//! notebook that stops closes its connections; hyper sees them closed and makes a new one, and
//! a request that could not be written on a connection Jupyter had just closed is sent again
//! on a new one (never one that was written).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::UnixStream;

/// Idle connections kept per notebook, and for how long.
const IDLE_PER_NOTEBOOK: usize = 32;
const IDLE_FOR: Duration = Duration::from_secs(30);

/// The pool, for every notebook this process serves.
static POOL: LazyLock<Client<Sockets, Body>> = LazyLock::new(|| {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_PER_NOTEBOOK)
        .pool_idle_timeout(IDLE_FOR)
        .pool_timer(TokioTimer::new())
        .retry_canceled_requests(true)
        .set_host(false)
        .build(Sockets)
});

/// Sends `request` (its URI a path and query only) to the Jupyter listening on `socket`.
pub(crate) async fn send(socket: &Path, mut request: hyper::Request<Body>) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let uri = format!("http://{}{path_and_query}", hex::encode(socket.as_os_str().as_encoded_bytes()));
    *request.uri_mut() = uri.parse().map_err(|e| format!("the notebook's socket path cannot be addressed: {e}"))?;
    POOL.request(request).await.map_err(|e| match std::error::Error::source(&e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    })
}

/// Connects to the Unix socket a URI's host names (hex-encoded).
#[derive(Clone, Copy)]
struct Sockets;

impl tower_service::Service<Uri> for Sockets {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let socket = uri.host().and_then(|host| hex::decode(host).ok()).map(|bytes| {
            use std::os::unix::ffi::OsStringExt as _;
            PathBuf::from(std::ffi::OsString::from_vec(bytes))
        });
        Box::pin(async move {
            let socket = socket.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no notebook socket in the URI"))?;
            Ok(TokioIo::new(UnixStream::connect(socket).await?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests to one socket reuse one connection: the server sees one accept for three.
    #[tokio::test]
    async fn requests_to_one_notebook_reuse_a_kept_alive_connection() {
        let dir = std::env::temp_dir().join(format!("upstreams-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let socket = dir.join("jupyter.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Body::from(request.uri().path().to_owned())))
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        for n in 0..3 {
            let request = hyper::Request::get(format!("/notebook/nb/api/status/{n}")).body(Body::empty()).expect("request");
            let response = send(&socket, request).await.expect("answered");
            let body = axum::body::to_bytes(Body::new(response.into_body()), 1024).await.expect("body");
            assert_eq!(body, format!("/notebook/nb/api/status/{n}").as_bytes());
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        let missing = send(&dir.join("absent.sock"), hyper::Request::get("/").body(Body::empty()).expect("request")).await;
        assert!(missing.expect_err("no server").contains("No such file"), "the cause is named");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
