//! `deploy:Destroy`: every deployed resource deleted, newest stack first. What is kept on
//! purpose (data: buckets, keys) leaves the deployment's care; what failed to go stays
//! recorded for the next destroy or deploy.

use std::sync::Arc;

use policy::Resource as PolicyResource;
use serde::Deserialize;
use serde_json::{Value, json};

use super::apply::{Applier, Deleted};
use super::plan::deployed;
use super::repo::DeploymentKind;
use super::run::{Run, deploying_caller, finish_run, record_state, start_run};
use super::state::Deploy;
use super::template::{Kind, Resource, STACKS};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DestroyInput {
    #[serde(default)]
    client_request_token: Option<String>,
}

/// What a destroy did with each resource.
#[derive(Default)]
struct Outcome {
    deleted: Vec<Value>,
    retained: Vec<Value>,
    failed: Vec<Value>,
    /// Still there and still the deployment's: the retained policies (they stay in force) and
    /// whatever failed to go.
    kept_resources: Vec<Resource>,
}

pub(super) async fn destroy_action(deploy: &Deploy, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: DestroyInput = ctx.parse(input)?;
    ctx.authorize(PolicyResource::Service("deploy".into()))?;
    let _one_at_a_time = deploy.deploying.lock().await;
    let caller = deploying_caller(ctx);
    let old = deployed(ctx.platform).await?;
    let current = ctx.platform.current();
    let applier = deploy.applier(caller, ctx.source_ip, &current);
    let mut run = start_run(ctx, DeploymentKind::Destroy, None, input.client_request_token).await?;
    let Outcome { deleted, retained, failed, kept_resources } = delete_stacks(&mut run, &applier, &old).await;
    // What failed to go stays recorded, so the next destroy or deploy sees it; the policies
    // stay in force. Retained data (buckets, keys) leaves the deployment's care.
    record_state(ctx.platform, &kept_resources).await?;
    let status = if failed.is_empty() { "DELETE_COMPLETE" } else { "DELETE_FAILED" };
    finish_run(&run, status).await?;
    let mut emptied = (*current).clone();
    emptied.buckets.clear();
    emptied.datasets.clear();
    emptied.fleets.clear();
    emptied.stacks.clear();
    emptied.notebooks.retain(|n| n.owner.is_none());
    *ctx.platform.current.write().expect("current spec lock") = Arc::new(emptied);
    let result =
        json!({ "DeploymentId": run.deployment_id, "Deleted": deleted, "Retained": retained, "Failed": failed, "Events": run.events });
    if failed.is_empty() {
        Ok(result)
    } else {
        Err(ActionError::new(
            500,
            ErrorCode::DestroyIncomplete,
            format!(
                "{} resource(s) could not be deleted: {}; fix them and destroy again",
                failed.len(),
                failed.iter().map(|f| f["LogicalResourceId"].as_str().unwrap_or_default()).collect::<Vec<_>>().join(", ")
            ),
        ))
    }
}

/// Deletes the deployed resources stack by stack, newest stack and newest resource first,
/// going on past a failure so that as much as possible is gone.
async fn delete_stacks(run: &mut Run<'_>, applier: &Applier<'_>, old: &[Resource]) -> Outcome {
    let mut outcome = Outcome::default();
    for (stack, _) in STACKS.iter().rev() {
        let here: Vec<&Resource> = old.iter().rev().filter(|r| r.stack == *stack).collect();
        if here.is_empty() {
            continue;
        }
        run.stack_event(stack, "DELETE_IN_PROGRESS", None).await;
        let mut stack_failed = false;
        for r in here {
            run.resource_event(r, "DELETE_IN_PROGRESS", None).await;
            match applier.delete(r).await {
                Ok(Deleted::Removed) => {
                    run.resource_event(r, "DELETE_COMPLETE", None).await;
                    outcome.deleted.push(json!(r.logical_id));
                }
                Ok(Deleted::Retained(reason)) => {
                    run.resource_event(r, "DELETE_SKIPPED", Some(&reason)).await;
                    outcome
                        .retained
                        .push(json!({ "LogicalResourceId": r.logical_id, "ResourceType": r.kind.type_name(), "Reason": reason }));
                    if r.kind == Kind::Policy {
                        outcome.kept_resources.push(r.clone());
                    }
                }
                Err(err) => {
                    run.resource_event(r, "DELETE_FAILED", Some(&err.message)).await;
                    outcome.failed.push(json!({ "LogicalResourceId": r.logical_id, "Reason": err.message }));
                    outcome.kept_resources.push(r.clone());
                    stack_failed = true;
                }
            }
        }
        run.stack_event(stack, if stack_failed { "DELETE_FAILED" } else { "DELETE_COMPLETE" }, None).await;
    }
    outcome
}
