//! The deployment engine (the seed's CDK app): `deploy:Diff`, `deploy:Deploy`,
//! `deploy:Destroy`, `deploy:DescribeStackEvents` and `deploy:DescribeStacks`.
//!
//! A deploy turns the spec into resources ([`template`]), compares them with what the last
//! deploy left ([`plan`]), and applies the changes stack by stack in dependency order through
//! the pipeline ([`apply`], [`rollout`]), writing stack events as it goes ([`run`]). Deletions
//! wait for a cleanup phase after everything else succeeded, so a failure never has to undo
//! one: the changes made so far are undone in reverse order and the deployment ends in
//! `UPDATE_ROLLBACK_COMPLETE` with the resources as they were. Only a complete deploy replaces
//! the recorded state and the spec the running services read. A destroy ([`destroy`]) deletes
//! everything, newest stack first.

mod apply;
mod destroy;
mod plan;
mod policies;
mod rollout;
mod run;
mod state;
pub(crate) mod template;

use std::collections::HashMap;

use model::spec::Spec;
use policy::Resource as PolicyResource;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use plan::{Planned, SpecInput, deployed, desired, plan, restart_required};
pub(crate) use policies::policy_digests;
use run::event_json;
pub(crate) use state::Deploy;
use template::{Resource, STACKS};

use crate::core::actions::DeployAction;
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::store::Store;

impl Deploy {
    pub(crate) async fn dispatch(&self, ctx: &mut Ctx<'_>, action: DeployAction, input: Value) -> Result<Value, ActionError> {
        match action {
            DeployAction::Diff => diff_action(ctx, input).await,
            DeployAction::Deploy => rollout::deploy_action(self, ctx, input).await,
            DeployAction::Destroy => destroy::destroy_action(self, ctx, input).await,
            DeployAction::DescribeStackEvents => describe_events(ctx, input).await,
            DeployAction::DescribeStacks => describe_stacks(ctx, input).await,
        }
    }
}

/// The spec of the last complete deploy, if there was one.
/// A store that cannot be read is an error naming the store.
pub(crate) async fn last_deployed(store: &Store) -> Result<Option<Spec>, String> {
    // The newest complete deploy, unless a destroy came after it.
    let row = sqlx::query(
        "SELECT kind, spec_text, overrides FROM deployments
         WHERE (kind = 'DEPLOY' AND status = 'UPDATE_COMPLETE') OR kind = 'DESTROY' ORDER BY started DESC LIMIT 1",
    )
    .fetch_optional(&store.pool)
    .await
    .map_err(|e| format!("reading the last deployment: {e}"))?;
    let Some(row) = row else { return Ok(None) };
    if row.try_get::<String, _>("kind").map_err(|e| format!("reading the last deployment: {e}"))? == "DESTROY" {
        return Ok(None);
    }
    let text: String = row.try_get("spec_text").map_err(|e| format!("reading the last deployment: {e}"))?;
    let overrides: Vec<String> =
        serde_json::from_str(&row.try_get::<String, _>("overrides").map_err(|e| format!("reading the last deployment: {e}"))?)
            .unwrap_or_default();
    match Spec::parse(&text, &overrides) {
        Ok(spec) => Ok(Some(spec)),
        Err(err) => {
            tracing::warn!(error = %err, "the last deployed spec no longer parses; serving the given spec until the next deploy");
            Ok(None)
        }
    }
}

async fn diff_action(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: SpecInput = ctx.parse_recorded(input)?;
    ctx.authorize(PolicyResource::Service("deploy".into()))?;
    let (spec, resources) = desired(&input).await?;
    let planned = plan(&deployed(ctx.platform).await?, &resources);
    Ok(json!({
        "Changes": planned.iter().map(Planned::json).collect::<Vec<_>>(),
        "RestartRequired": restart_required(&ctx.platform.spec, &spec),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct EventsInput {
    #[serde(default)]
    client_request_token: Option<String>,
    #[serde(default)]
    deployment_id: Option<String>,
    /// Only events after this many (for following a deployment).
    #[serde(default)]
    after: Option<i64>,
}

async fn describe_events(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: EventsInput = ctx.parse(input)?;
    ctx.authorize(PolicyResource::Service("deploy".into()))?;
    let pool = &ctx.platform.store.pool;
    let deployment_id: Option<String> = match (&input.deployment_id, &input.client_request_token) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(token)) => sqlx::query("SELECT deployment_id FROM stack_events WHERE client_token = $1 LIMIT 1")
            .bind(token)
            .fetch_optional(pool)
            .await?
            .map(|r| r.try_get("deployment_id"))
            .transpose()?,
        (None, None) => sqlx::query("SELECT deployment_id FROM deployments ORDER BY started DESC LIMIT 1")
            .fetch_optional(pool)
            .await?
            .map(|r| r.try_get("deployment_id"))
            .transpose()?,
    };
    let Some(deployment_id) = deployment_id else { return Ok(json!({ "StackEvents": [], "Next": 0 })) };
    let rows = sqlx::query(
        "SELECT seq, stack, logical_id, resource_type, status, reason, time FROM stack_events WHERE deployment_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(&deployment_id)
    .bind(input.after.unwrap_or(0))
    .fetch_all(pool)
    .await?;
    let mut next = input.after.unwrap_or(0);
    let mut events = Vec::new();
    for row in rows {
        next = row.try_get("seq")?;
        events.push(event_json(
            &row.try_get::<String, _>("stack")?,
            &row.try_get::<String, _>("logical_id")?,
            &row.try_get::<String, _>("resource_type")?,
            &row.try_get::<String, _>("status")?,
            row.try_get::<Option<String>, _>("reason")?.as_deref(),
            row.try_get("time")?,
        ));
    }
    Ok(json!({ "DeploymentId": deployment_id, "StackEvents": events, "Next": next }))
}

async fn describe_stacks(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: HashMap<String, Value> = ctx.parse(input)?;
    ctx.authorize(PolicyResource::Service("deploy".into()))?;
    let plane = ctx.platform;
    let resources = deployed(plane).await?;
    let spec = plane.current();
    let mut stacks = Vec::new();
    for (stack, depends_on) in STACKS {
        let status: Option<String> =
            sqlx::query("SELECT status FROM stack_events WHERE stack = $1 AND logical_id = $1 ORDER BY time DESC, seq DESC LIMIT 1")
                .bind(stack)
                .fetch_optional(&plane.store.pool)
                .await?
                .map(|r| r.try_get("status"))
                .transpose()?;
        let members: Vec<&Resource> = resources.iter().filter(|r| r.stack == *stack).collect();
        let outputs = match *stack {
            "storage" => json!({ "HomeFoldersBucket": spec.home_bucket().map(|b| b.name.to_string()) }),
            "streaming" => json!({
                "StackName": spec.stacks.first().map(|s| s.name.clone()),
                "FleetName": spec.fleets.first().map(|f| f.name.clone()),
                "ReportsBucket": template::reports_bucket(&spec),
            }),
            "notebook" => json!({
                "KeyAlias": spec.notebooks.first().map(|n| format!("alias/{}", n.kms_key_alias)),
                "NotebookNames": spec.notebooks.iter().filter(|n| n.owner.is_some()).map(|n| n.name.clone()).collect::<Vec<_>>(),
            }),
            "saml" => json!({ "IdentityProvider": spec.idp_metadata.as_ref().map(|_| spec.idp_name.clone()) }),
            _ => json!({}),
        };
        stacks.push(json!({
            "StackName": stack,
            "StackStatus": status,
            "DependsOn": depends_on,
            "Resources": members.iter().map(|r| json!({ "LogicalResourceId": r.logical_id, "ResourceType": r.kind.type_name() })).collect::<Vec<_>>(),
            "Outputs": if members.is_empty() { json!({}) } else { outputs },
        }));
    }
    Ok(json!({ "Stacks": stacks }))
}
