//! The server → client direction: the handshake the server leads, then its messages, each
//! framebuffer update read rectangle by rectangle with the encodings the client may use.

use super::cut_text::{cut_text, cut_text_length};
use super::framing::{Grammar, Payload, Reader, feed, u16_at, u32_at};
use super::policy::{Event, Policy, RfbError};
use super::shared::{FENCE_REQUEST, Shared, fence_length, fence_with};

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
        match self.phase {
            ServerPhase::Version => {
                if header != b"RFB 003.008\n" {
                    return Err(RfbError::Version(String::from_utf8_lossy(header).trim().to_owned()));
                }
                self.phase = ServerPhase::SecurityTypes;
                forward(header, out, 0)
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
                forward(header, out, 0)
            }
            ServerPhase::ServerInit => {
                self.shared.set_server_bits(header[4]);
                self.phase = ServerPhase::Messages;
                let name = u64::from(u32_at(header, 20));
                if name > 4096 {
                    return Err(RfbError::TooLarge("the desktop name"));
                }
                forward(header, out, name)
            }
            ServerPhase::Messages => self.on_message(header, out, events),
            ServerPhase::Rectangles(left) => self.on_rectangle(left, header, out, events),
            ServerPhase::RectangleLength { zrle, next } => {
                self.phase = next.phase();
                let length = if zrle { u64::from(u32_at(header, 0)) } else { 16 * u64::from(header[0]) };
                forward(header, out, length)
            }
        }
    }
}

impl ServerGrammar {
    /// A server message once the handshake is over.
    fn on_message(&mut self, header: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) -> Result<Payload, RfbError> {
        match header[0] {
            0 => {
                let rectangles = u16_at(header, 2);
                if rectangles > 0 {
                    self.phase = ServerPhase::Rectangles(rectangles);
                }
                forward(header, out, 0)
            }
            1 => forward(header, out, 6 * u64::from(u16_at(header, 4))),
            3 => Ok(cut_text(header, self.policy.copy, "TO_LOCAL_DEVICE", out, events)),
            248 => {
                // The payload stays here until the client answers; the client sees none.
                if u32_at(header, 4) & FENCE_REQUEST != 0 {
                    self.shared.hold_fence(&header[9..]);
                }
                fence_with(header, &[], out);
                Ok(Payload::Forward(0))
            }
            _ => forward(header, out, 0),
        }
    }

    /// One rectangle header of a framebuffer update, `left` rectangles still to come: its
    /// payload's length follows from its encoding and the pixel size in effect.
    fn on_rectangle(&mut self, left: u16, header: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) -> Result<Payload, RfbError> {
        let (w, h) = (u64::from(u16_at(header, 4)), u64::from(u16_at(header, 6)));
        let encoding = u32_at(header, 8) as i32;
        if matches!(encoding, -223 | -308) {
            events.push(Event::Resized { width: u16_at(header, 4), height: u16_at(header, 6) });
        }
        let rest = if encoding == -224 || left == 1 { Rest::Done } else { Rest::More(left.saturating_sub(1)) };
        let payload = match encoding {
            0 => w * h * self.shared.bytes(),
            1 => 4,
            -223 | -224 | -258 => 0,
            -239 => w * h * self.shared.bytes() + w.div_ceil(8) * h,
            16 | -308 => {
                self.phase = ServerPhase::RectangleLength { zrle: encoding == 16, next: rest };
                return forward(header, out, 0);
            }
            other => return Err(RfbError::Encoding(other)),
        };
        self.phase = rest.phase();
        forward(header, out, payload)
    }
}

/// Passes `header` on as it came, then `payload` bytes after it.
fn forward(header: &[u8], out: &mut Vec<u8>, payload: u64) -> Result<Payload, RfbError> {
    out.extend_from_slice(header);
    Ok(Payload::Forward(payload))
}
