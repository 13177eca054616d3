//! Who is calling an airlock action, and what they may act on: a person (researcher or
//! reviewer) and how they signed in, the researcher's own requests, and, for a caller inside a
//! workspace, that workspace's only.

use policy::Principal;

use super::repo::{self, RequestRow};
use super::state::Direction;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;

/// The person calling: airlock requests are made, reviewed and downloaded by people only.
pub(super) fn person(ctx: &Ctx<'_>) -> Result<model::UserRef, ActionError> {
    match &ctx.caller.principal {
        Principal::User { user, .. } => Ok(user.clone()),
        _ => Err(ActionError::new(
            403,
            ErrorCode::AccessDeniedException,
            "airlock requests are made and reviewed by users, not by this caller",
        )),
    }
}

/// A reviewer acting: a person whose roles the user directory or their identity provider
/// vouches for (a sign-in's token). A token an operator issued names whatever roles it was
/// given, so one operator could vote as any number of made-up reviewers with it.
pub(super) fn signed_in_person(ctx: &Ctx<'_>) -> Result<model::UserRef, ActionError> {
    match &ctx.caller.principal {
        Principal::User { user, channel: policy::Channel::Bearer, .. } => Ok(user.clone()),
        _ => Err(ActionError::new(
            403,
            ErrorCode::AccessDeniedException,
            "airlock reviews are made by people signed in (portal, console or the API with a sign-in's token): a token an operator issued cannot vote, release, revoke or preview",
        )),
    }
}

/// The researcher taking their released export's files: signed in as themself, or, for an
/// application's own user (`custom`), through the application's token for them. An
/// operator's token for a person whom the user directory vouches for, or a workspace's
/// credential (an operator can start one for any user and run code in it), would let someone
/// else take the export out, on the record under the researcher's name (review finding).
pub(super) fn researcher_in_person(ctx: &Ctx<'_>) -> Result<model::UserRef, ActionError> {
    match &ctx.caller.principal {
        Principal::User { user, channel: policy::Channel::Bearer, .. } => Ok(user.clone()),
        Principal::User { user, channel: policy::Channel::IssuedToken, .. } if user.mode() == model::AccessMode::Custom => Ok(user.clone()),
        _ => Err(ActionError::new(
            403,
            ErrorCode::AccessDeniedException,
            "an export's files are taken out by its researcher signed in (the portal, or the API with a sign-in's token), not with an issued token or from a workspace",
        )),
    }
}

/// A 409 naming the state a request is in and what was tried.
pub(super) fn conflict(request: &RequestRow, what: &str) -> ActionError {
    ActionError::conflict(
        ErrorCode::ConflictException,
        format!("airlock request `{}` is {}: cannot {what}", request.request_id, request.state),
    )
}

/// A request, with this action's record put under the request's correlation id.
pub(super) async fn find_in(ctx: &mut Ctx<'_>, request_id: &str) -> Result<RequestRow, ActionError> {
    let request = repo::find(&ctx.platform.store, request_id).await?;
    if let Some(id) = &request.correlation_id {
        ctx.set_correlation_id(id.clone());
    }
    Ok(request)
}

/// The request, if the caller is its researcher; from inside a workspace, only that
/// workspace's requests (code in one workspace does not submit, withdraw or see another's).
pub(super) async fn own_request(ctx: &mut Ctx<'_>, request_id: &str) -> Result<(RequestRow, model::UserRef), ActionError> {
    let user = person(ctx)?;
    let request = repo::find(&ctx.platform.store, request_id).await?;
    // Not found, as for a request that does not exist: requests are their researcher's, and
    // from inside a workspace, that workspace's (whose name a refusal would otherwise tell).
    let elsewhere = from_workspace(ctx) && its_workspace(ctx).await? != request.workspace;
    if request.creator != user.principal_id() || elsewhere {
        return Err(ActionError::not_found(ErrorCode::ResourceNotFoundException, format!("airlock request `{request_id}` does not exist")));
    }
    // Only now is the call the request's: a refused one is not filed under its correlation id.
    if let Some(id) = &request.correlation_id {
        ctx.set_correlation_id(id.clone());
    }
    Ok((request, user))
}

/// Whether the caller speaks from inside a workspace: the instance of their session.
pub(super) fn from_workspace(ctx: &Ctx<'_>) -> bool {
    matches!(&ctx.caller.principal, Principal::User { channel: policy::Channel::Instance, .. })
}

/// A request made from inside a workspace (by the instance of a session) is an export of that
/// workspace: not an import (what comes from inside is not an input from outside), and not of
/// another workspace, whose imports or earlier releases it would otherwise reach. Checked at
/// the request's making and at every file added from inside: a request made in the portal
/// names any workspace (review finding: files sent from workspace B went out as C's).
pub(super) async fn bound_to_its_workspace(ctx: &Ctx<'_>, direction: Direction, workspace: &str) -> Result<(), ActionError> {
    if direction == Direction::Import {
        return Err(ActionError::access_denied("an import comes from the researcher's device (the portal), not from inside a workspace"));
    }
    in_its_workspace(ctx, workspace, "an export").await
}

/// For a caller inside a workspace: that `workspace` is the one its session's instance serves.
pub(super) async fn in_its_workspace(ctx: &Ctx<'_>, workspace: &str, what: &str) -> Result<(), ActionError> {
    let own = its_workspace(ctx).await?;
    if own == workspace {
        Ok(())
    } else {
        Err(ActionError::access_denied(format!("inside workspace `{own}`, {what} is `{own}`'s, not `{workspace}`'s")))
    }
}

/// For a caller inside a workspace: the workspace its session's instance serves.
pub(super) async fn its_workspace(ctx: &Ctx<'_>) -> Result<String, ActionError> {
    let instance = ctx
        .caller
        .identity
        .session_context
        .as_ref()
        .and_then(|c| c.session_issuer.as_ref())
        .and_then(|issuer| issuer["principalId"].as_str())
        .ok_or_else(|| ActionError::internal("an instance caller without its instance"))?;
    repo::workspace_of_instance(&ctx.platform.store, instance)
        .await?
        .ok_or_else(|| ActionError::access_denied("this instance serves no session: there is no workspace to act for"))
}
