//! The researcher's side: create a request, add and remove its files, submit it (which runs
//! the checks at once), withdraw it, and see their own requests.

use bytes::Bytes;
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::callers::{bound_to_its_workspace, conflict, from_workspace, its_workspace, own_request, person};
use super::checks::{self, Outcome};
use super::repo::{self, CheckRow, FileRow, NewRequest, RequestRow};
use super::source::BlobReader;
use super::state::{AIRLOCK_BUCKET, Direction, RequestState};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::store::{millis_to_rfc3339, now_millis};

/// A file's name inside a request: a relative path of plain segments, no traversal.
fn check_path(path: &str) -> Result<(), ActionError> {
    let ok = super::state::is_plain_path(path);
    if ok {
        Ok(())
    } else {
        Err(ActionError::validation(format!(
            "file path `{}` must be a relative path of 1..=255 printable ASCII characters, without `.`, `..`, `\\`, empty segments or spaces around a segment",
            path.escape_debug()
        )))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateInput {
    direction: String,
    workspace: String,
    justification: String,
}

pub(super) async fn create(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateInput = ctx.parse(input)?;
    let direction = Direction::parse(&input.direction)
        .ok_or_else(|| ActionError::validation(format!("Direction `{}` must be EXPORT or IMPORT", input.direction)))?;
    let justification = input.justification.trim();
    if justification.is_empty() || justification.len() > 4096 {
        return Err(ActionError::validation("Justification must say, in 1..=4096 characters, why the files should move"));
    }
    if !ctx.platform.current().stacks.iter().any(|s| s.name == input.workspace) {
        return Err(ActionError::not_found(
            ErrorCode::ResourceNotFoundException,
            format!("workspace (stack) `{}` does not exist", input.workspace),
        ));
    }
    ctx.authorize(Resource::Service("airlock".into()))?;
    let user = person(ctx)?;
    if from_workspace(ctx) {
        bound_to_its_workspace(ctx, direction, &input.workspace).await?;
    }
    let request_id = format!("ar-{}", uuid::Uuid::new_v4().simple());
    // Every record about the request carries one correlation id: the session's it was made
    // in, or one of its own.
    let correlation_id = Some(ctx.caller.correlation_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()));
    if let Some(id) = &correlation_id {
        ctx.set_correlation_id(id.clone());
    }
    let new = NewRequest {
        request_id: &request_id,
        direction,
        workspace: &input.workspace,
        creator: &user.principal_id(),
        creator_name: &user.to_string(),
        justification,
        now: now_millis(),
        correlation_id: correlation_id.as_deref(),
    };
    repo::insert(&ctx.platform.store, &new).await?;
    Ok(json!({ "RequestId": request_id, "State": RequestState::Draft.as_str() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SourceInput {
    bucket: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct AddFileInput {
    request_id: String,
    #[serde(default)]
    path: Option<String>,
    /// An export's file: an object the caller may read (their home folder, from their
    /// session), copied as it is now.
    #[serde(default)]
    source: Option<SourceInput>,
    /// An import's file, in base64; or an export's, sent from inside the workspace by the
    /// instance of the researcher's session (`datasandbox airlock submit`).
    #[serde(default)]
    body: Option<String>,
}

/// Copies a file into the request (export: from an object the caller may read; import: the
/// body given), recording its size and SHA-256.
pub(super) async fn add_file(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: AddFileInput = ctx.parse(input)?;
    let (request, _) = own_request(ctx, &input.request_id).await?;
    if from_workspace(ctx) {
        bound_to_its_workspace(ctx, request.direction, &request.workspace).await?;
    }
    let (path, body) = match (request.direction, input.source, input.body) {
        (Direction::Export, Some(source), None) => {
            let path = input.path.unwrap_or_else(|| source.key.rsplit('/').next().unwrap_or_default().to_owned());
            check_path(&path)?;
            ctx.authorize(Resource::Service("airlock".into()))?;
            let body = crate::storage::read_as_caller(ctx, &source.bucket, &source.key).await?;
            (path, body)
        }
        (Direction::Export, None, Some(body)) if from_workspace(ctx) => {
            let path = input.path.ok_or_else(|| ActionError::validation("a file sent from the workspace needs a Path"))?;
            check_path(&path)?;
            ctx.authorize(Resource::Service("airlock".into()))?;
            (path, Bytes::from(crate::core::codec::decode_base64("Body", &body)?))
        }
        (Direction::Import, None, Some(body)) => {
            let path = input.path.ok_or_else(|| ActionError::validation("an import's file needs a Path"))?;
            check_path(&path)?;
            ctx.authorize(Resource::Service("airlock".into()))?;
            (path, Bytes::from(crate::core::codec::decode_base64("Body", &body)?))
        }
        (Direction::Export, _, _) => {
            return Err(ActionError::validation(
                "an export's file comes from Source {Bucket, Key}, or as Body from inside the workspace (its session's instance)",
            ));
        }
        (Direction::Import, _, _) => return Err(ActionError::validation("an import's file comes as Body (base64), and only so")),
    };
    if !request.state.is_editable() {
        return Err(conflict(&request, "change its files (submitted files are frozen; a change needs changes requested)"));
    }
    // Images are reviewed, and leave, without what describes them (text, EXIF, times).
    let (body, stripped) = match super::png::strip_png_metadata(&body) {
        Some((kept, removed)) if !removed.is_empty() => (Bytes::from(kept), removed),
        _ => (body, Vec::new()),
    };
    within_daily_budget(ctx, &request, body.len()).await?;
    // A key of its own for this addition: nothing written later replaces what a manifest names.
    let object_key = format!("{}/{}/{path}", request.request_id, uuid::Uuid::new_v4().simple());
    let file = FileRow { path: path.clone(), size: body.len() as i64, sha256: hex::encode(Sha256::digest(&body)), object_key };
    crate::storage::write_internal(ctx, AIRLOCK_BUCKET, &file.object_key, body).await?;
    if !repo::put_file(&ctx.platform.store, &request.request_id, &file, now_millis()).await? {
        return Err(conflict(&repo::find(&ctx.platform.store, &request.request_id).await?, "change its files"));
    }
    Ok(json!({ "RequestId": request.request_id, "Path": path, "Size": file.size, "Sha256": file.sha256, "MetadataRemoved": stripped }))
}

/// Counts a file against its researcher's day (`airlock.max_bytes_per_day`): every file added
/// stays in the airlock bucket, so adding the same file again and again would otherwise fill
/// the node's disk (review finding).
async fn within_daily_budget(ctx: &Ctx<'_>, request: &RequestRow, bytes: usize) -> Result<(), ActionError> {
    let plane = ctx.platform;
    let limit = i64::try_from(plane.current().airlock.max_bytes_per_day).unwrap_or(i64::MAX);
    let hour_ms = 3600 * i64::from(plane.spec.timeout_scale_ms);
    // Each addition is a stored object, a row and a record, however small its file.
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX).max(MIN_ADDITION_BYTES);
    match repo::count_upload(&plane.store, &request.creator, bytes, now_millis(), hour_ms, limit).await? {
        Ok(()) => Ok(()),
        Err(added) => {
            // Code in a workspace is not told what its researcher adds from elsewhere.
            let so_far =
                if from_workspace(ctx) { String::new() } else { format!(" (you have added {added}, replaced and removed files included)") };
            Err(ActionError::new(
                429,
                ErrorCode::LimitExceededException,
                format!(
                    "this file ({bytes} bytes) would take your airlock additions in the last 24 hours past {limit} bytes{so_far}; try again later, or ask an operator to raise airlock.max_bytes_per_day"
                ),
            ))
        }
    }
}

/// What an addition counts for at least.
const MIN_ADDITION_BYTES: i64 = 4096;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct FileInput {
    request_id: String,
    path: String,
}

pub(super) async fn remove_file(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: FileInput = ctx.parse(input)?;
    let (request, _) = own_request(ctx, &input.request_id).await?;
    ctx.authorize(Resource::Service("airlock".into()))?;
    if !request.state.is_editable() {
        return Err(conflict(&request, "change its files"));
    }
    if !repo::remove_file(&ctx.platform.store, &request.request_id, &input.path).await? {
        return Err(ActionError::not_found(
            ErrorCode::ResourceNotFoundException,
            format!("airlock request `{}` has no file `{}`", request.request_id, input.path),
        ));
    }
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RequestInput {
    request_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SubmitInput {
    request_id: String,
    /// Failed checks the researcher asks the reviewers to pass anyway, each with why.
    #[serde(default)]
    overrides: Vec<OverrideInput>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct OverrideInput {
    path: String,
    rule: String,
    justification: String,
}

/// The checks whose failure a researcher may ask the reviewers to pass, with a reason they
/// read: those that judge what a table says. What a file is, what it carries, and raw rows of
/// data are never passed over.
const OVERRIDABLE: [&str; 4] = ["table.small-count", "table.margin", "lineage.row-count", "table.identifier"];

/// Submits a request: its manifest frozen under a new submission, then checked at once:
/// blocked if a check failed that no override covers, else in review.
pub(super) async fn submit(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: SubmitInput = ctx.parse(input)?;
    for asked in &input.overrides {
        check_path(&asked.path)?;
        if !OVERRIDABLE.contains(&asked.rule.as_str()) {
            return Err(ActionError::validation(format!(
                "check `{}` cannot be overridden; only {} can, with a justification the reviewers read",
                asked.rule,
                OVERRIDABLE.join(", ")
            )));
        }
        if asked.justification.trim().is_empty() || asked.justification.len() > 2048 {
            return Err(ActionError::validation("an override needs a Justification of 1..=2048 characters"));
        }
    }
    let (request, _) = own_request(ctx, &input.request_id).await?;
    ctx.authorize(Resource::Service("airlock".into()))?;
    if !request.state.may_become(RequestState::Submitted) {
        return Err(conflict(&request, "submit it"));
    }
    let store = &ctx.platform.store;
    if repo::files(store, &request.request_id).await?.is_empty() {
        return Err(ActionError::validation(format!("airlock request `{}` has no file to submit; add one first", request.request_id)));
    }
    let policy_version = ctx.platform.current().airlock.version();
    let submission = repo::submit(store, &request.request_id, request.state, &policy_version, now_millis())
        .await?
        .ok_or_else(|| conflict(&request, "submit it (it changed meanwhile)"))?;
    let id = &request.request_id;
    step(ctx, id, RequestState::Submitted, RequestState::Scanning).await?;
    let mut recorder = Recorder { id, submission, policy_version: &policy_version, overrides: &input.overrides, failed: Vec::new() };
    run_checks(ctx, &request, &mut recorder).await?;
    let failed = recorder.failed;
    let state = if failed.is_empty() {
        step(ctx, id, RequestState::Scanning, RequestState::Checked).await?;
        step(ctx, id, RequestState::Checked, RequestState::InReview).await?;
        RequestState::InReview
    } else {
        step(ctx, id, RequestState::Scanning, RequestState::Blocked).await?;
        RequestState::Blocked
    };
    Ok(json!({ "RequestId": id, "Submission": submission, "State": state.as_str(), "PolicyVersion": policy_version, "Failed": failed }))
}

/// Every check on the submitted manifest, each result kept through `recorder`. The manifest
/// is read once the request is submitted: an addition that raced the submission either is in
/// it (and checked) or was refused.
async fn run_checks(ctx: &Ctx<'_>, request: &RequestRow, recorder: &mut Recorder<'_>) -> Result<(), ActionError> {
    let (store, id) = (&ctx.platform.store, &request.request_id);
    let settings = ctx.platform.current().airlock.clone();
    let (mut tables, mut rows_left) = (Vec::new(), super::table::HASHED_ROWS);
    for file in repo::files(store, id).await? {
        let (blob, size) = crate::storage::blob_internal(ctx.platform, AIRLOCK_BUCKET, &file.object_key).await?;
        let mut reader = BlobReader::new(ctx.platform.blobs.clone(), blob.clone(), size);
        let (path, sha256, policy) = (file.path.clone(), file.sha256.clone(), settings.clone());
        // The checks read in pieces, on a thread that may wait for each.
        let checked = tokio::task::spawn_blocking(move || {
            let policy = checks::Policy {
                allowed_types: &policy.allowed_types,
                max_file_bytes: policy.max_file_bytes,
                small_count_threshold: policy.small_count_threshold,
            };
            // Sorted here, off the runtime's threads.
            checks::check_file(&path, &mut reader, Some(&sha256), &policy).map(|checked| {
                let tables: Vec<_> = checked.tables.into_iter().map(|(path, read)| super::lineage::Table::new(path, read)).collect();
                (checked.findings, tables)
            })
        })
        .await
        .map_err(ActionError::internal)?;
        // What could not be read is not passed: blocked, with why.
        let (mut findings, found) = match checked {
            Ok(checked) => checked,
            Err(err) => {
                let detail = format!("the stored copy could not be read: {err}");
                (vec![checks::Finding { rule: "manifest.read", outcome: Outcome::Fail, detail }], Vec::new())
            }
        };
        let intact = !findings.iter().any(|f| f.rule.starts_with("manifest."));
        if intact && settings.malware_scan {
            let scanned = super::scan::scan(&settings.clamav_database, settings.max_file_bytes, &ctx.platform.blobs, &blob, size).await;
            findings.push(scanned);
        }
        // One submission holds at most HASHED_ROWS row hashes in all, whatever its files.
        for mut table in found {
            table.keep_at_most(rows_left);
            rows_left -= table.held();
            tables.push(table);
        }
        let earlier = repo::released_with_hash(store, &request.workspace, id, &file.sha256).await?;
        if !earlier.is_empty() {
            let detail = format!("identical to released {}", earlier.join(", "));
            findings.push(checks::Finding { rule: "diff.released", outcome: Outcome::Flag, detail });
        }
        for finding in findings {
            recorder.record(ctx, &file.path, finding).await?;
        }
    }
    let earlier = repo::released_files(store, &request.workspace, id).await?;
    for (path, finding) in super::lineage::check(ctx.platform, tables, earlier).await? {
        recorder.record(ctx, &path, finding).await?;
    }
    Ok(())
}

/// Keeps a submission's check results, passing over the failures the researcher overrode.
struct Recorder<'a> {
    id: &'a str,
    submission: i64,
    policy_version: &'a str,
    overrides: &'a [OverrideInput],
    /// The failures no override covers: each blocks the request.
    failed: Vec<String>,
}

impl Recorder<'_> {
    async fn record(&mut self, ctx: &Ctx<'_>, path: &str, mut finding: checks::Finding) -> Result<(), ActionError> {
        if finding.outcome == Outcome::Fail {
            match self.overrides.iter().find(|o| o.path == path && o.rule == finding.rule) {
                Some(asked) => {
                    finding.outcome = Outcome::Overridden;
                    finding.detail = format!("{}; the researcher asks to pass it: {}", finding.detail, asked.justification.trim());
                }
                None => self.failed.push(format!("{path}: {} ({})", finding.rule, for_researcher(finding.rule, &finding.detail))),
            }
        }
        let row = CheckRow {
            path: path.to_owned(),
            rule: finding.rule.to_owned(),
            outcome: finding.outcome.as_str().to_owned(),
            detail: finding.detail,
        };
        repo::insert_check(&ctx.platform.store, self.id, self.submission, &row, self.policy_version).await
    }
}

/// What a researcher is told of a check: not where a lineage check found their rows (the
/// dataset, key and row), which would tell them what datasets they may not read hold; the
/// reviewers see it.
fn for_researcher<'a>(rule: &str, detail: &'a str) -> &'a str {
    if rule.starts_with("lineage.") && !detail.starts_with("no ") {
        "it matches data the platform holds; your reviewers see where"
    } else {
        detail
    }
}

/// One move the service makes on its own, recorded in the trail under the request's action.
pub(super) async fn step(ctx: &Ctx<'_>, request_id: &str, from: RequestState, to: RequestState) -> Result<(), ActionError> {
    if !repo::transition(&ctx.platform.store, request_id, from, to, now_millis()).await? {
        return Err(conflict(&repo::find(&ctx.platform.store, request_id).await?, &format!("move it from {from} to {to}")));
    }
    state_changed(ctx, request_id, json!({ "RequestId": request_id, "From": from.as_str(), "To": to.as_str() })).await;
    Ok(())
}

/// The record of a move, under the request's correlation id; and the researcher's open pages,
/// on this node and the others, look again (they hear who, never what).
pub(super) async fn state_changed(ctx: &Ctx<'_>, request_id: &str, parameters: Value) {
    let event = crate::core::platform::ServiceEvent {
        source: "airlock",
        name: "AirlockRequestStateChanged",
        principal: "airlock.datasandbox",
        parameters,
        correlation_id: ctx.correlation_id().map(str::to_owned),
        ..crate::core::platform::ServiceEvent::default()
    };
    let _ = ctx.platform.record_service_event(event).await;
    if let Ok(request) = repo::find(&ctx.platform.store, request_id).await {
        ctx.platform.changes.principal(&request.creator);
    }
    if let Err(err) = crate::core::feed::notify(&ctx.platform.store, super::state::CHANGES_CHANNEL, request_id).await {
        tracing::warn!(request_id, error = %err, "could not tell other nodes of an airlock request's change");
    }
}

pub(super) async fn withdraw(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: RequestInput = ctx.parse(input)?;
    let (request, _) = own_request(ctx, &input.request_id).await?;
    ctx.authorize(Resource::Service("airlock".into()))?;
    if !request.state.may_become(RequestState::Withdrawn) {
        return Err(conflict(&request, "withdraw it"));
    }
    step(ctx, &request.request_id, request.state, RequestState::Withdrawn).await?;
    Ok(json!({ "RequestId": request.request_id, "State": RequestState::Withdrawn.as_str() }))
}

/// The caller's own requests (or one of them), with files, checks and, once decided, the
/// reviewers' comments.
pub(super) async fn describe_own(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    struct DescribeInput {
        #[serde(default)]
        request_id: Option<String>,
    }
    let input: DescribeInput = ctx.parse(input)?;
    ctx.authorize(Resource::Service("airlock".into()))?;
    let user = person(ctx)?;
    let mut requests = repo::list(&ctx.platform.store, Some(&user.principal_id())).await?;
    if from_workspace(ctx) {
        let own = its_workspace(ctx).await?;
        requests.retain(|r| r.workspace == own);
    }
    if let Some(id) = &input.request_id {
        requests.retain(|r| &r.request_id == id);
        if requests.is_empty() {
            return Err(ActionError::not_found(ErrorCode::ResourceNotFoundException, format!("airlock request `{id}` does not exist")));
        }
    }
    let mut described = Vec::new();
    for request in &requests {
        described.push(request_json(ctx, request, Viewer::Researcher).await?);
    }
    Ok(json!({ "Requests": described }))
}

/// Who is looking at a request: what of the votes they see.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Viewer<'a> {
    /// The researcher: the reviewers' comments once the request is decided, never who voted.
    Researcher,
    /// A reviewer (their principal id) or an auditor (`None`): every vote once decided, and
    /// before that only their own.
    Reviewer(Option<&'a str>),
}

pub(super) async fn request_json(ctx: &Ctx<'_>, request: &RequestRow, viewer: Viewer<'_>) -> Result<Value, ActionError> {
    let store = &ctx.platform.store;
    let files = repo::files(store, &request.request_id).await?;
    let checks = repo::checks(store, &request.request_id, request.submission).await?;
    let votes = repo::votes(store, &request.request_id, request.submission).await?;
    let decided = !matches!(request.state, RequestState::InReview);
    let shown: Vec<Value> = votes
        .iter()
        .filter(|v| decided || matches!(viewer, Viewer::Reviewer(Some(me)) if me == v.reviewer))
        .map(|v| match viewer {
            Viewer::Researcher => json!({ "Decision": v.decision.as_str(), "Comment": v.comment }),
            Viewer::Reviewer(_) => json!({
                "Reviewer": v.reviewer_name, "Decision": v.decision.as_str(), "Comment": v.comment, "CastTime": millis_to_rfc3339(v.cast),
            }),
        })
        .collect();
    Ok(json!({
        "RequestId": request.request_id,
        "Direction": request.direction.as_str(),
        "Workspace": request.workspace,
        "Researcher": request.creator_name,
        "Justification": request.justification,
        "State": request.state.as_str(),
        "Submission": request.submission,
        "PolicyVersion": request.policy_version,
        "CorrelationId": request.correlation_id,
        "CreationTime": millis_to_rfc3339(request.created),
        "LastUpdated": millis_to_rfc3339(request.updated),
        "ReleaseTime": request.released.map(millis_to_rfc3339),
        "ExpiryTime": request.expires.map(millis_to_rfc3339),
        "Files": files.iter().map(|f| json!({ "Path": f.path, "Size": f.size, "Sha256": f.sha256 })).collect::<Vec<_>>(),
        "Checks": checks
            .iter()
            .map(|c| {
                let detail = if viewer == Viewer::Researcher { for_researcher(&c.rule, &c.detail) } else { &c.detail };
                json!({ "Path": c.path, "Rule": c.rule, "Outcome": c.outcome, "Detail": detail })
            })
            .collect::<Vec<_>>(),
        "VotesCast": votes.len(),
        "Votes": shown,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_stay_inside_the_request() {
        for bad in
            ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\\b", "a\nb", "results.csv\u{200b}", "results.csv ", "r\u{202e}vsc.txt"]
        {
            assert!(super::check_path(bad).is_err(), "{bad:?}");
        }
        for good in ["results.csv", "figures/plot.png", "a b.txt"] {
            assert!(super::check_path(good).is_ok(), "{good:?}");
        }
    }
}
