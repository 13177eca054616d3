//! The stream bridge: `GET /stream/<session-id>` upgraded to a WebSocket (subprotocol
//! `binary`, as noVNC asks) with the session's cookie, bridged to the RFB server of the
//! session's display through its Unix socket. Both directions pass through the RFB filters
//! (`rfb.rs`), which hold the stack's clipboard settings; key and pointer events count as the
//! user's input for the idle timeout; every clipboard transfer, let through or stopped, is
//! audited by size and direction.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use control::{ControlPlane, StreamTarget};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rfb::{ClientFilter, Clipboard, Event, Policy, ServerFilter, Shared};

/// What one read from the display may bring at most.
const READ_CHUNK: usize = 256 * 1024;

pub(crate) fn routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router.route("/stream/{session_id}", get(stream))
}

async fn stream(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(cookie) = crate::session::cookie(&headers) else {
        return (StatusCode::UNAUTHORIZED, "no session cookie").into_response();
    };
    let target = match control.connect_stream(&cookie, &session_id, &peer.ip().to_string()).await {
        Ok(target) => target,
        Err(err) => return (StatusCode::from_u16(err.status).unwrap_or(StatusCode::FORBIDDEN), err.message).into_response(),
    };
    // A recorded session streams only while its recorder records.
    if target.recorded && !crate::recorder::recording(&control, &session_id, &target.socket).await {
        target.connection.close().await;
        return (StatusCode::SERVICE_UNAVAILABLE, "this session is recorded, and its recording could not start; ask an operator")
            .into_response();
    }
    // A client message holds at most a pasted text within its limit, or a few input events.
    let limit = target.paste.map_or(64 * 1024, |max| max as usize + 64 * 1024);
    upgrade.protocols(["binary"]).max_message_size(limit).on_upgrade(move |socket| bridge(control, target, socket))
}

/// How often a recorded session's stream makes sure its recorder still records.
const RECORDER_CHECKED_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

async fn bridge(control: ControlPlane, mut target: StreamTarget, socket: WebSocket) {
    let (mut to_client, mut from_client) = socket.split();
    let display = match crate::recorder::connect_display(&target.socket).await {
        Ok(display) => display,
        Err(err) => {
            tracing::warn!(session = target.connection.session_id, error = %err, "the session's display is not reachable");
            let _ = to_client.send(Message::Close(None)).await;
            target.connection.close().await;
            return;
        }
    };
    let (mut from_display, mut to_display) = display.into_split();
    let policy = Policy { paste: Clipboard(target.paste), copy: Clipboard(target.copy) };
    let shared = Shared::default();
    let (mut client, mut server) = (ClientFilter::new(policy, shared.clone()), ServerFilter::new(policy, shared));
    let mut buffer = vec![0u8; READ_CHUNK];
    let (mut out, mut events) = (Vec::new(), Vec::new());
    // A recorded session streams only while its recorder records: a recording that fails ends
    // the session, and if that end fails too, this stream still stops.
    let mut recorder_checked = tokio::time::interval(RECORDER_CHECKED_EVERY);
    loop {
        out.clear();
        events.clear();
        tokio::select! {
            _ = recorder_checked.tick(), if target.recorded => if recorder_stopped(&control, &target) {
                break;
            },
            message = from_client.next() => {
                let data = match message {
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_))) => continue,
                    _ => break,
                };
                if let Err(err) = client.feed(&data, &mut out, &mut events) {
                    tracing::info!(session = target.connection.session_id, error = %err, "closing a stream: the client broke RFB");
                    break;
                }
                if !judged(&control, &target, &events).await {
                    break;
                }
                if to_display.write_all(&out).await.is_err() {
                    break;
                }
            }
            read = from_display.read(&mut buffer) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if let Err(err) = server.feed(&buffer[..n], &mut out, &mut events) {
                    tracing::warn!(session = target.connection.session_id, error = %err, "closing a stream: the display broke RFB");
                    break;
                }
                if !judged(&control, &target, &events).await {
                    break;
                }
                if !out.is_empty() {
                    let message = std::mem::replace(&mut out, Vec::with_capacity(READ_CHUNK + 64));
                    if to_client.send(Message::Binary(message.into())).await.is_err() {
                        break;
                    }
                }
            }
            event = target.connection.events.recv() => {
                let ended = match &event {
                    Ok(e) => e["type"] == "ended" || e["type"] == "disconnect",
                    // Missed events (a slow stream) end nothing; a closed channel does.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => false,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => true,
                };
                if ended {
                    break;
                }
            }
        }
    }
    let _ = to_client.send(Message::Close(None)).await;
    target.connection.close().await;
}

/// Whether a recorded session's recorder no longer records (its stream must stop).
fn recorder_stopped(control: &ControlPlane, target: &StreamTarget) -> bool {
    let stopped = !control.recording_live(&target.connection.session_id);
    if stopped {
        tracing::warn!(session = target.connection.session_id, "closing a stream: its session's recording stopped");
    }
    stopped
}

/// Acts on the filters' events before their bytes go on: input counts for the idle timeout,
/// and each clipboard transfer is recorded first. A transfer whose record cannot be written
/// does not cross: `false` ends the stream.
async fn judged(control: &ControlPlane, target: &StreamTarget, events: &[Event]) -> bool {
    for event in events {
        match event {
            Event::Input => target.connection.input(),
            Event::ClipboardPassed { direction, bytes } => {
                if let Err(err) = control.record_clipboard(target, direction, *bytes, None).await {
                    tracing::warn!(session = target.connection.session_id, error = %err.message, "closing a stream: a clipboard transfer cannot be recorded");
                    return false;
                }
            }
            Event::ClipboardBlocked { direction, bytes, reason } => {
                let _ = control.record_clipboard(target, direction, *bytes, Some(reason)).await;
            }
            Event::Resized { .. } => {}
        }
    }
    true
}
