//! The client → server direction: the handshake the client answers, then its messages. The
//! client's `SetEncodings` is rewritten to what the server filter can delimit, and its pixel
//! format is fixed once it asks for updates.

use super::cut_text::{cut_text, cut_text_length};
use super::extended;
use super::framing::{Grammar, Payload, Reader, feed, u16_at, u32_at};
use super::policy::{Event, Policy, RfbError};
use super::shared::{FENCE_REQUEST, Shared, fence_length, fence_with};

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
