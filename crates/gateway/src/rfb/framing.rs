//! The machinery both directions share: gather a message's header until its length is known,
//! let the direction's grammar act on it, then forward or skip the payload that follows.

use super::policy::{Event, RfbError};

/// What to do with the payload that follows a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Payload {
    Forward(u64),
    Skip(u64),
}

/// Shared machinery: gather a header, then forward or skip a payload.
#[derive(Debug, Default)]
pub(super) struct Reader {
    pending: Vec<u8>,
    forward: u64,
    skip: u64,
}

impl Reader {
    /// Moves payload bytes; returns the input left once no payload remains.
    pub(super) fn payload<'a>(&mut self, mut input: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
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
    pub(super) fn gather(&mut self, input: &mut &[u8], need: usize) -> bool {
        let take = need.saturating_sub(self.pending.len()).min(input.len());
        self.pending.extend_from_slice(&input[..take]);
        *input = &input[take..];
        self.pending.len() >= need
    }

    pub(super) fn then(&mut self, payload: Payload) {
        self.pending.clear();
        match payload {
            Payload::Forward(n) => self.forward = n,
            Payload::Skip(n) => self.skip = n,
        }
    }
}

/// One direction's grammar: how long the header being gathered is (as far as its first bytes
/// tell), and what to do once it is whole.
pub(super) trait Grammar {
    fn header_length(&self, pending: &[u8]) -> Result<usize, RfbError>;
    fn on_header(&mut self, header: &[u8], out: &mut Vec<u8>, events: &mut Vec<Event>) -> Result<Payload, RfbError>;
}

/// Parses `input` with `grammar`: payloads are moved or skipped, headers gathered until their
/// length stops growing, then acted on. What may pass is appended to `out`.
pub(super) fn feed(
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

pub(super) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}
