//! The writer's upkeep between batches: checkpoints, rotation, digests, a backup's cut and
//! the last of it at close. Each first makes every record written durable: what is signed,
//! sealed or cut is on disk.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

use chrono::Utc;

use super::{Cut, RECHECK, WriterState, next_boundary};
use crate::error::{TrailError, io};
use crate::files::Checkpoint;
use crate::layout;
use crate::reserve::{Open, Reserved};
use crate::seal_job::SealJob;
use crate::signing;

impl WriterState {
    pub(super) fn maintain(&mut self) -> Result<(), TrailError> {
        if self.unsynced_since.is_some_and(|since| since.elapsed() >= self.options.unsynced_at_most) {
            self.sync()?;
        }
        // The disk may have filled, or space been freed, since the last write (which checked).
        if self.last_write.elapsed() >= RECHECK {
            self.check_reserve();
        }
        let pending = self.sequence - self.checkpointed;
        if pending > 0
            && (pending >= self.options.checkpoint_records || self.last_checkpoint_at.elapsed() >= self.options.checkpoint_interval)
        {
            self.checkpoint()?;
        }
        // The hour's digest, once the sealer has written it, is named by a checkpoint at once.
        if self.digest_pending.as_ref().is_some_and(|written| !matches!(written.try_recv(), Err(mpsc::TryRecvError::Empty))) {
            self.digest_pending = None;
            self.checkpoint()?;
        }
        if Utc::now() >= self.next_digest_at {
            self.start_digest()?;
        } else if self.active.as_ref().is_some_and(|a| {
            a.log.size >= self.options.rotate_bytes || (a.log.size > 0 && a.opened.elapsed() >= self.options.rotate_interval)
        }) {
            self.rotate();
        }
        Ok(())
    }

    pub(super) fn checkpoint(&mut self) -> Result<(), TrailError> {
        // A checkpoint signs only durable records.
        self.sync()?;
        let now = Utc::now();
        let time = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let log_file = self.active.as_ref().map(|a| self.layout.object_key(&a.log.path)).unwrap_or_default();
        let last_digest = self.last_digest.lock().expect("digest lock").clone();
        let digest_signature = last_digest.as_ref().map_or("null", |d| d.signature.as_str()).to_owned();
        let message = signing::checkpoint_string_to_sign(
            &time,
            self.sequence,
            &self.last_hash,
            &log_file,
            &digest_signature,
            &self.checkpoint_signature,
        );
        let signature = self.signer.sign(message.as_bytes());
        let checkpoint = Checkpoint {
            checkpoint_time: time,
            sequence_number: self.sequence,
            record_hash: self.last_hash.clone(),
            log_file,
            last_digest_s3_object: last_digest.as_ref().map(|d| d.object.clone()),
            last_digest_signature: last_digest.map(|d| d.signature),
            public_key_fingerprint: self.signer.fingerprint(),
            signature_algorithm: signing::ALGORITHM.into(),
            previous_checkpoint_signature: self.checkpoint_signature.clone(),
            signature: signature.clone(),
        };
        let path = self.layout.checkpoint_file(&now);
        if self.checkpoint_file.as_ref().is_none_or(|c| c.path != path) {
            let opened = layout::create_parent(&path)
                .and_then(|()| Reserved::open(&path, (self.options.reserve_bytes / 16).max(64 * 1024), Open::Append))
                .and_then(|opened| layout::sync_dir(&path).map(|()| opened));
            match opened {
                Ok((file, whole)) if whole || self.checkpoint_file.is_none() => self.checkpoint_file = Some(file),
                // On a full disk, the new hour's checkpoints go on in the last hour's file
                // (validation reads checkpoint files in order, whatever hour they name).
                Ok((file, _)) => {
                    if file.size == 0 {
                        let _ = std::fs::remove_file(&file.path);
                    }
                }
                Err(_) if self.checkpoint_file.is_some() => {}
                Err(err) => return Err(io(&path)(err)),
            }
        }
        let file = self.checkpoint_file.as_mut().expect("opened above");
        let mut line = serde_json::to_vec(&checkpoint).expect("a checkpoint serializes");
        line.push(b'\n');
        let written = file.path.clone();
        file.append(&line).map_err(io(&written))?;
        if let Some(witness) = &self.options.witness {
            let copy = witness.join(self.layout.object_key(&written));
            if let Err(err) = crate::files::append_durably(&copy, &line) {
                tracing::error!(error = %err, path = %copy.display(), "cannot write a checkpoint to the trail's witness");
            }
        }
        self.checkpoint_signature = signature;
        self.checkpointed = self.sequence;
        self.last_checkpoint_at = Instant::now();
        Ok(())
    }

    /// Hands the open log file to the sealer and opens the next one with its reserve. On a
    /// full disk (no whole reserve for a new file) the open file goes on.
    pub(super) fn rotate(&mut self) {
        self.log_errors(WriterState::sync);
        if self.active.as_ref().is_none_or(|a| a.log.size == 0) || self.on_reserve.load(Ordering::Acquire) {
            return;
        }
        match self.open_log() {
            Ok((next, true)) => {
                // A sealed file ends at a checkpoint: the bucket receives checkpoints only as
                // far as its sealed files reach, and so still has every record signed.
                if self.sequence > self.checkpointed {
                    self.log_errors(WriterState::checkpoint);
                }
                if let Some(old) = self.active.replace(next) {
                    let _ = self.sealer.send(SealJob::Seal(old.log.path));
                }
            }
            Ok((next, false)) => {
                let _ = std::fs::remove_file(&next.log.path);
                tracing::warn!("no room for a new audit log file with its reserve; the open one goes on");
            }
            Err(err) => tracing::warn!(error = %err, "cannot open a new audit log file; the open one goes on"),
        }
    }

    /// Rotates and has the sealer write the digest that ends now, without waiting for it:
    /// the sealer first seals the file just closed (up to `rotate_bytes` to read and compress),
    /// and appends go on meanwhile. `maintain` checkpoints once the digest is written.
    fn start_digest(&mut self) -> Result<(), TrailError> {
        if self.sequence > self.checkpointed {
            self.checkpoint()?;
        }
        self.rotate();
        let now = Utc::now();
        let (done, written) = mpsc::channel();
        let _ = self.sealer.send(SealJob::Digest { end: now, done });
        self.digest_pending = Some(written);
        self.next_digest_at = next_boundary(now, self.options.digest_interval);
        Ok(())
    }

    /// The same, waiting for the digest (at shutdown, and when asked for one now).
    pub(super) fn digest(&mut self) -> Result<(), TrailError> {
        self.start_digest()?;
        if let Some(written) = self.digest_pending.take() {
            let _ = written.recv();
        }
        // A checkpoint after the digest names it, so deleting the newest digest is noticed.
        self.checkpoint()
    }

    pub(super) fn hold(&mut self, cut: Cut, done: &std::sync::mpsc::Sender<()>) {
        // Held records are written and made durable first, as for any checkpoint.
        self.log_errors(WriterState::sync);
        let signed = if self.sequence > self.checkpointed { self.checkpoint().map_err(|e| e.to_string()) } else { Ok(()) };
        let open = [self.active.as_ref().map(|a| &a.log), self.checkpoint_file.as_ref()];
        cut(signed.map(|()| open.into_iter().flatten().map(|file| (file.path.clone(), file.size)).collect()));
        let _ = done.send(());
    }

    pub(super) fn finish(&mut self) {
        // Nothing is handed from now on; what was is written by the sync.
        self.handed.close();
        self.log_errors(WriterState::sync);
        self.log_errors(|s| s.digest());
        // The file the last rotation opened, if nothing was written to it.
        if let Some(active) = self.active.take_if(|a| a.log.size == 0) {
            let path = active.log.path.clone();
            drop(active);
            let _ = std::fs::remove_file(&path).and_then(|()| layout::sync_dir(&path));
        }
        let (done, wait) = std::sync::mpsc::channel();
        let _ = self.sealer.send(SealJob::Stop(done));
        let _ = wait.recv();
    }
}
