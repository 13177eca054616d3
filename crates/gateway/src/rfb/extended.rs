//! The extended clipboard (RFB's ExtendedClipboard pseudo-encoding, which noVNC and TigerVNC
//! negotiate for UTF-8 text): cut-text messages whose length is negative carry a flags word
//! (formats in the low 16 bits, one action in the high 8) and, for `provide`, a zlib stream
//! holding each format's size and data. The bridge holds each such message whole (up to
//! [`BUFFER_LIMIT`]) and judges it before any of it passes:
//!
//! - `caps` is rewritten to offer the text format only;
//! - `request`, `peek` and `notify` carry no content and pass, limited to text;
//! - `provide` is the transfer: it passes only if the direction is enabled, it holds text and
//!   nothing else, and the text is within `MaximumLength` characters; otherwise it is dropped
//!   and reported, by size and direction, never its content.

use super::policy::{Clipboard, Event};

/// The pseudo-encoding a client lists in `SetEncodings` to use the extended clipboard.
pub(super) const PSEUDO_ENCODING: i32 = 0xC0A1_E5CE_u32 as i32;
/// The largest extended message held to judge it; larger ones are skipped unread.
pub(super) const BUFFER_LIMIT: u64 = 1 << 20;
/// The most text inflated from one `provide`: memory per stream stays bounded whatever the
/// stream claims (a text this long is refused as too long).
const TEXT_LIMIT: u64 = 4 << 20;

const TEXT: u32 = 1;
const FORMATS: u32 = 0x0000_ffff;
const CAPS: u32 = 1 << 24;
const REQUEST: u32 = 1 << 25;
const PEEK: u32 = 1 << 26;
const NOTIFY: u32 = 1 << 27;
const PROVIDE: u32 = 1 << 28;

/// Judges one whole extended message (`kind` 3 or 6, `payload` after the 8-byte header):
/// appends what may pass to `out` and reports transfers to `events`.
pub(super) fn judge(kind: u8, payload: &[u8], clipboard: Clipboard, direction: &'static str, out: &mut Vec<u8>, events: &mut Vec<Event>) {
    let blocked = |reason, bytes| Event::ClipboardBlocked { direction, bytes, reason };
    let Some(flags) = payload.get(..4).map(|f| u32::from_be_bytes([f[0], f[1], f[2], f[3]])) else {
        return events.push(blocked("MALFORMED", payload.len() as u64));
    };
    let (formats, actions) = (flags & FORMATS, flags & !FORMATS);
    if actions & CAPS != 0 {
        // One size per format listed, in bit order; text's comes first when listed.
        let text_size = (formats & TEXT != 0).then(|| payload.get(4..8)).flatten();
        let mut body = (actions | (formats & TEXT)).to_be_bytes().to_vec();
        if let Some(size) = text_size {
            body.extend_from_slice(size);
        }
        return message(kind, &body, out);
    }
    match actions {
        REQUEST | PEEK | NOTIFY => message(kind, &(actions | (formats & TEXT)).to_be_bytes(), out),
        PROVIDE => {
            let Clipboard(Some(max)) = clipboard else {
                return events.push(blocked("DISABLED", payload.len() as u64 - 4));
            };
            if formats != TEXT {
                return events.push(blocked("FORMAT", payload.len() as u64 - 4));
            }
            let Some(text) = provided_text(&payload[4..]) else {
                return events.push(blocked("MALFORMED", payload.len() as u64 - 4));
            };
            let characters = String::from_utf8_lossy(text.strip_suffix(&[0]).unwrap_or(&text)).chars().count();
            if characters as u64 > u64::from(max) {
                return events.push(blocked("MAXIMUM_LENGTH", text.len() as u64));
            }
            message(kind, payload, out);
            events.push(Event::ClipboardPassed { direction, bytes: text.len() as u64 });
        }
        _ => events.push(blocked("UNSUPPORTED", payload.len() as u64)),
    }
}

/// The text of a text-only `provide`: its zlib stream holds a big-endian size, then the data.
/// Senders flush the stream rather than finish it (noVNC), so only what the size says is read.
/// `None` if the stream is broken or short, or the text longer than [`TEXT_LIMIT`].
fn provided_text(stream: &[u8]) -> Option<Vec<u8>> {
    let mut inflater = flate2::Decompress::new(true);
    let mut inflated = Vec::with_capacity(4096);
    let mut wanted = 4usize;
    while inflated.len() < wanted {
        let consumed = inflater.total_in() as usize;
        inflated.reserve((wanted - inflated.len()).min(64 * 1024));
        let before = inflated.len();
        let status = inflater.decompress_vec(&stream[consumed..], &mut inflated, flate2::FlushDecompress::Sync).ok()?;
        if inflated.len() >= 4 && wanted == 4 {
            let size = u32::from_be_bytes(inflated[..4].try_into().ok()?) as usize;
            if size as u64 > TEXT_LIMIT {
                return None;
            }
            wanted = 4 + size;
        }
        let stalled = inflated.len() == before && inflater.total_in() as usize == consumed;
        if status == flate2::Status::StreamEnd || stalled {
            break;
        }
    }
    inflated.get(4..wanted).map(<[u8]>::to_vec)
}

/// An extended cut-text message of `kind` with `body` (its length is sent negated).
fn message(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&(-(body.len() as i32)).to_be_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Write as _;

    use super::*;

    /// An extended message as a peer sends it.
    pub(in crate::rfb) fn extended(kind: u8, flags: u32, rest: &[u8]) -> Vec<u8> {
        let mut body = flags.to_be_bytes().to_vec();
        body.extend_from_slice(rest);
        let mut bytes = Vec::new();
        message(kind, &body, &mut bytes);
        bytes
    }

    /// A `provide` of `text` (NUL-terminated) in its own zlib stream, flushed but not
    /// finished, as noVNC sends it.
    pub(in crate::rfb) fn provide(kind: u8, formats: u32, text: &str) -> Vec<u8> {
        let mut data = ((text.len() + 1) as u32).to_be_bytes().to_vec();
        data.extend_from_slice(text.as_bytes());
        data.push(0);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&data).expect("deflate");
        zlib.flush().expect("flush");
        extended(kind, PROVIDE | formats, zlib.get_ref())
    }

    #[test]
    fn a_finished_stream_is_read_as_well() {
        let mut data = 6u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"hello\0");
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&data).expect("deflate");
        assert_eq!(provided_text(&zlib.finish().expect("finish")).as_deref(), Some(&b"hello\0"[..]));
        assert_eq!(provided_text(&[0x78, 0x9c, 1, 2]), None, "a broken stream");
    }

    fn judged(bytes: &[u8], clipboard: Clipboard) -> (Vec<u8>, Vec<Event>) {
        let (mut out, mut events) = (Vec::new(), Vec::new());
        judge(bytes[0], &bytes[8..], clipboard, "FROM_LOCAL_DEVICE", &mut out, &mut events);
        (out, events)
    }

    #[test]
    fn a_provide_passes_only_enabled_text_within_the_limit_in_characters() {
        let short = provide(6, TEXT, "naïve ✓");
        assert_eq!(
            judged(&short, Clipboard(Some(7))),
            (short.clone(), vec![Event::ClipboardPassed { direction: "FROM_LOCAL_DEVICE", bytes: 11 }])
        );
        let (out, events) = judged(&short, Clipboard(Some(6)));
        assert!(out.is_empty());
        assert_eq!(events, [Event::ClipboardBlocked { direction: "FROM_LOCAL_DEVICE", bytes: 11, reason: "MAXIMUM_LENGTH" }]);
        let (out, events) = judged(&short, Clipboard(None));
        assert!(out.is_empty() && matches!(events[..], [Event::ClipboardBlocked { reason: "DISABLED", .. }]));
        let (out, events) = judged(&provide(6, TEXT | 1 << 2, "<b>x</b>"), Clipboard(Some(100)));
        assert!(out.is_empty() && matches!(events[..], [Event::ClipboardBlocked { reason: "FORMAT", .. }]));
        let (out, events) = judged(&extended(6, PROVIDE | TEXT, b"not zlib at all"), Clipboard(Some(100)));
        assert!(out.is_empty() && matches!(events[..], [Event::ClipboardBlocked { reason: "MALFORMED", .. }]));
    }

    #[test]
    fn caps_and_notices_are_limited_to_text() {
        // Caps listing text (size 100) and HTML (size 200): only text remains.
        let caps = extended(3, CAPS | PROVIDE | NOTIFY | TEXT | 1 << 2, &[0, 0, 0, 100, 0, 0, 0, 200]);
        let (out, events) = judged(&caps, Clipboard(None));
        assert_eq!(out, extended(3, CAPS | PROVIDE | NOTIFY | TEXT, &[0, 0, 0, 100]));
        assert!(events.is_empty());
        let notify = extended(3, NOTIFY | TEXT | 1 << 4, &[]);
        assert_eq!(judged(&notify, Clipboard(None)).0, extended(3, NOTIFY | TEXT, &[]));
        let header_only = extended(6, CAPS, &[])[..8].to_vec();
        let (out, events) = judged(&header_only, Clipboard(None));
        assert!(out.is_empty() && matches!(events[..], [Event::ClipboardBlocked { reason: "MALFORMED", .. }]));
    }
}
