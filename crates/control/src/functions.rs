//! Built-in functions and the dispatcher that delivers bucket notifications to them.
//!
//! Delivery is at-least-once (the outbox row is written with the object change and deleted
//! only after the function succeeded), in order per key (a failing key holds back its later
//! events), retried with exponential backoff, and every delivery and failure is audited.
//! Functions act only through the pipeline, under their own least-privilege role.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::core::actions::BuiltinFunction;
use crate::core::codec::{decode_base64, encode_base64};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::{Pipeline, Request};
use crate::core::platform::ServiceEvent;
use crate::core::store::now_millis;
use crate::storage::{self, OutboxRow};

mod session_validator;

/// After this many failed attempts an event is dropped, with an audit record saying so.
const MAX_ATTEMPTS: i64 = 8;

pub(crate) fn start_dispatcher(control: Pipeline) {
    tokio::spawn(async move {
        loop {
            let wait = match deliver_due(&control).await {
                Ok(wait) => wait,
                Err(err) => {
                    tracing::error!(error = %err, "notification dispatcher");
                    Duration::from_secs(1)
                }
            };
            // Woken early by a new outbox row; otherwise retry when the next backoff ends.
            let _ = tokio::time::timeout(wait, control.platform.outbox.notified()).await;
        }
    });
}

/// Delivers every due event once; returns how long to wait before the next look.
async fn deliver_due(control: &Pipeline) -> Result<Duration, ActionError> {
    let plane = &*control.platform;
    if !plane.store.is_sqlite() {
        return deliver_claimed(control).await;
    }
    let rows = storage::queued_notifications(plane).await?;
    let fetched = rows.len();
    let now = now_millis();
    let mut held: HashSet<(String, String)> = HashSet::new();
    let mut next_due = i64::MAX;
    for OutboxRow { seq, bucket, key, function, event, attempts, next_attempt } in rows {
        let slot = (bucket, key);
        if held.contains(&slot) {
            continue;
        }
        if next_attempt > now {
            // An earlier event of this key is waiting for its retry; later ones wait behind it.
            next_due = next_due.min(next_attempt);
            held.insert(slot);
            continue;
        }
        let event: Value = serde_json::from_str(&event).map_err(ActionError::internal)?;
        let outcome = invoke(control, &function, &event).await;
        audit_delivery(control, &function, &event, attempts + 1, outcome.as_ref().err()).await;
        match outcome {
            Ok(()) => {
                plane.metrics.notifications_delivered.inc();
                storage::delete_notification(plane, seq).await?;
            }
            Err(err) if attempts + 1 >= MAX_ATTEMPTS => {
                plane.metrics.notifications_failed.inc();
                tracing::error!(function, error = %err, "notification dropped after {MAX_ATTEMPTS} attempts");
                storage::delete_notification(plane, seq).await?;
            }
            Err(err) => {
                plane.metrics.notifications_failed.inc();
                let backoff = 200i64 << attempts.min(8);
                storage::reschedule_notification(plane, seq, attempts + 1, now + backoff, &err.to_string()).await?;
                next_due = next_due.min(now + backoff);
                held.insert(slot);
            }
        }
    }
    if fetched == 200 && next_due == i64::MAX {
        return Ok(Duration::ZERO);
    }
    let wait = if next_due == i64::MAX { 5_000 } else { (next_due - now_millis()).clamp(0, 5_000) };
    Ok(Duration::from_millis(wait as u64))
}

/// PostgreSQL, where every node delivers: one notification at a time, each claimed so that no
/// other node delivers it or a later one of its key meanwhile.
async fn deliver_claimed(control: &Pipeline) -> Result<Duration, ActionError> {
    let plane = &*control.platform;
    while let Some(claimed) = storage::claim_notification(plane, now_millis()).await? {
        let OutboxRow { function, event, attempts, .. } = &claimed.row;
        let (function, attempts) = (function.clone(), *attempts);
        let event: Value = serde_json::from_str(event).map_err(ActionError::internal)?;
        let outcome = invoke(control, &function, &event).await;
        audit_delivery(control, &function, &event, attempts + 1, outcome.as_ref().err()).await;
        match outcome {
            Ok(()) => {
                plane.metrics.notifications_delivered.inc();
                claimed.delete().await?;
            }
            Err(err) if attempts + 1 >= MAX_ATTEMPTS => {
                plane.metrics.notifications_failed.inc();
                tracing::error!(function, error = %err, "notification dropped after {MAX_ATTEMPTS} attempts");
                claimed.delete().await?;
            }
            Err(err) => {
                plane.metrics.notifications_failed.inc();
                claimed.reschedule(attempts + 1, now_millis() + (200i64 << attempts.min(8)), &err.to_string()).await?;
            }
        }
    }
    let wait = match storage::next_notification_due(plane).await? {
        // A due row may be one another node holds (or one waiting behind it): look again
        // soon, not at once.
        Some(due) => (due - now_millis()).clamp(100, 5_000),
        None => 5_000,
    };
    Ok(Duration::from_millis(wait as u64))
}

async fn invoke(control: &Pipeline, function: &str, event: &Value) -> Result<(), ActionError> {
    let Some(builtin) = BuiltinFunction::from_name(function) else {
        return Err(ActionError::validation(format!("function `{function}` does not exist")));
    };
    let correlation_id = event["correlationId"].as_str().map(str::to_owned);
    let call = |action: &str, input: Value| Request::from_function(function, correlation_id.clone(), action, &input);
    match builtin {
        BuiltinFunction::SessionValidator => session_validator::run(control, event).await,
        BuiltinFunction::Sha256Sidecar => {
            let bucket = event["s3"]["bucket"]["name"].as_str().unwrap_or_default();
            let key = event["s3"]["object"]["key"].as_str().unwrap_or_default();
            let created = event["eventName"].as_str().is_some_and(|e| e.starts_with("ObjectCreated"));
            if !created || key.ends_with(".sha256") {
                return Ok(());
            }
            let object = control.call(call("storage:GetObject", json!({ "Bucket": bucket, "Key": key }))).await.result;
            let object = match object {
                Ok(object) => object,
                // Deleted since: nothing left to checksum.
                Err(err) if err.code == ErrorCode::NoSuchKey => return Ok(()),
                Err(err) => return Err(err),
            };
            let body = decode_base64("Body", object["Body"].as_str().unwrap_or_default())?;
            let name = key.rsplit('/').next().unwrap_or(key);
            let line = format!("{}  {name}\n", hex::encode(Sha256::digest(&body)));
            let put = json!({ "Bucket": bucket, "Key": format!("{key}.sha256"), "Body": encode_base64(line.as_bytes()), "ContentType": "text/plain" });
            control.call(call("storage:PutObject", put)).await.result.map(|_| ())
        }
    }
}

/// One `functions:Invoke` service event per delivery attempt.
async fn audit_delivery(control: &Pipeline, function: &str, event: &Value, attempt: i64, error: Option<&ActionError>) {
    let spec = &control.platform.spec;
    let parameters = json!({
        "FunctionName": function,
        "Attempt": attempt,
        "EventName": event["eventName"],
        "Bucket": event["s3"]["bucket"]["name"],
        "Key": event["s3"]["object"]["key"],
        "ConfigurationId": event["s3"]["configurationId"],
        "TriggeringRequestId": event["responseElements"]["x-amz-request-id"],
    });
    let resources = vec![audit::RecordResource {
        arn: model::arn::regional("functions", &spec.region, &spec.account_id, &format!("function/{function}")),
        account_id: spec.account_id.clone(),
        kind: "DataSandbox::Functions::Function".into(),
    }];
    let record = ServiceEvent {
        source: "functions",
        name: "Invoke",
        principal: "functions.datasandbox",
        parameters,
        error,
        resources,
        management_event: false,
        correlation_id: event["correlationId"].as_str().map(str::to_owned),
        source_ip: None,
        // The function has run (its own actions were recorded, or refused, one by one).
        effect: crate::core::platform::Effect::Recorded,
    };
    let _ = control.record_service_event(record).await;
}

#[cfg(test)]
mod tests {
    use policy::{Authorizer, Channel, Principal, Resource};

    fn defaults() -> Authorizer {
        let spec = model::spec::Spec::parse(&model::spec::default_spec_text(), &[]).expect("the default spec");
        let policies: Vec<(String, String)> = spec.policies.iter().map(|p| (p.name.clone(), p.text.clone())).collect();
        Authorizer::load(&policies, &crate::core::actions::declarations()).expect("the default policies")
    }

    fn object(bucket: &str, key: &str, notifies: &[&str]) -> Resource {
        let home = model::HomeOwner::of_key(key).map(|h| h.id());
        Resource::Object {
            bucket: bucket.into(),
            bucket_home_folders: home.is_some(),
            key: key.into(),
            home,
            notifies: notifies.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    #[test]
    fn attack_f17_function_roles_reach_only_their_own_buckets_and_keys() {
        let authorizer = defaults();
        let allowed = |function: &str, action: &str, resource: &Resource| {
            authorizer.authorize(&Principal::Function { name: function.into() }, action, resource, "127.0.0.1").allowed
        };
        let folder = format!("user/custom/{}/", "a".repeat(64));
        let home = |file: &str, notifies: &[&str]| object("datasandbox-home", &format!("{folder}{file}"), notifies);
        let validator = ["session-validator"];
        let sidecar = ["sha256-sidecar"];
        // What each function is for.
        assert!(allowed("session-validator", "storage:GetObject", &home("session.json", &validator)));
        assert!(allowed("session-validator", "storage:PutObject", &home("session_url.txt", &validator)));
        let notebook_key = Resource::Key { id: "k1".into(), aliases: vec!["alias/notebook-kms".into()] };
        assert!(allowed("session-validator", "keys:Decrypt", &notebook_key));
        assert!(allowed("session-validator", "keys:GenerateDataKey", &notebook_key));
        assert!(allowed("sha256-sidecar", "storage:GetObject", &object("landing", "in/data.csv", &sidecar)));
        assert!(allowed("sha256-sidecar", "storage:PutObject", &object("landing", "in/data.csv.sha256", &sidecar)));
        // And nothing beyond it.
        let other_key = Resource::Key { id: "k2".into(), aliases: vec!["alias/datasandbox/audit-trail-signing".into()] };
        for action in ["keys:Decrypt", "keys:GenerateDataKey"] {
            assert!(!allowed("session-validator", action, &other_key), "the validator may {action} with any key");
        }
        assert!(
            !allowed("session-validator", "storage:GetObject", &object("elsewhere", &format!("{folder}session.json"), &[])),
            "the validator reads session files in a bucket that does not call it"
        );
        assert!(
            !allowed("sha256-sidecar", "storage:GetObject", &object("secrets", "payroll.csv", &[])),
            "the sidecar reads a bucket that does not call it"
        );
        assert!(
            !allowed("sha256-sidecar", "storage:PutObject", &object("landing", "in/data.csv", &sidecar)),
            "the sidecar overwrites the objects it checks"
        );
    }

    #[test]
    fn attack_f10_only_the_channels_that_apply_the_stacks_settings_reach_a_home_folder() {
        let authorizer = defaults();
        let alice = model::UserRef::local(model::UserId::new("alice").expect("valid"));
        let key = format!("{}report.csv", alice.home().prefix());
        let resource = object("datasandbox-home", &key, &["session-validator"]);
        for (channel, expected) in [
            (Channel::Instance, true),
            (Channel::Session, true),
            (Channel::IssuedToken, true),
            (Channel::Bearer, false),
            (Channel::SignIn, false),
            (Channel::Link, false),
            (Channel::StreamingUrl, false),
        ] {
            let principal = Principal::User { user: alice.clone(), channel, mfa: false, roles: Vec::new() };
            let decision = authorizer.authorize(&principal, "storage:GetObject", &resource, "127.0.0.1");
            assert_eq!(decision.allowed, expected, "{channel:?}");
        }
    }
}
