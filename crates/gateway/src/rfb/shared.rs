//! The state the two directions share: the pixel size in effect and the fence payloads owed
//! back to the server, with the fence message's framing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::policy::RfbError;

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
pub(super) const FENCE_REQUEST: u32 = 0x8000_0000;

impl Shared {
    pub(super) fn bytes(&self) -> u64 {
        let client = self.0.client_bits.load(Ordering::Relaxed);
        let bits = if client != 0 { client } else { self.0.server_bits.load(Ordering::Relaxed) };
        u64::from(bits.max(8) / 8)
    }

    pub(super) fn set_server_bits(&self, bits: u8) {
        self.0.server_bits.store(bits, Ordering::Relaxed);
    }

    pub(super) fn set_client_bits(&self, bits: u8) {
        self.0.client_bits.store(bits, Ordering::Relaxed);
    }

    pub(super) fn hold_fence(&self, payload: &[u8]) {
        let mut fences = self.0.fences.lock().unwrap_or_else(PoisonError::into_inner);
        if fences.len() >= HELD_FENCES {
            fences.pop_front();
        }
        fences.push_back(payload.to_vec());
    }

    pub(super) fn take_fence(&self) -> Vec<u8> {
        self.0.fences.lock().unwrap_or_else(PoisonError::into_inner).pop_front().unwrap_or_default()
    }
}

/// A fence message's length: its 9-byte header, then its payload (at most 64 bytes).
pub(super) fn fence_length(p: &[u8]) -> Result<usize, RfbError> {
    match p.get(8) {
        None => Ok(9),
        Some(&n) if n > MAX_FENCE_PAYLOAD => Err(RfbError::TooLarge("a fence payload")),
        Some(&n) => Ok(9 + usize::from(n)),
    }
}

/// A fence passed on with `payload` in place of the one it came with.
pub(super) fn fence_with(header: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&header[..8]);
    out.push(payload.len() as u8);
    out.extend_from_slice(payload);
}
