//! The session recorder: for a session whose stack records it (`SessionRecording`), a
//! view-only RFB connection of the gateway's own to the session's display, from the first time
//! its stream is opened until the display goes away. What the display sends is kept in the
//! session's recording (`control::Recording`); the recorder sends nothing but its handshake and
//! update requests, so no keystroke, pointer movement or clipboard text of the user's is ever in
//! it, and the server's clipboard text (`ServerCutText`) is dropped by the same filter the
//! stream bridge uses.
//!
//! - Lossless encodings a browser player decodes (ZRLE, CopyRect, raw), no cursor
//!   pseudo-encoding (the server draws the pointer into the pixels), the pixel format noVNC uses.
//! - At most five update requests a second: the server merges what changed between them, so
//!   the final state of the screen is always kept and an idle screen costs nothing.
//! - A new connection for every segment (≤ 5 minutes, ≤ 64 MiB): each segment starts with a
//!   handshake and a whole frame, and decodes alone (no compression state crosses).
//!
//! The display runs inside the instance: code the analyst runs there could stop it (ending
//! their own display too) or, with effort, serve the recorder a different picture than their
//! browser. The recording shows what the display sent to the gateway.

use std::path::{Path, PathBuf};
use std::time::Duration;

use control::{ControlPlane, Recording};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::rfb::{ClientFilter, Clipboard, Policy, ServerFilter, Shared};

/// The recorder lets no clipboard text through, either way.
const CLOSED: Policy = Policy { paste: Clipboard(None), copy: Clipboard(None) };
/// The time between update requests.
const PACE: Duration = Duration::from_millis(200);
const READ_CHUNK: usize = 256 * 1024;
/// How long a display that refuses connections is retried before the recording ends.
const RECONNECT: Duration = Duration::from_secs(5);
/// Where the framebuffer's width and height are in what the server filter passes on: after
/// the version (12 bytes), the security types it offers (2) and the security result (4).
const SIZE_AT: usize = 18;

/// Starts the recorder of `session_id` unless one already runs on this node.
pub(crate) fn ensure(control: &ControlPlane, session_id: &str, socket: &Path) {
    let (control, session_id, socket) = (control.clone(), session_id.to_owned(), socket.to_owned());
    tokio::spawn(async move {
        match control.open_recording(&session_id).await {
            Ok(Some(recording)) => run(recording, socket).await,
            Ok(None) => {}
            Err(err) => tracing::error!(session = session_id, error = %err.message, "cannot open the session's recording"),
        }
    });
}

/// Why a segment's connection ended.
enum End {
    /// The segment is full: seal it and go on with a new connection.
    Roll,
    /// The display went away (the session ended) or broke RFB.
    Gone,
}

async fn run(mut recording: Recording, socket: PathBuf) {
    let session = recording.session_id().to_owned();
    let Some(mut display) = connect(&socket).await else {
        tracing::warn!(session, "the session's display is not reachable; nothing recorded");
        return;
    };
    if let Err(err) = recording.begin_segment().await {
        tracing::error!(session, error = %err.message, "cannot begin a recording segment");
        return;
    }
    loop {
        match segment(&mut recording, display).await {
            Ok(End::Roll) => match connect(&socket).await {
                Some(next) => {
                    let rolled = async {
                        recording.seal_segment(false).await?;
                        recording.begin_segment().await
                    };
                    if let Err(err) = rolled.await {
                        tracing::error!(session, error = %err.message, "the recording stops: a segment cannot be sealed or begun");
                        break;
                    }
                    display = next;
                }
                None => break,
            },
            Ok(End::Gone) => break,
            Err(err) => {
                tracing::error!(session, error = err, "the recording stops");
                break;
            }
        }
    }
    if let Err(err) = recording.seal_segment(true).await {
        tracing::error!(session, error = %err.message, "cannot seal the recording's last segment; it is sealed as incomplete at the next start");
    }
}

async fn connect(socket: &Path) -> Option<UnixStream> {
    let deadline = tokio::time::Instant::now() + RECONNECT;
    loop {
        match UnixStream::connect(socket).await {
            Ok(display) => return Some(display),
            Err(_) if tokio::time::Instant::now() >= deadline => return None,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Records one segment's connection until the segment is full or the display goes.
async fn segment(recording: &mut Recording, display: UnixStream) -> Result<End, String> {
    let (mut from_display, mut to_display) = display.into_split();
    let shared = Shared::default();
    let (mut client, mut server) = (ClientFilter::new(CLOSED, shared.clone()), ServerFilter::new(CLOSED, shared));
    let (mut out, mut events) = (Vec::new(), Vec::new());
    // The client's whole handshake at once: the server reads each part when it needs it.
    let mut hello = b"RFB 003.008\n".to_vec();
    hello.extend_from_slice(&[1, 1]); // security None; shared
    hello.extend_from_slice(&[0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0]); // noVNC's pixel format
    hello.extend_from_slice(&[2, 0, 0, 4]);
    for encoding in [16i32, 1, 0, -223] {
        hello.extend_from_slice(&encoding.to_be_bytes()); // ZRLE, CopyRect, raw, DesktopSize
    }
    if send(&mut client, &mut to_display, &hello).await.is_err() {
        return Ok(End::Gone);
    }
    let mut head = Vec::new();
    let mut size: Option<[u8; 4]> = None;
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            read = from_display.read(&mut buffer) => {
                let n = match read {
                    Ok(0) | Err(_) => return Ok(End::Gone),
                    Ok(n) => n,
                };
                out.clear();
                events.clear();
                server.feed(&buffer[..n], &mut out, &mut events).map_err(|e| format!("the display broke RFB: {e}"))?;
                if size.is_none() && head.len() < SIZE_AT + 4 {
                    head.extend_from_slice(&out[..out.len().min(SIZE_AT + 4 - head.len())]);
                    if let Some(found) = head.get(SIZE_AT..SIZE_AT + 4) {
                        let found: [u8; 4] = found.try_into().expect("4 bytes");
                        size = Some(found);
                        if send(&mut client, &mut to_display, &update_request(false, found)).await.is_err() {
                            return Ok(End::Gone);
                        }
                    }
                }
                if !out.is_empty() {
                    recording.display(&out).await.map_err(|e| e.message)?;
                }
            }
            _ = pace.tick() => {
                if let Some(size) = size
                    && send(&mut client, &mut to_display, &update_request(true, size)).await.is_err()
                {
                    return Ok(End::Gone);
                }
                recording.tick().await.map_err(|e| e.message)?;
            }
        }
        if recording.segment_full() {
            return Ok(End::Roll);
        }
    }
}

/// `FramebufferUpdateRequest` for the whole screen (`size`: width and height as sent).
fn update_request(incremental: bool, size: [u8; 4]) -> Vec<u8> {
    let mut request = vec![3, u8::from(incremental), 0, 0, 0, 0];
    request.extend_from_slice(&size);
    request
}

/// Sends the recorder's own messages through the client filter, as any client's go; an error
/// means the display went away (the recorder's fixed messages always pass the filter).
async fn send(client: &mut ClientFilter, to_display: &mut tokio::net::unix::OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    let (mut out, mut events) = (Vec::new(), Vec::new());
    client.feed(bytes, &mut out, &mut events).map_err(|e| std::io::Error::other(e.to_string()))?;
    to_display.write_all(&out).await
}
