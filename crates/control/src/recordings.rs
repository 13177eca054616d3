//! Session recording: what a recorded session's display shows, kept for auditors.
//!
//! The gateway's recorder (its own view-only RFB connection to the display) hands this module
//! what the display sends; nothing the user sends (keys, pointer, clipboard) ever reaches it.
//! A recording is a run of segments that each play alone (the recorder reconnects at each):
//! - `format`: a segment's stored bytes (hash-chained chunks encrypted under a data key the key
//!   service wraps, a signed trailer), and reading them back; `verify`: checking a copy offline.
//! - `segment`: the segment being written, durable in the node's spool chunk by chunk.
//! - this file: opening a session's recording, storing each sealed segment in the
//!   `datasandbox-recordings` bucket (which no policy lets anyone reach) with a row and a
//!   `RecordingSegmentSealed` record in the trail naming its SHA-256, and, at start-up, sealing
//!   what a crash left in the spool as incomplete;
//! - `actions`: the auditor's actions (describe, play, export), each with a justification.

mod actions;
pub mod format;
mod segment;
mod stored;
pub mod verify;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rand::RngCore as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

pub(crate) use actions::{describe, export, play};
use format::Header;
use segment::{Sealed, Segment};
use stored::{RECORDINGS_BUCKET, key_context, object_key, recordings_key};

use crate::core::codec::encode_base64;
use crate::core::error::ActionError;
use crate::core::pipeline::Pipeline;
use crate::core::platform::{Effect, Platform, ServiceEvent};
use crate::core::store::now_millis;

/// Who stores segments and records their sealing.
const RECORDER: &str = "gateway.datasandbox";
/// A segment is sealed and a new one begun at this age (in seconds, scaled in tests) …
const SEGMENT_SECONDS: i64 = 300;
/// … or this size.
const SEGMENT_BYTES: u64 = 64 << 20;

/// The recordings of this node's sessions.
pub(crate) struct Recordings {
    pipeline: Pipeline,
    /// Sessions whose recording is open on this node: one recorder each.
    open: Mutex<HashSet<String>>,
    /// Those of them with a segment begun: recording now.
    live: Mutex<HashSet<String>>,
    /// Set once the recordings bucket is known to exist.
    bucket: tokio::sync::OnceCell<()>,
}

impl Recordings {
    pub(crate) fn new(pipeline: Pipeline) -> Recordings {
        Recordings { pipeline, open: Mutex::default(), live: Mutex::default(), bucket: tokio::sync::OnceCell::new() }
    }

    pub(crate) fn live(&self, session_id: &str) -> bool {
        self.live.lock().expect("live recordings").contains(session_id)
    }

    fn plane(&self) -> &Platform {
        &self.pipeline.platform
    }

    /// Opens `session_id`'s recording on this node, continuing after its last stored segment;
    /// `None` when a recorder already holds it.
    pub(crate) async fn open(self: &Arc<Self>, session_id: &str) -> Result<Option<Recording>, ActionError> {
        if !self.open.lock().expect("open recordings").insert(session_id.to_owned()) {
            return Ok(None);
        }
        let guard = OpenGuard { recordings: self.clone(), session_id: session_id.to_owned() };
        // The bucket appears with the first recording, and is made once per run.
        self.bucket.get_or_try_init(|| crate::storage::ensure_service_bucket(self.plane(), RECORDINGS_BUCKET)).await?;
        let last = sqlx::query("SELECT segment, sha256 FROM recording_segments WHERE session_id = $1 ORDER BY segment DESC LIMIT 1")
            .bind(session_id)
            .fetch_optional(&self.plane().store.pool)
            .await?;
        let (next, previous) = match last {
            Some(row) => (row.try_get::<i64, _>("segment")? as u64 + 1, Some(row.try_get::<String, _>("sha256")?)),
            None => (0, None),
        };
        let stored: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM recording_segments WHERE session_id = $1")
            .bind(session_id)
            .fetch_one(&self.plane().store.pool)
            .await?;
        // Its bounds are checked as each segment begins (the first at once), before it counts
        // as recording: a recording at a bound never lets a stream open.
        Ok(Some(Recording { guard, next, previous, segment: None, storing: None, sealed_bytes: stored.max(0) as u64, users_other: 0 }))
    }

    /// What the recordings of the user's other sessions hold, of segments that ended in the
    /// last 24 hours (scaled in tests).
    async fn users_other_bytes(&self, session_id: &str) -> Result<u64, ActionError> {
        let plane = self.plane();
        let since = now_millis() - 24 * 3600 * i64::from(plane.spec.timeout_scale_ms);
        let bytes: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(r.size), 0) AS BIGINT) FROM recording_segments r
             JOIN sessions other ON other.session_id = r.session_id
             JOIN sessions this ON this.session_id = $1
             WHERE other.user_id = this.user_id AND other.authentication_type = this.authentication_type
               AND COALESCE(other.issuer, '') = COALESCE(this.issuer, '') AND r.session_id <> $1 AND r.ended > $2",
        )
        .bind(session_id)
        .bind(since)
        .fetch_one(&plane.store.pool)
        .await?;
        Ok(bytes.max(0) as u64)
    }

    fn spool(&self, session_id: &str, segment: u64) -> PathBuf {
        self.plane().data_dir.join("recordings").join(session_id).join(format!("{segment:06}.part"))
    }

    /// Stores a sealed segment, write-once, then its trail record and its row, then removes it
    /// from the spool. Each step may be repeated: a crash between them leaves the spool file,
    /// which the next start stores again (the same bytes under the same key are accepted; other
    /// bytes are refused; the trail record is written again only while no row names it).
    async fn store(&self, sealed: Sealed) -> Result<(), ActionError> {
        let plane = self.plane();
        let Sealed { header, trailer, bytes, sha256: sha, path } = sealed;
        let key = object_key(&header.session_id, header.segment);
        let size = bytes.len() as i64;
        match crate::storage::write_as_service(plane, RECORDER, RECORDINGS_BUCKET, &key, bytes.into(), true).await {
            Ok(()) => {}
            Err(err) if err.status == 412 => {
                let stored = crate::storage::read_internal(plane, RECORDINGS_BUCKET, &key).await?;
                if hex::encode(Sha256::digest(&stored)) != sha {
                    return Err(ActionError::internal(format!(
                        "`{key}` already holds other bytes; the spool's copy stays at {}",
                        path.display()
                    )));
                }
            }
            Err(err) => return Err(err),
        }
        let known = sqlx::query("SELECT sha256 FROM recording_segments WHERE session_id = $1 AND segment = $2")
            .bind(&header.session_id)
            .bind(header.segment as i64)
            .fetch_optional(&plane.store.pool)
            .await?;
        if known.is_none() {
            self.pipeline.record_service_event(sealed_event(&header, &trailer, &sha, size)).await?;
            sqlx::query(
                "INSERT INTO recording_segments (session_id, segment, node, object_key, size, sha256, started, ended, complete, last)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (session_id, segment) DO NOTHING",
            )
            .bind(&header.session_id)
            .bind(header.segment as i64)
            .bind(&header.node)
            .bind(&key)
            .bind(size)
            .bind(&sha)
            .bind(header.t0_unix_ms)
            .bind(trailer.ended_unix_ms)
            .bind(i64::from(trailer.complete))
            .bind(i64::from(trailer.ends_recording))
            .execute(&plane.store.pool)
            .await?;
        }
        if let Err(err) = tokio::fs::remove_file(&path).await {
            tracing::warn!(path = %path.display(), error = %err, "a stored recording segment stays in the spool");
        }
        // The session's spool directory goes with its last segment: removed earlier, it could
        // vanish between the next segment's making it and creating its file there.
        if trailer.ends_recording
            && let Some(dir) = path.parent()
        {
            let _ = tokio::fs::remove_dir(dir).await;
        }
        Ok(())
    }

    /// At start-up: seals and stores what recorders left in the spool (a crash, a kill): each
    /// segment is kept up to its last durable chunk and marked incomplete.
    pub(crate) async fn recover(&self) -> Result<usize, ActionError> {
        let root = self.plane().data_dir.join("recordings");
        let mut leftovers = Vec::new();
        let Ok(mut sessions) = std::fs::read_dir(&root) else { return Ok(0) };
        while let Some(Ok(session)) = sessions.next() {
            let Ok(files) = std::fs::read_dir(session.path()) else { continue };
            leftovers.extend(files.flatten().map(|f| f.path()).filter(|p| p.extension().is_some_and(|e| e == "part")));
        }
        leftovers.sort();
        let mut stored = 0;
        for path in leftovers {
            if let Some(sealed) = segment::seal_leftover(self.plane(), &path).await? {
                tracing::warn!(
                    session = sealed.header.session_id,
                    segment = sealed.header.segment,
                    "a recording segment was left unsealed; stored as incomplete"
                );
                self.store(sealed).await?;
                stored += 1;
            }
        }
        Ok(stored)
    }
}

/// The trail's record of a sealed segment: the anchor `recordings verify` checks it against.
fn sealed_event<'a>(header: &'a Header, trailer: &format::Trailer, sha: &str, size: i64) -> ServiceEvent<'a> {
    ServiceEvent {
        source: "streaming",
        name: "RecordingSegmentSealed",
        principal: RECORDER,
        parameters: json!({
            "SessionId": header.session_id,
            "Segment": header.segment,
            "Sha256": sha,
            "Bytes": size,
            "Chunks": trailer.chunks,
            "StartTime": crate::core::store::millis_to_rfc3339(header.t0_unix_ms),
            "EndTime": crate::core::store::millis_to_rfc3339(trailer.ended_unix_ms),
            "Complete": trailer.complete,
            "EndsRecording": trailer.ends_recording,
        }),
        effect: Effect::Recorded,
        ..ServiceEvent::default()
    }
}

/// Frees the session's recording when its recorder lets go of it.
struct OpenGuard {
    recordings: Arc<Recordings>,
    session_id: String,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.recordings.live.lock().expect("live recordings").remove(&self.session_id);
        self.recordings.open.lock().expect("open recordings").remove(&self.session_id);
    }
}

/// A session's recording, held by its recorder: segments begun, fed and sealed in turn. A
/// sealed segment is stored in the background while the next one records.
pub struct Recording {
    guard: OpenGuard,
    next: u64,
    previous: Option<String>,
    segment: Option<Segment>,
    /// The sealed segment being stored, if one is.
    storing: Option<tokio::task::JoinHandle<Result<(), ActionError>>>,
    /// What the session's sealed segments hold, stored or being stored.
    sealed_bytes: u64,
    /// What the user's other sessions' recordings of the last day hold (read at each segment).
    users_other: u64,
}

impl Recording {
    pub fn session_id(&self) -> &str {
        &self.guard.session_id
    }

    /// Begins the next segment: a fresh data key, wrapped by the recordings key.
    pub async fn begin_segment(&mut self) -> Result<(), ActionError> {
        self.room_left()?;
        self.users_other = self.guard.recordings.users_other_bytes(self.session_id()).await?;
        self.within_bounds(0)?;
        let recordings = &self.guard.recordings;
        let plane = recordings.plane();
        let key = recordings_key(plane).await?;
        let mut data_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut data_key);
        let wrapped = crate::keys::encrypt_with(plane, &key, &data_key, &key_context(self.session_id(), self.next)).await?;
        let header = Header {
            session_id: self.session_id().to_owned(),
            segment: self.next,
            node: plane.node.name.clone(),
            t0_unix_ms: now_millis(),
            prev_segment_sha256: self.previous.clone(),
            cipher: "AES-256-GCM".into(),
            display: format::DISPLAY_FORMAT.into(),
            key_id: key.id().to_owned(),
            wrapped_key: encode_base64(&wrapped),
        };
        let path = recordings.spool(self.session_id(), self.next);
        self.segment = Some(Segment::create(path, header, &data_key).await?);
        recordings.live.lock().expect("live recordings").insert(self.session_id().to_owned());
        Ok(())
    }

    /// Records what the display sent, now; past `recording.max_session_bytes` the recording
    /// cannot go on (and the session ends).
    pub async fn display(&mut self, bytes: &[u8]) -> Result<(), ActionError> {
        self.within_bounds(bytes.len() as u64)?;
        match &mut self.segment {
            Some(segment) => segment.record(now_millis(), format::DISPLAY, bytes).await,
            None => Err(ActionError::internal("a recording was fed before its segment began")),
        }
    }

    /// Whether `more` bytes keep the recording within its bounds: the session's
    /// (`recording.max_session_bytes`) and its user's day (`recording.max_user_bytes_per_day`).
    fn within_bounds(&self, more: u64) -> Result<(), ActionError> {
        let bounds = &self.guard.recordings.plane().current().recording;
        let session = self.sealed_bytes + self.segment.as_ref().map_or(0, |s| s.bytes) + more;
        let over = |what: String| Err(ActionError::new(429, crate::core::error::ErrorCode::LimitExceededException, what));
        if session > bounds.max_session_bytes {
            return over(format!(
                "the session's recording reached its bound of {} bytes (recording.max_session_bytes)",
                bounds.max_session_bytes
            ));
        }
        if self.users_other + session > bounds.max_user_bytes_per_day {
            return over(format!(
                "the user's recordings of the last 24 hours reached their bound of {} bytes (recording.max_user_bytes_per_day)",
                bounds.max_user_bytes_per_day
            ));
        }
        Ok(())
    }

    /// Writes what has waited long enough, and reports a segment that could not be stored;
    /// called a few times a second.
    pub async fn tick(&mut self) -> Result<(), ActionError> {
        if self.storing.as_ref().is_some_and(|task| task.is_finished()) {
            self.stored().await?;
        }
        self.room_left()?;
        match &mut self.segment {
            Some(segment) => segment.tick(now_millis()).await,
            None => Ok(()),
        }
    }

    /// Whether the segment is old or large enough to be sealed and another begun.
    pub fn segment_full(&self) -> bool {
        let plane = self.guard.recordings.plane();
        self.segment.as_ref().is_some_and(|s| {
            s.bytes >= SEGMENT_BYTES || now_millis() - s.header.t0_unix_ms >= SEGMENT_SECONDS * i64::from(plane.spec.timeout_scale_ms)
        })
    }

    /// Seals the current segment, stores it in the background, and begins the next. The one
    /// before must be stored by then: at most one segment waits in memory.
    pub async fn roll(&mut self) -> Result<(), ActionError> {
        self.stored().await?;
        if let Some(sealed) = self.seal(false).await? {
            let recordings = self.guard.recordings.clone();
            self.storing = Some(tokio::spawn(async move { recordings.store(sealed).await }));
        }
        self.begin_segment().await
    }

    /// Seals the last segment and waits until every segment is stored; every failure is
    /// reported, the first returned.
    pub async fn finish(mut self) -> Result<(), ActionError> {
        // Not recording from here on: no stream may open, or go on, on the strength of it.
        self.guard.recordings.live.lock().expect("live recordings").remove(self.session_id());
        let last = self.seal(true).await;
        let outcome = self.stored().await;
        let stored = match last {
            Ok(Some(sealed)) => self.guard.recordings.store(sealed).await,
            Ok(None) => Ok(()),
            Err(err) => Err(err),
        };
        outcome.and(stored)
    }

    /// Whether the node's disk still has `recording.min_free_bytes` free: recordings stop
    /// there, ending their sessions, before the disk is full and the trail, on its reserve,
    /// stops every action on the node (review finding).
    fn room_left(&self) -> Result<(), ActionError> {
        let plane = self.guard.recordings.plane();
        let floor = plane.current().recording.min_free_bytes;
        // The spool is made with the first segment: until then, the data directory it goes in.
        let spool = plane.data_dir.join("recordings");
        let free = sandbox::free_bytes(&spool).or_else(|_| sandbox::free_bytes(&plane.data_dir)).map_err(ActionError::internal)?;
        if free >= floor {
            return Ok(());
        }
        Err(ActionError::new(
            503,
            crate::core::error::ErrorCode::LimitExceededException,
            format!("the node's disk has {free} bytes free, under the {floor} recordings leave free (recording.min_free_bytes)"),
        ))
    }

    /// Waits for the segment being stored, if one is: its outcome.
    async fn stored(&mut self) -> Result<(), ActionError> {
        match self.storing.take() {
            Some(task) => task.await.map_err(ActionError::internal)?,
            None => Ok(()),
        }
    }

    async fn seal(&mut self, ends_recording: bool) -> Result<Option<Sealed>, ActionError> {
        let Some(segment) = self.segment.take() else { return Ok(None) };
        let sealed = segment.seal(self.guard.recordings.plane(), now_millis(), ends_recording).await?;
        self.sealed_bytes += sealed.bytes.len() as u64;
        self.previous = Some(sealed.sha256.clone());
        self.next += 1;
        Ok(Some(sealed))
    }
}
