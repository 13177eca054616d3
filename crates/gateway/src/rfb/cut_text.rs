//! Cut text, in both directions: classic Latin-1 text is streamed through or skipped whole;
//! an extended-clipboard message is held whole and judged by [`super::extended`].

use super::extended;
use super::framing::{Payload, u32_at};
use super::policy::{Clipboard, Event};

/// How much of a cut-text message (`ClientCutText` or `ServerCutText`) is header: 8 bytes for
/// classic text (streamed), the whole message for an extended one small enough to judge.
pub(super) fn cut_text_length(p: &[u8]) -> usize {
    if p.len() < 8 {
        return 8;
    }
    let length = u32_at(p, 4) as i32;
    let bytes = u64::from(length.unsigned_abs());
    if length < 0 && bytes <= extended::BUFFER_LIMIT { 8 + bytes as usize } else { 8 }
}

/// Decides a cut text: forwarded whole, or skipped whole and reported. An extended message
/// arrives whole in `header` (see [`cut_text_length`]) unless it is too large to judge.
pub(super) fn cut_text(
    header: &[u8],
    clipboard: Clipboard,
    direction: &'static str,
    out: &mut Vec<u8>,
    events: &mut Vec<Event>,
) -> Payload {
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
