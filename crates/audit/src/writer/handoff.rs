//! What callers hand the trail's writer: messages on its channel, the queue of records handed
//! alongside their callers' work (`Trail::append_alongside`), and the handle such a caller
//! waits on.
//!
//! Records handed alongside their callers' work wait in a queue of their own, not on the
//! writer's channel, and only the first of them wakes the writer: it writes them all together
//! when a caller waits, when a record whose caller already waits comes, or `unsynced_at_most`
//! after the first came. Under load, a few milliseconds of records cost the writer one wake,
//! one write and one fsync, where a wake each cost a thread switch on either side.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use tokio::sync::oneshot;

use crate::error::TrailError;

pub(super) struct Pending {
    pub(super) line: Vec<u8>,
    pub(super) done: oneshot::Sender<Result<(), String>>,
}

pub(super) enum Message {
    Append(Pending),
    /// Records wait in the handed queue: sent for the first of them (see [`Handed`]).
    Handed,
    /// A caller waits for a record written alongside its work (see [`Durable::wait`]).
    Sync,
    /// Rotate and write a digest now (at shutdown, and for tests).
    Digest(mpsc::Sender<()>),
    Close(mpsc::Sender<()>),
    /// A backup's consistent cut: see `Trail::hold`.
    Hold(Cut, mpsc::Sender<()>),
}

/// What runs while the trail holds still (see `Trail::hold`), or why it could not be cut.
pub(super) type Cut = Box<dyn FnOnce(Result<Vec<(PathBuf, u64)>, String>) + Send>;

#[derive(Clone, Default)]
pub(super) struct Handed(Arc<Mutex<Queue>>);

#[derive(Default)]
struct Queue {
    records: Vec<Pending>,
    /// Set once the writer finishes: a record handed then would never be written.
    closed: bool,
}

/// What became of a record handed to the queue.
pub(super) enum Queued {
    /// The first since the writer last took them: the writer must be told.
    First,
    /// Behind others the writer knows of.
    Behind,
    /// The writer has finished; the record is not queued.
    Closed,
}

impl Handed {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn push(&self, pending: Pending) -> Queued {
        let mut queue = self.queue();
        if queue.closed {
            return Queued::Closed;
        }
        queue.records.push(pending);
        if queue.records.len() == 1 { Queued::First } else { Queued::Behind }
    }

    pub(super) fn take(&self) -> Vec<Pending> {
        std::mem::take(&mut self.queue().records)
    }

    /// No record is queued from now on; those queued are still the writer's to take.
    pub(super) fn close(&self) {
        self.queue().closed = true;
    }
}

/// A record handed to the writer (see `Trail::append_alongside`).
pub struct Durable {
    pub(super) answer: oneshot::Receiver<Result<(), String>>,
    pub(super) sender: mpsc::Sender<Message>,
    pub(super) root: PathBuf,
}

impl Durable {
    /// Returns once the record is durable, asking the writer to make it so now if it is not.
    pub async fn wait(mut self) -> Result<(), TrailError> {
        let answer = match self.answer.try_recv() {
            Ok(answer) => Some(answer),
            Err(oneshot::error::TryRecvError::Closed) => None,
            Err(oneshot::error::TryRecvError::Empty) => {
                // Handed or queued before this: the writer takes it before the sync. A writer
                // that is gone will never answer.
                match self.sender.send(Message::Sync) {
                    Ok(()) => (&mut self.answer).await.ok(),
                    Err(_) => None,
                }
            }
        };
        self.outcome(answer)
    }

    pub(super) async fn answered(mut self) -> Result<(), TrailError> {
        let answer = (&mut self.answer).await.ok();
        self.outcome(answer)
    }

    fn outcome(self, answer: Option<Result<(), String>>) -> Result<(), TrailError> {
        match answer {
            Some(Ok(())) => Ok(()),
            Some(Err(message)) => Err(TrailError::Io { path: self.root, source: std::io::Error::other(message) }),
            None => Err(TrailError::Stopped),
        }
    }
}
