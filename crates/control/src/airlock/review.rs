//! The reviewers' side: the queue (also the auditors' read-only view) and the votes. Nobody
//! votes on a request they created, whatever roles they hold; each reviewer votes once per
//! submission; the request is decided when the last vote it needs is cast.

use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::callers::{conflict, find_in, person, signed_in_person};
use super::repo::{self, VoteRow};
use super::requests::{Viewer, request_json, step};
use super::state::{Decision, Direction, RequestState};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::store::now_millis;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct QueueInput {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

/// Every request (or one, or those in one state), as a reviewer or an auditor sees them.
pub(super) async fn queue(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: QueueInput = ctx.parse(input)?;
    if let Some(state) = input.state.as_deref().filter(|s| RequestState::parse(s).is_none()) {
        return Err(ActionError::validation(format!("State `{state}` is not a request state")));
    }
    ctx.authorize(Resource::Service("airlock".into()))?;
    let me = person(ctx)?.principal_id();
    // A reviewer sees their own vote before the others'; an auditor sees none before.
    let reviewer = ctx.permitted("airlock:CastVote", &Resource::Service("airlock".into()));
    let viewer = Viewer::Reviewer(reviewer.then_some(me.as_str()));
    let mut described = Vec::new();
    for request in repo::list(&ctx.platform.store, None).await? {
        if input.request_id.as_ref().is_some_and(|id| *id != request.request_id)
            || input.state.as_ref().is_some_and(|s| s != request.state.as_str())
        {
            continue;
        }
        described.push(request_json(ctx, &request, viewer).await?);
    }
    Ok(json!({ "Requests": described }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct VoteInput {
    request_id: String,
    decision: String,
    #[serde(default)]
    comment: Option<String>,
}

/// How many distinct reviewers a request of `direction` needs.
pub(super) fn reviewers_needed(ctx: &Ctx<'_>, direction: Direction) -> usize {
    let airlock = &ctx.platform.current().airlock;
    match direction {
        Direction::Export => airlock.export_reviewers as usize,
        Direction::Import => airlock.import_reviewers as usize,
    }
}

pub(super) async fn cast_vote(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: VoteInput = ctx.parse(input)?;
    let decision = Decision::parse(&input.decision)
        .ok_or_else(|| ActionError::validation(format!("Decision `{}` must be APPROVE, REQUEST_CHANGES or REJECT", input.decision)))?;
    let comment = input.comment.as_deref().map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned);
    if decision != Decision::Approve && comment.is_none() {
        return Err(ActionError::validation("REQUEST_CHANGES and REJECT need a Comment the researcher will read"));
    }
    if comment.as_ref().is_some_and(|c| c.len() > 4096) {
        return Err(ActionError::validation("Comment is at most 4096 characters"));
    }
    // Who may vote is settled before the request is looked up: a refusal neither tells that
    // it exists nor is filed under it.
    ctx.authorize(Resource::Service("airlock".into()))?;
    let reviewer = signed_in_person(ctx)?;
    let request = find_in(ctx, &input.request_id).await?;
    let store = &ctx.platform.store;
    if request.creator == reviewer.principal_id() {
        return Err(ActionError::new(
            403,
            ErrorCode::AccessDeniedException,
            format!("you created airlock request `{}`: its reviewers must be others, whatever roles you hold", request.request_id),
        ));
    }
    if request.state != RequestState::InReview {
        return Err(conflict(&request, "vote on it"));
    }
    let vote = VoteRow { reviewer: reviewer.principal_id(), reviewer_name: reviewer.to_string(), decision, comment, cast: now_millis() };
    if !repo::insert_vote(store, &request.request_id, request.submission, &vote).await? {
        let now = repo::find(store, &request.request_id).await?;
        if now.state != RequestState::InReview || now.submission != request.submission {
            return Err(conflict(&now, "vote on it"));
        }
        return Err(ActionError::conflict(
            ErrorCode::ConflictException,
            format!("you already voted on submission {} of airlock request `{}`", request.submission, request.request_id),
        ));
    }
    let votes = repo::votes(store, &request.request_id, request.submission).await?;
    let needed = reviewers_needed(ctx, request.direction);
    if votes.len() < needed {
        return Ok(
            json!({ "RequestId": request.request_id, "State": RequestState::InReview.as_str(), "VotesCast": votes.len(), "VotesNeeded": needed }),
        );
    }
    // All votes are in: any rejection ends it, any change requested sends it back.
    let decided = if votes.iter().any(|v| v.decision == Decision::Reject) {
        RequestState::Rejected
    } else if votes.iter().any(|v| v.decision == Decision::RequestChanges) {
        RequestState::ChangesRequested
    } else {
        RequestState::Approved
    };
    step(ctx, &request.request_id, RequestState::InReview, decided).await?;
    Ok(json!({ "RequestId": request.request_id, "State": decided.as_str(), "VotesCast": votes.len(), "VotesNeeded": needed }))
}

/// How much of a file a preview shows.
const PREVIEW_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PreviewInput {
    request_id: String,
    path: String,
}

/// The start of a file of a request under review, for a reviewer or an auditor who did not
/// create it: text as text, a PNG whole (up to the preview's size) for the page to show.
pub(super) async fn preview(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: PreviewInput = ctx.parse(input)?;
    ctx.authorize(Resource::Service("airlock".into()))?;
    let reviewer = signed_in_person(ctx)?;
    let request = find_in(ctx, &input.request_id).await?;
    if request.creator == reviewer.principal_id() {
        return Err(ActionError::new(403, ErrorCode::AccessDeniedException, "you created this request: others review its files"));
    }
    // Only files that passed the checks and went to review: not a draft's, nor those swapped
    // in with changes requested, nor a request withdrawn or blocked before review (review
    // findings: a reviewer saw files no check had passed, raw rows a check had blocked).
    if !matches!(
        request.state,
        RequestState::InReview
            | RequestState::Approved
            | RequestState::Rejected
            | RequestState::Released
            | RequestState::Revoked
            | RequestState::Expired
    ) {
        return Err(conflict(
            &request,
            "preview its files: only the files of a request that passed its checks and went to review are shown",
        ));
    }
    let files = repo::files(&ctx.platform.store, &request.request_id).await?;
    let file = files.iter().find(|f| f.path == input.path).ok_or_else(|| {
        ActionError::not_found(
            ErrorCode::ResourceNotFoundException,
            format!("airlock request `{}` has no file `{}`", request.request_id, input.path),
        )
    })?;
    let body = crate::storage::read_internal(ctx.platform, super::state::AIRLOCK_BUCKET, &file.object_key).await?;
    if hex::encode(sha2::Sha256::digest(&body)) != file.sha256 {
        return Err(ActionError::internal(format_args!("the stored copy of `{}` does not match its manifest hash", file.path)));
    }
    let head = &body[..body.len().min(PREVIEW_BYTES)];
    let truncated = body.len() > PREVIEW_BYTES;
    if super::checks::is_png(&body) && !truncated {
        return Ok(json!({ "Path": file.path, "Kind": "png", "Image": crate::core::codec::encode_base64(head) }));
    }
    Ok(json!({ "Path": file.path, "Kind": "text", "Text": String::from_utf8_lossy(head), "Truncated": truncated, "Size": body.len() }))
}
