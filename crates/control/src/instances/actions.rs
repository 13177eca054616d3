//! The `streaming:` actions on instances themselves: create, describe, terminate, and run an
//! operator's command inside one (which its user sees).

use model::{AccessMode, UserId};
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::store::now_millis;

use super::images::instance_type;
use super::launch::{Assignment, Launch, instance_json, launch_instance};
use super::state::Instances;
use super::teardown::stop_instance;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateInput {
    #[serde(default)]
    image_name: Option<String>,
    #[serde(default)]
    instance_type: Option<String>,
    #[serde(default)]
    user_id: Option<UserId>,
    #[serde(default)]
    access_mode: Option<AccessMode>,
}

pub(crate) async fn create(instances: &Instances, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let type_name = input.instance_type.clone().unwrap_or_else(|| plane.current().instance_type.clone());
    instance_type(plane, &type_name)?;
    if input.access_mode.is_some() && input.user_id.is_none() {
        return Err(ActionError::validation("AccessMode needs UserId"));
    }
    // A federated user is named by their identity provider too; only their sessions make one.
    if input.access_mode == Some(AccessMode::Federated) {
        return Err(ActionError::validation("AccessMode `federated` is only given by a federated user's session"));
    }
    ctx.authorize(Resource::Service("streaming".into()))?;
    let user = input.user_id.map(|user| {
        let mode = input.access_mode.unwrap_or(AccessMode::Custom);
        let mut env = vec![("DS_USER_NAME".to_owned(), user.to_string()), ("DS_USER_ACCESS_MODE".to_owned(), mode.as_str().to_owned())];
        if let Some(bucket) = plane.current().home_bucket() {
            env.push(("DS_HOME_BUCKET".to_owned(), bucket.name.to_string()));
        }
        let user = match mode {
            AccessMode::Local => model::UserRef::local(user),
            _ => model::UserRef::custom(user),
        };
        env.push(("DS_HOME_PREFIX".to_owned(), user.home().prefix()));
        Assignment { user, session_id: None, env }
    });
    let launch = Launch {
        image_name: input.image_name.unwrap_or_else(|| plane.current().image_name.clone()),
        instance_type: type_name,
        fleet: None,
        assignment: user,
        correlation_id: ctx.correlation_id().map(str::to_owned),
        program: None,
        ids: None,
    };
    let instance = launch_instance(instances, launch).await?;
    Ok(json!({ "Instance": instance }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeInput {
    #[serde(default)]
    instance_ids: Vec<String>,
    #[serde(default)]
    include_ended: bool,
}

pub(crate) async fn describe(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: DescribeInput = ctx.parse(input)?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    let rows = sqlx::query("SELECT * FROM instances ORDER BY created").fetch_all(&ctx.platform.store.pool).await?;
    let mut instances = Vec::new();
    for row in &rows {
        let id: String = row.try_get("instance_id")?;
        let state: String = row.try_get("state")?;
        if (!input.instance_ids.is_empty() && !input.instance_ids.contains(&id))
            || (!input.include_ended && (state == "TERMINATED" || state == "FAILED"))
        {
            continue;
        }
        instances.push(instance_json(row)?);
    }
    Ok(json!({ "Instances": instances }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct InstanceInput {
    instance_id: String,
}

pub(crate) async fn terminate(instances: &Instances, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: InstanceInput = ctx.parse(input)?;
    ctx.authorize(Resource::Instance { id: input.instance_id.clone() })?;
    let plane = ctx.platform;
    stop_instance(instances, &input.instance_id).await?;
    let row = sqlx::query("SELECT * FROM instances WHERE instance_id = $1").bind(&input.instance_id).fetch_one(&plane.store.pool).await?;
    Ok(json!({ "Instance": instance_json(&row)? }))
}

/// Stops an instance — its programs get a grace period to finish, its credential stays valid

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ExecInput {
    instance_id: String,
    command: Vec<String>,
}

pub(crate) async fn exec(instances: &Instances, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ExecInput = ctx.parse(input)?;
    if input.command.is_empty() || input.command.iter().any(|a| a.contains('\0')) {
        return Err(ActionError::validation("Command must be a non-empty list of arguments without NUL"));
    }
    ctx.authorize(Resource::Instance { id: input.instance_id.clone() })?;
    let plane = ctx.platform;
    let sandbox = instances.sandbox().await?;
    let target = instances.live.lock().expect("instances lock").get(&input.instance_id).map(|live| live.instance.exec_target());
    let target = target
        .ok_or_else(|| ActionError::not_found("ResourceNotFoundException", format!("instance `{}` is not running", input.instance_id)))?;
    let command = input.command.clone();
    let output = tokio::task::spawn_blocking(move || sandbox.exec(&target, &command))
        .await
        .map_err(ActionError::internal)?
        .map_err(ActionError::internal)?;
    // The session's user sees every operator command in their instance.
    let operator = ctx.caller.identity.user_name.clone().unwrap_or_else(|| ctx.caller.identity.principal_id.clone());
    sqlx::query("INSERT INTO instance_execs (instance_id, operator, command, exit_code, time) VALUES ($1, $2, $3, $4, $5)")
        .bind(&input.instance_id)
        .bind(&operator)
        .bind(json!(input.command).to_string())
        .bind(output.status.code().map(i64::from))
        .bind(now_millis())
        .execute(&plane.store.pool)
        .await?;
    let row = sqlx::query("SELECT user_id, access_mode, issuer FROM instances WHERE instance_id = $1")
        .bind(&input.instance_id)
        .fetch_one(&plane.store.pool)
        .await?;
    let mode = row.try_get::<Option<String>, _>("access_mode")?.as_deref().and_then(AccessMode::parse);
    if let (Some(user), Some(mode)) = (row.try_get::<Option<String>, _>("user_id")?, mode)
        && let Ok(user) = model::UserRef::from_parts(mode, row.try_get::<Option<String>, _>("issuer")?.as_deref(), &user)
    {
        plane.changes.user(&user);
    }
    Ok(json!({
        "ExitCode": output.status.code(),
        "Stdout": String::from_utf8_lossy(&output.stdout),
        "Stderr": String::from_utf8_lossy(&output.stderr),
    }))
}
