//! The audit trail. Every action, allowed, denied or failed, becomes one CloudTrail-shaped
//! [`Record`]; [`Trail::append`] returns only once the record is on disk (fsync, with group
//! commit), so no caller sees success for an action the trail does not hold.
//!
//! Integrity has three layers, all checkable offline with the public key ([`validate`]):
//! a hash chain through every record, signed checkpoints within a second of any record, and
//! CloudTrail-style signed hourly digests over sealed (gzip) log files.
//!
//! Several nodes sharing one metadata store each keep a chain of their own ([`Layout::node`]),
//! copied to the deployment's bucket ([`TrailBucket`]) and indexed in the shared database.

#[cfg(test)]
mod across_nodes;
#[cfg(test)]
mod alongside;
mod background;
pub mod bound;
mod bucket;
mod chain;
mod detail;
mod error;
mod files;
#[cfg(test)]
mod fixtures;
mod index;
mod layout;
mod record;
pub mod reports;
mod reserve;
mod resume;
mod seal_job;
mod sealer;
mod signing;
pub mod validate;
mod writer;

pub use bucket::TrailBucket;
pub use error::TrailError;
pub use files::{Checkpoint, DigestFile, LogFileEntry};
pub use index::{Index, IndexError, IndexTarget, LookupCursor, LookupFilter, SCHEMA, TraceSelector, redact_url, rows_as_objects};
pub use layout::{Layout, sealed_name};
pub use record::{EVENT_VERSION, Record, RecordResource, SessionContext, SessionContextAttributes, UserIdentity, new_request_id};
pub use signing::{Signer, fingerprint as key_fingerprint, parse_public_key, verify as verify_signature};
pub use validate::{Report, ValidateOptions, bucket_of, discover_layouts, newest_public_key, records_containing, validate_nodes};
pub use writer::{Durable, IndexBatch, Trail, TrailOptions};
