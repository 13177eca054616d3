//! A recording segment as stored: what is written, and how a copy is checked without the key
//! that decrypts it. All integers are big-endian.
//!
//! ```text
//! segment := "DSREC1\n" header chunk* trailer?
//! header  := u32 length, then that many bytes of JSON (`Header`)
//! chunk   := 'C' u32 seq, i64 t0_unix_ms, i64 t1_unix_ms, u32 length, ciphertext, chain[32]
//! trailer := 'T' u32 length, then that many bytes of JSON (`Trailer`)
//! ```
//!
//! - **Plaintext of a chunk**: records `u32 delta_ms (from the header's t0) | u8 kind | u32 length
//!   | payload`. Kind 0 is what the display sent, from the RFB handshake on (security type None),
//!   so each segment plays alone; nothing the user sends is ever recorded.
//! - **Encryption**: AES-256-GCM under the segment's data key (wrapped by the key service in the
//!   header), nonce = four zero bytes then the chunk's u64 sequence, additional data = the
//!   header's hash and the sequence.
//! - **Chain**: `h(-1) = SHA-256(magic ‖ header)`; `h(i) = SHA-256(h(i-1) ‖ seq ‖ t0 ‖ t1 ‖
//!   SHA-256(ciphertext))`, stored after each chunk, so the first bad chunk is named. It covers
//!   the stored bytes: anyone can check it, no key needed.
//! - **Trailer**: the last chain hash and the chunk count, signed (Ed25519) by the node's trail key.
//!   A segment without one was cut off. Its SHA-256 over every stored byte is the segment's hash,
//!   which the next segment's header names and the trail's `RecordingSegmentSealed` records.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MAGIC: &[u8; 7] = b"DSREC1\n";
/// A record of what the display sent.
pub const DISPLAY: u8 = 0;
/// What the display's records hold: the recorder's connection, as the server sent it.
pub const DISPLAY_FORMAT: &str = "RFB 3.8 from ProtocolVersion, security None; 32 bpp, depth 24, little-endian true colour, red/green/blue shifts 0/8/16; ZRLE, CopyRect, raw, DesktopSize";
const CHUNK_HEAD: usize = 1 + 4 + 8 + 8 + 4;
/// Larger than any chunk the recorder writes (1 MiB of records), with room for its records' heads.
const MAX_CHUNK: usize = 4 << 20;
const MAX_JSON: usize = 64 << 10;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub session_id: String,
    pub segment: u64,
    pub node: String,
    pub t0_unix_ms: i64,
    /// The SHA-256 of the segment before, `None` for the first.
    pub prev_segment_sha256: Option<String>,
    pub cipher: String,
    /// How the display's bytes are to be read ([`DISPLAY_FORMAT`]).
    pub display: String,
    /// The key service's blob that holds the data key (base64), and the key that wraps it.
    pub key_id: String,
    pub wrapped_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Trailer {
    pub chunks: u32,
    pub ended_unix_ms: i64,
    pub chain: String,
    /// False when the segment was sealed after its recorder stopped without sealing it (a crash):
    /// what its last unwritten seconds held is lost.
    pub complete: bool,
    /// True when the recording ends with this segment.
    pub ends_recording: bool,
    pub signer: String,
    pub signature: String,
}

impl Trailer {
    /// What the signature covers: the chain covers the header (the session, the segment, the
    /// segment before) and every chunk.
    pub fn string_to_sign(&self, header: &Header) -> String {
        format!(
            "DSREC1\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            header.session_id, header.segment, self.chain, self.chunks, self.ended_unix_ms, self.complete, self.ends_recording
        )
    }
}

/// The bytes a segment starts with, and the chain's first link.
pub fn header_bytes(header: &Header) -> (Vec<u8>, [u8; 32]) {
    let json = serde_json::to_vec(header).expect("a header serializes");
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(json.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&json);
    let first = Sha256::digest(&bytes).into();
    (bytes, first)
}

fn nonce(seq: u32) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&u64::from(seq).to_be_bytes());
    nonce
}

fn aad(header_hash: &[u8; 32], seq: u32) -> Vec<u8> {
    [header_hash.as_slice(), &seq.to_be_bytes()].concat()
}

fn link(previous: &[u8; 32], seq: u32, t0: i64, t1: i64, ciphertext: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(seq.to_be_bytes());
    hasher.update(t0.to_be_bytes());
    hasher.update(t1.to_be_bytes());
    hasher.update(Sha256::digest(ciphertext));
    hasher.finalize().into()
}

/// Writes one segment's chunks: encrypts each and extends the chain.
pub struct ChunkWriter {
    cipher: Aes256Gcm,
    header_hash: [u8; 32],
    pub chain: [u8; 32],
    pub chunks: u32,
}

impl ChunkWriter {
    pub fn new(data_key: &[u8; 32], header_hash: [u8; 32]) -> ChunkWriter {
        let cipher = Aes256Gcm::new_from_slice(data_key).expect("32 bytes is an AES-256 key");
        ChunkWriter { cipher, header_hash, chain: header_hash, chunks: 0 }
    }

    /// The stored bytes of the next chunk, holding `plaintext` (records) seen from `t0` to `t1`.
    pub fn chunk(&mut self, plaintext: &[u8], t0: i64, t1: i64) -> Vec<u8> {
        let seq = self.chunks;
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce(seq)), Payload { msg: plaintext, aad: &aad(&self.header_hash, seq) })
            .expect("AES-GCM encryption of a bounded chunk cannot fail");
        self.chain = link(&self.chain, seq, t0, t1, &ciphertext);
        self.chunks += 1;
        let mut bytes = Vec::with_capacity(CHUNK_HEAD + ciphertext.len() + 32);
        bytes.push(b'C');
        bytes.extend_from_slice(&seq.to_be_bytes());
        bytes.extend_from_slice(&t0.to_be_bytes());
        bytes.extend_from_slice(&t1.to_be_bytes());
        bytes.extend_from_slice(&(ciphertext.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&ciphertext);
        bytes.extend_from_slice(&self.chain);
        bytes
    }
}

/// The stored bytes of a trailer.
pub fn trailer_bytes(trailer: &Trailer) -> Vec<u8> {
    let json = serde_json::to_vec(trailer).expect("a trailer serializes");
    let mut bytes = vec![b'T'];
    bytes.extend_from_slice(&(json.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&json);
    bytes
}

/// One record to add to a chunk's plaintext.
pub fn push_record(plaintext: &mut Vec<u8>, delta_ms: u32, kind: u8, payload: &[u8]) {
    plaintext.extend_from_slice(&delta_ms.to_be_bytes());
    plaintext.push(kind);
    plaintext.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    plaintext.extend_from_slice(payload);
}

/// A chunk as read back.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub seq: u32,
    pub t1: i64,
    pub ciphertext: std::ops::Range<usize>,
    /// Where the chunk ends in the segment's bytes.
    pub end: usize,
}

/// A segment read back and checked as far as its stored bytes allow.
#[derive(Debug)]
pub struct Parsed {
    pub header: Header,
    pub header_hash: [u8; 32],
    /// Where the header ends in the segment's bytes.
    pub header_end: usize,
    /// The chunks whose chain holds, in order.
    pub chunks: Vec<Chunk>,
    pub trailer: Option<Trailer>,
    /// The first thing wrong, naming the chunk; `None` when every stored byte checks.
    pub problem: Option<String>,
}

impl Parsed {
    /// The chain's last good link.
    pub fn chain(&self, bytes: &[u8]) -> [u8; 32] {
        self.chunks.last().map_or(self.header_hash, |c| bytes[c.end - 32..c.end].try_into().expect("32 bytes"))
    }

    /// Where the last good chunk ends.
    pub fn good_len(&self) -> usize {
        self.chunks.last().map_or(self.header_end, |c| c.end)
    }
}

/// Reads a segment's stored bytes: the header, each chunk with its chain link, the trailer.
/// Fails only when not even the header can be read.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or("it does not start with DSREC1: not a recording segment")?;
    let length = rest.get(..4).map(|l| u32::from_be_bytes(l.try_into().expect("4 bytes")) as usize).ok_or("its header is cut off")?;
    if length > MAX_JSON {
        return Err(format!("its header claims {length} bytes"));
    }
    let json = rest.get(4..4 + length).ok_or("its header is cut off")?;
    let header: Header = serde_json::from_slice(json).map_err(|e| format!("its header is not valid: {e}"))?;
    let header_end = MAGIC.len() + 4 + length;
    let header_hash: [u8; 32] = Sha256::digest(&bytes[..header_end]).into();
    let mut parsed = Parsed { header, header_hash, header_end, chunks: Vec::new(), trailer: None, problem: None };
    let mut at = header_end;
    let mut chain = header_hash;
    while at < bytes.len() && parsed.problem.is_none() {
        let index = parsed.chunks.len();
        match bytes[at] {
            b'C' => match read_chunk(bytes, at, index as u32, &chain) {
                Ok(chunk) => {
                    chain = bytes[chunk.end - 32..chunk.end].try_into().expect("32 bytes");
                    at = chunk.end;
                    parsed.chunks.push(chunk);
                }
                Err(problem) => parsed.problem = Some(format!("chunk {index}: {problem}")),
            },
            b'T' => {
                match read_trailer(bytes, at) {
                    Ok(trailer) => parsed.trailer = Some(trailer),
                    Err(problem) => parsed.problem = Some(format!("the trailer: {problem}")),
                }
                break;
            }
            other => parsed.problem = Some(format!("chunk {index}: unknown block type {other:#04x} at byte {at}")),
        }
    }
    Ok(parsed)
}

fn read_chunk(bytes: &[u8], at: usize, expected: u32, previous: &[u8; 32]) -> Result<Chunk, String> {
    let head = bytes.get(at..at + CHUNK_HEAD).ok_or("cut off in its head")?;
    let seq = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
    let t0 = i64::from_be_bytes(head[5..13].try_into().expect("8 bytes"));
    let t1 = i64::from_be_bytes(head[13..21].try_into().expect("8 bytes"));
    let length = u32::from_be_bytes(head[21..25].try_into().expect("4 bytes")) as usize;
    if seq != expected {
        return Err(format!("numbered {seq} where {expected} belongs"));
    }
    if length > MAX_CHUNK {
        return Err(format!("claims {length} bytes"));
    }
    let start = at + CHUNK_HEAD;
    let end = start + length + 32;
    let stored = bytes.get(start..end).ok_or("cut off (the segment is truncated)")?;
    let (ciphertext, link_stored) = stored.split_at(length);
    if link(previous, seq, t0, t1, ciphertext).as_slice() != link_stored {
        return Err("its hash chain does not hold (its bytes, time or order were changed)".into());
    }
    Ok(Chunk { seq, t1, ciphertext: start..start + length, end })
}

fn read_trailer(bytes: &[u8], at: usize) -> Result<Trailer, String> {
    let length = bytes.get(at + 1..at + 5).map(|l| u32::from_be_bytes(l.try_into().expect("4 bytes")) as usize).ok_or("cut off")?;
    if length > MAX_JSON {
        return Err(format!("claims {length} bytes"));
    }
    let json = bytes.get(at + 5..at + 5 + length).ok_or("cut off")?;
    if at + 5 + length != bytes.len() {
        return Err(format!("{} bytes follow it", bytes.len() - at - 5 - length));
    }
    serde_json::from_slice(json).map_err(|e| format!("not valid: {e}"))
}

/// Decrypts one chunk's records: `(delta_ms, kind, payload)`.
pub fn open_chunk(data_key: &[u8; 32], parsed: &Parsed, bytes: &[u8], chunk: &Chunk) -> Result<Vec<(u32, u8, Vec<u8>)>, String> {
    let cipher = Aes256Gcm::new_from_slice(data_key).expect("32 bytes is an AES-256 key");
    let plaintext = cipher
        .decrypt(
            Nonce::from_slice(&nonce(chunk.seq)),
            Payload { msg: &bytes[chunk.ciphertext.clone()], aad: &aad(&parsed.header_hash, chunk.seq) },
        )
        .map_err(|_| format!("chunk {} does not decrypt with the segment's key", chunk.seq))?;
    let mut records = Vec::new();
    let mut rest = plaintext.as_slice();
    while !rest.is_empty() {
        let head = rest.get(..9).ok_or_else(|| format!("chunk {} ends inside a record", chunk.seq))?;
        let delta = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
        let length = u32::from_be_bytes(head[5..9].try_into().expect("4 bytes")) as usize;
        let payload = rest.get(9..9 + length).ok_or_else(|| format!("chunk {} ends inside a record", chunk.seq))?;
        records.push((delta, head[4], payload.to_vec()));
        rest = &rest[9 + length..];
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            session_id: "s-1".into(),
            segment: 0,
            node: "local".into(),
            t0_unix_ms: 1_000,
            prev_segment_sha256: None,
            cipher: "AES-256-GCM".into(),
            display: DISPLAY_FORMAT.into(),
            key_id: "k".into(),
            wrapped_key: "w".into(),
        }
    }

    fn segment(chunks: usize) -> (Vec<u8>, [u8; 32]) {
        let key = [7u8; 32];
        let (mut bytes, first) = header_bytes(&header());
        let mut writer = ChunkWriter::new(&key, first);
        for i in 0..chunks {
            let mut plaintext = Vec::new();
            push_record(&mut plaintext, i as u32 * 10, DISPLAY, format!("frame {i}").as_bytes());
            bytes.extend(writer.chunk(&plaintext, 1_000 + i as i64, 1_001 + i as i64));
        }
        (bytes, writer.chain)
    }

    #[test]
    fn a_segment_reads_back_and_decrypts() {
        let (bytes, chain) = segment(3);
        let parsed = parse(&bytes).expect("parses");
        assert_eq!(parsed.problem, None);
        assert_eq!(parsed.chunks.len(), 3);
        assert_eq!(parsed.chain(&bytes), chain);
        let records = open_chunk(&[7u8; 32], &parsed, &bytes, &parsed.chunks[2]).expect("decrypts");
        assert_eq!(records, vec![(20, DISPLAY, b"frame 2".to_vec())]);
        assert!(open_chunk(&[8u8; 32], &parsed, &bytes, &parsed.chunks[2]).is_err(), "another key must not decrypt");
    }

    #[test]
    fn a_changed_byte_or_a_cut_names_its_chunk() {
        let (bytes, _) = segment(3);
        let parsed = parse(&bytes).expect("parses");
        let second = parsed.chunks[1].ciphertext.start + 2;
        let mut flipped = bytes.clone();
        flipped[second] ^= 1;
        assert_eq!(parse(&flipped).expect("parses").problem.as_deref().map(|p| p.starts_with("chunk 1:")), Some(true));
        let cut = parse(&bytes[..bytes.len() - 5]).expect("parses");
        assert_eq!(cut.chunks.len(), 2);
        assert!(cut.problem.expect("a problem").contains("truncated"));
    }
}
