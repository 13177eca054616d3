//! Serving a router on a listener with time limits on every connection.
//!
//! axum's `serve` builds hyper's connections without a timer, so hyper's header-read timeout
//! never fires and a client that sends its request head a byte at a time (or opens a
//! connection and sends nothing) holds it for ever. Here each connection is hyper's HTTP/1
//! with Tokio's timer: the request head (and, on a kept-alive connection, the wait for the
//! next one) must arrive within [`HEADER_READ_TIMEOUT`], and a request body that stops
//! arriving for [`BODY_IDLE_TIMEOUT`] fails its read. WebSockets and event streams, once
//! upgraded or answered, are the handlers' business (they have their own idle rules).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

/// How long a client has to send a request's head, from the moment the server waits for it.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may pause between two pieces.
pub(crate) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Peer credentials of a connection on the control socket.
#[derive(Clone, Debug)]
pub(crate) struct PeerCredentials {
    pub(crate) uid: Option<u32>,
}

/// Set once the server is stopping: what a long-lived response (a stream of events) ends on,
/// since the server drains open requests before it stops.
#[derive(Clone)]
pub(crate) struct Stopping(pub(crate) tokio::sync::watch::Receiver<bool>);

impl Stopping {
    pub(crate) async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A listener whose connections carry some information about their peer for the handlers.
/// A connection is accepted, then opened in its own task (a TLS handshake, for one), so a slow
/// client holds up nobody else's.
pub(crate) trait Accept: Send + 'static {
    type Raw: Send + 'static;
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Info: Clone + Send + Sync + 'static;
    /// Whether connections are TLS: cookies are then `Secure` and answers carry HSTS.
    const SECURE: bool = false;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Raw, Self::Info)>> + Send;
    fn open(&self, raw: Self::Raw) -> impl Future<Output = std::io::Result<Self::Io>> + Send + 'static;
}

impl Accept for TcpListener {
    type Raw = tokio::net::TcpStream;
    type Io = tokio::net::TcpStream;
    type Info = SocketAddr;
    async fn accept(&self) -> std::io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }
    fn open(&self, raw: Self::Raw) -> impl Future<Output = std::io::Result<Self::Io>> + Send + 'static {
        std::future::ready(Ok(raw))
    }
}

impl Accept for UnixListener {
    type Raw = tokio::net::UnixStream;
    type Io = tokio::net::UnixStream;
    type Info = PeerCredentials;
    async fn accept(&self) -> std::io::Result<(Self::Io, PeerCredentials)> {
        let (stream, _) = UnixListener::accept(self).await?;
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        Ok((stream, PeerCredentials { uid }))
    }
    fn open(&self, raw: Self::Raw) -> impl Future<Output = std::io::Result<Self::Io>> + Send + 'static {
        std::future::ready(Ok(raw))
    }
}

/// A TCP listener whose connections speak TLS with the certificate in use when they arrive.
pub(crate) struct Secured {
    pub(crate) tcp: TcpListener,
    pub(crate) tls: crate::tls::ServerTls,
}

impl Accept for Secured {
    type Raw = tokio::net::TcpStream;
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Info = SocketAddr;
    const SECURE: bool = true;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Raw, SocketAddr)>> + Send {
        Accept::accept(&self.tcp)
    }
    fn open(&self, raw: Self::Raw) -> impl Future<Output = std::io::Result<Self::Io>> + Send + 'static {
        let acceptor = self.tls.acceptor();
        async move {
            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(raw)).await {
                Ok(opened) => opened,
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the TLS handshake did not finish")),
            }
        }
    }
}

/// The API's or the notebooks' listener: TLS, or plain HTTP (loopback, or behind a proxy).
pub enum Listener {
    Plain(TcpListener),
    Tls(TcpListener, crate::tls::ServerTls),
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Listener::Plain(tcp) | Listener::Tls(tcp, _) => tcp.local_addr(),
        }
    }

    /// Serves `router`; `behind_tls` says that browsers reach a plain listener over HTTPS all
    /// the same (a proxy terminates TLS for an `https://` public URL): its cookies are `Secure`
    /// and its answers carry HSTS, as a TLS listener's do.
    pub(crate) async fn serve(self, router: Router, stop: impl Future<Output = ()> + Send, behind_tls: bool) -> std::io::Result<()> {
        match self {
            Listener::Plain(tcp) if behind_tls => {
                serve(tcp, router.layer(axum::middleware::from_fn(crate::tls::secure_headers)), stop).await
            }
            Listener::Plain(tcp) => serve(tcp, router, stop).await,
            Listener::Tls(tcp, tls) => serve(Secured { tcp, tls }, router, stop).await,
        }
    }
}

/// Serves `router` on `listener` until `stop` completes, then lets open requests finish.
pub(crate) async fn serve<L: Accept>(listener: L, router: Router, stop: impl Future<Output = ()> + Send) -> std::io::Result<()> {
    let mut router = router.layer(axum::middleware::from_fn(idle_body));
    if L::SECURE {
        router = router.layer(axum::middleware::from_fn(crate::tls::secure_headers));
    }
    // Every connection holds a receiver; the server is drained when none is left.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (io, info) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let app = TowerToHyperService::new(router.clone());
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(info.clone()));
            hyper::service::Service::call(&app, request)
        });
        let mut closed = closed.clone();
        let opening = listener.open(io);
        tokio::spawn(async move {
            let Ok(io) = opening.await else { return };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closed.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(closed);
    let _ = closing.send(true);
    closing.closed().await;
    Ok(())
}

/// A request body that pauses for longer than [`BODY_IDLE_TIMEOUT`] fails where it is read.
async fn idle_body(request: Request, next: Next) -> Response {
    // Nothing to wait for in an empty body (most GETs, WebSocket upgrades).
    if axum::body::HttpBody::size_hint(request.body()).exact() == Some(0) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let pieces = body.into_data_stream();
    let timed = futures::stream::unfold(Some(pieces), |pieces| async move {
        let mut pieces = pieces?;
        match tokio::time::timeout(BODY_IDLE_TIMEOUT, pieces.next()).await {
            Ok(Some(piece)) => Some((piece, Some(pieces))),
            Ok(None) => None,
            Err(_) => {
                let stalled = std::io::Error::new(std::io::ErrorKind::TimedOut, "the request body stopped arriving");
                Some((Err(axum::Error::new(stalled)), None))
            }
        }
    });
    next.run(Request::from_parts(parts, Body::from_stream(timed))).await
}
