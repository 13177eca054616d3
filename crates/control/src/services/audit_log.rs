//! `audit:` — reading the trail through the pipeline (so reading it is itself audited).

use audit::LookupFilter;
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};

use super::unregistered;
use crate::error::ActionError;
use crate::pipeline::Ctx;

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, action: &str, input: Value) -> Result<Value, ActionError> {
    match action {
        "LookupEvents" => lookup_events(ctx, input).await,
        _ => Err(unregistered(action)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct LookupAttribute {
    attribute_key: String,
    attribute_value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct LookupInput {
    #[serde(default)]
    lookup_attributes: Vec<LookupAttribute>,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
    #[serde(default)]
    max_results: Option<i64>,
}

/// CloudTrail's LookupEvents attributes, plus `CorrelationId`.
const ATTRIBUTES: &[&str] = &["EventName", "EventSource", "Username", "RequestId", "CorrelationId", "ResourceName"];

async fn lookup_events(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: LookupInput = ctx.parse(input)?;
    let max = input.max_results.unwrap_or(50);
    if !(1..=1000).contains(&max) {
        return Err(ActionError::validation(format!("MaxResults {max} is outside 1..=1000")));
    }
    let time = |member: &str, value: &Option<String>| -> Result<Option<chrono::DateTime<chrono::Utc>>, ActionError> {
        value
            .as_deref()
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|_| ActionError::validation(format!("{member} `{v}` is not an RFC 3339 time like 2026-01-01T00:00:00Z")))
            })
            .transpose()
    };
    let mut filter = LookupFilter {
        start_time: time("StartTime", &input.start_time)?,
        end_time: time("EndTime", &input.end_time)?,
        ..LookupFilter::default()
    };
    for attribute in input.lookup_attributes {
        let value = Some(attribute.attribute_value);
        match attribute.attribute_key.as_str() {
            "EventName" => filter.event_name = value,
            "EventSource" => filter.event_source = value,
            "Username" => filter.user_name = value,
            "RequestId" => filter.request_id = value,
            "CorrelationId" => filter.correlation_id = value,
            "ResourceName" => filter.resource_name = value,
            other => return Err(ActionError::validation(format!("AttributeKey `{other}` is not one of {}", ATTRIBUTES.join(", ")))),
        }
    }
    ctx.authorize(Resource::Service("audit".into()))?;
    let trail = ctx.plane.trail.clone();
    let records = tokio::task::spawn_blocking(move || trail.lookup(&filter, max as usize))
        .await
        .map_err(ActionError::internal)?
        .map_err(ActionError::internal)?;
    Ok(json!({ "Events": records }))
}
