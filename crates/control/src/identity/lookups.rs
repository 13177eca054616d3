//! The other services' side of authentication, owned here so that `identity` names no service
//! above it: `streaming` implements [`SessionLookup`] and `instances` [`InstanceLookup`].

use futures::future::BoxFuture;

use crate::core::caller::Caller;
use crate::core::error::ActionError;

/// The sessions' side of authentication, owned here and implemented by `streaming`: a
/// streaming URL's token, a session's cookie and an instance link each stand for a session's
/// user.
pub(crate) trait SessionLookup: Send + Sync {
    /// The user a streaming URL names, once its signature and expiry are checked.
    fn url_caller(&self, token: &str) -> Result<Caller, ActionError>;
    /// The user of the session a cookie belongs to (an ended session's is good for `action`
    /// only when that is its own status).
    fn cookie_caller<'a>(&'a self, cookie: &'a str, action: &'a str) -> BoxFuture<'a, Result<Caller, ActionError>>;
    /// The user of the ACTIVE session a live handoff code belongs to.
    fn handoff_caller<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Result<Caller, ActionError>>;
    /// The user of the ACTIVE session of the instance whose link a call arrives on.
    fn link_caller<'a>(&'a self, source_ip: &'a str) -> BoxFuture<'a, Result<Caller, ActionError>>;
    /// Ends every session of a local user not yet ended (the user was deleted), with `reason`;
    /// the sessions ended.
    fn end_sessions_of_local_user<'a>(
        &'a self,
        user_name: &'a str,
        reason: &'static str,
    ) -> BoxFuture<'a, Result<Vec<String>, ActionError>>;
}

/// The instances' side of authentication, owned here and implemented by `instances`.
pub(crate) trait InstanceLookup: Send + Sync {
    /// The running instance whose current (or previous, unexpired) credential `token` is,
    /// calling from its own link's address.
    fn instance_by_credential<'a>(&'a self, token: &'a str, source_ip: &'a str) -> BoxFuture<'a, Result<InstanceCaller, ActionError>>;
}

/// An instance that proved its credential, and the session it serves, if any.
pub(crate) struct InstanceCaller {
    pub instance_id: String,
    pub user_id: Option<String>,
    pub access_mode: Option<String>,
    pub issuer: Option<String>,
    pub correlation_id: Option<String>,
}
