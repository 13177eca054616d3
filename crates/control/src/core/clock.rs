//! The time as the platform reads it. Production reads the system clock; a test sets and
//! advances a clock of its own, so that what depends on time (back-offs, expiries) is tested
//! by moving the time rather than by waiting or by scaling production's durations.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Clone, Default)]
pub(crate) struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The system clock.
    pub(crate) fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands at `start` (Unix milliseconds) until it is advanced.
    #[cfg(test)]
    pub(crate) fn manual(start: i64) -> Clock {
        Clock(Some(Arc::new(AtomicI64::new(start))))
    }

    /// Moves a manual clock on by `millis`; the system clock cannot be moved.
    #[cfg(test)]
    pub(crate) fn advance(&self, millis: i64) {
        self.0.as_ref().expect("only a manual clock is advanced").fetch_add(millis, Ordering::SeqCst);
    }

    /// Unix time in milliseconds.
    pub(crate) fn now_millis(&self) -> i64 {
        match &self.0 {
            None => crate::core::store::now_millis(),
            Some(manual) => manual.load(Ordering::SeqCst),
        }
    }
}
