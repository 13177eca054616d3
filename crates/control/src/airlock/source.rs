//! What the checks read: a stored object as a plain reader that can seek, fetched a piece at a
//! time (a range read from the blob store), so a check holds one piece of a file, never the
//! whole of it. The checks run on a blocking thread, where the reader waits on the runtime.

use std::io::{self, Read, Seek, SeekFrom};

use bytes::Bytes;
use tokio::runtime::Handle;

use crate::core::blobs::Blobs;

/// How much of an object one read fetches.
const PIECE: u64 = 1 << 20;

/// A file the checks read: front to back, and again from the start for another pass.
pub(super) trait Source: Read + Seek + Send {}

impl<T: Read + Seek + Send> Source for T {}

/// A stored blob, read in pieces.
pub(super) struct BlobReader {
    blobs: Blobs,
    name: String,
    size: u64,
    at: u64,
    /// The piece fetched last and where it starts.
    piece: Bytes,
    piece_at: u64,
    runtime: Handle,
}

impl BlobReader {
    /// Must be made on a thread of the runtime (it keeps a handle to it) and read on a
    /// blocking one.
    pub(super) fn new(blobs: Blobs, name: String, size: u64) -> BlobReader {
        BlobReader { blobs, name, size, at: 0, piece: Bytes::new(), piece_at: 0, runtime: Handle::current() }
    }
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.size || out.is_empty() {
            return Ok(0);
        }
        let inside = self.at >= self.piece_at && self.at < self.piece_at + self.piece.len() as u64;
        if !inside {
            let end = (self.at + PIECE).min(self.size);
            let piece = self.runtime.block_on(self.blobs.get(&self.name, Some(self.at..end))).map_err(io::Error::other)?;
            if piece.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stored object is shorter than its size"));
            }
            (self.piece, self.piece_at) = (piece, self.at);
        }
        let from = (self.at - self.piece_at) as usize;
        let n = out.len().min(self.piece.len() - from);
        out[..n].copy_from_slice(&self.piece[from..from + n]);
        self.at += n as u64;
        Ok(n)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let at = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::End(delta) => self.size.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.at.checked_add_signed(delta),
        };
        self.at = at.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start"))?;
        Ok(self.at)
    }
}
