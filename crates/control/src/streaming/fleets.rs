//! `streaming:CreateFleet` and the other fleet actions, with AWS's members and ranges.
//!
//! Capacity is computed from the instances in one query, never stored: `Running` counts the
//! fleet's started instances, `InUse` those serving a session; for ALWAYS_ON
//! `Available = Running − InUse` (started and waiting), for ON_DEMAND (whose instances start
//! on assignment) the room left under `Desired`, where starting and stopping instances count.

use model::spec::FleetType;
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::resource::{DescribeInput, NameInput, arn, check_name, not_found};
use super::state::Streaming;
use crate::core::codec::bounded;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ComputeCapacity {
    desired_instances: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct FleetInput {
    name: String,
    #[serde(default)]
    image_name: Option<String>,
    #[serde(default)]
    instance_type: Option<String>,
    #[serde(default)]
    fleet_type: Option<String>,
    #[serde(default)]
    compute_capacity: Option<ComputeCapacity>,
    #[serde(default)]
    max_user_duration_in_seconds: Option<i64>,
    #[serde(default)]
    disconnect_timeout_in_seconds: Option<i64>,
    #[serde(default)]
    idle_disconnect_timeout_in_seconds: Option<i64>,
    #[serde(default)]
    stream_view: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

/// A fleet's settings after validation.
struct Settings {
    image: String,
    instance_type: String,
    desired: i64,
    max_user_duration: i64,
    disconnect_timeout: i64,
    idle_disconnect_timeout: i64,
    stream_view: String,
    description: String,
}

/// Validates the members present, over `base` (the defaults, or the fleet as it is).
fn settings(plane: &Platform, input: &FleetInput, base: Settings) -> Result<Settings, ActionError> {
    if let Some(t) = &input.instance_type {
        crate::instances::instance_type(plane, t)?;
    }
    let idle =
        bounded("IdleDisconnectTimeoutInSeconds", input.idle_disconnect_timeout_in_seconds, base.idle_disconnect_timeout, 0..=36_000)?;
    if (1..60).contains(&idle) {
        return Err(ActionError::validation(format!("IdleDisconnectTimeoutInSeconds {idle} must be 0 (off) or within 60..=36000")));
    }
    let stream_view = match input.stream_view.as_deref() {
        None => base.stream_view,
        Some(view @ ("APP" | "DESKTOP")) => view.to_owned(),
        Some(other) => return Err(ActionError::validation(format!("StreamView `{other}` is not APP or DESKTOP"))),
    };
    let description = input.description.clone().unwrap_or(base.description);
    if description.chars().count() > 256 {
        return Err(ActionError::validation("Description is longer than 256 characters"));
    }
    if input.display_name.as_ref().is_some_and(|d| d.chars().count() > 100) {
        return Err(ActionError::validation("DisplayName is longer than 100 characters"));
    }
    Ok(Settings {
        image: input.image_name.clone().unwrap_or(base.image),
        instance_type: input.instance_type.clone().unwrap_or(base.instance_type),
        desired: bounded(
            "ComputeCapacity.DesiredInstances",
            input.compute_capacity.as_ref().map(|c| c.desired_instances),
            base.desired,
            0..=1000,
        )?,
        max_user_duration: bounded("MaxUserDurationInSeconds", input.max_user_duration_in_seconds, base.max_user_duration, 600..=432_000)?,
        disconnect_timeout: bounded(
            "DisconnectTimeoutInSeconds",
            input.disconnect_timeout_in_seconds,
            base.disconnect_timeout,
            60..=36_000,
        )?,
        idle_disconnect_timeout: idle,
        stream_view,
        description,
    })
}

pub(super) async fn create(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: FleetInput = ctx.parse(input)?;
    check_name("Name", &input.name)?;
    let plane = ctx.platform;
    let fleet_type = match input.fleet_type.as_deref() {
        None | Some("ON_DEMAND") => "ON_DEMAND",
        Some("ALWAYS_ON") => "ALWAYS_ON",
        Some(other) => return Err(ActionError::validation(format!("FleetType `{other}` is not ALWAYS_ON or ON_DEMAND"))),
    };
    if input.instance_type.is_none() {
        return Err(ActionError::validation("InstanceType is required"));
    }
    let defaults = Settings {
        image: plane.current().image_name.clone(),
        instance_type: String::new(),
        desired: 1,
        max_user_duration: 57_600,
        disconnect_timeout: 900,
        idle_disconnect_timeout: 0,
        stream_view: "APP".into(),
        description: String::new(),
    };
    let s = settings(plane, &input, defaults)?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    let inserted = sqlx::query(
        "INSERT INTO fleets (name, image, instance_type, fleet_type, desired_instances, max_user_duration, disconnect_timeout, idle_disconnect_timeout,
         stream_view, description, state, created) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'STOPPED', $11) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&input.name)
    .bind(&s.image)
    .bind(&s.instance_type)
    .bind(fleet_type)
    .bind(s.desired)
    .bind(s.max_user_duration)
    .bind(s.disconnect_timeout)
    .bind(s.idle_disconnect_timeout)
    .bind(&s.stream_view)
    .bind(&s.description)
    .bind(now_millis())
    .execute(&plane.store.pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ActionError::conflict(ErrorCode::ResourceAlreadyExistsException, format!("fleet `{}` already exists", input.name)));
    }
    Ok(json!({ "Fleet": fleet_json(plane, &input.name).await? }))
}

pub(super) async fn update(streaming: &Streaming, ctx: &mut Ctx<'_>, raw: Value) -> Result<Value, ActionError> {
    if raw.get("FleetType").is_some() {
        return Err(ActionError::validation("FleetType cannot change; create a new fleet (as AWS requires)"));
    }
    let input: FleetInput = ctx.parse(raw)?;
    let plane = ctx.platform;
    let row = fleet_row(plane, &input.name).await?;
    let current = Settings {
        image: row.try_get("image")?,
        instance_type: row.try_get("instance_type")?,
        desired: row.try_get("desired_instances")?,
        max_user_duration: row.try_get("max_user_duration")?,
        disconnect_timeout: row.try_get("disconnect_timeout")?,
        idle_disconnect_timeout: row.try_get("idle_disconnect_timeout")?,
        stream_view: row.try_get("stream_view")?,
        description: row.try_get("description")?,
    };
    let s = settings(plane, &input, current)?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    // Running instances of an older image or type are replaced as their sessions end.
    sqlx::query(
        "UPDATE fleets SET image = $1, instance_type = $2, desired_instances = $3, max_user_duration = $4, disconnect_timeout = $5,
         idle_disconnect_timeout = $6, stream_view = $7, description = $8 WHERE name = $9",
    )
    .bind(&s.image)
    .bind(&s.instance_type)
    .bind(s.desired)
    .bind(s.max_user_duration)
    .bind(s.disconnect_timeout)
    .bind(s.idle_disconnect_timeout)
    .bind(&s.stream_view)
    .bind(&s.description)
    .bind(&input.name)
    .execute(&plane.store.pool)
    .await?;
    streaming.wake.notify_one();
    Ok(json!({ "Fleet": fleet_json(plane, &input.name).await? }))
}

pub(super) async fn delete(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let row = fleet_row(plane, &input.name).await?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    let state: String = row.try_get("state")?;
    if state != "STOPPED" {
        return Err(ActionError::conflict(ErrorCode::ResourceInUseException, format!("fleet `{}` is {state}; stop it first", input.name)));
    }
    let stacks: Vec<String> = sqlx::query("SELECT name FROM stacks WHERE fleet = $1")
        .bind(&input.name)
        .fetch_all(&plane.store.pool)
        .await?
        .iter()
        .map(|r| r.try_get("name"))
        .collect::<Result<_, _>>()?;
    if !stacks.is_empty() {
        return Err(ActionError::conflict(
            ErrorCode::ResourceInUseException,
            format!("fleet `{}` is associated with stack `{}`; disassociate it first", input.name, stacks.join("`, `")),
        ));
    }
    sqlx::query("DELETE FROM fleets WHERE name = $1").bind(&input.name).execute(&plane.store.pool).await?;
    Ok(json!({}))
}

pub(super) async fn describe(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: DescribeInput = ctx.parse(input)?;
    if input.next_token.is_some() {
        return Err(ActionError::validation("NextToken is not valid: DescribeFleets returns every fleet in one page"));
    }
    ctx.authorize(Resource::Service("streaming".into()))?;
    let plane = ctx.platform;
    let names: Vec<String> = match input.names {
        Some(names) => names,
        None => sqlx::query("SELECT name FROM fleets ORDER BY name")
            .fetch_all(&plane.store.pool)
            .await?
            .iter()
            .map(|r| r.try_get("name"))
            .collect::<Result<_, _>>()?,
    };
    let mut fleets = Vec::new();
    for name in &names {
        fleets.push(fleet_json(plane, name).await?);
    }
    Ok(json!({ "Fleets": fleets }))
}

pub(super) async fn set_state(streaming: &Streaming, ctx: &mut Ctx<'_>, input: Value, start: bool) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let row = fleet_row(plane, &input.name).await?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    let state: String = row.try_get("state")?;
    let next = match (start, state.as_str()) {
        (true, "STOPPED") => "STARTING",
        (false, "RUNNING" | "STARTING") => "STOPPING",
        // Starting a started fleet or stopping a stopped one changes nothing, as in AWS.
        (true, "RUNNING" | "STARTING") | (false, "STOPPED" | "STOPPING") => return Ok(json!({})),
        (_, other) => {
            return Err(ActionError::conflict(
                ErrorCode::ConcurrentModificationException,
                format!("fleet `{}` is {other}; try again", input.name),
            ));
        }
    };
    sqlx::query("UPDATE fleets SET state = $1 WHERE name = $2").bind(next).bind(&input.name).execute(&plane.store.pool).await?;
    streaming.wake.notify_one();
    Ok(json!({}))
}

pub(super) async fn fleet_row(plane: &Platform, name: &str) -> Result<sqlx::any::AnyRow, ActionError> {
    sqlx::query("SELECT * FROM fleets WHERE name = $1")
        .bind(name)
        .fetch_optional(&plane.store.pool)
        .await?
        .ok_or_else(|| not_found("fleet", name))
}

/// The capacity counters, from one consistent read.
pub(crate) struct Capacity {
    pub desired: i64,
    pub running: i64,
    pub in_use: i64,
    pub available: i64,
}

pub(crate) async fn capacity(plane: &Platform, name: &str, fleet_type: FleetType, desired: i64) -> Result<Capacity, ActionError> {
    let row = sqlx::query(
        "SELECT COUNT(CASE WHEN state = 'RUNNING' THEN 1 END) AS running,
                COUNT(CASE WHEN state = 'RUNNING' AND session_id IS NOT NULL THEN 1 END) AS in_use,
                COUNT(*) AS occupied
         FROM instances WHERE fleet = $1 AND state IN ('PENDING', 'RUNNING', 'STOPPING')",
    )
    .bind(name)
    .fetch_one(&plane.store.pool)
    .await?;
    let (running, in_use, occupied): (i64, i64, i64) = (row.try_get("running")?, row.try_get("in_use")?, row.try_get("occupied")?);
    let available = match fleet_type {
        // Started and waiting for a session.
        FleetType::AlwaysOn => running - in_use,
        // Room to start one: instances still starting or stopping take their place.
        FleetType::OnDemand => (desired - occupied).max(0),
    };
    Ok(Capacity { desired, running, in_use, available })
}

pub(crate) fn fleet_type_of(text: &str) -> FleetType {
    if text == "ALWAYS_ON" { FleetType::AlwaysOn } else { FleetType::OnDemand }
}

async fn fleet_json(plane: &Platform, name: &str) -> Result<Value, ActionError> {
    let row = fleet_row(plane, name).await?;
    let fleet_type: String = row.try_get("fleet_type")?;
    let desired: i64 = row.try_get("desired_instances")?;
    let c = capacity(plane, name, fleet_type_of(&fleet_type), desired).await?;
    Ok(json!({
        "Name": name,
        "Arn": arn(plane, "fleet", name),
        "ImageName": row.try_get::<String, _>("image")?,
        "InstanceType": row.try_get::<String, _>("instance_type")?,
        "FleetType": fleet_type,
        "ComputeCapacityStatus": { "Desired": c.desired, "Running": c.running, "InUse": c.in_use, "Available": c.available },
        "MaxUserDurationInSeconds": row.try_get::<i64, _>("max_user_duration")?,
        "DisconnectTimeoutInSeconds": row.try_get::<i64, _>("disconnect_timeout")?,
        "IdleDisconnectTimeoutInSeconds": row.try_get::<i64, _>("idle_disconnect_timeout")?,
        "State": row.try_get::<String, _>("state")?,
        "StreamView": row.try_get::<String, _>("stream_view")?,
        "Description": row.try_get::<String, _>("description")?,
        "CreatedTime": millis_to_rfc3339(row.try_get("created")?),
    }))
}
