//! `audit:` — reading the trail through the pipeline, so reading it is itself authorized and
//! audited: LookupEvents (CloudTrail's, plus CorrelationId), SQL queries over the index,
//! end-to-end traces, and rebuilding the index from the trail's files.

use std::time::Duration;

use audit::{LookupFilter, TraceSelector};
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{decode_token, encode_token, unregistered};
use crate::error::ActionError;
use crate::pipeline::Ctx;

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, action: &str, input: Value) -> Result<Value, ActionError> {
    match action {
        "LookupEvents" => lookup_events(ctx, input).await,
        "Query" => query(ctx, input).await,
        "Trace" => trace(ctx, input).await,
        "Reindex" => reindex(ctx, input).await,
        _ => Err(unregistered(action)),
    }
}

/// Reads see every record made before them: wait until the index has caught up with the trail.
async fn caught_up(ctx: &Ctx<'_>) -> Result<(), ActionError> {
    let durable = ctx.plane.trail.last_sequence();
    if ctx.plane.index.wait_for(durable, Duration::from_secs(10)).await {
        Ok(())
    } else {
        Err(ActionError::new(503, "ServiceUnavailable", "the audit index is behind the trail; retry, or run `datasandbox audit reindex`"))
    }
}

fn index_error(err: audit::IndexError) -> ActionError {
    match err {
        audit::IndexError::Query(message) => ActionError::validation(message),
        other => ActionError::internal(other),
    }
}

/// RFC 3339 in, the index's own spelling out (UTC with milliseconds), so strings compare.
fn time(member: &str, value: Option<&str>) -> Result<Option<String>, ActionError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .map_err(|_| ActionError::validation(format!("{member} `{v}` is not an RFC 3339 time like 2026-01-01T00:00:00Z")))
        })
        .transpose()
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
    #[serde(default)]
    next_token: Option<String>,
}

/// CloudTrail's LookupEvents attributes, plus `CorrelationId`.
const ATTRIBUTES: &[&str] = &["EventName", "EventSource", "Username", "RequestId", "CorrelationId", "ResourceName", "ReadOnly"];

async fn lookup_events(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: LookupInput = ctx.parse(input)?;
    let max = input.max_results.unwrap_or(50);
    if !(1..=1000).contains(&max) {
        return Err(ActionError::validation(format!("MaxResults {max} is outside 1..=1000")));
    }
    let mut filter = LookupFilter {
        start_time: time("StartTime", input.start_time.as_deref())?,
        end_time: time("EndTime", input.end_time.as_deref())?,
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
            "ReadOnly" => filter.read_only = value.map(|v| v == "true"),
            other => return Err(ActionError::validation(format!("AttributeKey `{other}` is not one of {}", ATTRIBUTES.join(", ")))),
        }
    }
    let before = match decode_token(input.next_token.as_deref())? {
        Some(token) => Some(token.parse::<u64>().map_err(|_| ActionError::validation("NextToken is invalid"))?),
        None => None,
    };
    ctx.authorize(Resource::Service("audit".into()))?;
    caught_up(ctx).await?;
    let (events, next) = ctx.plane.index.lookup(&filter, max as u32, before).await.map_err(index_error)?;
    let mut out = json!({ "Events": events });
    if let Some(next) = next {
        out["NextToken"] = json!(encode_token(&next.to_string()));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct QueryInput {
    sql: String,
    #[serde(default)]
    max_rows: Option<i64>,
}

async fn query(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: QueryInput = ctx.parse(input)?;
    let max = input.max_rows.unwrap_or(1000);
    if !(1..=100_000).contains(&max) {
        return Err(ActionError::validation(format!("MaxRows {max} is outside 1..=100000")));
    }
    if input.sql.len() > 16_384 {
        return Err(ActionError::validation("Sql is longer than 16384 characters"));
    }
    ctx.authorize(Resource::Service("audit".into()))?;
    caught_up(ctx).await?;
    let (columns, rows) = ctx.plane.index.query(&input.sql, max as usize).await.map_err(index_error)?;
    Ok(json!({ "Columns": columns, "Rows": rows }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TraceInput {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
    #[serde(default)]
    max_results: Option<i64>,
}

async fn trace(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: TraceInput = ctx.parse(input)?;
    let selector = match (input.user_id, input.session_id, input.correlation_id) {
        (Some(user), None, None) => TraceSelector::User(user),
        (None, Some(session), None) => TraceSelector::Session(session),
        (None, None, Some(id)) => TraceSelector::CorrelationId(id),
        _ => return Err(ActionError::validation("give exactly one of UserId, SessionId and CorrelationId")),
    };
    let max = input.max_results.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&max) {
        return Err(ActionError::validation(format!("MaxResults {max} is outside 1..=1000000")));
    }
    let since = time("StartTime", input.start_time.as_deref())?;
    let until = time("EndTime", input.end_time.as_deref())?;
    ctx.authorize(Resource::Service("audit".into()))?;
    caught_up(ctx).await?;
    let events = ctx.plane.index.trace(&selector, since.as_deref(), until.as_deref(), max as u32).await.map_err(index_error)?;
    Ok(json!({ "Events": events }))
}

async fn reindex(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::identity::Empty = ctx.parse(input)?;
    ctx.authorize(Resource::Service("audit".into()))?;
    let count = ctx.plane.index.rebuild(ctx.plane.trail.layout()).await.map_err(index_error)?;
    Ok(json!({ "RecordsIndexed": count }))
}
