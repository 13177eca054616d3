//! AppStream's model: fleets of fresh instances, stacks with user settings, single-use
//! streaming URLs, and sessions that end and take their instance with them.
//!
//! The files, each importing only those listed before it:
//! - `state`: the in-memory state every part shares (`Streaming`, a session's `Live` side);
//!   `resource`: the fleet and stack actions' names, ARNs and not-found error; `repo`: the
//!   sessions' and streaming URLs' rows.
//! - `fleets` and `stacks`: their CRUD actions, with AWS's members and ranges (a fleet's
//!   capacity is counted from its instances in one query, never kept); `queue`: a fleet
//!   queue's limits and wait.
//! - `sessions`: who a session is for, how it looks and how it ends; a session holds its
//!   cookie, its correlation id and a snapshot of the stack's settings and the fleet's
//!   timeouts, and its end is recorded as `streaming:SessionEnded` for the usage reports.
//! - `engine`: the background loop that keeps ALWAYS_ON fleets warm, starts ON_DEMAND
//!   instances per session, serves each fleet's FIFO queue and ends sessions on their
//!   disconnect, idle and maximum-duration timeouts (warning first).
//! - `urls`: minting HMAC-signed streaming URLs, checking them as authentication and
//!   consuming each atomically, and authenticating a session's user; `connection`: a session
//!   page's live connection; `portal`: the analyst portal's actions; `files` and `stream`: a
//!   session's home folder and printouts, and its pixel stream.
//!
//! This file only wires them: the dispatch of streaming's actions, and the start and stop.

mod changes;
mod connection;
pub(crate) mod engine;
pub(crate) mod files;
mod fleets;
mod handoff;
mod portal;
mod queue;
pub(crate) mod repo;
mod resource;
pub(crate) mod sessions;
mod stacks;
mod state;
pub(crate) mod stream;
mod urls;

use std::sync::Arc;

use serde_json::Value;

pub use connection::SessionConnection;
pub(crate) use state::{Streaming, scaled_ms};

use crate::core::actions::StreamingAction;
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;

impl Streaming {
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
            A::CreateStreamingURL => urls::create_url(ctx, input).await,
            A::RedeemStreamingURL => urls::redeem(self, ctx, input).await,
            A::DescribeSessions => sessions::describe(ctx, input).await,
            A::ExpireSession => sessions::expire(self, ctx, input).await,
            A::GetSessionStatus => sessions::get_status(ctx, input).await,
            A::HandOffSession => handoff::hand_off(ctx, input).await,
            A::AcceptSessionHandoff => handoff::accept(ctx, input).await,
            A::BatchAssociateUserStack => portal::associate(ctx, input).await,
            A::BatchDisassociateUserStack => portal::disassociate(ctx, input).await,
            A::DescribeUserStackAssociations => portal::describe(ctx, input).await,
            A::CreateUserStreamingURL => portal::launch(ctx, input).await,
            A::DescribeUserSessions => portal::my_sessions(ctx, input).await,
            A::DescribeRecordings => crate::recordings::describe(ctx, input).await,
            A::PlayRecordingSegment => crate::recordings::play(ctx, input).await,
            A::ExportRecordingSegment => crate::recordings::export(ctx, input).await,
            A::CreateInstance => crate::instances::create(&self.instances, ctx, input).await,
            A::DescribeInstances => crate::instances::describe(ctx, input).await,
            A::TerminateInstance => crate::instances::terminate(&self.instances, ctx, input).await,
            A::ExecInInstance => crate::instances::exec(&self.instances, ctx, input).await,
        }
    }

    /// Tells the control plane where the gateway listens, for the URLs it hands out.
    pub(crate) fn set_listening_address(&self, address: std::net::SocketAddr) {
        let _ = self.pipeline.platform.listening.set(self.pipeline.platform.listening_url(address));
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

/// Ends the sessions whose node was lost, once each (the end is a conditional update): every
/// node does it at each heartbeat, so they end within one of the sweep that marked the node.
pub(crate) async fn end_sessions_on_lost_nodes(streaming: &Streaming) -> Result<(), ActionError> {
    for session in repo::list_sessions_on_lost_instances(&streaming.pipeline.platform.store).await? {
        sessions::end_session(streaming, &session, "NODE_LOST").await?;
    }
    Ok(())
}

/// Ends the sessions of local users who no longer exist, once each: on PostgreSQL, a
/// redemption that checked the user before `DeleteLocalUser` committed can insert its session
/// after the deletion ended theirs. Every node does it at each heartbeat.
pub(crate) async fn end_sessions_of_deleted_users(streaming: &Arc<Streaming>) -> Result<(), ActionError> {
    for session in repo::list_sessions_of_deleted_local_users(&streaming.pipeline.platform.store).await? {
        // Over at once; its instance stops in the background, not in the heartbeat's turn.
        match sessions::mark_ended(streaming, &session, "USER_DELETED").await {
            Ok(true) => {
                let streaming = streaming.clone();
                tokio::spawn(async move {
                    if let Err(err) = sessions::finish_ended(&streaming, &session, "USER_DELETED").await {
                        tracing::error!(session, error = %err, "cannot finish ending the deleted user's session");
                    }
                });
            }
            Ok(false) => {}
            Err(err) => tracing::error!(session, error = %err, "cannot end the deleted user's session"),
        }
    }
    Ok(())
}

/// Hears other nodes' session changes (PostgreSQL), for this node's pages.
pub(crate) fn listen_for_changes(streaming: Arc<Streaming>) {
    changes::listen(streaming);
}

/// Ends every session of this node not yet ended: at a clean stop (after the instances
/// stopped) and at start-up (after a crash took the instances), so that none stays ACTIVE
/// without one. Sessions on other nodes' instances are theirs.
pub(crate) async fn end_all_sessions(streaming: &Streaming, reason: &str) -> Vec<String> {
    let platform = &streaming.pipeline.platform;
    let alone = crate::cluster::alone(platform).await;
    let ids = repo::list_node_unended_session_ids(&platform.store, &platform.node.name, alone).await.unwrap_or_default();
    let mut ended = Vec::new();
    for id in ids {
        match sessions::end_session(streaming, &id, reason).await {
            Ok(()) => ended.push(id),
            Err(err) => tracing::error!(session = id, error = %err, "cannot end the session"),
        }
    }
    ended
}
