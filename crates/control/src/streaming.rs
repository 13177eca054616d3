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
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::Value;

use crate::core::actions::StreamingAction;
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::pipeline::Pipeline;
use crate::core::platform::Platform;
use crate::instances::Instances;

/// In-memory state of streaming: what the engine and the live connections share.
pub(crate) struct Streaming {
    pipeline: Pipeline,
    pub instances: Arc<Instances>,
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
}

/// Tells of a change to `session_id`, whoever's it is (looked up only if anyone listens).
pub(crate) async fn session_changed(plane: &Platform, session_id: &str) {
    if !plane.changes.heard() {
        return;
    }
    let row = sqlx::query("SELECT * FROM sessions WHERE session_id = $1").bind(session_id).fetch_optional(&plane.store.pool).await;
    if let Ok(Some(row)) = row
        && let Ok(user) = sessions::session_user(&row)
    {
        plane.changes.user(&user);
    }
}

impl Streaming {
    pub(crate) fn new(pipeline: Pipeline, instances: Arc<Instances>) -> Streaming {
        Streaming {
            pipeline,
            instances,
            wake: Default::default(),
            assignment: Default::default(),
            live: Default::default(),
            launching: Default::default(),
            starting: Default::default(),
            ending: Default::default(),
            stopping: Default::default(),
        }
    }

    pub(crate) async fn dispatch(self: &Arc<Self>, ctx: &mut Ctx<'_>, action: StreamingAction, input: Value) -> Result<Value, ActionError> {
        use StreamingAction as A;
        match action {
            A::CreateFleet => fleets::create(ctx, input).await,
            A::UpdateFleet => fleets::update(self, ctx, input).await,
            A::DeleteFleet => fleets::delete(ctx, input).await,
            A::DescribeFleets => fleets::describe(ctx, input).await,
            A::StartFleet => fleets::set_state(self, ctx, input, true).await,
            A::StopFleet => fleets::set_state(self, ctx, input, false).await,
            A::CreateStack => stacks::create(ctx, input).await,
            A::UpdateStack => stacks::update(ctx, input).await,
            A::DeleteStack => stacks::delete(ctx, input).await,
            A::DescribeStacks => stacks::describe(ctx, input).await,
            A::AssociateFleet => stacks::associate(ctx, input, true).await,
            A::DisassociateFleet => stacks::associate(ctx, input, false).await,
            A::CreateStreamingURL => sessions::create_url(ctx, input).await,
            A::RedeemStreamingURL => sessions::redeem(self, ctx, input).await,
            A::DescribeSessions => sessions::describe(ctx, input).await,
            A::ExpireSession => sessions::expire(self, ctx, input).await,
            A::GetSessionStatus => sessions::get_status(ctx, input).await,
            A::BatchAssociateUserStack => portal::associate(ctx, input).await,
            A::BatchDisassociateUserStack => portal::disassociate(ctx, input).await,
            A::DescribeUserStackAssociations => portal::describe(ctx, input).await,
            A::CreateUserStreamingURL => portal::launch(ctx, input).await,
            A::DescribeUserSessions => portal::my_sessions(ctx, input).await,
            A::CreateInstance => crate::instances::create(&self.instances, ctx, input).await,
            A::DescribeInstances => crate::instances::describe(ctx, input).await,
            A::TerminateInstance => crate::instances::terminate(&self.instances, ctx, input).await,
            A::ExecInInstance => crate::instances::exec(&self.instances, ctx, input).await,
        }
    }

    /// Tells the control plane where the gateway listens, for the URLs it hands out.
    pub(crate) fn set_listening_address(&self, address: std::net::SocketAddr) {
        let _ = self.pipeline.platform.listening.set(format!("http://{address}"));
    }

    /// At a clean stop: the engine starts nothing more, and launches in flight finish (up to
    /// `within`) before the instances are ended.
    pub(crate) async fn stop(&self, within: std::time::Duration) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = tokio::time::timeout(within, async {
            while self.launching.lock().expect("launching lock").values().any(|n| *n > 0) {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
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

fn arn(plane: &Platform, kind: &str, name: &str) -> String {
    format!("arn:datasandbox:streaming:{}:{}:{kind}/{name}", plane.spec.region, plane.spec.account_id)
}

/// Milliseconds of `seconds` of a session timeout (scaled down only in tests).
pub(crate) fn scaled_ms(plane: &Platform, seconds: i64) -> i64 {
    seconds * i64::from(plane.spec.timeout_scale_ms)
}

fn not_found(kind: &str, name: &str) -> ActionError {
    ActionError::not_found("ResourceNotFoundException", format!("{kind} `{name}` does not exist"))
}

/// Ends every session not yet ended: at a clean stop (after the instances stopped) and at
/// start-up (after a crash took the instances), so that none stays ACTIVE without one.
pub(crate) async fn end_all_sessions(streaming: &Streaming, reason: &str) -> Vec<String> {
    let control = &streaming.pipeline;
    use sqlx::Row;
    let rows = sqlx::query("SELECT session_id FROM sessions WHERE state != 'EXPIRED'")
        .fetch_all(&control.platform.store.pool)
        .await
        .unwrap_or_default();
    let mut ended = Vec::new();
    for row in rows {
        let Ok(id) = row.try_get::<String, _>("session_id") else { continue };
        match sessions::end_session(streaming, &id, reason).await {
            Ok(()) => ended.push(id),
            Err(err) => tracing::error!(session = id, error = %err, "cannot end the session"),
        }
    }
    ended
}
