//! One segment being written: its records gathered into chunks, each chunk encrypted, chained
//! and made durable in the node's spool (`<data-dir>/recordings/<session>/<segment>.part`) at
//! most a few seconds after what it holds was seen, then sealed with a signed trailer.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use super::format::{self, ChunkWriter, Header, Trailer};
use crate::core::error::ActionError;
use crate::core::platform::Platform;

/// A chunk is written once it holds this much …
pub(super) const CHUNK_BYTES: usize = 1 << 20;
/// … or its first record is this old (what a crash may lose, at most).
pub(super) const CHUNK_MS: i64 = 5_000;

/// A segment being written.
pub(super) struct Segment {
    pub header: Header,
    pub path: PathBuf,
    file: tokio::fs::File,
    writer: ChunkWriter,
    /// Records not yet in a chunk, and when the first of them was seen.
    pending: Vec<u8>,
    pending_since: Option<i64>,
    /// Stored bytes so far.
    pub bytes: u64,
}

impl Segment {
    /// Creates the segment's spool file with its header, durable before anything is recorded.
    pub async fn create(path: PathBuf, header: Header, data_key: &[u8; 32]) -> Result<Segment, ActionError> {
        let (bytes, first) = format::header_bytes(&header);
        if let Some(dir) = path.parent() {
            create_private_dir(dir).await?;
        }
        let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).await.map_err(io(&path))?;
        file.write_all(&bytes).await.map_err(io(&path))?;
        file.sync_data().await.map_err(io(&path))?;
        // The file's name is durable too, or a power cut could lose the whole segment.
        if let Some(dir) = path.parent() {
            sync_dir(dir).await?;
        }
        Ok(Segment {
            header,
            path,
            file,
            writer: ChunkWriter::new(data_key, first),
            pending: Vec::new(),
            pending_since: None,
            bytes: bytes.len() as u64,
        })
    }

    /// Adds what the display sent at `at` (Unix ms); writes a chunk when one is due.
    pub async fn record(&mut self, at: i64, kind: u8, payload: &[u8]) -> Result<(), ActionError> {
        let delta = (at - self.header.t0_unix_ms).clamp(0, i64::from(u32::MAX)) as u32;
        format::push_record(&mut self.pending, delta, kind, payload);
        self.pending_since.get_or_insert(at);
        if self.pending.len() >= CHUNK_BYTES { self.flush(at).await } else { Ok(()) }
    }

    /// Writes the pending records as a chunk if the oldest is `CHUNK_MS` old at `now`.
    pub async fn tick(&mut self, now: i64) -> Result<(), ActionError> {
        match self.pending_since {
            Some(since) if now - since >= CHUNK_MS => self.flush(now).await,
            _ => Ok(()),
        }
    }

    /// Writes the pending records as one chunk, durably.
    pub async fn flush(&mut self, now: i64) -> Result<(), ActionError> {
        let Some(since) = self.pending_since.take() else { return Ok(()) };
        let chunk = self.writer.chunk(&self.pending, since, now.max(since));
        self.pending.clear();
        self.file.write_all(&chunk).await.map_err(io(&self.path))?;
        self.file.sync_data().await.map_err(io(&self.path))?;
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    /// Writes the pending records and the signed trailer; the segment's stored bytes are final.
    pub async fn seal(mut self, plane: &Platform, now: i64, ends_recording: bool) -> Result<Sealed, ActionError> {
        self.flush(now).await?;
        let chain = hex::encode(self.writer.chain);
        let trailer = signed_trailer(plane, &self.header, self.writer.chunks, now, chain, true, ends_recording);
        self.file.write_all(&format::trailer_bytes(&trailer)).await.map_err(io(&self.path))?;
        self.file.sync_data().await.map_err(io(&self.path))?;
        drop(self.file);
        let bytes = tokio::fs::read(&self.path).await.map_err(io(&self.path))?;
        Ok(Sealed::new(self.header, trailer, bytes, self.path))
    }
}

/// A sealed segment, still in the spool until it is stored and recorded.
pub(super) struct Sealed {
    pub header: Header,
    pub trailer: Trailer,
    pub bytes: Vec<u8>,
    /// Of `bytes`: what the next segment's header names and the trail records.
    pub sha256: String,
    pub path: PathBuf,
}

impl Sealed {
    fn new(header: Header, trailer: Trailer, bytes: Vec<u8>, path: PathBuf) -> Sealed {
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        Sealed { header, trailer, bytes, sha256, path }
    }
}

pub(super) fn signed_trailer(
    plane: &Platform,
    header: &Header,
    chunks: u32,
    ended: i64,
    chain: String,
    complete: bool,
    ends_recording: bool,
) -> Trailer {
    let mut trailer =
        Trailer { chunks, ended_unix_ms: ended, chain, complete, ends_recording, signer: String::new(), signature: String::new() };
    trailer.signature = plane.signer.sign(trailer.string_to_sign(header).as_bytes());
    trailer.signer = plane.signer.fingerprint();
    trailer
}

/// Seals what a recorder left in the spool without a trailer (the server stopped mid-segment):
/// the chunks whose chain holds are kept, anything after them cut, and a trailer marks the
/// segment incomplete and the recording ended there. A segment already sealed is returned as
/// is; one whose header never reached the disk is set aside as `.unreadable`, never deleted.
pub(super) async fn seal_leftover(plane: &Platform, path: &Path) -> Result<Option<Sealed>, ActionError> {
    let bytes = tokio::fs::read(path).await.map_err(io(path))?;
    let parsed = match format::parse(&bytes) {
        Ok(parsed) => parsed,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = err, "setting aside a recording segment with no readable header");
            tokio::fs::rename(path, path.with_extension("unreadable")).await.map_err(io(path))?;
            return Ok(None);
        }
    };
    if let (Some(trailer), None) = (&parsed.trailer, &parsed.problem) {
        let (header, trailer) = (parsed.header.clone(), trailer.clone());
        return Ok(Some(Sealed::new(header, trailer, bytes, path.to_owned())));
    }
    let good = parsed.good_len();
    let ended = parsed.chunks.last().map_or(parsed.header.t0_unix_ms, |c| c.t1);
    let chain = hex::encode(parsed.chain(&bytes));
    let trailer = signed_trailer(plane, &parsed.header, parsed.chunks.len() as u32, ended, chain, false, true);
    let tail = format::trailer_bytes(&trailer);
    // Cut to the last good chunk and append: a crash meanwhile leaves the good chunks in place.
    let mut file = tokio::fs::OpenOptions::new().write(true).open(path).await.map_err(io(path))?;
    file.set_len(good as u64).await.map_err(io(path))?;
    file.seek(std::io::SeekFrom::End(0)).await.map_err(io(path))?;
    file.write_all(&tail).await.map_err(io(path))?;
    file.sync_data().await.map_err(io(path))?;
    let kept = [&bytes[..good], tail.as_slice()].concat();
    Ok(Some(Sealed::new(parsed.header, trailer, kept, path.to_owned())))
}

async fn sync_dir(dir: &Path) -> Result<(), ActionError> {
    let handle = tokio::fs::File::open(dir).await.map_err(io(dir))?;
    handle.sync_all().await.map_err(io(dir))
}

async fn create_private_dir(dir: &Path) -> Result<(), ActionError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io(&dir)))
        .await
        .map_err(ActionError::internal)?
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ActionError + '_ {
    move |err| ActionError::internal(format!("recording spool `{}`: {err}", path.display()))
}
