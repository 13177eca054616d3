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

use crate::rfb::{ClientFilter, Clipboard, Event, Policy, ServerFilter, Shared};

/// The recorder lets no clipboard text through, either way.
const CLOSED: Policy = Policy { paste: Clipboard(None), copy: Clipboard(None) };
/// The time between update requests.
const PACE: Duration = Duration::from_millis(200);
const READ_CHUNK: usize = 256 * 1024;
/// How long a display that refuses connections is retried: one still starting, or one gone
/// for good (the recording then ends).
const DISPLAY_START: Duration = Duration::from_secs(10);
/// More connections than this dropped by the display within a window end the recording (and so
/// the session) …
const RECONNECTS: usize = 10;
const RECONNECT_WINDOW: Duration = Duration::from_secs(60);
/// … and one dropped sooner than this is not opened again before this long.
const QUICK_DROP: Duration = Duration::from_secs(1);
/// How long a display that dropped the recorder may take to take a connection again.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(2);
/// How long the display may take to take a request, or to answer the handshake.
const STALLED: Duration = Duration::from_secs(10);
/// Where the framebuffer's width and height are in what the server filter passes on: after
/// the version (12 bytes), the security types it offers (2) and the security result (4).
const SIZE_AT: usize = 18;

/// Starts the recorder of `session_id` unless one already runs on this node.
fn ensure(control: &ControlPlane, session_id: &str, socket: &Path) {
    let (control, session_id, socket) = (control.clone(), session_id.to_owned(), socket.to_owned());
    tokio::spawn(async move {
        match control.open_recording(&session_id).await {
            Ok(Some(recording)) => run(&control, recording, socket).await,
            Ok(None) => {}
            Err(err) => control.recording_failed(&session_id, &format!("its recording cannot be opened: {}", err.message)).await,
        }
    });
}

/// Starts the session's recorder if it is not running, and waits until it records (at most as
/// long as a display takes to start, and a little more): whether it does.
pub(crate) async fn recording(control: &ControlPlane, session_id: &str, socket: &Path) -> bool {
    ensure(control, session_id, socket);
    let deadline = tokio::time::Instant::now() + DISPLAY_START + Duration::from_secs(5);
    while !control.recording_live(session_id) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Connects to a session's display, waiting for one that is still starting.
pub(crate) async fn connect_display(socket: &Path) -> std::io::Result<UnixStream> {
    connect_within(socket, DISPLAY_START).await
}

async fn connect_within(socket: &Path, patience: Duration) -> std::io::Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match UnixStream::connect(socket).await {
            Ok(display) => return Ok(display),
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Whether the session is still ACTIVE (a display gone with its session ends the recording).
/// A status that cannot be read counts as ACTIVE: the recorder goes on, or fails closed.
async fn active(control: &ControlPlane, session: &str) -> bool {
    control.session_status(session).await.map_or(true, |status| status["State"] == "ACTIVE")
}

/// Why a segment's connection ended.
enum End {
    /// The segment is full: seal it and go on with a new connection.
    Roll,
    /// The display closed the connection (the session ended, or something in the instance
    /// disconnected the recorder).
    Gone,
}

/// Records until the display is gone with its session. A connection the display closes is
/// opened again, in a new segment: something in the instance that disconnects the recorder
/// gains a segment boundary, not an unrecorded screen. A recording that cannot go on (a
/// display that keeps dropping or stops answering, a spool, key or store that fails, a display
/// gone while the session is ACTIVE) keeps what it has and ends the session: a recorded
/// session is never left streaming unrecorded.
async fn run(control: &ControlPlane, mut recording: Recording, socket: PathBuf) {
    let session = recording.session_id().to_owned();
    let outcome = match connect_display(&socket).await {
        Ok(display) => record(control, &mut recording, &socket, display).await,
        Err(err) => Err(format!("the session's display is not reachable: {err}")),
    };
    let finished = recording.finish().await.map_err(|e| e.message);
    if let Err(err) = outcome.and(finished)
        && active(control, &session).await
    {
        control.recording_failed(&session, &err).await;
    }
}

async fn record(control: &ControlPlane, recording: &mut Recording, socket: &Path, mut display: UnixStream) -> Result<(), String> {
    let session = recording.session_id().to_owned();
    recording.begin_segment().await.map_err(|e| e.message)?;
    let mut reconnects = std::collections::VecDeque::new();
    loop {
        let connected = tokio::time::Instant::now();
        match segment(recording, display).await? {
            End::Roll => {}
            End::Gone if !active(control, &session).await => return Ok(()),
            End::Gone => {
                reconnects.push_back(tokio::time::Instant::now());
                reconnects.retain(|at| at.elapsed() < RECONNECT_WINDOW);
                if reconnects.len() > RECONNECTS {
                    return Err(format!("the display dropped the recorder {} times within a minute", reconnects.len()));
                }
                if connected.elapsed() < QUICK_DROP {
                    tokio::time::sleep(QUICK_DROP).await;
                }
            }
        }
        // A display that was up and is gone is not starting: it gets little time to come back.
        display = match connect_within(socket, RECONNECT_PATIENCE).await {
            Ok(next) => next,
            Err(_) if !active(control, &session).await => return Ok(()),
            Err(err) => return Err(format!("the display stopped taking connections while its session is ACTIVE: {err}")),
        };
        recording.roll().await.map_err(|e| e.message)?;
    }
}

/// Where a segment's display data goes: the session's recording (a test's tape in unit tests).
trait Tape {
    async fn display(&mut self, bytes: &[u8]) -> Result<(), String>;
    async fn tick(&mut self) -> Result<(), String>;
    fn full(&self) -> bool;
}

impl Tape for Recording {
    async fn display(&mut self, bytes: &[u8]) -> Result<(), String> {
        Recording::display(self, bytes).await.map_err(|e| e.message)
    }

    async fn tick(&mut self) -> Result<(), String> {
        Recording::tick(self).await.map_err(|e| e.message)
    }

    fn full(&self) -> bool {
        self.segment_full()
    }
}

/// Records one segment's connection until the segment is full or the display goes.
async fn segment(recording: &mut impl Tape, display: UnixStream) -> Result<End, String> {
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
    if send(&mut client, &mut to_display, &hello).await?.is_err() {
        return Ok(End::Gone);
    }
    let greeted = tokio::time::Instant::now();
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
                // A new size: the whole of it is asked for, so no part of a larger screen goes unseen.
                for event in &events {
                    if let Event::Resized { width, height } = event {
                        let resized = [width.to_be_bytes(), height.to_be_bytes()].concat().try_into().expect("4 bytes");
                        size = Some(resized);
                        if send(&mut client, &mut to_display, &update_request(false, resized)).await?.is_err() {
                            return Ok(End::Gone);
                        }
                    }
                }
                if size.is_none() && head.len() < SIZE_AT + 4 {
                    head.extend_from_slice(&out[..out.len().min(SIZE_AT + 4 - head.len())]);
                    if let Some(found) = head.get(SIZE_AT..SIZE_AT + 4) {
                        let found: [u8; 4] = found.try_into().expect("4 bytes");
                        size = Some(found);
                        if send(&mut client, &mut to_display, &update_request(false, found)).await?.is_err() {
                            return Ok(End::Gone);
                        }
                    }
                }
                if !out.is_empty() {
                    recording.display(&out).await?;
                }
            }
            _ = pace.tick() => {
                match size {
                    Some(size) if send(&mut client, &mut to_display, &update_request(true, size)).await?.is_err() => return Ok(End::Gone),
                    None if greeted.elapsed() > STALLED => return Err("the display never finished its handshake".into()),
                    _ => {}
                }
                recording.tick().await?;
            }
        }
        if recording.full() {
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
/// means the display went away (the recorder's fixed messages always pass the filter). A
/// display that stops reading is an error of its own (`Err(Err(…))`): the recording fails.
async fn send(
    client: &mut ClientFilter,
    to_display: &mut tokio::net::unix::OwnedWriteHalf,
    bytes: &[u8],
) -> Result<std::io::Result<()>, String> {
    let (mut out, mut events) = (Vec::new(), Vec::new());
    if let Err(err) = client.feed(bytes, &mut out, &mut events) {
        return Ok(Err(std::io::Error::other(err.to_string())));
    }
    tokio::time::timeout(STALLED, to_display.write_all(&out))
        .await
        .map_err(|_| "the display stopped reading the recorder's requests".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the recorder hands its recording.
    #[derive(Default)]
    struct Kept(Vec<u8>);

    impl Tape for Kept {
        async fn display(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }

        async fn tick(&mut self) -> Result<(), String> {
            Ok(())
        }

        fn full(&self) -> bool {
            false
        }
    }

    /// A display of 1280×800 that grows to 1600×1000 once asked for its first frame: the
    /// update requests the recorder sends, as (incremental, width, height), in the first second.
    async fn display_that_grows(listener: tokio::net::UnixListener) -> Vec<(u8, u16, u16)> {
        let (mut client, _) = listener.accept().await.expect("the recorder connects");
        client.write_all(b"RFB 003.008\n\x01\x01").await.expect("version and security types");
        let mut hello = [0u8; 12 + 1 + 1 + 20 + 4 + 16];
        client.read_exact(&mut hello[..14]).await.expect("version, security type, shared flag");
        let mut init = vec![0, 0, 0, 0, 0x05, 0x00, 0x03, 0x20, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];
        init.extend_from_slice(&[0, 0, 0, 4]);
        init.extend_from_slice(b"test");
        client.write_all(&init).await.expect("security result and server init");
        client.read_exact(&mut hello[14..]).await.expect("pixel format and encodings");
        let mut requests = Vec::new();
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut request = [0u8; 10];
        while let Ok(Ok(_)) = tokio::time::timeout_at(until, client.read_exact(&mut request)).await {
            assert_eq!(request[0], 3, "only update requests after the handshake");
            requests.push((request[1], u16::from_be_bytes([request[6], request[7]]), u16::from_be_bytes([request[8], request[9]])));
            if requests.len() == 1 {
                // The first frame: nothing but the news that the desktop grew.
                let mut grown = vec![0, 0, 0, 1, 0, 0, 0, 0, 0x06, 0x40, 0x03, 0xe8];
                grown.extend_from_slice(&(-223i32).to_be_bytes());
                client.write_all(&grown).await.expect("desktop size");
            }
        }
        requests
    }

    #[tokio::test]
    async fn a_grown_desktop_is_asked_for_whole_and_requests_are_paced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("rfb.sock");
        let display = display_that_grows(tokio::net::UnixListener::bind(&socket).expect("listen"));
        let mut kept = Kept::default();
        let connection = UnixStream::connect(&socket).await.expect("connect");
        let recorder = tokio::time::timeout(Duration::from_millis(1500), segment(&mut kept, connection));
        let (requests, recorded) = tokio::join!(display, recorder);
        assert!(matches!(recorded, Ok(Ok(End::Gone))), "the recorder went on until the display closed");
        assert_eq!(requests.first(), Some(&(0, 1280, 800)), "a whole first frame: {requests:?}");
        assert!(requests.contains(&(0, 1600, 1000)), "the grown desktop asked for whole: {requests:?}");
        assert_eq!(requests.last().map(|r| (r.1, r.2)), Some((1600, 1000)), "and updates of all of it after: {requests:?}");
        assert!(requests.len() <= 8, "at most five update requests a second (and the two whole ones): {requests:?}");
        assert!(kept.0.starts_with(b"RFB 003.008\n\x01\x01\0\0\0\0"), "the recording starts with the handshake");
    }
}
