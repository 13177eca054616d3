//! The fleet engine: one loop that keeps each fleet at its capacity, hands instances to queued
//! sessions in order, and ends sessions on their timeouts.
//!
//! - ALWAYS_ON fleets keep `DesiredInstances` instances started and waiting (the session agent
//!   inside waits for its assignment); a redemption takes a waiting one at once, and every
//!   instance is destroyed after its session and replaced.
//! - ON_DEMAND fleets start an instance for each session, up to `DesiredInstances` at once.
//! - A session waits in its fleet's queue (FIFO) until an instance is free, at most the
//!   fleet's `queue_timeout`; then it ends with `NO_CAPACITY` and a clear message.

use std::sync::Arc;
use std::time::Duration;

use model::spec::FleetType;
use serde_json::{Value, json};
use sqlx::Row;

use super::fleets::{capacity, fleet_type_of};
use super::queue::queue_limits;
use super::repo::{self, ConnectionState, SessionState};
use super::sessions::{end_session, session, session_changed};
use super::state::{Streaming, scaled_ms};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};
use crate::instances::{Assignment, Launch, launch_instance, stop_instance};

/// How many instances start at once across all fleets (the host has few cores).
const PARALLEL_LAUNCHES: usize = 4;

/// Starts the engine's loop.
pub(crate) fn start(streaming: Arc<Streaming>) {
    let launches = Arc::new(tokio::sync::Semaphore::new(PARALLEL_LAUNCHES));
    tokio::spawn(async move {
        let tick = Duration::from_millis(if streaming.pipeline.platform.spec.timeout_scale_ms < 1000 { 50 } else { 250 });
        while !streaming.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            if let Err(err) = run_once(&streaming, &launches).await {
                tracing::error!(error = %err, "fleet engine");
            }
            let _ = tokio::time::timeout(tick, streaming.wake.notified()).await;
        }
    });
}

async fn run_once(streaming: &Arc<Streaming>, launches: &Arc<tokio::sync::Semaphore>) -> Result<(), ActionError> {
    let plane = &*streaming.pipeline.platform;
    // First, and whatever fails after it: an ended session's instance must not run on.
    if let Err(err) = stop_ended_sessions_instances(streaming).await {
        tracing::error!(error = %err, "cannot look for instances whose session ended");
    }
    let fleets = sqlx::query("SELECT * FROM fleets").fetch_all(&plane.store.pool).await?;
    for fleet in &fleets {
        let name: String = fleet.try_get("name")?;
        let state: String = fleet.try_get("state")?;
        let fleet_type = fleet_type_of(&fleet.try_get::<String, _>("fleet_type")?);
        let desired: i64 = fleet.try_get("desired_instances")?;
        match state.as_str() {
            "STARTING" | "RUNNING" => {
                if fleet_type == FleetType::AlwaysOn {
                    keep_warm(streaming, launches, fleet, desired).await?;
                }
                let running = capacity(plane, &name, fleet_type, desired).await?.running;
                if state == "STARTING" && (fleet_type == FleetType::OnDemand || running >= desired) {
                    sqlx::query("UPDATE fleets SET state = 'RUNNING' WHERE name = $1 AND state = 'STARTING'")
                        .bind(&name)
                        .execute(&plane.store.pool)
                        .await?;
                }
                serve_queue(streaming, launches, fleet, fleet_type, desired).await?;
            }
            "STOPPING" => {
                let sessions = repo::list_unended_session_ids(&plane.store, &name).await?;
                for session in sessions {
                    end_session(streaming, &session, "FLEET_STOPPED").await?;
                }
                let warm = ids(plane, "SELECT instance_id AS id FROM instances WHERE fleet = $1 AND state = 'RUNNING'", &name).await?;
                for instance in warm {
                    let _ = stop_instance(&streaming.instances, &instance).await;
                }
                if launching(streaming, &name) == 0 {
                    sqlx::query("UPDATE fleets SET state = 'STOPPED' WHERE name = $1 AND state = 'STOPPING'")
                        .bind(&name)
                        .execute(&plane.store.pool)
                        .await?;
                }
            }
            _ => {}
        }
    }
    enforce_timeouts(streaming).await
}

/// Stops this node's instances whose session ended. The node that ends a session stops its
/// instance only if it runs it: a session ended on another node (its timeout seen there first,
/// `ExpireSession` called there) left its instance running here, its credential renewed and
/// its user's folder open to it (review finding). Each stops apart, with its grace period.
async fn stop_ended_sessions_instances(streaming: &Arc<Streaming>) -> Result<(), ActionError> {
    let plane = &*streaming.pipeline.platform;
    let ended = ids(
        plane,
        "SELECT i.instance_id AS id FROM instances i WHERE i.node = $1 AND i.state = 'RUNNING' AND i.session_id IS NOT NULL
         AND EXISTS (SELECT 1 FROM sessions s WHERE s.session_id = i.session_id AND s.state = 'EXPIRED')",
        &plane.node.name,
    )
    .await?;
    for instance in ended {
        let streaming = streaming.clone();
        tokio::spawn(async move {
            match stop_instance(&streaming.instances, &instance).await {
                Ok(()) => tracing::info!(instance, "stopped an instance whose session ended on another node"),
                // Being stopped already (the session's end here stops it too).
                Err(err) if err.status == 404 => {}
                Err(err) => tracing::warn!(instance, error = %err, "cannot stop an instance whose session ended"),
            }
        });
    }
    Ok(())
}

/// The `id` column of `query`'s rows, its one parameter bound to `value`.
async fn ids(plane: &Platform, query: &str, value: &str) -> Result<Vec<String>, ActionError> {
    Ok(sqlx::query(query).bind(value).fetch_all(&plane.store.pool).await?.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?)
}

fn launching(streaming: &Streaming, fleet: &str) -> usize {
    streaming.launching.lock().expect("launching lock").get(fleet).copied().unwrap_or(0)
}

fn count_launch(streaming: &Streaming, fleet: &str, delta: isize) {
    let mut launching = streaming.launching.lock().expect("launching lock");
    let entry = launching.entry(fleet.to_owned()).or_insert(0);
    *entry = entry.saturating_add_signed(delta);
}

/// ALWAYS_ON: this node's share of the desired instances (`cluster::share_of`), waiting or in
/// use; surplus or outdated waiting instances are stopped (and replaced, when outdated). Each
/// node keeps its own share on its own host, so no node starts another's.
async fn keep_warm(
    streaming: &Arc<Streaming>,
    launches: &Arc<tokio::sync::Semaphore>,
    fleet: &sqlx::any::AnyRow,
    desired: i64,
) -> Result<(), ActionError> {
    let plane = &*streaming.pipeline.platform;
    let name: String = fleet.try_get("name")?;
    let image: String = fleet.try_get("image")?;
    let instance_type: String = fleet.try_get("instance_type")?;
    let desired = crate::cluster::share_of(plane, desired).await?;
    // Launches in flight first: one that ends between the two reads is then counted twice
    // (a short wait), never nowhere (an instance too many, stopped again).
    let in_flight = launching(streaming, &name) as i64;
    let rows = sqlx::query(
        "SELECT instance_id, image, instance_type, session_id FROM instances WHERE fleet = $1 AND node = $2 AND state IN ('PENDING', 'RUNNING')",
    )
    .bind(&name)
    .bind(&plane.node.name)
    .fetch_all(&plane.store.pool)
    .await?;
    let mut total = rows.len() as i64 + in_flight;
    for row in &rows {
        let waiting = row.try_get::<Option<String>, _>("session_id")?.is_none();
        let outdated = row.try_get::<String, _>("image")? != image || row.try_get::<String, _>("instance_type")? != instance_type;
        if waiting && (outdated || total > desired) {
            let _ = stop_instance(&streaming.instances, &row.try_get::<String, _>("instance_id")?).await;
            total -= 1;
        }
    }
    for _ in total..desired {
        count_launch(streaming, &name, 1);
        let (streaming, launches, name) = (streaming.clone(), launches.clone(), name.clone());
        let launch = Launch {
            image_name: image.clone(),
            instance_type: instance_type.clone(),
            fleet: Some(name.clone()),
            assignment: None,
            correlation_id: None,
            program: None,
            ids: None,
        };
        tokio::spawn(async move {
            let _permit = launches.acquire().await;
            let stopping = streaming.stopping.load(std::sync::atomic::Ordering::SeqCst);
            if !stopping && let Err(err) = launch_instance(&streaming.instances, launch).await {
                tracing::error!(fleet = name, error = %err, "cannot start a fleet instance");
                // Do not spin on a fleet that cannot start (for example, its image is missing).
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            count_launch(&streaming, &name, -1);
            streaming.wake.notify_one();
        });
    }
    Ok(())
}

/// Serves the fleet's queue in order: warm instances for ALWAYS_ON, new ones for ON_DEMAND.
async fn serve_queue(
    streaming: &Arc<Streaming>,
    launches: &Arc<tokio::sync::Semaphore>,
    fleet: &sqlx::any::AnyRow,
    fleet_type: FleetType,
    desired: i64,
) -> Result<(), ActionError> {
    let plane = &*streaming.pipeline.platform;
    let name: String = fleet.try_get("name")?;
    match fleet_type {
        FleetType::AlwaysOn => {
            // In queue order, past sessions another node has, until this node has none free.
            for session in repo::list_queue(&plane.store, &name).await? {
                if try_assign_warm(streaming, &session).await == Offered::NoneFree {
                    break;
                }
            }
        }
        FleetType::OnDemand => {
            // Room under Desired, where launches in flight count (twice once their row exists:
            // never more than Desired, at worst briefly fewer).
            let room = capacity(plane, &name, fleet_type, desired).await?.available;
            let starting: Vec<String> = streaming.starting.lock().expect("starting lock").iter().cloned().collect();
            let free = (room - launching(streaming, &name) as i64).max(0) as usize;
            let preferred = crate::cluster::preferred_node(plane).await?;
            let now = now_millis();
            let mut started = 0;
            for queued in repo::list_queue_entries(&plane.store, &name).await? {
                if started == free {
                    break;
                }
                if starting.contains(&queued.session_id) {
                    continue;
                }
                // The node with the most room starts it; any other does once it has waited a
                // second (the preferred node may be busy or slow to notice).
                let ours = preferred.as_deref().is_none_or(|p| p == plane.node.name) || now - queued.queued > 1000;
                if ours && repo::claim_for_node(&plane.store, &queued.session_id, &name, &plane.node, desired).await? {
                    start_for_session(streaming, launches, fleet, &queued.session_id).await?;
                    started += 1;
                }
            }
        }
    }
    Ok(())
}

/// The `DS_*` variables of a session, and who it is for.
async fn assignment(plane: &Platform, session_id: &str) -> Result<Assignment, ActionError> {
    let row = session(plane, session_id).await?;
    let user = row.user()?;
    let settings: Value = serde_json::from_str(&row.settings).map_err(ActionError::internal)?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mode = user.mode();
    let mut env = vec![
        ("DS_USER_NAME".to_owned(), user.user().to_string()),
        ("DS_SESSION_ID".to_owned(), session_id.to_owned()),
        ("DS_STACK_NAME".to_owned(), row.stack.clone()),
        ("DS_RESOURCE_NAME".to_owned(), row.fleet.clone()),
        ("DS_RESOURCE_TYPE".to_owned(), "fleet".to_owned()),
        ("DS_USER_ACCESS_MODE".to_owned(), mode.as_str().to_owned()),
        ("DS_INSTANCE_TYPE".to_owned(), text(&settings["InstanceType"])),
        ("DS_SESSION_RESERVATION_DATETIME".to_owned(), millis_to_rfc3339(row.start_time)),
        ("DS_SESSION_CONTEXT".to_owned(), row.session_context.clone().unwrap_or_default()),
        ("DS_APPLICATION_ID".to_owned(), settings["Application"].as_str().unwrap_or_default().to_owned()),
        ("DS_STREAM_VIEW".to_owned(), settings["StreamView"].as_str().unwrap_or("DESKTOP").to_owned()),
        ("DS_WATERMARK".to_owned(), settings["Watermark"].as_str().unwrap_or("DISABLED").to_owned()),
    ];
    if let Some(bucket) = settings["HomeFoldersBucket"].as_str() {
        env.push(("DS_HOME_BUCKET".to_owned(), bucket.to_owned()));
    }
    // The folder is the platform's to say: a federated user's depends on their provider.
    env.push(("DS_HOME_PREFIX".to_owned(), user.home().prefix()));
    Ok(Assignment { user, session_id: Some(session_id.to_owned()), env })
}

async fn activate(streaming: &Streaming, session_id: &str, instance_id: &str) -> Result<bool, ActionError> {
    let plane = &*streaming.pipeline.platform;
    let address: String = sqlx::query("SELECT private_address FROM instances WHERE instance_id = $1")
        .bind(instance_id)
        .fetch_one(&plane.store.pool)
        .await?
        .try_get("private_address")?;
    let activated = repo::mark_active(&plane.store, session_id, instance_id, &address, now_millis()).await?;
    if activated && let Some(live) = streaming.live.lock().expect("live lock").get(session_id) {
        let _ = live.events.send(json!({ "type": "state", "State": SessionState::Active.as_str(), "InstanceId": instance_id }));
    }
    if activated {
        session_changed(plane, session_id).await;
    }
    Ok(activated)
}

/// What became of a queued session offered this node's warm instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// It has one (or it ended meanwhile, and the instance it was given is stopped).
    Taken,
    /// It is not this node's to serve: no longer queued, or another node has it.
    Elsewhere,
    /// This node has no warm instance free, or could not hand one over: the session is back
    /// in the queue, for any node.
    NoneFree,
}

/// Offers a PENDING session of an ALWAYS_ON fleet this node's oldest free warm instance. A
/// session this node claimed and could not serve, for whatever reason, is given back.
pub(crate) async fn try_assign_warm(streaming: &Arc<Streaming>, session_id: &str) -> Offered {
    let plane = &*streaming.pipeline.platform;
    let _serial = streaming.assignment.lock().await;
    let offered = async {
        let row = session(plane, session_id).await?;
        // One node serves a session: the one that takes it first (the redeemer, for a session
        // it inserted as its own).
        if row.state != SessionState::Pending || !repo::claim_session(&plane.store, session_id, &plane.node).await? {
            return Ok::<_, ActionError>(Offered::Elsewhere);
        }
        Ok(if hand_warm(streaming, session_id, &row.correlation_id, &row.fleet).await? { Offered::Taken } else { Offered::NoneFree })
    };
    let offered = offered.await.unwrap_or_else(|err| {
        tracing::error!(session = session_id, error = %err, "cannot hand an instance to the session");
        Offered::NoneFree
    });
    if offered == Offered::NoneFree
        && let Err(err) = repo::release_session(&plane.store, session_id, &plane.node.name).await
    {
        // It stays this node's: its engine offers it again, or the sweep gives it back once
        // this node is lost.
        tracing::error!(session = session_id, error = %err, "cannot give the session back to the queue");
    }
    offered
}

/// Hands this node's oldest free warm instance of `fleet` to the session this node claimed:
/// false if it has none. An instance that may have learned the session's user without becoming
/// the session's (it ended meanwhile, or the hand-over failed part way) is stopped, never
/// handed to anyone else.
async fn hand_warm(streaming: &Arc<Streaming>, session_id: &str, correlation_id: &str, fleet: &str) -> Result<bool, ActionError> {
    let plane = &*streaming.pipeline.platform;
    // This node's own waiting instances: another node hands out its own.
    let instance: Option<String> = sqlx::query(
        "SELECT instance_id FROM instances WHERE fleet = $1 AND node = $2 AND state = 'RUNNING' AND session_id IS NULL ORDER BY created LIMIT 1",
    )
    .bind(fleet)
    .bind(&plane.node.name)
    .fetch_optional(&plane.store.pool)
    .await?
    .map(|r| r.try_get("instance_id"))
    .transpose()?;
    let Some(instance) = instance else { return Ok(false) };
    let assignment = assignment(plane, session_id).await?;
    let handed = async {
        crate::instances::assign(&streaming.instances, &instance, &assignment, correlation_id).await?;
        activate(streaming, session_id, &instance).await
    };
    let handed = handed.await;
    if !matches!(handed, Ok(true)) {
        // Stopped apart, not under the assignment lock.
        let streaming = streaming.clone();
        tokio::spawn(async move { stop_instance(&streaming.instances, &instance).await });
    }
    handed.map(|_| true)
}

/// ON_DEMAND: starts an instance for one queued session.
async fn start_for_session(
    streaming: &Arc<Streaming>,
    launches: &Arc<tokio::sync::Semaphore>,
    fleet: &sqlx::any::AnyRow,
    session_id: &str,
) -> Result<(), ActionError> {
    let plane = &*streaming.pipeline.platform;
    let name: String = fleet.try_get("name")?;
    let row = session(plane, session_id).await?;
    let launch = Launch {
        image_name: fleet.try_get("image")?,
        instance_type: fleet.try_get("instance_type")?,
        fleet: Some(name.clone()),
        assignment: Some(assignment(plane, session_id).await?),
        correlation_id: Some(row.correlation_id),
        program: None,
        ids: None,
    };
    streaming.starting.lock().expect("starting lock").insert(session_id.to_owned());
    count_launch(streaming, &name, 1);
    // The lease it was claimed under: a failure is the session's only while the node still holds it.
    let epoch = plane.node.epoch();
    let (streaming, launches, session) = (streaming.clone(), launches.clone(), session_id.to_owned());
    tokio::spawn(async move {
        let _permit = launches.acquire().await;
        let outcome = if streaming.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            Err(ActionError::new(503, ErrorCode::ServiceUnavailable, "the platform is stopping"))
        } else {
            launch_instance(&streaming.instances, launch).await
        };
        match outcome {
            Ok(instance) => {
                let id = instance["InstanceId"].as_str().unwrap_or_default().to_owned();
                // The session may have ended while its instance started.
                if !matches!(activate(&streaming, &session, &id).await, Ok(true)) {
                    let _ = stop_instance(&streaming.instances, &id).await;
                }
            }
            Err(err) => {
                tracing::error!(session, error = %err, "cannot start the session's instance");
                failed_start(&streaming, &session, epoch).await;
            }
        }
        // Counted as launching until it is in use, so that capacity is never counted twice.
        count_launch(&streaming, &name, -1);
        streaming.starting.lock().expect("starting lock").remove(&session);
        streaming.wake.notify_one();
    });
    Ok(())
}

/// A session whose instance this node could not start: ended, if it is still this node's queued
/// session under the lease it was claimed with (`epoch`); given back to the queue otherwise. A
/// node that lost its lease meanwhile (its instance's row refused by the fence) ended a session
/// that another node may already have taken from the queue and serve, even after it joined
/// again under a new epoch (review findings).
async fn failed_start(streaming: &Arc<Streaming>, session_id: &str, epoch: i64) {
    let plane = &*streaming.pipeline.platform;
    if repo::still_claimed(&plane.store, session_id, &plane.node.name, epoch).await.unwrap_or(false) {
        let _ = end_session(streaming, session_id, "INSTANCE_FAILED").await;
    } else if let Err(err) = repo::release_session(&plane.store, session_id, &plane.node.name).await {
        tracing::error!(session = session_id, error = %err, "cannot give the session back to the queue");
    }
}

/// Queue timeouts for PENDING sessions; maximum duration, disconnect and idle timeouts (with
/// warnings first) for ACTIVE ones.
async fn enforce_timeouts(streaming: &Arc<Streaming>) -> Result<(), ActionError> {
    let plane = &*streaming.pipeline.platform;
    let now = now_millis();
    for row in repo::list_open_sessions(&plane.store).await? {
        let session = row.session_id;
        if row.state == SessionState::Pending {
            let limit = scaled_ms(plane, i64::from(queue_limits(plane, &row.fleet).queue_timeout_seconds));
            if now - row.queued > limit {
                end_later(streaming, &session, "NO_CAPACITY");
            }
            continue;
        }
        let settings: Value = serde_json::from_str(&row.settings).map_err(ActionError::internal)?;
        let seconds = |key: &str| settings[key].as_i64().unwrap_or(0);
        let max_expiration = row.max_expiration;
        if now >= max_expiration {
            end_later(streaming, &session, "MAX_DURATION");
            continue;
        }
        if now >= max_expiration - scaled_ms(plane, 300) {
            warn(streaming, &session, "MAX_DURATION", (max_expiration - now) / i64::from(plane.spec.timeout_scale_ms));
        }
        if row.connection_state != ConnectionState::Connected {
            let since = row.disconnected_at.or(row.active_time).unwrap_or(now);
            if now - since >= scaled_ms(plane, seconds("DisconnectTimeoutInSeconds")) {
                end_later(streaming, &session, "DISCONNECT_TIMEOUT");
            }
            continue;
        }
        let idle_limit = seconds("IdleDisconnectTimeoutInSeconds");
        if idle_limit == 0 {
            continue;
        }
        let last_input = streaming.live.lock().expect("live lock").get(&session).map_or(now, |l| l.last_input);
        let idle_for = now - last_input;
        let warning = scaled_ms(plane, 60.min(idle_limit / 2));
        if idle_for >= scaled_ms(plane, idle_limit) {
            // Idle: the user is disconnected; the disconnect timeout then runs.
            if let Some(live) = streaming.live.lock().expect("live lock").get_mut(&session) {
                let _ = live.events.send(json!({ "type": "disconnect", "Reason": "IDLE" }));
                live.last_input = now;
                live.warned.retain(|w| *w != "IDLE");
            }
        } else if idle_for >= scaled_ms(plane, idle_limit) - warning {
            warn(streaming, &session, "IDLE", (scaled_ms(plane, idle_limit) - idle_for) / i64::from(plane.spec.timeout_scale_ms));
        }
    }
    Ok(())
}

fn warn(streaming: &Streaming, session: &str, reason: &'static str, seconds_left: i64) {
    if let Some(live) = streaming.live.lock().expect("live lock").get_mut(session)
        && !live.warned.contains(&reason)
    {
        live.warned.push(reason);
        let _ = live.events.send(json!({ "type": "warning", "Reason": reason, "SecondsLeft": seconds_left.max(0) }));
    }
}

/// Ends a session in the background: its instance's stop takes a grace period.
fn end_later(streaming: &Arc<Streaming>, session: &str, reason: &'static str) {
    let ending = {
        let mut ending = streaming.ending.lock().expect("ending lock");
        ending.insert(session.to_owned())
    };
    if !ending {
        return;
    }
    let (streaming, session) = (streaming.clone(), session.to_owned());
    tokio::spawn(async move {
        if let Err(err) = end_session(&streaming, &session, reason).await {
            tracing::error!(session, error = %err, "cannot end the session");
        }
        streaming.ending.lock().expect("ending lock").remove(&session);
    });
}
