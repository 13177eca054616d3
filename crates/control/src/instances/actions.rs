//! The `streaming:` actions on instances themselves: create, describe, terminate, and run an
//! operator's command inside one (which its user sees).

use model::{AccessMode, UserId};
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;

use super::images::instance_type;
use super::launch::{Assignment, Launch, launch_instance};
use super::repo;
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
    let mut instances = Vec::new();
    for row in repo::all(ctx.platform).await? {
        if (!input.instance_ids.is_empty() && !input.instance_ids.contains(&row.instance_id))
            || (!input.include_ended && row.state.has_ended())
        {
            continue;
        }
        instances.push(row.to_json());
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
    Ok(json!({ "Instance": repo::find(plane, &input.instance_id).await?.to_json() }))
}

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
    let target = target.ok_or_else(|| {
        ActionError::not_found(ErrorCode::ResourceNotFoundException, format!("instance `{}` is not running", input.instance_id))
    })?;
    let command = input.command.clone();
    let output = tokio::task::spawn_blocking(move || sandbox.exec(&target, &command))
        .await
        .map_err(ActionError::internal)?
        .map_err(ActionError::internal)?;
    // The session's user sees every operator command in their instance.
    let operator = ctx.caller.identity.user_name.clone().unwrap_or_else(|| ctx.caller.identity.principal_id.clone());
    let exec = repo::Exec {
        instance_id: &input.instance_id,
        operator: &operator,
        command: json!(input.command).to_string(),
        exit_code: output.status.code().map(i64::from),
    };
    repo::record_exec(plane, exec).await?;
    let user = repo::user_of(plane, &input.instance_id).await?;
    let mode = user.access_mode.as_deref().and_then(AccessMode::parse);
    if let (Some(user_id), Some(mode)) = (user.user_id, mode)
        && let Ok(user) = model::UserRef::from_parts(mode, user.issuer.as_deref(), &user_id)
    {
        plane.changes.user(&user);
    }
    Ok(json!({
        "ExitCode": output.status.code(),
        "Stdout": String::from_utf8_lossy(&output.stdout),
        "Stderr": String::from_utf8_lossy(&output.stderr),
    }))
}
