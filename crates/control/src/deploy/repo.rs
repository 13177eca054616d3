//! The deploy service's tables: `deployments` (one row a deploy or destroy), `stack_events`
//! (what each wrote as it ran) and `deployed_resources` (the state the last one left). The
//! SQL and the reading of rows stay here; the service sees typed rows.

use sqlx::Row;

use crate::core::store::Store;

crate::core::codec::stored_as_text! {
    /// What a row of `deployments` was: a deploy of a spec, or a destroy.
    pub(super) enum DeploymentKind {
        Deploy = "DEPLOY",
        Destroy = "DESTROY",
    }
}

/// The newest complete deploy's spec, unless a destroy came after it.
pub(super) enum LastDeployment {
    Deployed { spec_text: String, overrides: String },
    Destroyed,
}

/// A resource as the last deploy left it, as stored: its stack and kind by name.
pub(super) struct DeployedResourceRow {
    pub logical_id: String,
    pub stack: String,
    pub kind: String,
    pub properties: String,
}

/// One stack event.
pub(super) struct StackEventRow {
    pub seq: i64,
    pub stack: String,
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    pub reason: Option<String>,
    pub time: i64,
}

pub(super) async fn last_deployment(store: &Store) -> Result<Option<LastDeployment>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT kind, spec_text, overrides FROM deployments
         WHERE (kind = 'DEPLOY' AND status = 'UPDATE_COMPLETE') OR kind = 'DESTROY' ORDER BY started DESC LIMIT 1",
    )
    .fetch_optional(&store.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if DeploymentKind::parse(&row.try_get::<String, _>("kind")?) == Some(DeploymentKind::Destroy) {
        return Ok(Some(LastDeployment::Destroyed));
    }
    Ok(Some(LastDeployment::Deployed { spec_text: row.try_get("spec_text")?, overrides: row.try_get("overrides")? }))
}

/// A new deployment, `IN_PROGRESS`; a destroy has no spec text nor overrides.
pub(super) async fn insert_deployment(
    store: &Store,
    deployment_id: &str,
    kind: DeploymentKind,
    spec_text: Option<String>,
    overrides: Option<String>,
    started: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deployments (deployment_id, kind, status, spec_text, overrides, started) VALUES ($1, $2, 'IN_PROGRESS', $3, $4, $5)",
    )
    .bind(deployment_id)
    .bind(kind.as_str())
    .bind(spec_text)
    .bind(overrides)
    .bind(started)
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub(super) async fn finish_deployment(store: &Store, deployment_id: &str, status: &str, finished: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE deployments SET status = $1, finished = $2 WHERE deployment_id = $3")
        .bind(status)
        .bind(finished)
        .bind(deployment_id)
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// The newest deployment's id, if there was one.
pub(super) async fn latest_deployment_id(store: &Store) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT deployment_id FROM deployments ORDER BY started DESC LIMIT 1")
        .fetch_optional(&store.pool)
        .await?
        .map(|r| r.try_get("deployment_id"))
        .transpose()
}

/// The deployment whose events a client named with its request token.
pub(super) async fn deployment_id_of_token(store: &Store, client_token: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT deployment_id FROM stack_events WHERE client_token = $1 LIMIT 1")
        .bind(client_token)
        .fetch_optional(&store.pool)
        .await?
        .map(|r| r.try_get("deployment_id"))
        .transpose()
}

pub(super) async fn insert_stack_event(
    store: &Store,
    deployment_id: &str,
    client_token: Option<&str>,
    event: &StackEventRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stack_events (deployment_id, seq, client_token, stack, logical_id, resource_type, status, reason, time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(deployment_id)
    .bind(event.seq)
    .bind(client_token)
    .bind(&event.stack)
    .bind(&event.logical_id)
    .bind(&event.resource_type)
    .bind(&event.status)
    .bind(&event.reason)
    .bind(event.time)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// A deployment's events after the `after`th, in order.
pub(super) async fn stack_events_after(store: &Store, deployment_id: &str, after: i64) -> Result<Vec<StackEventRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, stack, logical_id, resource_type, status, reason, time FROM stack_events WHERE deployment_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(deployment_id)
    .bind(after)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StackEventRow {
                seq: row.try_get("seq")?,
                stack: row.try_get("stack")?,
                logical_id: row.try_get("logical_id")?,
                resource_type: row.try_get("resource_type")?,
                status: row.try_get("status")?,
                reason: row.try_get("reason")?,
                time: row.try_get("time")?,
            })
        })
        .collect()
}

/// The newest status of a stack (its own events, whose logical id is the stack's name).
pub(super) async fn latest_stack_status(store: &Store, stack: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT status FROM stack_events WHERE stack = $1 AND logical_id = $1 ORDER BY time DESC, seq DESC LIMIT 1")
        .bind(stack)
        .fetch_optional(&store.pool)
        .await?
        .map(|r| r.try_get("status"))
        .transpose()
}

pub(super) async fn deployed_resources(store: &Store) -> Result<Vec<DeployedResourceRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT logical_id, stack, kind, properties FROM deployed_resources").fetch_all(&store.pool).await?;
    rows.iter()
        .map(|row| {
            Ok(DeployedResourceRow {
                logical_id: row.try_get("logical_id")?,
                stack: row.try_get("stack")?,
                kind: row.try_get("kind")?,
                properties: row.try_get("properties")?,
            })
        })
        .collect()
}

/// Replaces the recorded state with `resources`, in one transaction.
pub(super) async fn replace_deployed_resources(store: &Store, resources: &[DeployedResourceRow]) -> Result<(), sqlx::Error> {
    let mut tx = store.write().await?;
    sqlx::query("DELETE FROM deployed_resources").execute(&mut *tx).await?;
    for r in resources {
        sqlx::query("INSERT INTO deployed_resources (logical_id, stack, kind, properties) VALUES ($1, $2, $3, $4)")
            .bind(&r.logical_id)
            .bind(&r.stack)
            .bind(&r.kind)
            .bind(&r.properties)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}
