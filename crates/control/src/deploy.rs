//! The deployment engine (the seed's CDK app): `deploy:Diff`, `deploy:Deploy`,
//! `deploy:Destroy`, `deploy:DescribeStackEvents` and `deploy:DescribeStacks`.
//!
//! A deploy turns the spec into resources ([`template`]) and compares them with
//! `deployed_resources` (what the last complete deploy left, like CloudFormation's template)
//! into creates, updates, replacements (a change of a field its kind declares immutable) and
//! deletes. It applies them stack by stack in dependency order through the pipeline
//! ([`apply`]), writing each step to `stack_events`. Deletions wait for a cleanup phase after
//! everything else succeeded, so a failure never has to undo one: the changes made so far are
//! undone in reverse order and the deployment ends in `UPDATE_ROLLBACK_COMPLETE` with the
//! resources as they were.
//!
//! Only a complete deploy replaces the recorded state and the spec the running services read
//! (the platform's `current`). The authorizer is swapped once the `service-roles` stack is
//! applied, after the new policies' digests are recorded; a failure later in the deploy swaps
//! the previous policies back.

mod apply;
mod destroy;
mod plan;
mod policies;
mod repo;
mod rollout;
mod run;
mod state;
pub(crate) mod template;

use std::collections::HashMap;

use model::spec::Spec;
use policy::Resource as PolicyResource;
use serde::Deserialize;
use serde_json::{Value, json};

use plan::{Planned, SpecInput, deployed, desired, plan, restart_required};
pub(crate) use policies::policy_digests;
use repo::LastDeployment;
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
    let last = repo::last_deployment(store).await.map_err(|e| format!("reading the last deployment: {e}"))?;
    let Some(LastDeployment::Deployed { spec_text: text, overrides }) = last else { return Ok(None) };
    let overrides: Vec<String> = serde_json::from_str(&overrides).unwrap_or_default();
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
    let store = &ctx.platform.store;
    let deployment_id: Option<String> = match (&input.deployment_id, &input.client_request_token) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(token)) => repo::deployment_id_of_token(store, token).await?,
        (None, None) => repo::latest_deployment_id(store).await?,
    };
    let Some(deployment_id) = deployment_id else { return Ok(json!({ "StackEvents": [], "Next": 0 })) };
    let mut next = input.after.unwrap_or(0);
    let mut events = Vec::new();
    for event in repo::stack_events_after(store, &deployment_id, input.after.unwrap_or(0)).await? {
        next = event.seq;
        events.push(event_json(&event.stack, &event.logical_id, &event.resource_type, &event.status, event.reason.as_deref(), event.time));
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
        let status = repo::latest_stack_status(&plane.store, stack).await?;
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
