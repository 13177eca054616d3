//! The deployment engine (the seed's CDK app): `deploy:Diff`, `deploy:Deploy`,
//! `deploy:Destroy`, `deploy:DescribeStackEvents` and `deploy:DescribeStacks`.
//!
//! A deploy turns the spec into resources ([`template`]), compares them with what the last
//! deploy left (`deployed_resources`), and applies the changes stack by stack in dependency
//! order through the pipeline ([`apply`]), writing stack events as it goes. Deletions wait for
//! a cleanup phase after everything else succeeded, so a failure never has to undo one: the
//! changes made so far are undone in reverse order and the deployment ends in
//! `UPDATE_ROLLBACK_COMPLETE` with the resources as they were. Only a complete deploy replaces
//! the recorded state and the spec the running services read.

mod apply;
pub(crate) mod template;

use std::collections::HashMap;
use std::sync::Arc;

use model::spec::Spec;
use policy::{Authorizer, Resource as PolicyResource};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest as _;
use sqlx::Row;

use apply::{Applier, Deleted};
use template::{Kind, Resource, STACKS};

use crate::core::actions::DeployAction;
use crate::core::caller::Caller;
use crate::core::error::ActionError;
use crate::core::pipeline::{Ctx, Pipeline};
use crate::core::platform::{Effect, Platform, ServiceEvent};
use crate::core::recorded::{Override, Redacted};
use crate::core::store::{Store, millis_to_rfc3339, now_millis};
use crate::streaming::Streaming;

/// The deploy service: one deploy or destroy at a time, its steps run through the pipeline.
pub(crate) struct Deploy {
    pipeline: Pipeline,
    /// One deploy or destroy at a time.
    deploying: tokio::sync::Mutex<()>,
    steps: tokio::sync::mpsc::UnboundedSender<apply::Step>,
    /// Woken once a deploy changed the fleets.
    streaming: Arc<Streaming>,
}

impl Deploy {
    pub(crate) fn new(pipeline: Pipeline, streaming: Arc<Streaming>) -> Deploy {
        let steps = apply::start_step_runner(pipeline.clone());
        Deploy { pipeline, deploying: Default::default(), steps, streaming }
    }

    pub(crate) async fn dispatch(&self, ctx: &mut Ctx<'_>, action: DeployAction, input: Value) -> Result<Value, ActionError> {
        match action {
            DeployAction::Diff => diff_action(ctx, input).await,
            DeployAction::Deploy => deploy_action(self, ctx, input).await,
            DeployAction::Destroy => destroy_action(self, ctx, input).await,
            DeployAction::DescribeStackEvents => describe_events(ctx, input).await,
            DeployAction::DescribeStacks => describe_stacks(ctx, input).await,
        }
    }

    fn applier<'a>(&'a self, caller: Caller, source_ip: &str, desired: &'a Spec) -> Applier<'a> {
        Applier { control: &self.pipeline, steps: &self.steps, caller, source_ip: source_ip.to_owned(), desired }
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

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SpecInput {
    /// The spec's TOML text (its hash is in the answer).
    spec: Redacted<String>,
    /// `-c key=value`: recorded by key, never by value (secrets are given this way).
    #[serde(default)]
    overrides: Vec<Override>,
    /// Names the deployment's events so a client can follow them while it runs.
    #[serde(default)]
    client_request_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Change {
    Create,
    Update { changed: Vec<String> },
    Replace { changed: Vec<String>, immutable: Vec<String> },
    Delete,
}

struct Planned {
    old: Option<Resource>,
    new: Option<Resource>,
    change: Change,
}

impl Planned {
    fn resource(&self) -> &Resource {
        self.new.as_ref().or(self.old.as_ref()).expect("a planned change has a resource")
    }

    fn json(&self) -> Value {
        let r = self.resource();
        let (action, changed, immutable) = match &self.change {
            Change::Create => ("Create", Vec::new(), Vec::new()),
            Change::Update { changed } => ("Update", changed.clone(), Vec::new()),
            Change::Replace { changed, immutable } => ("Replace", changed.clone(), immutable.clone()),
            Change::Delete => ("Delete", Vec::new(), Vec::new()),
        };
        let mut details = Vec::new();
        for field in &changed {
            let before = self.old.as_ref().map_or(Value::Null, |o| o.properties[field].clone());
            let after = self.new.as_ref().map_or(Value::Null, |n| n.properties[field].clone());
            let mut leaves = Vec::new();
            leaf_changes(field.clone(), &before, &after, &mut leaves);
            for (name, before, after) in leaves {
                details.push(json!({ "Name": name, "Before": before, "After": after, "RequiresReplacement": immutable.contains(field) }));
            }
        }
        let mut change = json!({ "Stack": r.stack, "LogicalResourceId": r.logical_id, "ResourceType": r.kind.type_name(), "Action": action, "Details": details });
        // A policy's text is what decides; the change names it by hash whatever the action.
        if r.kind == Kind::Policy
            && let Some(text) = r.properties["Statement"].as_str()
        {
            change["StatementSha256"] = json!(hex::encode(sha2::Sha256::digest(text.as_bytes())));
        }
        change
    }
}

/// The smallest differing parts of a property: members of objects, and elements of lists of
/// settings named by `Action` or `Id` (a stack's user settings, a bucket's notifications).
fn leaf_changes(path: String, before: &Value, after: &Value, out: &mut Vec<(String, Value, Value)>) {
    if before == after {
        return;
    }
    let keyed = |list: &Vec<Value>| -> Option<Vec<(String, Value)>> {
        list.iter().map(|item| ["Action", "Id"].iter().find_map(|k| item[*k].as_str()).map(|key| (key.to_owned(), item.clone()))).collect()
    };
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let (x, y) = (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                leaf_changes(format!("{path}.{key}"), x, y, out);
            }
        }
        (Value::Array(a), Value::Array(b)) => match (keyed(a), keyed(b)) {
            (Some(a), Some(b)) => {
                let keys: std::collections::BTreeSet<&String> = a.iter().chain(b.iter()).map(|(k, _)| k).collect();
                for key in keys {
                    let find = |list: &[(String, Value)]| list.iter().find(|(k, _)| k == key).map_or(Value::Null, |(_, v)| v.clone());
                    leaf_changes(format!("{path}.{key}"), &find(&a), &find(&b), out);
                }
            }
            _ => out.push((path, before.clone(), after.clone())),
        },
        _ => out.push((path, before.clone(), after.clone())),
    }
}

/// The resources as the last deploy left them, in the order they were deployed.
async fn deployed(plane: &Platform) -> Result<Vec<Resource>, ActionError> {
    let rows = sqlx::query("SELECT logical_id, stack, kind, properties FROM deployed_resources").fetch_all(&plane.store.pool).await?;
    let mut out = Vec::new();
    for row in rows {
        let stack: String = row.try_get("stack")?;
        let Some(stack) = STACKS.iter().find(|(s, _)| *s == stack).map(|(s, _)| *s) else { continue };
        let Some(kind) = Kind::parse(&row.try_get::<String, _>("kind")?) else { continue };
        let properties = serde_json::from_str(&row.try_get::<String, _>("properties")?).map_err(ActionError::internal)?;
        out.push((row.try_get::<String, _>("logical_id")?, stack, kind, properties));
    }
    let mut resources: Vec<Resource> =
        out.into_iter().map(|(logical_id, stack, kind, properties)| Resource { stack, logical_id, kind, properties }).collect();
    resources.sort_by_key(|r| (r.stack_index(), kind_order(r.kind)));
    Ok(resources)
}

/// Within a stack, the order resources are made in (the reverse is the order they go in).
fn kind_order(kind: Kind) -> usize {
    [
        Kind::Network,
        Kind::Bucket,
        Kind::Dataset,
        Kind::Parameter,
        Kind::Policy,
        Kind::Fleet,
        Kind::Stack,
        Kind::FleetAssociation,
        Kind::BucketNotifications,
        Kind::FleetRunning,
        Kind::Key,
        Kind::NotebookInstance,
        Kind::SamlProvider,
    ]
    .iter()
    .position(|k| *k == kind)
    .unwrap_or(usize::MAX)
}

fn plan(old: &[Resource], new: &[Resource]) -> Vec<Planned> {
    let mut planned = Vec::new();
    for r in new {
        match old.iter().find(|o| o.logical_id == r.logical_id) {
            None => planned.push(Planned { old: None, new: Some(r.clone()), change: Change::Create }),
            Some(o) => {
                let mut fields: Vec<String> = Vec::new();
                for source in [&o.properties, &r.properties] {
                    for key in source.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                        if o.properties[&key] != r.properties[&key] && !fields.contains(&key) {
                            fields.push(key);
                        }
                    }
                }
                if fields.is_empty() {
                    continue;
                }
                let immutable: Vec<String> = fields.iter().filter(|f| r.kind.immutable().contains(&f.as_str())).cloned().collect();
                let change =
                    if immutable.is_empty() { Change::Update { changed: fields } } else { Change::Replace { changed: fields, immutable } };
                planned.push(Planned { old: Some(o.clone()), new: Some(r.clone()), change });
            }
        }
    }
    for o in old.iter().rev() {
        if !new.iter().any(|r| r.logical_id == o.logical_id) {
            planned.push(Planned { old: Some(o.clone()), new: None, change: Change::Delete });
        }
    }
    planned
}

/// Parses and checks a spec: every problem at once, and nothing is touched when there is one.
async fn desired(input: &SpecInput) -> Result<(Spec, Vec<Resource>), ActionError> {
    let overrides: Vec<String> = input.overrides.iter().map(|o| o.0.clone()).collect();
    let spec = Spec::parse(&input.spec.0, &overrides).map_err(|err| ActionError::validation(err.to_string()))?;
    let idp_metadata = match &spec.idp_metadata {
        Some(source) => Some(template::load_idp_metadata(source).await),
        None => None,
    };
    let policies: Vec<(String, String)> = spec.policies.iter().map(|p| (p.name.clone(), p.text.clone())).collect();
    if let Err(errors) = Authorizer::load(&policies, &crate::core::actions::declarations()) {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        return Err(ActionError::validation(format!("the spec's policies are invalid:\n{}", lines.join("\n"))));
    }
    let resources = template::resources(&spec, idp_metadata)
        .map_err(|problems| ActionError::validation(model::spec::SpecError { problems }.to_string()))?;
    Ok((spec, resources))
}

/// Platform settings a deploy cannot change while the server runs.
fn restart_required(running: &Spec, next: &Spec) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let checks: [(&'static str, bool); 8] = [
        ("environment_name", running.environment_name != next.environment_name),
        ("account_id", running.account_id != next.account_id),
        ("region", running.region != next.region),
        (
            "server",
            running.api_listen != next.api_listen
                || running.public_url != next.public_url
                || running.notebook_listen != next.notebook_listen
                || running.notebook_url != next.notebook_url,
        ),
        ("metadata.url", running.metadata_url != next.metadata_url),
        ("storage", running.storage != next.storage || running.max_object_size != next.max_object_size),
        ("audit", running.audit != next.audit),
        (
            "sandbox",
            running.endpoint_port != next.endpoint_port
                || running.credential_lifetime_seconds != next.credential_lifetime_seconds
                || (running.id_base, running.id_slots) != (next.id_base, next.id_slots),
        ),
    ];
    for (field, differs) in checks {
        if differs {
            fields.push(field);
        }
    }
    fields
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

/// One deploy or destroy in progress: writes its events.
struct Run<'a> {
    platform: &'a Platform,
    deployment_id: String,
    client_token: Option<String>,
    seq: i64,
    events: Vec<Value>,
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

    async fn stack_event(&mut self, stack: &str, status: &str, reason: Option<&str>) {
        self.event(stack, stack, "DataSandbox::Stack", status, reason).await;
    }

    async fn resource_event(&mut self, r: &Resource, status: &str, reason: Option<&str>) {
        self.event(r.stack, &r.logical_id, &r.kind.type_name(), status, reason).await;
    }
}

fn event_json(stack: &str, logical_id: &str, resource_type: &str, status: &str, reason: Option<&str>, time: i64) -> Value {
    json!({
        "StackName": stack,
        "LogicalResourceId": logical_id,
        "ResourceType": resource_type,
        "ResourceStatus": status,
        "ResourceStatusReason": reason,
        "Timestamp": millis_to_rfc3339(time),
    })
}

async fn start_run<'a>(ctx: &Ctx<'a>, kind: &str, input: Option<&SpecInput>, token: Option<String>) -> Result<Run<'a>, ActionError> {
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

async fn finish_run(run: &Run<'_>, status: &str) -> Result<(), ActionError> {
    sqlx::query("UPDATE deployments SET status = $1, finished = $2 WHERE deployment_id = $3")
        .bind(status)
        .bind(now_millis())
        .bind(&run.deployment_id)
        .execute(&run.platform.store.pool)
        .await?;
    Ok(())
}

/// Records `resources` as the deployed state, in one transaction.
async fn record_state(plane: &Platform, resources: &[Resource]) -> Result<(), ActionError> {
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

/// The policies of a spec as the trail names them: name, SHA-256 of the text, length.
pub(crate) fn policy_digests(spec: &Spec) -> Value {
    spec.policies
        .iter()
        .map(|p| json!({ "Name": p.name, "Sha256": hex::encode(sha2::Sha256::digest(p.text.as_bytes())), "Bytes": p.text.len() }))
        .collect()
}

/// Puts `spec`'s policies in force. Which texts (by SHA-256) is recorded first, so the trail
/// binds every policy a decision is made under; a new set (`Effect::Gated`) is refused if
/// that record cannot be written, while a rollback to the previous set goes ahead regardless.
async fn swap_policies(plane: &Platform, spec: &Spec, correlation_id: Option<String>, effect: Effect) -> Result<(), ActionError> {
    let policies: Vec<(String, String)> = spec.policies.iter().map(|p| (p.name.clone(), p.text.clone())).collect();
    let authorizer = Authorizer::load(&policies, &crate::core::actions::declarations())
        .map_err(|errors| ActionError::validation(format!("the spec's policies are invalid: {}", errors.len())))?;
    let event = ServiceEvent {
        source: "deploy",
        name: "PoliciesActivated",
        principal: "deploy.datasandbox",
        parameters: json!({ "Policies": policy_digests(spec), "RolledBack": effect == Effect::Recorded }),
        correlation_id,
        effect,
        ..ServiceEvent::default()
    };
    plane.record_service_event(event).await?;
    *plane.authorizer.write().expect("authorizer lock") = Arc::new(authorizer);
    Ok(())
}

/// A change made during this run, kept to undo it if a later one fails.
struct Applied {
    old: Option<Resource>,
    new: Resource,
    replaced: bool,
}

fn deploying_caller(ctx: &mut Ctx<'_>) -> crate::core::caller::Caller {
    // Every step of a deploy carries one correlation id: the trail shows it as one act.
    let correlation_id = ctx.correlation_id().map(str::to_owned).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    ctx.set_correlation_id(correlation_id.clone());
    let mut caller = ctx.caller.clone();
    caller.correlation_id = Some(correlation_id);
    caller
}

/// An image's Python packages are installed on this host (unprivileged, wheels only — but
/// still code of the spec's choosing, run at build and in every notebook): only the host's
/// own operator, on the control socket, may name new ones. Others (a console admin, a
/// federated admin) may deploy specs whose images keep the packages already deployed.
fn only_operators_name_packages(ctx: &Ctx<'_>, spec: &Spec) -> Result<(), ActionError> {
    if matches!(ctx.caller.principal, policy::Principal::Operator { .. }) {
        return Ok(());
    }
    let current = ctx.platform.current();
    for image in &spec.images {
        let deployed = current.images.iter().find(|i| i.name == image.name).map(|i| &i.python_packages);
        if !image.python_packages.is_empty() && deployed != Some(&image.python_packages) {
            return Err(ActionError::new(
                403,
                "AccessDeniedException",
                format!(
                    "images.{}.python_packages: only a local operator (on the control socket) may name Python packages for an image; \
                     ask one to deploy this spec",
                    image.name
                ),
            ));
        }
    }
    Ok(())
}

async fn deploy_action(deploy: &Deploy, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: SpecInput = ctx.parse_recorded(input)?;
    ctx.authorize(PolicyResource::Service("deploy".into()))?;
    let (spec, resources) = desired(&input).await?;
    only_operators_name_packages(ctx, &spec)?;
    // Platform settings take effect when the server next starts; the answer names them.
    let restart = restart_required(&ctx.platform.spec, &spec);
    let _one_at_a_time = deploy.deploying.lock().await;
    let caller = deploying_caller(ctx);
    let old = deployed(ctx.platform).await?;
    let planned = plan(&old, &resources);
    let changes: Vec<Value> = planned.iter().map(Planned::json).collect();
    let applier = deploy.applier(caller, ctx.source_ip, &spec);
    let mut run = start_run(ctx, "DEPLOY", Some(&input), input.client_request_token.clone()).await?;
    let first = old.is_empty();
    let (in_progress, complete, failed) = if first {
        ("CREATE_IN_PROGRESS", "CREATE_COMPLETE", "CREATE_FAILED")
    } else {
        ("UPDATE_IN_PROGRESS", "UPDATE_COMPLETE", "UPDATE_FAILED")
    };

    let mut applied: Vec<Applied> = Vec::new();
    let mut failure: Option<(String, ActionError)> = None;
    let mut policies_swapped = false;
    'stacks: for (stack, _) in STACKS {
        let here: Vec<&Planned> = planned.iter().filter(|p| p.resource().stack == *stack && p.change != Change::Delete).collect();
        if here.is_empty() {
            continue;
        }
        run.stack_event(stack, in_progress, None).await;
        for p in here {
            let new = p.new.as_ref().expect("creates, updates and replaces have a new resource");
            let (verb, reason) = match &p.change {
                Change::Create => ("CREATE", None),
                Change::Replace { immutable, .. } => (
                    "UPDATE",
                    Some(format!("Requested update requires the creation of a new physical resource ({})", immutable.join(", "))),
                ),
                _ => ("UPDATE", None),
            };
            run.resource_event(new, &format!("{verb}_IN_PROGRESS"), reason.as_deref()).await;
            let result = match &p.change {
                Change::Create => applier.create(new).await,
                Change::Replace { .. } => applier.replace(p.old.as_ref().expect("a replacement has an old resource"), new).await,
                _ => applier.update(p.old.as_ref(), new).await,
            };
            match result {
                Ok(()) => {
                    run.resource_event(new, &format!("{verb}_COMPLETE"), None).await;
                    applied.push(Applied { old: p.old.clone(), new: new.clone(), replaced: matches!(p.change, Change::Replace { .. }) });
                }
                Err(err) => {
                    run.resource_event(new, &format!("{verb}_FAILED"), Some(&err.message)).await;
                    run.stack_event(stack, failed, Some(&format!("{}: {}", new.logical_id, err.message))).await;
                    failure = Some((new.logical_id.clone(), err));
                    break 'stacks;
                }
            }
        }
        if *stack == "service-roles" {
            if let Err(err) = swap_policies(ctx.platform, &spec, ctx.correlation_id().map(str::to_owned), Effect::Gated).await {
                failure = Some((stack.to_string(), err));
                break;
            }
            policies_swapped = true;
        }
        run.stack_event(stack, complete, None).await;
    }

    if let Some((logical_id, err)) = failure {
        let rollback_in_progress = if first { "ROLLBACK_IN_PROGRESS" } else { "UPDATE_ROLLBACK_IN_PROGRESS" };
        let rollback_complete = if first { "ROLLBACK_COMPLETE" } else { "UPDATE_ROLLBACK_COMPLETE" };
        let mut stacks_touched: Vec<&'static str> = applied.iter().map(|a| a.new.stack).collect();
        stacks_touched.dedup();
        for stack in &stacks_touched {
            run.stack_event(stack, rollback_in_progress, Some(&format!("{logical_id} failed: {}", err.message))).await;
        }
        if policies_swapped {
            let previous = ctx.platform.current();
            let _ = swap_policies(ctx.platform, &previous, ctx.correlation_id().map(str::to_owned), Effect::Recorded).await;
        }
        let mut rollback_errors = Vec::new();
        for a in applied.iter().rev() {
            let undone = match (&a.old, a.replaced) {
                (None, _) => applier.delete(&a.new).await.map(drop),
                (Some(old), true) => applier.replace(&a.new, old).await,
                (Some(old), false) => applier.update(Some(&a.new), old).await,
            };
            match undone {
                Ok(()) => {
                    run.resource_event(&a.new, if a.old.is_none() { "DELETE_COMPLETE" } else { "UPDATE_COMPLETE" }, Some("rolled back"))
                        .await
                }
                Err(e) => {
                    run.resource_event(&a.new, "UPDATE_FAILED", Some(&format!("rollback: {}", e.message))).await;
                    rollback_errors.push(format!("{}: {}", a.new.logical_id, e.message));
                }
            }
        }
        let final_status = if rollback_errors.is_empty() { rollback_complete } else { "UPDATE_ROLLBACK_FAILED" };
        for stack in &stacks_touched {
            run.stack_event(stack, final_status, None).await;
        }
        finish_run(&run, final_status).await?;
        let mut message = format!("the deploy failed at `{logical_id}`: {}; ", err.message);
        if rollback_errors.is_empty() {
            message.push_str("every change was rolled back, the environment is as it was");
        } else {
            message.push_str(&format!("the rollback could not undo: {}; deploy again once fixed", rollback_errors.join("; ")));
        }
        return Err(ActionError::new(if err.is_client_error() { err.status } else { 500 }, "DeploymentFailed", message));
    }

    // Cleanup: what the spec no longer has, newest stack first; a failure here is reported but
    // rolls nothing back (the new state already works).
    let mut retained = Vec::new();
    let deletes: Vec<&Planned> = planned.iter().filter(|p| p.change == Change::Delete).collect();
    if !deletes.is_empty() {
        for p in deletes {
            let r = p.resource();
            run.resource_event(r, "DELETE_IN_PROGRESS", None).await;
            match applier.delete(r).await {
                Ok(Deleted::Removed) => run.resource_event(r, "DELETE_COMPLETE", None).await,
                Ok(Deleted::Retained(reason)) => {
                    run.resource_event(r, "DELETE_SKIPPED", Some(&reason)).await;
                    retained.push(json!({ "LogicalResourceId": r.logical_id, "Reason": reason }));
                }
                Err(err) => {
                    run.resource_event(r, "DELETE_FAILED", Some(&err.message)).await;
                    retained.push(json!({ "LogicalResourceId": r.logical_id, "Reason": err.message }));
                }
            }
        }
    }
    record_state(ctx.platform, &resources).await?;
    finish_run(&run, "UPDATE_COMPLETE").await?;
    *ctx.platform.current.write().expect("current spec lock") = Arc::new(spec);
    deploy.streaming.wake.notify_one();
    Ok(json!({
        "DeploymentId": run.deployment_id,
        "SpecSha256": hex::encode(sha2::Sha256::digest(input.spec.0.as_bytes())),
        "Changes": changes,
        "Retained": retained,
        "RestartRequired": restart,
        "Events": run.events,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DestroyInput {
    #[serde(default)]
    client_request_token: Option<String>,
}

async fn destroy_action(deploy: &Deploy, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: DestroyInput = ctx.parse(input)?;
    ctx.authorize(PolicyResource::Service("deploy".into()))?;
    let _one_at_a_time = deploy.deploying.lock().await;
    let caller = deploying_caller(ctx);
    let old = deployed(ctx.platform).await?;
    let current = ctx.platform.current();
    let applier = deploy.applier(caller, ctx.source_ip, &current);
    let mut run = start_run(ctx, "DESTROY", None, input.client_request_token).await?;
    let (mut deleted, mut retained, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let mut kept_resources = Vec::new();
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
                    deleted.push(json!(r.logical_id));
                }
                Ok(Deleted::Retained(reason)) => {
                    run.resource_event(r, "DELETE_SKIPPED", Some(&reason)).await;
                    retained.push(json!({ "LogicalResourceId": r.logical_id, "ResourceType": r.kind.type_name(), "Reason": reason }));
                    if r.kind == Kind::Policy {
                        kept_resources.push(r.clone());
                    }
                }
                Err(err) => {
                    run.resource_event(r, "DELETE_FAILED", Some(&err.message)).await;
                    failed.push(json!({ "LogicalResourceId": r.logical_id, "Reason": err.message }));
                    kept_resources.push(r.clone());
                    stack_failed = true;
                }
            }
        }
        run.stack_event(stack, if stack_failed { "DELETE_FAILED" } else { "DELETE_COMPLETE" }, None).await;
    }
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
            "DestroyIncomplete",
            format!(
                "{} resource(s) could not be deleted: {}; fix them and destroy again",
                failed.len(),
                failed.iter().map(|f| f["LogicalResourceId"].as_str().unwrap_or_default()).collect::<Vec<_>>().join(", ")
            ),
        ))
    }
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
