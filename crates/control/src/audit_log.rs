//! `audit:` — reading the trail through the pipeline, so reading it is itself authorized and
//! audited: LookupEvents (CloudTrail's, plus CorrelationId), SQL queries over the index,
//! end-to-end traces, and rebuilding the index from the trail's files.

use std::time::Duration;

use audit::{LookupFilter, TraceSelector};
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::core::actions::AuditAction;
use crate::core::codec::{decode_token, encode_token};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, action: AuditAction, input: Value) -> Result<Value, ActionError> {
    match action {
        AuditAction::LookupEvents => lookup_events(ctx, input).await,
        AuditAction::Query => query(ctx, input).await,
        AuditAction::Trace => trace(ctx, input).await,
        AuditAction::Reindex => reindex(ctx, input).await,
        AuditAction::GenerateUsageReports => generate_usage_reports(ctx, input).await,
        AuditAction::ValidateTrail => validate_trail(ctx, input).await,
    }
}

/// Reads see every record made before them on this node: wait until the index has caught up
/// with this node's trail. Other nodes' records are in the shared index once their own feeder
/// has written them, at most a tenth of a second after their fsync; a read does not wait for
/// those.
async fn caught_up(ctx: &Ctx<'_>) -> Result<(), ActionError> {
    let durable = ctx.platform.trail.last_sequence();
    if ctx.platform.index.wait_for(durable, Duration::from_secs(10)).await {
        Ok(())
    } else {
        Err(ActionError::new(
            503,
            ErrorCode::ServiceUnavailable,
            "the audit index is behind the trail; retry, or run `datasandbox audit reindex`",
        ))
    }
}

fn index_error(err: audit::IndexError) -> ActionError {
    match err {
        audit::IndexError::Query(message) => ActionError::validation(message),
        other => ActionError::internal(other),
    }
}

/// An RFC 3339 time of the input, in UTC.
fn instant(member: &str, value: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>, ActionError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| ActionError::validation(format!("{member} `{v}` is not an RFC 3339 time like 2026-01-01T00:00:00Z")))
        })
        .transpose()
}

/// RFC 3339 in, the index's own spelling out (UTC with milliseconds), so strings compare.
fn time(member: &str, value: Option<&str>) -> Result<Option<String>, ActionError> {
    Ok(instant(member, value)?.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
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
    let max = crate::core::codec::bounded("MaxResults", input.max_results, 50, 1..=1000)?;
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
        Some(token) => Some(audit::LookupCursor::decode(&token).ok_or_else(|| ActionError::validation("NextToken is invalid"))?),
        None => None,
    };
    ctx.authorize(Resource::Service("audit".into()))?;
    caught_up(ctx).await?;
    let (events, next) = ctx.platform.index.lookup(&filter, max as u32, before.as_ref()).await.map_err(index_error)?;
    let mut out = json!({ "Events": events });
    if let Some(next) = next {
        out["NextToken"] = json!(encode_token(&next.encode()));
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
    let max = crate::core::codec::bounded("MaxRows", input.max_rows, 1000, 1..=100_000)?;
    if input.sql.len() > 16_384 {
        return Err(ActionError::validation("Sql is longer than 16384 characters"));
    }
    ctx.authorize(Resource::Service("audit".into()))?;
    caught_up(ctx).await?;
    let (columns, rows) = ctx.platform.index.query(&input.sql, max as usize).await.map_err(index_error)?;
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
    let max = crate::core::codec::bounded("MaxResults", input.max_results, 10_000, 1..=1_000_000)?;
    let since = time("StartTime", input.start_time.as_deref())?;
    let until = time("EndTime", input.end_time.as_deref())?;
    ctx.authorize(Resource::Service("audit".into()))?;
    caught_up(ctx).await?;
    let events = ctx.platform.index.trace(&selector, since.as_deref(), until.as_deref(), max as u32).await.map_err(index_error)?;
    Ok(json!({ "Events": events }))
}

async fn reindex(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    ctx.authorize(Resource::Service("audit".into()))?;
    let count = ctx.platform.index.rebuild(ctx.platform.trail.layout()).await.map_err(index_error)?;
    Ok(json!({ "RecordsIndexed": count }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ReportsInput {
    day: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ValidateInput {
    #[serde(default)]
    start_time: Option<String>,
    #[serde(default)]
    end_time: Option<String>,
    #[serde(default)]
    verbose: bool,
}

/// `audit:ValidateTrail`: what `datasandbox audit validate` checks (digests, logs, checkpoints,
/// each node's chain with its newest public key), run in the server for the console. With S3
/// storage it reads every node's chain from the bucket (a copy in a scratch directory of the
/// data directory, removed after); otherwise this node's trail directory.
async fn validate_trail(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ValidateInput = ctx.parse(input)?;
    let options = audit::ValidateOptions {
        start: instant("StartTime", input.start_time.as_deref())?,
        end: instant("EndTime", input.end_time.as_deref())?,
        verbose: input.verbose,
        witness: ctx.platform.spec.audit.witness.clone(),
    };
    ctx.authorize(Resource::Service("audit".into()))?;
    let scratch = match &ctx.platform.spec.storage {
        model::spec::StorageBackend::S3 { endpoint, bucket, region, allow_http } => {
            let trail = audit::TrailBucket::s3(endpoint, bucket, region, *allow_http).map_err(ActionError::internal)?;
            let scratch = ScratchDir(ctx.platform.data_dir.join(format!("validate-{}", uuid::Uuid::new_v4().simple())));
            trail.download(&scratch.0).await.map_err(|e| ActionError::new(503, ErrorCode::ServiceUnavailable, e))?;
            // This node's own chain is judged whole, from its files here: the bucket has its
            // logs only once they are sealed, and nothing of a node that just started.
            let (local, copy) = (ctx.platform.trail.layout().root.clone(), scratch.0.clone());
            tokio::task::spawn_blocking(move || copy_tree(&local, &copy))
                .await
                .map_err(ActionError::internal)?
                .map_err(ActionError::internal)?;
            Some(scratch)
        }
        model::spec::StorageBackend::Local => None,
    };
    let root = scratch.as_ref().map_or_else(|| ctx.platform.trail.layout().root.clone(), |s| s.0.clone());
    let validated =
        tokio::task::spawn_blocking(move || audit::validate_nodes(&root, None, None, &options)).await.map_err(ActionError::internal)?;
    drop(scratch);
    Ok(match validated {
        Ok(report) => json!({ "Valid": report.valid, "Lines": report.lines, "BytesChecked": report.bytes_checked }),
        // Nothing to check (no log, checkpoint or digest yet) proves nothing either way.
        Err(message) => json!({ "Valid": false, "Lines": [message], "BytesChecked": 0 }),
    })
}

/// Copies the files under `from` into `to` at the same relative paths, replacing what is there.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A directory removed when dropped, whatever way the action ends.
struct ScratchDir(std::path::PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The name of the reports bucket and of the function that writes into it.
pub(crate) fn reports_bucket(spec: &model::spec::Spec) -> String {
    format!("{}-reports", spec.environment_name)
}

pub(crate) const REPORTS_FUNCTION: &str = "usage-reports";

async fn generate_usage_reports(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ReportsInput = ctx.parse(input)?;
    let day = chrono::NaiveDate::parse_from_str(&input.day, "%Y-%m-%d")
        .map_err(|_| ActionError::validation(format!("Day `{}` is not a date like 2026-11-28", input.day)))?;
    if day > chrono::Utc::now().date_naive() {
        return Err(ActionError::validation(format!("Day {day} is in the future")));
    }
    ctx.authorize(Resource::Service("audit".into()))?;
    caught_up(ctx).await?;
    // A session is recorded when it ends, so its record lies within a day of the end.
    let from = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let to = from + chrono::Duration::days(2);
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let records = ctx.platform.index.records("streaming", "SessionEnded", &stamp(from), &stamp(to)).await.map_err(index_error)?;
    let spec = &ctx.platform.spec;
    let Some(reports) = audit::reports::daily_reports(day, &records, &spec.account_id, &spec.region).map_err(ActionError::internal)? else {
        return Ok(json!({ "Day": input.day, "Sessions": 0 }));
    };
    let bucket = reports_bucket(spec);
    let control = ctx.control();
    let correlation_id = ctx.correlation_id().map(str::to_owned);
    for (key, body) in [(&reports.sessions_key, &reports.sessions_csv), (&reports.applications_key, &reports.applications_csv)] {
        let put =
            json!({ "Bucket": bucket, "Key": key, "Body": crate::core::codec::encode_base64(body.as_bytes()), "ContentType": "text/csv" });
        let request = crate::core::pipeline::Request::from_function(REPORTS_FUNCTION, correlation_id.clone(), "storage:PutObject", &put);
        Box::pin(control.call(request)).await.result?;
    }
    Ok(json!({
        "Day": input.day,
        "Sessions": reports.session_count,
        "SessionsReport": format!("s3://{bucket}/{}", reports.sessions_key),
        "ApplicationsReport": format!("s3://{bucket}/{}", reports.applications_key),
    }))
}

/// Writes the previous day's usage reports shortly after each UTC midnight, once for all
/// nodes: the node that claims the day in the index's claim table (shared in scale-out mode)
/// writes them; the others skip the day. A failed run gives its claim back, so the operator's
/// `datasandbox reports generate` (which claims nothing) or a later node may write them.
pub(crate) fn start_daily_reports(control: crate::core::pipeline::Pipeline) {
    tokio::spawn(async move {
        loop {
            let now = chrono::Utc::now();
            let next = (now.date_naive() + chrono::Duration::days(1)).and_hms_opt(0, 5, 0).expect("00:05 exists").and_utc();
            tokio::time::sleep((next - now).to_std().unwrap_or_default()).await;
            let day = (next - chrono::Duration::days(1)).date_naive().format("%Y-%m-%d").to_string();
            generate_daily_reports_once(&control, &day).await;
        }
    });
}

/// Writes `day`'s reports if this node is the first to claim the day; says whether it did.
pub(crate) async fn generate_daily_reports_once(control: &crate::core::pipeline::Pipeline, day: &str) -> bool {
    let index = &control.platform.index;
    match index.claim_report_day(day).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(day, "another node writes this day's usage reports");
            return false;
        }
        Err(err) => {
            tracing::error!(day, error = %err, "cannot claim the day's usage reports; run `datasandbox reports generate --day {day}`");
            return false;
        }
    }
    let request =
        crate::core::pipeline::Request::from_function(REPORTS_FUNCTION, None, "audit:GenerateUsageReports", &json!({ "Day": day }));
    if let Err(err) = control.call(request).await.result {
        tracing::error!(day, error = %err, "daily usage reports failed; run `datasandbox reports generate --day {day}`");
        if let Err(err) = index.release_report_day(day).await {
            tracing::error!(day, error = %err, "cannot give back the claim on the day's usage reports");
        }
        return false;
    }
    true
}
