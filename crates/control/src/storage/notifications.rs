//! Bucket notifications: S3's configuration shape with built-in functions as targets, and the
//! outbox rows that a write queues in its own transaction (so delivery is at-least-once).

use model::BucketName;
use model::spec::NotificationSpec;
use policy::Resource;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{Any, Transaction};

use super::{find_bucket, no_such_bucket};
use crate::core::actions::BuiltinFunction;
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::store::{millis_to_rfc3339, now_millis};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct NotificationConfiguration {
    #[serde(default)]
    pub lambda_function_configurations: Vec<FunctionConfiguration>,
}

impl NotificationConfiguration {
    /// The names of the functions these notifications invoke (an ARN's `function:<name>`).
    pub(crate) fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lambda_function_configurations
            .iter()
            .map(|c| c.lambda_function_arn.rsplit("function:").next().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct FunctionConfiguration {
    #[serde(default)]
    pub id: String,
    /// A built-in function's name, or an ARN ending in `function:<name>`.
    pub lambda_function_arn: String,
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct Filter {
    pub key: KeyFilter,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct KeyFilter {
    pub filter_rules: Vec<FilterRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct FilterRule {
    pub name: String,
    pub value: String,
}

impl FunctionConfiguration {
    pub fn function_name(&self) -> &str {
        self.lambda_function_arn.rsplit_once("function:").map_or(self.lambda_function_arn.as_str(), |(_, name)| name)
    }

    fn rule(&self, name: &str) -> &str {
        self.filter
            .as_ref()
            .and_then(|f| f.key.filter_rules.iter().find(|r| r.name.eq_ignore_ascii_case(name)))
            .map_or("", |r| r.value.as_str())
    }

    fn matches(&self, event: &str, key: &str) -> bool {
        let event_matches = self.events.iter().any(|e| match e.strip_suffix('*') {
            Some(family) => event.starts_with(family),
            None => e == event,
        });
        event_matches && key.starts_with(self.rule("prefix")) && key.ends_with(self.rule("suffix"))
    }

    fn from_spec(spec: &NotificationSpec) -> FunctionConfiguration {
        let mut rules = Vec::new();
        if !spec.prefix.is_empty() {
            rules.push(FilterRule { name: "prefix".into(), value: spec.prefix.clone() });
        }
        if !spec.suffix.is_empty() {
            rules.push(FilterRule { name: "suffix".into(), value: spec.suffix.clone() });
        }
        FunctionConfiguration {
            id: spec.id.clone(),
            lambda_function_arn: spec.function.clone(),
            events: spec.events.clone(),
            filter: (!rules.is_empty()).then_some(Filter { key: KeyFilter { filter_rules: rules } }),
        }
    }
}

impl NotificationConfiguration {
    /// This configuration with the spec's notifications added or replaced by `Id`; every
    /// other notification stays (the seed's sample wiped them on each update).
    pub fn merged_with(&self, specs: &[NotificationSpec]) -> NotificationConfiguration {
        let mut merged = self.clone();
        for spec in specs {
            let wanted = FunctionConfiguration::from_spec(spec);
            match merged.lambda_function_configurations.iter_mut().find(|c| c.id == spec.id) {
                Some(existing) => *existing = wanted,
                None => merged.lambda_function_configurations.push(wanted),
            }
        }
        merged
    }

    /// Checks every configuration and names each problem; fills in missing ids as S3 does.
    fn validated(mut self) -> Result<NotificationConfiguration, ActionError> {
        let mut problems = Vec::new();
        for (index, config) in self.lambda_function_configurations.iter_mut().enumerate() {
            let at = format!("LambdaFunctionConfigurations[{index}]");
            if config.id.is_empty() {
                config.id = uuid::Uuid::new_v4().to_string();
            }
            if config.id.len() > 255 {
                problems.push(format!("{at}.Id is longer than 255 characters"));
            }
            if BuiltinFunction::from_name(config.function_name()).is_none() {
                problems.push(format!(
                    "{at}.LambdaFunctionArn: `{}` is not a function; functions are {}",
                    config.lambda_function_arn,
                    BuiltinFunction::names().join(", ")
                ));
            }
            if config.events.is_empty() {
                problems.push(format!("{at}.Events must name at least one event type"));
            }
            for event in &config.events {
                if !model::spec::is_event_type(event) {
                    problems.push(format!("{at}.Events: `{event}` is not an event type"));
                }
            }
            if let Some(filter) = &config.filter {
                for rule in &filter.key.filter_rules {
                    if !(rule.name.eq_ignore_ascii_case("prefix") || rule.name.eq_ignore_ascii_case("suffix")) {
                        problems.push(format!("{at}.Filter: rule name `{}` must be prefix or suffix", rule.name));
                    }
                }
                for name in ["prefix", "suffix"] {
                    if filter.key.filter_rules.iter().filter(|r| r.name.eq_ignore_ascii_case(name)).count() > 1 {
                        problems.push(format!("{at}.Filter has more than one {name} rule"));
                    }
                }
            }
        }
        let ids: Vec<&str> = self.lambda_function_configurations.iter().map(|c| c.id.as_str()).collect();
        for (index, id) in ids.iter().enumerate() {
            if ids[..index].contains(id) {
                problems.push(format!("Id `{id}` is used by more than one configuration"));
            }
        }
        if problems.is_empty() { Ok(self) } else { Err(ActionError::validation(problems.join("; "))) }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PutInput {
    bucket: BucketName,
    notification_configuration: NotificationConfiguration,
}

pub(super) async fn put(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: PutInput = ctx.parse(input)?;
    let row = find_bucket(ctx.platform, &input.bucket).await?;
    ctx.authorize(Resource::Bucket { name: input.bucket.to_string(), home_folders: row.as_ref().is_some_and(|r| r.home_folders) })?;
    if row.is_none() {
        return Err(no_such_bucket(&input.bucket));
    }
    let config = input.notification_configuration.validated()?;
    sqlx::query("UPDATE buckets SET notification_configuration = $1 WHERE name = $2")
        .bind(serde_json::to_string(&config).expect("serializes"))
        .bind(input.bucket.as_str())
        .execute(&ctx.platform.store.pool)
        .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct GetInput {
    bucket: BucketName,
}

pub(super) async fn get(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: GetInput = ctx.parse(input)?;
    let row = find_bucket(ctx.platform, &input.bucket).await?;
    ctx.authorize(Resource::Bucket { name: input.bucket.to_string(), home_folders: row.as_ref().is_some_and(|r| r.home_folders) })?;
    let row = row.ok_or_else(|| no_such_bucket(&input.bucket))?;
    Ok(serde_json::to_value(&row.notifications).expect("serializes"))
}

pub(super) struct Event<'a> {
    pub name: &'a str,
    pub bucket: &'a BucketName,
    pub key: &'a str,
    pub size: i64,
    pub etag: &'a str,
    pub time: i64,
}

/// Queues one outbox row per matching configuration, inside the caller's transaction.
pub(super) async fn enqueue(
    ctx: &Ctx<'_>,
    tx: &mut Transaction<'static, Any>,
    config: &NotificationConfiguration,
    event: &Event<'_>,
) -> Result<bool, ActionError> {
    let mut queued = false;
    for configuration in config.lambda_function_configurations.iter().filter(|c| c.matches(event.name, event.key)) {
        // S3's event record shape, plus the correlation id of the call that caused it.
        let record = json!({
            "eventVersion": "2.1",
            "eventSource": "datasandbox:storage",
            "awsRegion": ctx.platform.spec.region,
            "eventTime": millis_to_rfc3339(event.time),
            "eventName": event.name,
            "userIdentity": { "principalId": ctx.principal_arn() },
            "requestParameters": { "sourceIPAddress": ctx.source_ip },
            "responseElements": { "x-amz-request-id": ctx.request_id },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": configuration.id,
                "bucket": { "name": event.bucket, "arn": format!("arn:datasandbox:storage:::{}", event.bucket) },
                "object": { "key": event.key, "size": event.size, "eTag": event.etag.trim_matches('"'), "sequencer": format!("{:016X}", event.time) },
            },
            "correlationId": ctx.correlation_id(),
        });
        sqlx::query("INSERT INTO notifications (bucket, key, configuration_id, function, event, attempts, next_attempt) VALUES ($1, $2, $3, $4, $5, 0, $6)")
            .bind(event.bucket.as_str())
            .bind(event.key)
            .bind(&configuration.id)
            .bind(configuration.function_name())
            .bind(record.to_string())
            .bind(now_millis())
            .execute(&mut **tx)
            .await?;
        queued = true;
    }
    Ok(queued)
}
