//! One deploy or destroy as it runs: its row in `deployments`, the stack events it writes as
//! it goes (what `deploy:DescribeStackEvents` follows), and the deployed state it records
//! when it ends.

use serde_json::{Value, json};

use super::plan::SpecInput;
use super::repo::{self, DeployedResourceRow, DeploymentKind, StackEventRow};
use super::template::Resource;
use crate::core::caller::Caller;
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

/// One deploy or destroy in progress: writes its events.
pub(super) struct Run<'a> {
    platform: &'a Platform,
    pub deployment_id: String,
    client_token: Option<String>,
    seq: i64,
    pub events: Vec<Value>,
}

impl Run<'_> {
    async fn event(&mut self, stack: &str, logical_id: &str, resource_type: &str, status: &str, reason: Option<&str>) {
        self.seq += 1;
        let time = now_millis();
        let row = StackEventRow {
            seq: self.seq,
            stack: stack.to_owned(),
            logical_id: logical_id.to_owned(),
            resource_type: resource_type.to_owned(),
            status: status.to_owned(),
            reason: reason.map(str::to_owned),
            time,
        };
        let inserted = repo::insert_stack_event(&self.platform.store, &self.deployment_id, self.client_token.as_deref(), &row).await;
        if let Err(err) = inserted {
            tracing::warn!(error = %err, "stack event not stored");
        }
        self.events.push(event_json(stack, logical_id, resource_type, status, reason, time));
    }

    pub async fn stack_event(&mut self, stack: &str, status: &str, reason: Option<&str>) {
        self.event(stack, stack, "DataSandbox::Stack", status, reason).await;
    }

    pub async fn resource_event(&mut self, r: &Resource, status: &str, reason: Option<&str>) {
        self.event(r.stack, &r.logical_id, &r.kind.type_name(), status, reason).await;
    }
}

pub(super) fn event_json(stack: &str, logical_id: &str, resource_type: &str, status: &str, reason: Option<&str>, time: i64) -> Value {
    json!({
        "StackName": stack,
        "LogicalResourceId": logical_id,
        "ResourceType": resource_type,
        "ResourceStatus": status,
        "ResourceStatusReason": reason,
        "Timestamp": millis_to_rfc3339(time),
    })
}

pub(super) async fn start_run<'a>(
    ctx: &Ctx<'a>,
    kind: DeploymentKind,
    input: Option<&SpecInput>,
    token: Option<String>,
) -> Result<Run<'a>, ActionError> {
    let deployment_id = uuid::Uuid::new_v4().to_string();
    let spec_text = input.map(|i| i.spec.0.clone());
    let overrides = input.map(|i| serde_json::to_string(&i.overrides.iter().map(|o| o.0.as_str()).collect::<Vec<_>>()).unwrap_or_default());
    repo::insert_deployment(&ctx.platform.store, &deployment_id, kind, spec_text, overrides, now_millis()).await?;
    Ok(Run { platform: ctx.platform, deployment_id, client_token: token, seq: 0, events: Vec::new() })
}

pub(super) async fn finish_run(run: &Run<'_>, status: &str) -> Result<(), ActionError> {
    repo::finish_deployment(&run.platform.store, &run.deployment_id, status, now_millis()).await?;
    Ok(())
}

/// Records `resources` as the deployed state, in one transaction.
pub(super) async fn record_state(plane: &Platform, resources: &[Resource]) -> Result<(), ActionError> {
    let rows: Vec<DeployedResourceRow> = resources
        .iter()
        .map(|r| DeployedResourceRow {
            logical_id: r.logical_id.clone(),
            stack: r.stack.to_owned(),
            kind: r.kind.name().to_owned(),
            properties: r.properties.to_string(),
        })
        .collect();
    repo::replace_deployed_resources(&plane.store, &rows).await?;
    Ok(())
}

/// The deploying caller, for every step of a run.
pub(super) fn deploying_caller(ctx: &mut Ctx<'_>) -> Caller {
    // Every step of a deploy carries one correlation id: the trail shows it as one act.
    let correlation_id = ctx.correlation_id().map(str::to_owned).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    ctx.set_correlation_id(correlation_id.clone());
    let mut caller = ctx.caller.clone();
    caller.correlation_id = Some(correlation_id);
    caller
}
