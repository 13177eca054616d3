//! The hand-off between the writer thread and the sealer thread: the jobs the writer sends and
//! the digest reference the sealer shares back. Neither thread owns this protocol, so it lives
//! below both and the writer imports the sealer, never the other way round.

use std::path::PathBuf;
use std::sync::mpsc;

use chrono::{DateTime, Utc};

/// What the writer asks of the sealer.
pub(crate) enum SealJob {
    /// A closed log file to compress and list in the next digest.
    Seal(PathBuf),
    /// Write the digest that ends at `end`, then answer on `done`.
    Digest { end: DateTime<Utc>, done: mpsc::Sender<()> },
    /// Finish the current job and stop the thread, then answer.
    Stop(mpsc::Sender<()>),
}

/// The newest digest: what the next one chains to and what checkpoints name.
#[derive(Debug, Clone)]
pub(crate) struct DigestRef {
    pub object: String,
    pub signature: String,
    pub hash: String,
    pub end_time: String,
}
