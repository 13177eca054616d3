//! The identity service's state, apart from its actions so that authentication (a file of its
//! own) and the facade in `identity.rs` both read it from one place.

use std::sync::Arc;

use super::local;
use super::lookups::{InstanceLookup, SessionLookup};
use crate::core::platform::Platform;

/// The identity service: authenticates every call, and answers `identity:` actions.
pub(crate) struct Identity {
    pub(super) platform: Arc<Platform>,
    /// Recent failed sign-ins of local users, by address.
    pub(super) throttle: local::Throttle,
    pub(super) sessions: Arc<dyn SessionLookup>,
    pub(super) instances: Arc<dyn InstanceLookup>,
}

impl Identity {
    pub(crate) fn new(platform: Arc<Platform>, sessions: Arc<dyn SessionLookup>, instances: Arc<dyn InstanceLookup>) -> Identity {
        let throttle = local::Throttle::new(platform.clock.clone());
        Identity { platform, throttle, sessions, instances }
    }
}
