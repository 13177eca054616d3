//! The audit trail. Every action, allowed, denied or failed, becomes one CloudTrail-shaped
//! [`Record`], and [`Trail::append`] returns only once the record is on disk (fsync, with
//! group commit), so the caller never sees success for an action the trail does not hold.

mod record;
mod writer;

pub use record::{EVENT_VERSION, Record, RecordResource, SessionContext, SessionContextAttributes, UserIdentity};
pub use writer::{LookupFilter, Trail, TrailError};
