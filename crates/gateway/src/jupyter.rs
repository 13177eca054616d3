//! Reaching a notebook's Jupyter, for the notebook proxy and the relay: its Unix socket on this
//! node (with Jupyter's token added here), or the relay of the node that runs it over mutual
//! TLS (which adds the token there). Requests are forwarded over HTTP/1.1 with only the
//! headers Jupyter may see; WebSockets (the kernels' channels) are bridged frame by frame.

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use control::{ControlPlane, Upstream};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;

/// Whether a browser's request header goes on to Jupyter: not our cookies (Jupyter gets its
/// token instead), not the browser's credentials or host, and no compression (an answer the
/// proxy must judge is read as it comes).
pub(crate) fn passed_to_jupyter(name: &header::HeaderName) -> bool {
    const HOP_BY_HOP: [&str; 6] = ["keep-alive", "proxy-connection", "proxy-authorization", "forwarded", "x-forwarded-for", "x-real-ip"];
    ![
        header::COOKIE,
        header::AUTHORIZATION,
        header::HOST,
        header::ACCEPT_ENCODING,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ]
    .contains(name)
        && !HOP_BY_HOP.contains(&name.as_str())
        && !name.as_str().starts_with("x-forwarded-")
}

/// The path after `/notebook/<name>/` as the request carried it (still percent-encoded), and
/// the same fully decoded, as checks must judge it. `decoded` is axum's once-decoded value,
/// used only if the raw path does not start as expected.
pub(crate) fn raw_and_judged(uri: &axum::http::Uri, name: &str, decoded: &str) -> (String, String) {
    let prefix = format!("/notebook/{name}/");
    let raw = uri.path().strip_prefix(&prefix).map_or_else(|| decoded.to_owned(), str::to_owned);
    let judged = decoded_fully(&raw);
    (raw, judged)
}

/// `text` percent-decoded until decoding changes nothing more (a few rounds at most).
pub(crate) fn decoded_fully(text: &str) -> String {
    let mut current = text.to_owned();
    for _ in 0..4 {
        let next = percent_decoded(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

fn percent_decoded(text: &str) -> String {
    String::from_utf8_lossy(&control::hex_unescaped(text.as_bytes(), b'%')).into_owned()
}

/// A byte stream to a notebook's Jupyter.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// How long a relay to another node may take to connect and shake hands.
const RELAY_CONNECT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects to where the notebook's Jupyter is: its Unix socket here (with the token to add),
/// or the relay of the node that runs it over mutual TLS (which adds the token there).
async fn connect(control: &ControlPlane, upstream: &Upstream) -> Result<(Box<dyn Io>, Option<String>), String> {
    match upstream {
        Upstream::Local { socket, token } => {
            let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| e.to_string())?;
            Ok((Box::new(stream), Some(token.clone())))
        }
        Upstream::Relay { node, address } => {
            let name = control::node_server_name(node)?;
            let connector = tokio_rustls::TlsConnector::from(control.node_tls().client.clone());
            let stream = tokio::time::timeout(RELAY_CONNECT, async {
                let tcp = tokio::net::TcpStream::connect(address.as_str()).await.map_err(|e| format!("node `{node}` at {address}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                connector.connect(name, tcp).await.map_err(|e| format!("node `{node}` at {address} failed TLS: {e}"))
            })
            .await
            .map_err(|_| format!("node `{node}` at {address} did not answer within {} s", RELAY_CONNECT.as_secs()))??;
            Ok((Box::new(stream), None))
        }
    }
}

pub(crate) async fn forward(
    control: &ControlPlane,
    upstream: &Upstream,
    name: &str,
    rest: &str,
    query: &str,
    parts: axum::http::request::Parts,
    body: Body,
) -> Result<Response, String> {
    let path = if query.is_empty() { format!("/notebook/{name}/{rest}") } else { format!("/notebook/{name}/{rest}?{query}") };
    let mut request = hyper::Request::builder().method(parts.method).uri(path);
    for (key, value) in parts.headers.iter().filter(|(key, _)| passed_to_jupyter(key)) {
        request = request.header(key, value);
    }
    request = request.header(header::HOST, "localhost");
    if let Upstream::Local { token, .. } = upstream {
        request = request.header(header::AUTHORIZATION, format!("token {token}"));
    }
    let request = request.body(body).map_err(|e| e.to_string())?;
    let response = match upstream {
        // A notebook here: over a kept-alive connection to its socket.
        Upstream::Local { socket, .. } => crate::upstreams::send(socket, request).await?,
        Upstream::Relay { .. } => {
            let (stream, _) = connect(control, upstream).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender.send_request(request).await.map_err(|e| e.to_string())?
        }
    };
    let (mut parts, incoming) = response.into_parts();
    // Jupyter's cookies (`_xsrf`, its login) are not the browser's business.
    parts.headers.remove(header::SET_COOKIE);
    match upstream {
        Upstream::Local { token, .. } if html(&parts.headers) => without_token(parts, Body::new(incoming), token).await,
        _ => Ok(Response::from_parts(parts, Body::new(incoming))),
    }
}

/// The most of an HTML page of Jupyter's read to take its token out: its own pages are tens of
/// kilobytes; an HTML file of the user's larger than this (served with its length) holds no
/// token it could know, and passes as it is.
const PAGE_LIMIT: usize = 4 << 20;

/// Whether an answer is an HTML page that may be Jupyter's own (no length, or one under
/// `PAGE_LIMIT`).
fn html(headers: &HeaderMap) -> bool {
    let typed = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    typed && length.is_none_or(|l| l <= PAGE_LIMIT)
}

/// An HTML page of Jupyter's without its token: JupyterLab writes it into the page's config
/// (`page_config.token`) and Jupyter's templates into `data-jupyter-api-token`, for every
/// request it takes for logged in, which every request through here is (the token is added
/// here). The browser needs none (this proxy adds it), and a script a kernel's output runs on
/// the notebook origin, or the user's own device in a DIRECT session, must not have it.
async fn without_token(mut parts: axum::http::response::Parts, body: Body, token: &str) -> Result<Response, String> {
    let page = axum::body::to_bytes(body, PAGE_LIMIT).await.map_err(|e| format!("the notebook's page could not be read: {e}"))?;
    if token.is_empty() || memchr::memmem::find(&page, token.as_bytes()).is_none() {
        return Ok(Response::from_parts(parts, Body::from(page)));
    }
    let mut out = Vec::with_capacity(page.len());
    let mut from = 0;
    for at in memchr::memmem::find_iter(&page, token.as_bytes()) {
        out.extend_from_slice(&page[from..at]);
        from = at + token.len();
    }
    out.extend_from_slice(&page[from..]);
    // Jupyter's length and validator are of what it sent, not of this.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::ETAG);
    Ok(Response::from_parts(parts, Body::from(out)))
}

/// What a bridged WebSocket's audit records: the code a kernel's channels run, or the lines
/// typed in a terminal (each with the session it belongs to, and the kernel's or terminal's name).
pub(crate) enum Audited<'a> {
    Kernel(&'a control::NotebookTarget, &'a str),
    Terminal(&'a control::NotebookTarget, &'a str),
}

/// Bridges a WebSocket. `audited` has what the browser runs there recorded, by the audit made
/// once Jupyter chose the protocol; a relay passes none, since the session's node audits.
pub(crate) async fn bridge(
    control: &ControlPlane,
    upstream: &Upstream,
    (name, rest, query): (&str, &str, &str),
    headers: &HeaderMap,
    upgrade: WebSocketUpgrade,
    audited: Option<Audited<'_>>,
) -> Response {
    let path = if query.is_empty() { format!("/notebook/{name}/{rest}") } else { format!("/notebook/{name}/{rest}?{query}") };
    let protocols = headers.get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    let (stream, token) = match connect(control, upstream).await {
        Ok(connected) => connected,
        Err(err) => return (StatusCode::BAD_GATEWAY, format!("the notebook did not answer: {err}")).into_response(),
    };
    let mut request = tungstenite::http::Request::builder()
        .uri(format!("ws://localhost{path}"))
        .header("host", "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tungstenite::handshake::client::generate_key());
    if let Some(token) = token {
        request = request.header("authorization", format!("token {token}"));
    }
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
    let chosen = answer.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let audit = audited.map(|audited| match audited {
        Audited::Kernel(target, kernel) => control.kernel_audit(target, name, kernel, chosen.as_deref()),
        Audited::Terminal(target, terminal) => control.terminal_audit(target, name, terminal),
    });
    let upgrade = match chosen {
        Some(chosen) => upgrade.protocols([chosen]),
        None => upgrade,
    };
    upgrade.on_upgrade(move |browser| pass_frames(browser, upstream, audit))
}

/// Passes frames both ways until either side closes; with an audit, a browser's frame goes
/// on only once the audit let it (what it runs recorded), a refused one closes the socket, and
/// one the audit answers goes no further than the answer, back to the browser.
async fn pass_frames(browser: WebSocket, upstream: tokio_tungstenite::WebSocketStream<Box<dyn Io>>, audit: Option<control::KernelAudit>) {
    let (to_browser, mut from_browser) = browser.split();
    // Both ways write to the browser: the kernel's frames, and the audit's answers.
    let to_browser = tokio::sync::Mutex::new(to_browser);
    let (mut to_upstream, mut from_upstream) = upstream.split();
    let audit = audit.as_ref();
    let up = async {
        let mut refused = None;
        'frames: while let Some(Ok(message)) = from_browser.next().await {
            if let Some(audit) = audit {
                match judged(audit, &message).await {
                    Ok(control::KernelPassage::Forward) => {}
                    Ok(control::KernelPassage::Answer(answers)) => {
                        let mut to_browser = to_browser.lock().await;
                        for answer in answers {
                            if to_browser.send(answered(answer)).await.is_err() {
                                break 'frames;
                            }
                        }
                        continue;
                    }
                    Err(refusal) => {
                        refused = Some(refusal);
                        break;
                    }
                }
            }
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
        refused
    };
    let down = async {
        while let Some(Ok(message)) = from_upstream.next().await {
            // The reply's record joins its request's after the browser has it: only what runs
            // waits for its record.
            // (A clone of the frame shares its bytes.)
            let heard = audit.map(|_| message.clone());
            let Some(forwarded) = for_browser(audit, message) else { break };
            if to_browser.lock().await.send(forwarded).await.is_err() {
                break;
            }
            match (audit, &heard) {
                (Some(audit), Some(tungstenite::Message::Text(text))) => audit.from_kernel(control::KernelFrame::Text(text.as_str())).await,
                (Some(audit), Some(tungstenite::Message::Binary(bytes))) => audit.from_kernel(control::KernelFrame::Binary(bytes)).await,
                _ => {}
            }
        }
        let _ = to_browser.lock().await.close().await;
    };
    let refused = tokio::select! {
        refused = up => refused,
        () = down => None,
    };
    // A refused frame ends the socket, with why.
    if let Some(refusal) = refused {
        let frame = axum::extract::ws::CloseFrame { code: refusal.code, reason: refusal.reason.into() };
        let _ = to_browser.lock().await.send(Message::Close(Some(frame))).await;
    }
}

/// A kernel's frame as the browser gets it: as it came, or as the audit says it instead;
/// `None` for a close.
fn for_browser(audit: Option<&control::KernelAudit>, message: tungstenite::Message) -> Option<Message> {
    let instead = match (audit, &message) {
        (Some(audit), tungstenite::Message::Text(text)) => audit.before_browser(control::KernelFrame::Text(text.as_str())),
        (Some(audit), tungstenite::Message::Binary(bytes)) => audit.before_browser(control::KernelFrame::Binary(bytes)),
        _ => None,
    };
    Some(match (instead, message) {
        (Some(instead), _) => answered(instead),
        (None, tungstenite::Message::Text(text)) => Message::Text(text.as_str().into()),
        (None, tungstenite::Message::Binary(bytes)) => Message::Binary(bytes),
        (None, tungstenite::Message::Ping(bytes)) => Message::Ping(bytes),
        (None, tungstenite::Message::Pong(bytes)) => Message::Pong(bytes),
        (None, tungstenite::Message::Close(_) | tungstenite::Message::Frame(_)) => return None,
    })
}

/// What the audit makes of a browser's frame: a frame that carries no message passes.
async fn judged(audit: &control::KernelAudit, message: &Message) -> Result<control::KernelPassage, control::KernelRefusal> {
    let frame = match message {
        Message::Text(text) => control::KernelFrame::Text(text.as_str()),
        Message::Binary(bytes) => control::KernelFrame::Binary(bytes),
        _ => return Ok(control::KernelPassage::Forward),
    };
    audit.from_browser(frame).await
}

/// Jupyter's kernel specs (`api/kernelspecs`, or one spec) said again with no debugger
/// (`metadata.debugger: false`, whatever it said: a client takes any truthy value for yes),
/// everything else as it came; `None` where none said it had one, or the body is no such
/// thing.
pub(crate) fn specs_without_debugger(body: &[u8]) -> Option<Vec<u8>> {
    let mut listing: serde_json::Value = serde_json::from_slice(body).ok()?;
    let specs: Vec<&mut serde_json::Value> = if listing.get("kernelspecs").is_some() {
        listing.get_mut("kernelspecs")?.as_object_mut()?.values_mut().collect()
    } else {
        vec![&mut listing]
    };
    let mut said = false;
    for spec in specs {
        if let Some(debugger) = spec.get_mut("spec").and_then(|s| s.get_mut("metadata")).and_then(|m| m.get_mut("debugger"))
            && *debugger != serde_json::Value::Bool(false)
        {
            *debugger = serde_json::Value::Bool(false);
            said = true;
        }
    }
    said.then(|| listing.to_string().into_bytes())
}

/// The audit's answer to a browser's frame, as a frame for the browser.
fn answered(answer: control::KernelAnswer) -> Message {
    match answer {
        control::KernelAnswer::Text(text) => Message::Text(text.into()),
        control::KernelAnswer::Binary(bytes) => Message::Binary(bytes.into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    /// Every spec of a listing, or the one asked for, says it has no debugger; the rest is as it
    /// came, and what says none or is no listing is left alone.
    #[test]
    fn kernel_specs_are_said_again_without_the_debugger() {
        let spec = |debugger: bool| {
            json!({ "name": "python3", "spec": { "argv": ["python"], "display_name": "Python 3",
            "language": "python", "metadata": { "debugger": debugger } }, "resources": { "logo-svg": "/kernelspecs/python3/logo-svg.svg" } })
        };
        let listing = json!({ "default": "python3", "kernelspecs": { "python3": spec(true), "other": spec(true) } });
        let said: Value =
            serde_json::from_slice(&super::specs_without_debugger(listing.to_string().as_bytes()).expect("rewritten")).expect("JSON");
        assert_eq!(said, json!({ "default": "python3", "kernelspecs": { "python3": spec(false), "other": spec(false) } }));
        let one: Value =
            serde_json::from_slice(&super::specs_without_debugger(spec(true).to_string().as_bytes()).expect("rewritten")).expect("JSON");
        assert_eq!(one, spec(false));
        let mixed = json!({ "default": "python3", "kernelspecs": { "python3": spec(false), "other": spec(true) } });
        let said: Value =
            serde_json::from_slice(&super::specs_without_debugger(mixed.to_string().as_bytes()).expect("rewritten")).expect("JSON");
        assert_eq!(said, json!({ "default": "python3", "kernelspecs": { "python3": spec(false), "other": spec(false) } }));
        let mut truthy = spec(true);
        truthy["spec"]["metadata"]["debugger"] = json!("yes");
        let said: Value =
            serde_json::from_slice(&super::specs_without_debugger(truthy.to_string().as_bytes()).expect("rewritten")).expect("JSON");
        assert_eq!(said, spec(false));
        for body in [
            spec(false).to_string(),
            json!({ "kernelspecs": [1] }).to_string(),
            "[1]".into(),
            "5".into(),
            "not JSON".into(),
            json!({ "spec": { "metadata": [true] } }).to_string(),
        ] {
            assert!(super::specs_without_debugger(body.as_bytes()).is_none(), "{body}");
        }
    }

    /// Finding of the attack review: the proxy judged a once-decoded path and sent it on to be
    /// decoded again, so `%2566iles/` passed the FILE_DOWNLOAD check and reached `files/`.
    #[test]
    fn a_path_is_judged_fully_decoded_and_forwarded_as_it_came() {
        let uri: axum::http::Uri = "/notebook/nb/%2566iles/secret.csv?download=%31".parse().expect("uri");
        let (raw, judged) = super::raw_and_judged(&uri, "nb", "%66iles/secret.csv");
        assert_eq!((raw.as_str(), judged.as_str()), ("%2566iles/secret.csv", "files/secret.csv"));
        assert_eq!(super::decoded_fully("download=%31"), "download=1");
        assert_eq!(super::decoded_fully("%252566iles"), "files");
    }
}
