//! Feeding the index: the writer's batches as they come (gathered into one transaction), the
//! trail's files at start (`catch_up`) and on `audit reindex` (`rebuild`). A batch the store
//! cannot take now is kept for the next try; a record whose row it refuses stands in by a
//! record of its own (`stand_in`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Index, IndexError, rows, stand_in};
use crate::chain;
use crate::error::TrailError;
use crate::files::read_log;
use crate::layout::{Kind, Layout};
use crate::writer::IndexBatch;

/// The most records the feeder holds back while the index cannot be written.
const MAX_BACKLOG: usize = 200_000;

/// How long after one insert the feeder gathers records for the next, unless a read waits:
/// one transaction for many records costs a fraction of one per record.
const GATHER: Duration = Duration::from_millis(100);

impl Index {
    /// Indexes batches from the writer, merging whatever has queued into one transaction. A
    /// batch the index cannot take (its disk is full: the trail is then writing refusals from
    /// its reserve) is kept and tried again, in order, so the index has no gap once space is
    /// freed; past [`MAX_BACKLOG`] records it is given up (`audit reindex` rebuilds).
    pub fn spawn_feeder(&self, mut receiver: tokio::sync::mpsc::UnboundedReceiver<IndexBatch>) {
        let index = self.clone();
        tokio::spawn(async move {
            let mut backlog: IndexBatch = Vec::new();
            let mut last_insert = tokio::time::Instant::now();
            loop {
                let next = if backlog.is_empty() {
                    receiver.recv().await
                } else {
                    match tokio::time::timeout(Duration::from_secs(1), receiver.recv()).await {
                        Ok(next) => next,
                        Err(_) => Some(Vec::new()),
                    }
                };
                let Some(batch) = next else { return };
                let mut batch = if backlog.is_empty() {
                    batch
                } else {
                    let mut merged = std::mem::take(&mut backlog);
                    merged.extend(batch);
                    merged
                };
                // A record that comes alone goes in at once; a stream of them goes in one
                // transaction per GATHER at most, unless a read waits for them.
                if batch.len() < 20_000 {
                    let _ = tokio::time::timeout_at(last_insert + GATHER, index.hurry.notified()).await;
                }
                while let Ok(more) = receiver.try_recv() {
                    batch.extend(more);
                    if batch.len() >= 20_000 {
                        break;
                    }
                }
                let lines: Vec<(u64, &[u8])> = batch.iter().map(|(s, l)| (*s, l.as_slice())).collect();
                let inserted = index.insert(&lines).await;
                last_insert = tokio::time::Instant::now();
                if let Err(err) = inserted {
                    if batch.len() <= MAX_BACKLOG {
                        tracing::warn!(error = %err, records = batch.len(), "audit index update failed; trying again");
                        backlog = batch;
                    } else {
                        tracing::error!(error = %err, "audit index update failed; `datasandbox audit reindex` rebuilds it from the trail");
                    }
                }
            }
        });
    }

    async fn insert(&self, lines: &[(u64, &[u8])]) -> Result<(), IndexError> {
        let _turn = self.feeding.lock().await;
        self.insert_in_turn(lines).await
    }

    /// `insert`, with the feeding turn already held. Lines whose rows the store refuses (see
    /// `IndexError::row_refused`) are tried again in halves, down to the record it refuses
    /// twice, which is indexed by a stand-in (see `stand_in`); if the store refuses that too,
    /// the record is not the cause, and the error stands.
    async fn insert_in_turn(&self, lines: &[(u64, &[u8])]) -> Result<(), IndexError> {
        let (err, why) = match self.insert_rows(lines).await {
            Err(err) => match err.row_refused() {
                Some(why) => (err, why),
                None => return Err(err),
            },
            inserted => return inserted,
        };
        let [(sequence, line)] = lines else {
            if lines.len() < 2 {
                return Err(err);
            }
            let (first, rest) = lines.split_at(lines.len() / 2);
            Box::pin(self.insert_in_turn(first)).await?;
            return Box::pin(self.insert_in_turn(rest)).await;
        };
        // Once more, alone: the same refusal again is the record's.
        match self.insert_rows(lines).await {
            Err(again) if again.row_refused().as_ref() == Some(&why) => {}
            other => return other,
        }
        // The fuller stand-in, then, if the store refuses that too, the minimal one; a failure of
        // the store meanwhile keeps the batch.
        let [fuller, minimal] = stand_in::stand_ins(&self.node, *sequence, line, &why);
        let stood = match self.insert_rows(&[(*sequence, &fuller)]).await {
            Err(refused) if refused.row_refused().is_some() => self.insert_rows(&[(*sequence, &minimal)]).await,
            stood => stood,
        };
        match stood {
            Ok(()) => {
                tracing::error!(node = %self.node, sequence, error = %err, "the audit index refused a record's row: a stand-in names it, and the trail holds it whole");
                Ok(())
            }
            Err(_) => Err(err),
        }
    }

    /// Inserts the rows of `lines` past the indexed mark, in one transaction, and moves the mark.
    async fn insert_rows(&self, lines: &[(u64, &[u8])]) -> Result<(), IndexError> {
        let already = self.indexed_sequence();
        let newest = match &self.in_place {
            Some(inserter) => inserter.insert(&self.node, lines, already).await.map_err(|refusal| IndexError::InPlace {
                place: self.place.clone(),
                message: refusal.message,
                row_refused: refusal.row_refused,
            })?,
            None => {
                let (rows, newest) = rows::rows_of(lines.iter().copied(), already);
                rows::through_pool(&self.pool, &self.node, &rows, self.sqlite()).await.map_err(self.sql())?;
                newest
            }
        };
        self.indexed.fetch_max(newest, Ordering::AcqRel);
        self.progress.notify_waiters();
        Ok(())
    }

    /// Indexes every record of this node's trail files that the index does not hold yet.
    pub async fn catch_up(&self, layout: &Layout) -> Result<u64, IndexError> {
        let _turn = self.feeding.lock().await;
        self.catch_up_in_turn(layout).await
    }

    /// `catch_up`, with the feeding turn already held.
    async fn catch_up_in_turn(&self, layout: &Layout) -> Result<u64, IndexError> {
        let mut added = 0;
        let files =
            layout.files(Kind::Log, &[".jsonl", ".json.gz"]).map_err(|source| TrailError::Io { path: layout.root.clone(), source })?;
        for path in files {
            if path.extension().is_some_and(|e| e == "jsonl") && crate::layout::sealed_name(&path).exists() {
                continue;
            }
            let content = read_log(&path)?;
            let sealed = path.extension().is_some_and(|e| e == "gz");
            let Ok((lines, _)) = chain::record_lines(&content, sealed) else { continue };
            let mut batch = Vec::with_capacity(lines.len());
            for line in lines {
                if let Some(link) = chain::parse_link(line)
                    && link.sequence > self.indexed_sequence()
                {
                    batch.push((link.sequence, line));
                }
            }
            for chunk in batch.chunks(20_000) {
                self.insert_in_turn(chunk).await?;
                added += chunk.len() as u64;
            }
        }
        Ok(added)
    }

    /// Empties this node's part of the index and rebuilds it from its trail files alone.
    pub async fn rebuild(&self, layout: &Layout) -> Result<u64, IndexError> {
        // The feeder waits meanwhile: a batch it committed between the delete and the catch-up
        // would set the indexed mark past the records the catch-up must put back.
        let _turn = self.feeding.lock().await;
        let sql = self.sql();
        let mut tx = self.pool.begin().await.map_err(&sql)?;
        sqlx::query("DELETE FROM events WHERE node = $1").bind(&self.node).execute(&mut *tx).await.map_err(&sql)?;
        sqlx::query("DELETE FROM event_resources WHERE node = $1").bind(&self.node).execute(&mut *tx).await.map_err(&sql)?;
        tx.commit().await.map_err(&sql)?;
        self.indexed.store(0, Ordering::Release);
        self.catch_up_in_turn(layout).await
    }
}
