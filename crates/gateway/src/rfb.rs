//! RFB (RFC 6143) as the stream bridge sees it: each direction is parsed message by message,
//! so that the session's clipboard settings hold at the protocol level whatever the peers do.
//!
//! - `ClientCutText` (paste into the session) passes only when `CLIPBOARD_COPY_FROM_LOCAL_DEVICE`
//!   is enabled and the text is within its `MaximumLength`; `ServerCutText` (copy out of the
//!   session) likewise for `CLIPBOARD_COPY_TO_LOCAL_DEVICE`. A dropped text is skipped, never
//!   buffered, and reported by size and direction (never its content).
//! - The client's `SetEncodings` is rewritten to the encodings this parser can delimit (raw,
//!   CopyRect, ZRLE and a few pseudo-encodings), so every server message has a known length.
//! - The extended clipboard (UTF-8 text, negotiated by noVNC and TigerVNC) is filtered the same
//!   way, message by message, in `rfb/extended.rs`.
//! - The pixel format is fixed once the client asks for updates, and fence payloads never
//!   cross (see [`Shared`]).
//! - Anything the parser does not know ends the connection: a byte it cannot account for is
//!   a byte it cannot filter.
//!
//! Memory per direction is bounded: headers (at most 4 + 4 × 256 bytes, a `SetEncodings`) are
//! gathered, payloads stream through (or are skipped) in whatever pieces they arrive.

mod extended;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

const MAX_ENCODINGS: usize = 256;

/// Encodings the server may use toward the client: each has a length this parser knows.
const ALLOWED_ENCODINGS: &[i32] = &[
    0,    // Raw
    1,    // CopyRect
    16,   // ZRLE
    -223, // DesktopSize
    -224, // LastRect
    -239, // Cursor
    -258, // QEMU extended key events (an empty acknowledgement rectangle)
    -308, // ExtendedDesktopSize
    -312, // Fence
    -313, // ContinuousUpdates
];

fn allowed_encoding(encoding: i32) -> bool {
    // JPEG quality and compression levels only tune encodings we do not pass; harmless.
    ALLOWED_ENCODINGS.contains(&encoding)
        || encoding == extended::PSEUDO_ENCODING
        || (-32..=-23).contains(&encoding)
        || (-256..=-247).contains(&encoding)
}

/// How much of a cut-text message (`ClientCutText` or `ServerCutText`) is header: 8 bytes for
/// classic text (streamed), the whole message for an extended one small enough to judge.
fn cut_text_length(p: &[u8]) -> usize {
    if p.len() < 8 {
        return 8;
    }
    let length = u32_at(p, 4) as i32;
    let bytes = u64::from(length.unsigned_abs());
    if length < 0 && bytes <= extended::BUFFER_LIMIT { 8 + bytes as usize } else { 8 }
}

/// What the stack allows across the clipboard in one direction: `None` when disabled, else
/// the largest text in characters (classic RFB cut text is Latin-1: a byte per character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clipboard(pub Option<u32>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `CLIPBOARD_COPY_FROM_LOCAL_DEVICE`: client → session.
    pub paste: Clipboard,
    /// `CLIPBOARD_COPY_TO_LOCAL_DEVICE`: session → client.
    pub copy: Clipboard,
}

/// Something the bridge must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key or pointer event: the user is there (the idle timeout).
    Input,
    /// A clipboard text stopped, by size and direction.
    ClipboardBlocked { direction: &'static str, bytes: u64, reason: &'static str },
    /// A clipboard text let through, by size and direction.
    ClipboardPassed { direction: &'static str, bytes: u64 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RfbError {
    #[error("protocol version `{0}` is not RFB 3.8")]
    Version(String),
    #[error("security type {0} is not None (the display is reachable only by the gateway)")]
    Security(u8),
    #[error("unknown {direction} message type {kind}")]
    UnknownMessage { direction: &'static str, kind: u8 },
    #[error("the server used encoding {0}, which the client was not allowed to ask for")]
    Encoding(i32),
    #[error("{0} is larger than the bridge accepts")]
    TooLarge(&'static str),
    #[error("{0} bits per pixel is not 8, 16 or 32")]
    PixelFormat(u8),
}

/// What the two directions share: the pixel size in effect, and the fence payloads the server
/// is owed back.
///
/// The server applies the client's `SetPixelFormat` after its own `ServerInit`, whatever order
/// the bridge reads them in, so the client's format wins once given. It may be given only
/// before the first update request: a change while rectangles are on their way would make the
/// server filter read them with the wrong size (a `ServerCutText` read as pixels), so a later
/// one is dropped and the server keeps the format the filter knows.
///
/// Fence payloads are opaque bytes the other side echoes: a channel the filter cannot judge.
/// The server's are held here (a few, bounded) and put back into the client's response, so the
/// server sees its own bytes again and the user's device sees none; the client's are dropped.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<SharedState>);

#[derive(Debug, Default)]
struct SharedState {
    server_bits: AtomicU8,
    client_bits: AtomicU8,
    fences: Mutex<VecDeque<Vec<u8>>>,
}

/// Fence payloads held for the client's responses; a client that never answers loses the oldest.
const HELD_FENCES: usize = 16;
/// RFB's limit on a fence payload.
const MAX_FENCE_PAYLOAD: u8 = 64;
/// The request bit of a fence's flags: the other side must answer.
const FENCE_REQUEST: u32 = 0x8000_0000;

impl Shared {
    fn bytes(&self) -> u64 {
        let client = self.0.client_bits.load(Ordering::Relaxed);
        let bits = if client != 0 { client } else { self.0.server_bits.load(Ordering::Relaxed) };
        u64::from(bits.max(8) / 8)
    }

    fn set_server_bits(&self, bits: u8) {
        self.0.server_bits.store(bits, Ordering::Relaxed);
    }

    fn set_client_bits(&self, bits: u8) {
        self.0.client_bits.store(bits, Ordering::Relaxed);
    }

    fn hold_fence(&self, payload: &[u8]) {
        let mut fences = self.0.fences.lock().unwrap_or_else(PoisonError::into_inner);
        if fences.len() >= HELD_FENCES {
            fences.pop_front();
        }
        fences.push_back(payload.to_vec());
    }

    fn take_fence(&self) -> Vec<u8> {
        self.0.fences.lock().unwrap_or_else(PoisonError::into_inner).pop_front().unwrap_or_default()
    }
}

/// A fence message's length: its 9-byte header, then its payload (at most 64 bytes).
fn fence_length(p: &[u8]) -> Result<usize, RfbError> {
    match p.get(8) {
        None => Ok(9),
        Some(&n) if n > MAX_FENCE_PAYLOAD => Err(RfbError::TooLarge("a fence payload")),
        Some(&n) => Ok(9 + usize::from(n)),
    }
}

/// A fence passed on with `payload` in place of the one it came with.
fn fence_with(header: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&header[..8]);
    out.push(payload.len() as u8);
    out.extend_from_slice(payload);
}

/// What to do with the payload that follows a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    Forward(u64),
    Skip(u64),
}

/// Shared machinery: gather a header, then forward or skip a payload.
#[derive(Debug, Default)]
struct Reader {
    pending: Vec<u8>,
    forward: u64,
    skip: u64,
}

impl Reader {
    /// Moves payload bytes; returns the input left once no payload remains.
    fn payload<'a>(&mut self, mut input: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
        if self.forward > 0 {
            let take = (self.forward.min(input.len() as u64)) as usize;
            out.extend_from_slice(&input[..take]);
            self.forward -= take as u64;
            input = &input[take..];
        }
        if self.skip > 0 {
            let take = (self.skip.min(input.len() as u64)) as usize;
            self.skip -= take as u64;
            input = &input[take..];
        }
        input
    }

    /// Gathers up to `need` header bytes; true once they are all there.
    fn gather(&mut self, input: &mut &[u8], need: usize) -> bool {
        let take = need.saturating_sub(self.pending.len()).min(input.len());
        self.pending.extend_from_slice(&input[..take]);
        *input = &input[take..];
        self.pending.len() >= need
    }

    fn then(&mut self, payload: Payload) {
        self.pending.clear();
        match payload {
            Payload::Forward(n) => self.forward = n,
            Payload::Skip(n) => self.skip = n,
        }
    }
}

/// One direction's grammar: how long the header being gathered is (as far as its first bytes
/// tell), and what to do once it is whole.
trait Grammar {
    fn header_length(&self, pending: &[u8]) -> Result<usize, RfbError>;
    fn on_header(&mut self, header: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) -> Result<Payload, RfbError>;
}

/// Parses `input` with `grammar`: payloads are moved or skipped, headers gathered until their
/// length stops growing, then acted on. What may pass is appended to `out`.
fn feed(
    grammar: &mut impl Grammar,
    reader: &mut Reader,
    mut input: &[u8],
    out: &mut Vec<u8>,
    events: &mut Vec<Event>,
) -> Result<(), RfbError> {
    loop {
        input = reader.payload(input, out);
        if input.is_empty() {
            return Ok(());
        }
        loop {
            let need = grammar.header_length(&reader.pending)?;
            if reader.pending.len() >= need {
                break;
            }
            if !reader.gather(&mut input, need) && input.is_empty() {
                return Ok(());
            }
        }
        let header = std::mem::take(&mut reader.pending);
        let payload = grammar.on_header(&header, out, events)?;
        reader.then(payload);
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Decides a cut text: forwarded whole, or skipped whole and reported. An extended message
/// arrives whole in `header` (see [`cut_text_length`]) unless it is too large to judge.
fn cut_text(header: &[u8], clipboard: Clipboard, direction: &'static str, out: &mut Vec<u8>, events: &mut Vec<Event>) -> Payload {
    let length = u32_at(header, 4) as i32;
    let (bytes, extended) = (u64::from(length.unsigned_abs()), length < 0);
    let blocked = |reason| Event::ClipboardBlocked { direction, bytes, reason };
    match clipboard.0 {
        _ if extended && header.len() > 8 => {
            extended::judge(header[0], &header[8..], clipboard, direction, out, events);
            return Payload::Forward(0);
        }
        _ if extended => events.push(blocked("MAXIMUM_LENGTH")),
        None => events.push(blocked("DISABLED")),
        Some(max) if bytes > u64::from(max) => events.push(blocked("MAXIMUM_LENGTH")),
        Some(_) => {
            out.extend_from_slice(header);
            events.push(Event::ClipboardPassed { direction, bytes });
            return Payload::Forward(bytes);
        }
    }
    Payload::Skip(bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPhase {
    Version,
    SecurityChoice,
    ClientInit,
    Messages,
}

/// The client → server direction.
#[derive(Debug)]
pub struct ClientFilter {
    grammar: ClientGrammar,
    reader: Reader,
}

#[derive(Debug)]
struct ClientGrammar {
    phase: ClientPhase,
    policy: Policy,
    shared: Shared,
    /// Whether the client has asked for an update: from then on its pixel format is fixed.
    updates_requested: bool,
}

impl ClientFilter {
    pub fn new(policy: Policy, shared: Shared) -> ClientFilter {
        ClientFilter {
            grammar: ClientGrammar { phase: ClientPhase::Version, policy, shared, updates_requested: false },
            reader: Reader::default(),
        }
    }

    /// Parses `input`; what may reach the server is appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) -> Result<(), RfbError> {
        feed(&mut self.grammar, &mut self.reader, input, out, events)
    }
}

impl Grammar for ClientGrammar {
    fn header_length(&self, p: &[u8]) -> Result<usize, RfbError> {
        let kind = match (self.phase, p.first()) {
            (ClientPhase::Version, _) => return Ok(12),
            (ClientPhase::SecurityChoice | ClientPhase::ClientInit, _) => return Ok(1),
            (ClientPhase::Messages, None) => return Ok(1),
            (ClientPhase::Messages, Some(&kind)) => kind,
        };
        Ok(match kind {
            0 => 20,
            2 if p.len() < 4 => 4,
            2 => {
                let count = usize::from(u16_at(p, 2));
                if count > MAX_ENCODINGS {
                    return Err(RfbError::TooLarge("SetEncodings"));
                }
                4 + 4 * count
            }
            3 => 10,
            4 => 8,
            5 => 6,
            6 => cut_text_length(p),
            150 => 10,
            248 => return fence_length(p),
            251 => 8,
            255 => 12,
            other => return Err(RfbError::UnknownMessage { direction: "client", kind: other }),
        })
    }

    fn on_header(&mut self, header: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) -> Result<Payload, RfbError> {
        match self.phase {
            ClientPhase::Version => {
                if header != b"RFB 003.008\n" {
                    return Err(RfbError::Version(String::from_utf8_lossy(header).trim().to_owned()));
                }
                self.phase = ClientPhase::SecurityChoice;
            }
            ClientPhase::SecurityChoice => {
                if header[0] != 1 {
                    return Err(RfbError::Security(header[0]));
                }
                self.phase = ClientPhase::ClientInit;
            }
            ClientPhase::ClientInit => self.phase = ClientPhase::Messages,
            ClientPhase::Messages => match header[0] {
                0 => {
                    let bits = header[4];
                    if !matches!(bits, 8 | 16 | 32) {
                        return Err(RfbError::PixelFormat(bits));
                    }
                    if self.updates_requested {
                        // Dropped: the server keeps the format the server filter reads with.
                        return Ok(Payload::Forward(0));
                    }
                    self.shared.set_client_bits(bits);
                }
                3 | 150 => self.updates_requested = true,
                2 => {
                    let kept: Vec<i32> = header[4..]
                        .chunks_exact(4)
                        .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .filter(|e| allowed_encoding(*e))
                        .collect();
                    out.extend_from_slice(&[2, 0]);
                    out.extend_from_slice(&(kept.len() as u16).to_be_bytes());
                    for encoding in kept {
                        out.extend_from_slice(&encoding.to_be_bytes());
                    }
                    return Ok(Payload::Forward(0));
                }
                4 | 5 => events.push(Event::Input),
                6 => return Ok(cut_text(header, self.policy.paste, "FROM_LOCAL_DEVICE", out, events)),
                248 => {
                    // A response carries back what the server sent; a request carries nothing.
                    let payload = if u32_at(header, 4) & FENCE_REQUEST == 0 { self.shared.take_fence() } else { Vec::new() };
                    fence_with(header, &payload, out);
                    return Ok(Payload::Forward(0));
                }
                251 => {
                    out.extend_from_slice(header);
                    return Ok(Payload::Forward(16 * u64::from(header[6])));
                }
                255 if header[1] != 0 => return Err(RfbError::UnknownMessage { direction: "client", kind: 255 }),
                255 => events.push(Event::Input),
                _ => {}
            },
        }
        out.extend_from_slice(header);
        Ok(Payload::Forward(0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerPhase {
    Version,
    SecurityTypes,
    SecurityResult,
    ServerInit,
    Messages,
    /// Within a `FramebufferUpdate`: rectangles still to come (`u16::MAX` until `LastRect`).
    Rectangles(u16),
    /// The 4 bytes after a ZRLE (its data's length) or ExtendedDesktopSize (its screen count)
    /// rectangle header, then the phase after that rectangle.
    RectangleLength {
        zrle: bool,
        next: Rest,
    },
}

/// Where a `FramebufferUpdate` stands after one rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rest {
    Done,
    More(u16),
}

impl Rest {
    fn phase(self) -> ServerPhase {
        match self {
            Rest::Done => ServerPhase::Messages,
            Rest::More(left) => ServerPhase::Rectangles(left),
        }
    }
}

/// The server → client direction.
#[derive(Debug)]
pub struct ServerFilter {
    grammar: ServerGrammar,
    reader: Reader,
}

#[derive(Debug)]
struct ServerGrammar {
    phase: ServerPhase,
    policy: Policy,
    shared: Shared,
}

impl ServerFilter {
    pub fn new(policy: Policy, shared: Shared) -> ServerFilter {
        ServerFilter { grammar: ServerGrammar { phase: ServerPhase::Version, policy, shared }, reader: Reader::default() }
    }

    /// Parses `input`; what may reach the client is appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) -> Result<(), RfbError> {
        feed(&mut self.grammar, &mut self.reader, input, out, events)
    }
}

impl Grammar for ServerGrammar {
    fn header_length(&self, p: &[u8]) -> Result<usize, RfbError> {
        Ok(match self.phase {
            ServerPhase::Version => 12,
            ServerPhase::SecurityTypes => 1 + usize::from(p.first().copied().unwrap_or(0)),
            ServerPhase::SecurityResult => 4,
            ServerPhase::ServerInit => 24,
            ServerPhase::Rectangles(_) => 12,
            ServerPhase::RectangleLength { .. } => 4,
            ServerPhase::Messages => match p.first() {
                None => 1,
                Some(0) => 4,
                Some(1) => 6,
                Some(2) | Some(150) => 1,
                Some(3) => cut_text_length(p),
                Some(248) => return fence_length(p),
                Some(&other) => return Err(RfbError::UnknownMessage { direction: "server", kind: other }),
            },
        })
    }

    fn on_header(&mut self, header: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) -> Result<Payload, RfbError> {
        let forward = |out: &mut Vec<u8>, n: u64| {
            out.extend_from_slice(header);
            Ok(Payload::Forward(n))
        };
        match self.phase {
            ServerPhase::Version => {
                if header != b"RFB 003.008\n" {
                    return Err(RfbError::Version(String::from_utf8_lossy(header).trim().to_owned()));
                }
                self.phase = ServerPhase::SecurityTypes;
                forward(out, 0)
            }
            ServerPhase::SecurityTypes => {
                // Zero types: the server refuses, and says why in the reason that follows;
                // the connection ends with it.
                if header[0] == 0 || !header[1..].contains(&1) {
                    return Err(RfbError::Security(header.get(1).copied().unwrap_or(0)));
                }
                self.phase = ServerPhase::SecurityResult;
                // Offer the client only None: the display is private to the gateway.
                out.extend_from_slice(&[1, 1]);
                Ok(Payload::Forward(0))
            }
            ServerPhase::SecurityResult => {
                self.phase = ServerPhase::ServerInit;
                forward(out, 0)
            }
            ServerPhase::ServerInit => {
                self.shared.set_server_bits(header[4]);
                self.phase = ServerPhase::Messages;
                let name = u64::from(u32_at(header, 20));
                if name > 4096 {
                    return Err(RfbError::TooLarge("the desktop name"));
                }
                forward(out, name)
            }
            ServerPhase::Messages => match header[0] {
                0 => {
                    let rectangles = u16_at(header, 2);
                    if rectangles > 0 {
                        self.phase = ServerPhase::Rectangles(rectangles);
                    }
                    forward(out, 0)
                }
                1 => forward(out, 6 * u64::from(u16_at(header, 4))),
                3 => Ok(cut_text(header, self.policy.copy, "TO_LOCAL_DEVICE", out, events)),
                248 => {
                    // The payload stays here until the client answers; the client sees none.
                    if u32_at(header, 4) & FENCE_REQUEST != 0 {
                        self.shared.hold_fence(&header[9..]);
                    }
                    fence_with(header, &[], out);
                    Ok(Payload::Forward(0))
                }
                _ => forward(out, 0),
            },
            ServerPhase::Rectangles(left) => {
                let (w, h) = (u64::from(u16_at(header, 4)), u64::from(u16_at(header, 6)));
                let encoding = u32_at(header, 8) as i32;
                let rest = if encoding == -224 || left == 1 { Rest::Done } else { Rest::More(left.saturating_sub(1)) };
                let payload = match encoding {
                    0 => w * h * self.shared.bytes(),
                    1 => 4,
                    -223 | -224 | -258 => 0,
                    -239 => w * h * self.shared.bytes() + w.div_ceil(8) * h,
                    16 | -308 => {
                        self.phase = ServerPhase::RectangleLength { zrle: encoding == 16, next: rest };
                        return forward(out, 0);
                    }
                    other => return Err(RfbError::Encoding(other)),
                };
                self.phase = rest.phase();
                forward(out, payload)
            }
            ServerPhase::RectangleLength { zrle, next } => {
                self.phase = next.phase();
                let length = if zrle { u64::from(u32_at(header, 0)) } else { 16 * u64::from(header[0]) };
                forward(out, length)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Policy = Policy { paste: Clipboard(Some(10)), copy: Clipboard(Some(10)) };
    const CLOSED: Policy = Policy { paste: Clipboard(None), copy: Clipboard(None) };

    fn client_handshake() -> Vec<u8> {
        let mut bytes = b"RFB 003.008\n".to_vec();
        bytes.extend_from_slice(&[1, 1]); // None, shared
        bytes
    }

    fn cut(kind: u8, text: &[u8]) -> Vec<u8> {
        let mut bytes = vec![kind, 0, 0, 0];
        bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
        bytes.extend_from_slice(text);
        bytes
    }

    fn set_encodings(encodings: &[i32]) -> Vec<u8> {
        let mut bytes = vec![2, 0];
        bytes.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            bytes.extend_from_slice(&e.to_be_bytes());
        }
        bytes
    }

    /// Feeds the whole input at once and byte by byte: both must agree.
    fn run_client(policy: Policy, input: &[u8]) -> (Vec<u8>, Vec<Event>) {
        let whole = {
            let mut filter = ClientFilter::new(policy, Shared::default());
            let (mut out, mut events) = (Vec::new(), Vec::new());
            filter.feed(input, &mut out, &mut events).expect("valid stream");
            (out, events)
        };
        let mut filter = ClientFilter::new(policy, Shared::default());
        let (mut out, mut events) = (Vec::new(), Vec::new());
        for byte in input {
            filter.feed(std::slice::from_ref(byte), &mut out, &mut events).expect("valid stream");
        }
        assert_eq!((&out, &events), (&whole.0, &whole.1), "split input parsed differently");
        whole
    }

    fn run_server(policy: Policy, input: &[u8]) -> (Vec<u8>, Vec<Event>) {
        let whole = {
            let mut filter = ServerFilter::new(policy, Shared::default());
            let (mut out, mut events) = (Vec::new(), Vec::new());
            filter.feed(input, &mut out, &mut events).expect("valid stream");
            (out, events)
        };
        let mut filter = ServerFilter::new(policy, Shared::default());
        let (mut out, mut events) = (Vec::new(), Vec::new());
        for chunk in input.chunks(3) {
            filter.feed(chunk, &mut out, &mut events).expect("valid stream");
        }
        assert_eq!((&out, &events), (&whole.0, &whole.1), "split input parsed differently");
        whole
    }

    #[test]
    fn paste_passes_only_when_enabled_and_short_enough() {
        let mut stream = client_handshake();
        stream.extend(cut(6, b"hello"));
        stream.extend([4, 1, 0, 0, 0, 0, 0, 0x61]); // a key
        let (out, events) = run_client(OPEN, &stream);
        assert_eq!(out, stream, "allowed: everything passes");
        assert_eq!(events, [Event::ClipboardPassed { direction: "FROM_LOCAL_DEVICE", bytes: 5 }, Event::Input]);

        let (out, events) = run_client(CLOSED, &stream);
        let mut expected = client_handshake();
        expected.extend([4, 1, 0, 0, 0, 0, 0, 0x61]);
        assert_eq!(out, expected, "disabled: the text is gone, the key passes");
        assert_eq!(events[0], Event::ClipboardBlocked { direction: "FROM_LOCAL_DEVICE", bytes: 5, reason: "DISABLED" });

        let mut long = client_handshake();
        long.extend(cut(6, b"longer than ten"));
        let (out, events) = run_client(OPEN, &long);
        assert_eq!(out, client_handshake());
        assert_eq!(events, [Event::ClipboardBlocked { direction: "FROM_LOCAL_DEVICE", bytes: 15, reason: "MAXIMUM_LENGTH" }]);
    }

    #[test]
    fn the_extended_clipboard_is_negotiated_and_filtered_like_classic_text() {
        use extended::tests::{extended, provide};
        let mut stream = client_handshake();
        stream.extend(set_encodings(&[7, 16, extended::PSEUDO_ENCODING, 0, -239, 5, -314]));
        let short = provide(6, 1, "grüße");
        let long = provide(6, 1, "far more than ten characters");
        let huge_header = extended(6, 1 << 28 | 1, &[])[..4]
            .iter()
            .copied()
            .chain((-(extended::BUFFER_LIMIT as i32) - 1).to_be_bytes())
            .collect::<Vec<u8>>();
        stream.extend(&short);
        stream.extend(&long);
        stream.extend(&huge_header);
        stream.extend(vec![0; extended::BUFFER_LIMIT as usize + 1]);
        stream.extend(cut(6, b"after"));
        let (out, events) = run_client(OPEN, &stream);
        let mut expected = client_handshake();
        expected.extend(set_encodings(&[16, extended::PSEUDO_ENCODING, 0, -239]));
        expected.extend(&short);
        expected.extend(cut(6, b"after"));
        assert_eq!(out, expected, "the short UTF-8 text and the classic one pass; the long and the huge do not");
        assert_eq!(
            events,
            [
                Event::ClipboardPassed { direction: "FROM_LOCAL_DEVICE", bytes: 8 },
                Event::ClipboardBlocked { direction: "FROM_LOCAL_DEVICE", bytes: 29, reason: "MAXIMUM_LENGTH" },
                Event::ClipboardBlocked { direction: "FROM_LOCAL_DEVICE", bytes: extended::BUFFER_LIMIT + 1, reason: "MAXIMUM_LENGTH" },
                Event::ClipboardPassed { direction: "FROM_LOCAL_DEVICE", bytes: 5 },
            ]
        );
        let (out, events) = run_client(CLOSED, &stream);
        assert!(!out.windows(short.len()).any(|w| w == short), "paste disabled: the extended text is dropped too");
        assert!(matches!(events[0], Event::ClipboardBlocked { reason: "DISABLED", .. }), "{events:?}");
    }

    #[test]
    fn unknown_or_wrong_client_bytes_end_the_stream() {
        for (bad, error) in [
            (b"RFB 003.003\n".to_vec(), RfbError::Version("RFB 003.003".into())),
            (
                {
                    let mut b = b"RFB 003.008\n".to_vec();
                    b.push(2);
                    b
                },
                RfbError::Security(2),
            ),
            (
                {
                    let mut b = client_handshake();
                    b.push(99);
                    b
                },
                RfbError::UnknownMessage { direction: "client", kind: 99 },
            ),
            (
                {
                    let mut b = client_handshake();
                    b.extend([2, 0, 0xff, 0xff]);
                    b
                },
                RfbError::TooLarge("SetEncodings"),
            ),
        ] {
            let mut filter = ClientFilter::new(OPEN, Shared::default());
            assert_eq!(filter.feed(&bad, &mut Vec::new(), &mut Vec::new()), Err(error));
        }
    }

    fn server_handshake(name: &[u8]) -> Vec<u8> {
        let mut bytes = b"RFB 003.008\n".to_vec();
        bytes.extend_from_slice(&[2, 1, 2]); // None and VncAuth offered
        bytes.extend_from_slice(&[0, 0, 0, 0]); // security result: OK
        bytes.extend_from_slice(&[0, 4, 0, 3]); // 4 × 3
        bytes.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        bytes.extend_from_slice(&(name.len() as u32).to_be_bytes());
        bytes.extend_from_slice(name);
        bytes
    }

    #[test]
    fn server_updates_pass_whole_and_copy_out_obeys_the_stack() {
        let mut stream = server_handshake(b"desk");
        // A FramebufferUpdate: a raw 2×2 rectangle (32 bpp), a ZRLE one of 5 bytes, a cursor.
        stream.extend([0, 0, 0, 3]);
        stream.extend([0, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, 0]);
        stream.extend([7u8; 16]);
        stream.extend([0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 16]);
        stream.extend([0, 0, 0, 5, 1, 2, 3, 4, 5]);
        stream.extend([0, 0, 0, 0, 0, 9, 0, 1]);
        stream.extend((-239i32).to_be_bytes());
        stream.extend([9u8; 9 * 4 + 2]);
        stream.push(2); // Bell
        let copy = cut(3, b"secret");
        stream.extend(&copy);
        stream.push(2);

        let (out, events) = run_server(OPEN, &stream);
        let mut expected = stream.clone();
        expected[12..15].copy_from_slice(&[1, 1, 0]); // only None offered onward
        expected.remove(14);
        assert_eq!(out, expected);
        assert_eq!(events, [Event::ClipboardPassed { direction: "TO_LOCAL_DEVICE", bytes: 6 }]);

        let (out, events) = run_server(CLOSED, &stream);
        let without_copy: Vec<u8> = expected[..expected.len() - copy.len() - 1].iter().copied().chain([2]).collect();
        assert_eq!(out, without_copy);
        assert_eq!(events, [Event::ClipboardBlocked { direction: "TO_LOCAL_DEVICE", bytes: 6, reason: "DISABLED" }]);
    }

    #[test]
    fn a_server_encoding_nobody_asked_for_ends_the_stream() {
        let mut stream = server_handshake(b"");
        stream.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 7]); // Tight
        let mut filter = ServerFilter::new(OPEN, Shared::default());
        assert_eq!(filter.feed(&stream, &mut Vec::new(), &mut Vec::new()), Err(RfbError::Encoding(7)));
    }
}

/// Finding 12 of the security review: the filter's idea of the pixel size and the server's
/// must never part, and fence payloads carry nothing to the user's device.
#[cfg(test)]
mod attack_f12 {
    use super::*;

    const CLOSED: Policy = Policy { paste: Clipboard(None), copy: Clipboard(None) };

    fn set_pixel_format(bits: u8) -> Vec<u8> {
        let depth = if bits == 32 { 24 } else { bits };
        vec![0, 0, 0, 0, bits, depth, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]
    }

    fn update_request() -> Vec<u8> {
        vec![3, 0, 0, 0, 0, 0, 0, 4, 0, 3]
    }

    fn server_init() -> Vec<u8> {
        let mut bytes = b"RFB 003.008\n".to_vec();
        bytes.extend_from_slice(&[1, 1]);
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        bytes.extend_from_slice(&[0, 4, 0, 3]);
        bytes.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes
    }

    fn raw_rectangle(w: u16, h: u16, bytes_per_pixel: usize) -> Vec<u8> {
        let mut bytes = vec![0, 0, 0, 0];
        bytes.extend_from_slice(&w.to_be_bytes());
        bytes.extend_from_slice(&h.to_be_bytes());
        bytes.extend_from_slice(&0i32.to_be_bytes());
        bytes.extend(vec![0x11; usize::from(w) * usize::from(h) * bytes_per_pixel]);
        bytes
    }

    fn server_cut_text(text: &[u8]) -> Vec<u8> {
        let mut bytes = vec![3, 0, 0, 0];
        bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
        bytes.extend_from_slice(text);
        bytes
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Runs a session: the client's messages, then the server's; returns what reached the
    /// client and the events. Errors end the stream (nothing more reaches the client).
    fn session(client_messages: &[Vec<u8>], server_messages: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>, Vec<Event>) {
        let shared = Shared::default();
        let mut client = ClientFilter::new(CLOSED, shared.clone());
        let mut server = ServerFilter::new(CLOSED, shared);
        let (mut to_server, mut to_client, mut events) = (Vec::new(), Vec::new(), Vec::new());
        let mut handshake = b"RFB 003.008\n".to_vec();
        handshake.extend_from_slice(&[1, 1]);
        client.feed(&handshake, &mut to_server, &mut events).expect("client handshake");
        server.feed(&server_init(), &mut to_client, &mut events).expect("server handshake");
        for message in client_messages {
            if client.feed(message, &mut to_server, &mut events).is_err() {
                return (to_server, to_client, events);
            }
        }
        for message in server_messages {
            if server.feed(message, &mut to_client, &mut events).is_err() {
                break;
            }
        }
        (to_server, to_client, events)
    }

    #[test]
    fn attack_f12_a_pixel_format_change_mid_update_does_not_smuggle_cut_text_out() {
        // The client asks for 8 bpp and a full update, then (while the server is still sending
        // 8-bpp rectangles) claims 32 bpp: the filter must not read the rest as 4× longer.
        let client = [set_pixel_format(8), update_request(), set_pixel_format(32)];
        let mut update = vec![0, 0, 0, 2];
        update.extend(raw_rectangle(4, 3, 1));
        update.extend(raw_rectangle(4, 3, 1));
        let server = [update, server_cut_text(b"the secret text")];
        let (_, to_client, events) = session(&client, &server);
        assert!(!contains(&to_client, b"the secret text"), "cut text crossed as pixels");
        assert!(
            events.iter().any(|e| matches!(e, Event::ClipboardBlocked { direction: "TO_LOCAL_DEVICE", .. })),
            "the copy was judged: {events:?}"
        );
    }

    #[test]
    fn attack_f12_a_pixel_format_sent_before_server_init_is_the_one_in_effect() {
        // Pipelined: the client's SetPixelFormat is read by the filter before the server's
        // ServerInit, yet the server applies it after; the filter must not take ServerInit's.
        let shared = Shared::default();
        let mut client = ClientFilter::new(CLOSED, shared.clone());
        let mut server = ServerFilter::new(CLOSED, shared);
        let (mut to_server, mut to_client, mut events) = (Vec::new(), Vec::new(), Vec::new());
        let mut pipelined = b"RFB 003.008\n".to_vec();
        pipelined.extend_from_slice(&[1, 1]);
        pipelined.extend(set_pixel_format(8));
        pipelined.extend(update_request());
        client.feed(&pipelined, &mut to_server, &mut events).expect("client");
        let mut stream = server_init();
        stream.extend([0, 0, 0, 1]);
        stream.extend(raw_rectangle(4, 3, 1));
        stream.extend(server_cut_text(b"the secret text"));
        let _ = server.feed(&stream, &mut to_client, &mut events);
        assert!(!contains(&to_client, b"the secret text"), "cut text crossed as pixels");
    }

    #[test]
    fn attack_f12_fence_payloads_do_not_reach_the_client() {
        // ServerFence (248): flags (request), a payload of up to 64 bytes.
        let mut fence = vec![248, 0, 0, 0, 0x80, 0, 0, 0, 9];
        fence.extend_from_slice(b"exfil-123");
        let (_, to_client, _) = session(&[update_request()], &[fence]);
        assert!(!contains(&to_client, b"exfil-123"), "the fence payload reached the client");
        // ClientFence likewise carries nothing into the session.
        let mut client_fence = vec![248, 0, 0, 0, 0x80, 0, 0, 0, 9];
        client_fence.extend_from_slice(b"infil-456");
        let (to_server, _, _) = session(&[client_fence], &[]);
        assert!(!contains(&to_server, b"infil-456"), "the fence payload reached the session");
    }

    #[test]
    fn a_fence_answered_by_the_client_carries_the_servers_payload_back() {
        let shared = Shared::default();
        let mut client = ClientFilter::new(CLOSED, shared.clone());
        let mut server = ServerFilter::new(CLOSED, shared);
        let (mut to_server, mut to_client, mut events) = (Vec::new(), Vec::new(), Vec::new());
        let mut handshake = b"RFB 003.008\n".to_vec();
        handshake.extend_from_slice(&[1, 1]);
        client.feed(&handshake, &mut to_server, &mut events).expect("client handshake");
        let mut stream = server_init();
        stream.extend([248, 0, 0, 0, 0x80, 0, 0, 3, 4, 0, 0, 0, 1]);
        server.feed(&stream, &mut to_client, &mut events).expect("server");
        assert!(to_client.ends_with(&[248, 0, 0, 0, 0x80, 0, 0, 3, 0]), "the client sees an empty fence");
        to_server.clear();
        client.feed(&[248, 0, 0, 0, 0, 0, 0, 3, 0], &mut to_server, &mut events).expect("client's answer");
        assert_eq!(to_server, [248, 0, 0, 0, 0, 0, 0, 3, 4, 0, 0, 0, 1], "the server gets its payload back");
    }
}
