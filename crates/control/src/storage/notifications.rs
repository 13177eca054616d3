//! Bucket notifications: reading and replacing a bucket's configuration, and the outbox rows
//! that a write queues in its own transaction (so delivery is at-least-once).

use model::BucketName;
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};

use super::notification_configuration::NotificationConfiguration;
use super::repo::{self, QueuedNotification, find_bucket, no_such_bucket};
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::store::{Statements, millis_to_rfc3339};

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
    repo::update_notification_configuration(ctx.platform, &input.bucket, &config).await?;
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

/// What a write's notifications say of the call that made it, taken from its context so that
/// they can be queued inside the write's transaction.
pub(super) struct Notifier {
    config: NotificationConfiguration,
    region: String,
    principal: String,
    source_ip: String,
    request_id: String,
    correlation_id: Option<String>,
}

impl Notifier {
    /// For a write that raises no notification (a service's own bucket has no configuration).
    pub(super) fn silent(plane: &crate::core::platform::Platform) -> Notifier {
        Notifier {
            config: NotificationConfiguration::default(),
            region: plane.spec.region.clone(),
            principal: String::new(),
            source_ip: String::new(),
            request_id: String::new(),
            correlation_id: None,
        }
    }

    pub(super) fn new(ctx: &Ctx<'_>, config: &NotificationConfiguration) -> Notifier {
        Notifier {
            config: config.clone(),
            region: ctx.platform.spec.region.clone(),
            principal: ctx.principal_arn().to_owned(),
            source_ip: ctx.source_ip.to_owned(),
            request_id: ctx.request_id.clone(),
            correlation_id: ctx.correlation_id().map(str::to_owned),
        }
    }

    /// Queues one outbox row per matching configuration, inside the caller's transaction.
    pub(super) async fn enqueue(&self, statements: &mut dyn Statements, event: &Event<'_>) -> Result<bool, ActionError> {
        let mut queued = false;
        for configuration in self.config.lambda_function_configurations.iter().filter(|c| c.matches(event.name, event.key)) {
            // S3's event record shape, plus the correlation id of the call that caused it.
            let record = json!({
                "eventVersion": "2.1",
                "eventSource": "datasandbox:storage",
                "awsRegion": self.region,
                "eventTime": millis_to_rfc3339(event.time),
                "eventName": event.name,
                "userIdentity": { "principalId": self.principal },
                "requestParameters": { "sourceIPAddress": self.source_ip },
                "responseElements": { "x-amz-request-id": self.request_id },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": configuration.id,
                    "bucket": { "name": event.bucket, "arn": model::arn::global("storage", event.bucket.as_str()) },
                    "object": { "key": event.key, "size": event.size, "eTag": event.etag.trim_matches('"'), "sequencer": format!("{:016X}", event.time) },
                },
                "correlationId": self.correlation_id,
            });
            let notification = QueuedNotification {
                bucket: event.bucket,
                key: event.key,
                configuration_id: &configuration.id,
                function: configuration.function_name(),
                event: record.to_string(),
            };
            repo::insert_notification(statements, &notification).await?;
            queued = true;
        }
        Ok(queued)
    }
}
