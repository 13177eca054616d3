//! One deploy or destroy as it runs: its row in `deployments`, the stack events it writes as
//! it goes (what `deploy:DescribeStackEvents` follows), and the deployed state it records
//! when it ends.

use serde_json::{Value, json};

use super::plan::SpecInput;
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
        let inserted = sqlx::query(
            "INSERT INTO stack_events (deployment_id, seq, client_token, stack, logical_id, resource_type, status, reason, time)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&self.deployment_id)
        .bind(self.seq)
        .bind(&self.client_token)
        .bind(stack)
        .bind(logical_id)
        .bind(resource_type)
        .bind(status)
        .bind(reason)
        .bind(time)
        .execute(&self.platform.store.pool)
        .await;
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
    kind: &str,
    input: Option<&SpecInput>,
    token: Option<String>,
) -> Result<Run<'a>, ActionError> {
    let deployment_id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO deployments (deployment_id, kind, status, spec_text, overrides, started) VALUES ($1, $2, 'IN_PROGRESS', $3, $4, $5)",
    )
    .bind(&deployment_id)
    .bind(kind)
    .bind(input.map(|i| i.spec.0.clone()))
    .bind(input.map(|i| serde_json::to_string(&i.overrides.iter().map(|o| o.0.as_str()).collect::<Vec<_>>()).unwrap_or_default()))
    .bind(now_millis())
    .execute(&ctx.platform.store.pool)
    .await?;
    Ok(Run { platform: ctx.platform, deployment_id, client_token: token, seq: 0, events: Vec::new() })
}

pub(super) async fn finish_run(run: &Run<'_>, status: &str) -> Result<(), ActionError> {
    sqlx::query("UPDATE deployments SET status = $1, finished = $2 WHERE deployment_id = $3")
        .bind(status)
        .bind(now_millis())
        .bind(&run.deployment_id)
        .execute(&run.platform.store.pool)
        .await?;
    Ok(())
}

/// Records `resources` as the deployed state, in one transaction.
pub(super) async fn record_state(plane: &Platform, resources: &[Resource]) -> Result<(), ActionError> {
    let mut tx = plane.store.write().await?;
    sqlx::query("DELETE FROM deployed_resources").execute(&mut *tx).await?;
    for r in resources {
        sqlx::query("INSERT INTO deployed_resources (logical_id, stack, kind, properties) VALUES ($1, $2, $3, $4)")
            .bind(&r.logical_id)
            .bind(r.stack)
            .bind(r.kind.name())
            .bind(r.properties.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
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
