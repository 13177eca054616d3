//! AppStream's model: fleets of fresh instances, stacks with user settings, single-use
//! streaming URLs, and sessions that end and take their instance with them.
//!
//! `fleets` and `stacks` are their CRUD actions; `sessions` mints and redeems URLs and answers
//! for sessions; `engine` is the background loop that keeps fleets at capacity, serves the
//! queue and ends sessions on their timeouts.

pub(crate) mod engine;
pub(crate) mod files;
mod fleets;
mod portal;
pub(crate) mod sessions;
mod stacks;
pub(crate) mod stream;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::Value;

use crate::error::ActionError;
use crate::pipeline::{Ctx, Plane};

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, action: &str, input: Value) -> Result<Value, ActionError> {
    match action {
        "CreateFleet" | "UpdateFleet" | "DeleteFleet" | "DescribeFleets" | "StartFleet" | "StopFleet" => {
            fleets::dispatch(ctx, action, input).await
        }
        "CreateStack" | "UpdateStack" | "DeleteStack" | "DescribeStacks" | "AssociateFleet" | "DisassociateFleet" => {
            stacks::dispatch(ctx, action, input).await
        }
        "CreateStreamingURL" | "RedeemStreamingURL" | "DescribeSessions" | "ExpireSession" | "GetSessionStatus" => {
            sessions::dispatch(ctx, action, input).await
        }
        "BatchAssociateUserStack" => portal::associate(ctx, input).await,
        "BatchDisassociateUserStack" => portal::disassociate(ctx, input).await,
        "DescribeUserStackAssociations" => portal::describe(ctx, input).await,
        "CreateUserStreamingURL" => portal::launch(ctx, input).await,
        "DescribeUserSessions" => portal::my_sessions(ctx, input).await,
        _ => crate::instances::dispatch(ctx, action, input).await,
    }
}

/// In-memory state of streaming: what the engine and the live connections share.
#[derive(Default)]
pub(crate) struct Streaming {
    /// Wakes the engine (a session queued, an instance freed, a fleet changed).
    pub wake: tokio::sync::Notify,
    /// Serializes handing instances to sessions.
    pub assignment: tokio::sync::Mutex<()>,
    /// Sessions with a live connection or a listener: their event channel and input clock.
    pub live: Mutex<HashMap<String, sessions::Live>>,
    /// Launches in flight per fleet, so the engine does not start the same capacity twice.
    pub launching: Mutex<HashMap<String, usize>>,
    /// ON_DEMAND sessions whose instance is starting.
    pub starting: Mutex<HashSet<String>>,
    /// Sessions being ended in the background.
    pub ending: Mutex<HashSet<String>>,
    /// Set at a clean stop: the engine starts nothing more.
    pub stopping: std::sync::atomic::AtomicBool,
    url_key: std::sync::OnceLock<[u8; 32]>,
    /// `http://<address>` of the API listener once bound (the spec may ask for port 0).
    pub listening: std::sync::OnceLock<String>,
    /// Whose sessions changed, for pages that show a user's sessions live.
    pub changes: Changes,
}

/// The principal id (`UserRef::principal_id`: mode, identity provider and user id) of each
/// session that changes state (queued, active, ended) or connection. Nothing else is carried:
/// a page that hears of a change asks for what it may see.
pub(crate) struct Changes(tokio::sync::broadcast::Sender<String>);

impl Default for Changes {
    fn default() -> Changes {
        // A listener that falls this far behind only misses pings; it asks again on the next.
        Changes(tokio::sync::broadcast::channel(256).0)
    }
}

impl Changes {
    pub(crate) fn user(&self, user: &model::UserRef) {
        let _ = self.0.send(user.principal_id());
    }

    /// Tells of a change to `session_id`, whoever's it is (looked up only if anyone listens).
    pub(crate) async fn session(&self, plane: &Plane, session_id: &str) {
        if self.0.receiver_count() == 0 {
            return;
        }
        let row = sqlx::query("SELECT * FROM sessions WHERE session_id = $1").bind(session_id).fetch_optional(&plane.store.pool).await;
        if let Ok(Some(row)) = row
            && let Ok(user) = sessions::session_user(&row)
        {
            self.user(&user);
        }
    }
}

impl crate::pipeline::ControlPlane {
    /// The principal ids of sessions' users as they change (see [`Changes`]); a page filters
    /// for its caller's `PrincipalId`.
    pub fn session_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.plane.streaming.changes.0.subscribe()
    }

    /// Tells the control plane where the gateway listens, for the URLs it hands out.
    pub fn set_listening_address(&self, address: std::net::SocketAddr) {
        let _ = self.plane.streaming.listening.set(format!("http://{address}"));
    }
}

/// `Name`: the one member of the fleet and stack actions that act on one resource by name.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NameInput {
    name: String,
}

/// `DescribeFleets` and `DescribeStacks`: some names, or all; one page.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeInput {
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    next_token: Option<String>,
}

/// AWS's rule for fleet and stack names.
fn check_name(member: &str, name: &str) -> Result<(), ActionError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && name.len() <= 100 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(ActionError::validation(format!(
            "{member} `{name}` must be 1..=100 letters, digits, `_`, `.` or `-`, starting with a letter or digit"
        )))
    }
}

fn arn(plane: &Plane, kind: &str, name: &str) -> String {
    format!("arn:datasandbox:streaming:{}:{}:{kind}/{name}", plane.spec.region, plane.spec.account_id)
}

/// The base of the URLs handed to users: the spec's `server.public_url`, else the address the
/// gateway listens on.
pub(crate) fn public_base(plane: &Plane) -> String {
    plane
        .spec
        .public_url
        .clone()
        .or_else(|| plane.streaming.listening.get().cloned())
        .unwrap_or_else(|| format!("http://{}", plane.spec.api_listen))
}

/// Milliseconds of `seconds` of a session timeout (scaled down only in tests).
pub(crate) fn scaled_ms(plane: &Plane, seconds: i64) -> i64 {
    seconds * i64::from(plane.spec.timeout_scale_ms)
}

fn not_found(kind: &str, name: &str) -> ActionError {
    ActionError::not_found("ResourceNotFoundException", format!("{kind} `{name}` does not exist"))
}

/// Ends every session not yet ended: at a clean stop (after the instances stopped) and at
/// start-up (after a crash took the instances), so that none stays ACTIVE without one.
pub(crate) async fn end_all_sessions(control: &crate::pipeline::ControlPlane, reason: &str) -> Vec<String> {
    use sqlx::Row;
    let rows = sqlx::query("SELECT session_id FROM sessions WHERE state != 'EXPIRED'")
        .fetch_all(&control.plane.store.pool)
        .await
        .unwrap_or_default();
    let mut ended = Vec::new();
    for row in rows {
        let Ok(id) = row.try_get::<String, _>("session_id") else { continue };
        match sessions::end_session(control, &id, reason).await {
            Ok(()) => ended.push(id),
            Err(err) => tracing::error!(session = id, error = %err, "cannot end the session"),
        }
    }
    ended
}
