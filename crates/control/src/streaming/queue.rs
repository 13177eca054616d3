//! A fleet's queue as the outside sees it: its limits (how many may wait, for how long, how
//! many places one user may hold) and how long a place in it is likely to wait. Both are reads,
//! shared by the engine that serves the queue and by the redemption and the session page that
//! join and show it.

use sqlx::Row;

use super::fleets::{capacity, fleet_row, fleet_type_of};
use super::repo;
use super::state::scaled_ms;
use crate::core::error::ActionError;
use crate::core::platform::Platform;
use crate::core::store::now_millis;

pub(crate) struct QueueLimits {
    pub max_queue: u32,
    pub queue_timeout_seconds: u32,
    pub max_sessions_per_user: u32,
}

/// A fleet's queue limits: from the spec for the spec's fleets, AWS-like defaults otherwise.
pub(crate) fn queue_limits(plane: &Platform, fleet: &str) -> QueueLimits {
    let defaults = QueueLimits { max_queue: 100, queue_timeout_seconds: 300, max_sessions_per_user: 5 };
    plane.current().fleets.iter().find(|f| f.name == fleet).map_or(defaults, |f| QueueLimits {
        max_queue: f.max_queue,
        queue_timeout_seconds: f.queue_timeout_seconds,
        max_sessions_per_user: f.max_sessions_per_user,
    })
}

/// How long the user in queue position `position` may wait, in seconds.
pub(crate) async fn estimate_wait_seconds(plane: &Platform, fleet: &str, position: i64) -> Result<i64, ActionError> {
    let row = fleet_row(plane, fleet).await?;
    let desired: i64 = row.try_get::<i64, _>("desired_instances")?.max(1);
    let fleet_type = fleet_type_of(&row.try_get::<String, _>("fleet_type")?);
    let in_use = capacity(plane, fleet, fleet_type, desired).await?.in_use;
    if in_use < desired {
        // Capacity is free: the wait is an instance's start.
        return Ok(1);
    }
    // Otherwise sessions must end: estimate from how long recent sessions lasted.
    let mean_ms: f64 =
        repo::mean_duration_since(&plane.store, fleet, now_millis() - 3_600_000).await?.unwrap_or(scaled_ms(plane, 1800) as f64);
    let rounds = (position + desired - 1) / desired;
    Ok(((mean_ms / 1000.0) * rounds as f64).ceil() as i64)
}
