//! Sessions: who each is for, how they look (`DescribeSessions`, the session page's status)
//! and how they end (`ExpireSession`, the engine's timeouts, a clean stop). A session is made by
//! redeeming a streaming URL (`urls`), served by the engine, and connected to by its page
//! (`connection`); ending it, here, is the one way out: EXPIRED with a reason, its instance
//! stopped, and a `SessionEnded` record for the usage reports.

use std::sync::Arc;

use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};

use super::fleets::fleet_row;
use super::queue::estimate_wait_seconds;
use super::repo::{self, SessionFilter, SessionRow, SessionState};
use super::resource::not_found;
use super::stacks::stack_row;
use super::state::Streaming;
use crate::core::codec::{bounded, decode_token, encode_token};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::{Platform, ServiceEvent};
use crate::core::store::{millis_to_rfc3339, now_millis};

/// What the notebooks service reads of a session: its typed row, and the URL its page offers.
pub(crate) use super::repo::{access_mode, set_notebook_url};

/// One session, typed.
pub(crate) async fn session(plane: &Platform, session_id: &str) -> Result<SessionRow, ActionError> {
    repo::find_session(&plane.store, session_id).await?.ok_or_else(|| not_found("session", session_id))
}

/// Tells of a change to `session_id`, whoever's it is (looked up only if anyone listens).
pub(crate) async fn session_changed(plane: &Platform, session_id: &str) {
    plane.changes.advance();
    // Other nodes' pages hear it through the store (ids only; they look the session up).
    if let Err(err) = crate::core::feed::notify(&plane.store, super::changes::CHANNEL, session_id).await {
        tracing::warn!(error = %err, "cannot tell other nodes a session changed");
    }
    if !plane.changes.heard() {
        return;
    }
    let row = repo::find_session(&plane.store, session_id).await;
    if let Ok(Some(row)) = row
        && let Ok(user) = row.user()
    {
        plane.changes.user(&user);
    }
}

/// The session a cookie caller holds, if the caller came with one.
pub(crate) fn caller_session(ctx: &Ctx<'_>) -> Option<String> {
    let issuer = ctx.caller.identity.session_context.as_ref()?.session_issuer.as_ref()?;
    (issuer["type"] == "StreamingSession").then(|| issuer["principalId"].as_str().map(str::to_owned)).flatten()
}

/// The portal user a signed-in caller is, if they are one: a local user (`USERPOOL`) or a
/// federated one (`SAML`), holding a sign-in's bearer token. An instance's, a session's or a
/// link's credential acts for the same person but is not a sign-in: it launches, lists and
/// ends nothing on the portal.
pub(crate) fn portal_user(principal: &policy::Principal) -> Option<model::UserRef> {
    match principal {
        policy::Principal::User { user, channel: policy::Channel::Bearer, .. }
            if matches!(user.mode(), model::AccessMode::Local | model::AccessMode::Federated) =>
        {
            Some(user.clone())
        }
        _ => None,
    }
}

pub(super) fn check_user_id(user: &str) -> Result<model::UserId, ActionError> {
    let ok = (2..=32).contains(&user.chars().count())
        && user.chars().all(|c| c.is_alphanumeric() || c == '_' || matches!(c, '+' | '=' | ',' | '.' | '@' | '-'));
    if !ok {
        return Err(ActionError::validation(format!("UserId `{user}` must be 2..=32 characters of letters, digits and _+=,.@-")));
    }
    model::UserId::new(user.to_owned()).map_err(|e| ActionError::validation(format!("UserId `{user}`: {e}")))
}

pub(super) async fn get_status(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    let session = caller_session(ctx).ok_or_else(|| ActionError::validation("GetSessionStatus needs the session's cookie"))?;
    ctx.authorize_always();
    session_status(ctx.platform, &session).await
}

/// What the session page shows: state, queue position and estimate, end reason.
pub(crate) async fn session_status(plane: &Platform, session_id: &str) -> Result<Value, ActionError> {
    let row = session(plane, session_id).await?;
    let mut out = session_json(&row);
    if row.state == SessionState::Pending {
        let ahead = repo::count_ahead(&plane.store, &row.fleet, row.queued, session_id).await?;
        out["QueuePosition"] = json!(ahead + 1);
        out["EstimatedWaitSeconds"] = json!(estimate_wait_seconds(plane, &row.fleet, ahead + 1).await?);
    }
    out["EndReason"] = json!(row.end_reason);
    if row.state == SessionState::Active {
        out["NotebookUrl"] = json!(row.notebook_url);
        // A session whose instance runs on another node is opened there (`HandOffSession`).
        if let Some(node) = repo::instance_node(&plane.store, row.instance_id.as_deref().unwrap_or_default()).await?
            && node.name != plane.node.name
        {
            out["Node"] = json!(node.name);
            out["NodeUrl"] = json!(node.address);
        }
    }
    // The application the session started (the URL's, or its stack's default).
    let application = match &row.application_id {
        Some(application) => Some(application.clone()),
        None => repo::default_application(&plane.store, &row.stack).await?,
    };
    out["ApplicationId"] = json!(application);
    // Break-glass is never silent: the user sees what operators ran in their instance.
    if let Some(instance) = &row.instance_id {
        let execs = repo::execs_in(&plane.store, instance).await?;
        let execs: Vec<Value> = execs
            .iter()
            .map(|e| {
                json!({
                    "Operator": e.operator,
                    "Command": serde_json::from_str::<Value>(&e.command).unwrap_or(Value::Null),
                    "ExitCode": e.exit_code,
                    "Time": millis_to_rfc3339(e.time),
                })
            })
            .collect();
        out["OperatorCommands"] = json!(execs);
    }
    let settings: Value = serde_json::from_str(&row.settings).map_err(ActionError::internal)?;
    out["StreamView"] = settings["StreamView"].clone();
    out["RedirectURL"] = settings["RedirectURL"].clone();
    out["UserSettings"] = settings["UserSettings"].clone();
    out["Recorded"] = json!(settings["SessionRecording"] == "ENABLED");
    Ok(out)
}

/// A session in AWS's shape.
fn session_json(row: &SessionRow) -> Value {
    let mut session = json!({
        "Id": row.session_id,
        "UserId": row.user_id,
        "StackName": row.stack,
        "FleetName": row.fleet,
        "State": row.state.as_str(),
        "ConnectionState": row.connection_state.as_str(),
        "StartTime": millis_to_rfc3339(row.start_time),
        "MaxExpirationTime": millis_to_rfc3339(row.max_expiration),
        "AuthenticationType": row.authentication_type,
    });
    session["SessionId"] = session["Id"].clone();
    // DataSandbox's addition: a federated user's identity provider, part of who they are.
    if let Some(issuer) = row.issuer.as_ref().filter(|i| !i.is_empty()) {
        session["Issuer"] = json!(issuer);
    }
    if let (Some(instance), Some(address)) = (&row.instance_id, &row.private_address) {
        session["InstanceId"] = json!(instance);
        session["NetworkAccessConfiguration"] = json!({ "EniPrivateIpAddress": address, "EniId": format!("eni-{}", &instance[2..]) });
    }
    session
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct DescribeInput {
    stack_name: String,
    fleet_name: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    authentication_type: Option<String>,
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    next_token: Option<String>,
    /// DataSandbox's addition: one session by id, in any state (an ended one too, as EXPIRED),
    /// so that a checker can tell "ended" from "never was".
    #[serde(default)]
    session_id: Option<String>,
}

pub(super) async fn describe(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: DescribeInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let limit = bounded("Limit", input.limit, 20, 1..=50)?;
    if let Some(kind) = &input.authentication_type
        && !["API", "SAML", "USERPOOL", "AWS_AD"].contains(&kind.as_str())
    {
        return Err(ActionError::validation(format!("AuthenticationType `{kind}` is not API, SAML, USERPOOL or AWS_AD")));
    }
    if input.user_id.is_some() && input.authentication_type.is_none() {
        return Err(ActionError::new(400, ErrorCode::InvalidParameterCombinationException, "UserId needs AuthenticationType, as in AWS"));
    }
    if let Some(user) = &input.user_id {
        check_user_id(user)?;
    }
    let after = decode_token(input.next_token.as_deref())?;
    let after = match after.as_deref().map(|p| p.split_once(' ')) {
        None => None,
        Some(Some((time, id))) => {
            Some((time.parse::<i64>().map_err(|_| ActionError::validation("the pagination token is invalid"))?, id.to_owned()))
        }
        Some(None) => return Err(ActionError::validation("the pagination token is invalid; pass the token a previous response returned")),
    };
    stack_row(plane, &input.stack_name).await?;
    fleet_row(plane, &input.fleet_name).await?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    let (after_time, after_id) = after.clone().unwrap_or((i64::MIN, String::new()));
    let filter = SessionFilter {
        stack: &input.stack_name,
        fleet: &input.fleet_name,
        user_id: input.user_id.clone().unwrap_or_default(),
        authentication_type: input.authentication_type.clone().unwrap_or_default(),
        instance_id: input.instance_id.clone().unwrap_or_default(),
        session_id: input.session_id.clone().unwrap_or_default(),
        after_time,
        after_id: &after_id,
        limit: limit + 1,
    };
    let rows = repo::list_sessions(&plane.store, filter).await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let sessions: Vec<Value> = page.iter().map(session_json).collect();
    let mut out = json!({ "Sessions": sessions });
    if more && let Some(last) = page.last() {
        out["NextToken"] = json!(encode_token(&format!("{} {}", last.start_time, last.session_id)));
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ExpireInput {
    session_id: String,
}

pub(super) async fn expire(streaming: &Arc<Streaming>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ExpireInput = ctx.parse(input)?;
    let plane = ctx.platform;
    // A user may end their own session (from its page, or signed in on the portal); anyone
    // else needs the policies' leave.
    let portal_owner = match (portal_user(&ctx.caller.principal), session(plane, &input.session_id).await.ok()) {
        (Some(me), Some(row)) => row.user().is_ok_and(|owner| owner == me),
        _ => false,
    };
    let own = portal_owner || caller_session(ctx).is_some_and(|s| s == input.session_id);
    if own {
        ctx.authorize_always();
    } else {
        ctx.authorize(Resource::Service("streaming".into()))?;
    }
    session(plane, &input.session_id).await?;
    // The session is over when this returns; its instance's teardown follows in the background.
    let reason = if own { "USER_ENDED" } else { "EXPIRED_BY_API" };
    if mark_ended(streaming, &input.session_id, reason).await? {
        let (streaming, session) = (streaming.clone(), input.session_id.clone());
        tokio::spawn(async move {
            if let Err(err) = finish_ended(&streaming, &session, reason).await {
                tracing::error!(session, error = %err, "cannot finish ending the session");
            }
        });
    }
    Ok(json!({}))
}

/// Ends a session once: EXPIRED with its reason, its listeners told, its instance stopped
/// (after the home folder's last flush) and a `SessionEnded` record for the usage reports.
pub(crate) async fn end_session(streaming: &Streaming, session_id: &str, reason: &str) -> Result<(), ActionError> {
    if mark_ended(streaming, session_id, reason).await? {
        finish_ended(streaming, session_id, reason).await?;
    }
    Ok(())
}

/// Ends a deleted local user's sessions: every one over at once, then each instance stopped.
pub(crate) async fn end_sessions_of_local_user(streaming: &Streaming, user_name: &str, reason: &str) -> Result<Vec<String>, ActionError> {
    let mut ended = Vec::new();
    for session_id in repo::list_unended_sessions_of_local_user(&streaming.pipeline.platform.store, user_name).await? {
        if mark_ended(streaming, &session_id, reason).await? {
            ended.push(session_id);
        }
    }
    // Each is over already; their instances stop together (each may take its grace period),
    // and one that cannot be stopped now is stopped by the engine's sweep of ended sessions'
    // instances.
    let finishing = ended.iter().map(|session_id| async move {
        if let Err(err) = finish_ended(streaming, session_id, reason).await {
            tracing::error!(session = session_id, reason, error = %err.message, "cannot finish ending the user's session");
        }
    });
    futures::future::join_all(finishing).await;
    Ok(ended)
}

/// The first half of ending a session, at once: EXPIRED, and its page told. False when the
/// session had already ended.
pub(crate) async fn mark_ended(streaming: &Streaming, session_id: &str, reason: &str) -> Result<bool, ActionError> {
    let plane = &*streaming.pipeline.platform;
    if !repo::mark_expired(&plane.store, session_id, now_millis(), reason).await? {
        return Ok(false);
    }
    if let Some(live) = streaming.live.lock().expect("live lock").remove(session_id) {
        let _ = live.events.send(json!({ "type": "ended", "Reason": reason }));
    }
    session_changed(plane, session_id).await;
    Ok(true)
}

/// The second half, which may take the instance's grace period: the instance stopped, and the
/// `SessionEnded` record.
pub(crate) async fn finish_ended(streaming: &Streaming, session_id: &str, reason: &str) -> Result<(), ActionError> {
    let control = &streaming.pipeline;
    let plane = &*control.platform;
    let row = session(plane, session_id).await?;
    let now: i64 = row.end_time.unwrap_or_else(now_millis);
    let instance = &row.instance_id;
    if let Some(instance) = instance
        && let Err(err) = crate::instances::stop_instance(&streaming.instances, instance).await
        && err.status != 404
    {
        tracing::warn!(session = session_id, instance, error = %err, "stopping the session's instance");
    }
    let settings: Value = serde_json::from_str(&row.settings).map_err(ActionError::internal)?;
    let user_settings: serde_json::Map<String, Value> = settings["UserSettings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["Action"].as_str()?.to_owned(), s["Permission"].clone())))
        .collect();
    let user = &row.user_id;
    let user_ref = row.user().ok();
    let client_ips: Value = serde_json::from_str(&row.client_ips).unwrap_or(json!([]));
    let application = &row.application_id;
    let parameters = json!({
        "SessionId": session_id,
        "UserId": user,
        "UserArn": user_ref.as_ref().map(|u| u.arn(&plane.spec.account_id)).unwrap_or_default(),
        "AuthenticationType": row.authentication_type,
        "AuthenticationTypeUserId": user,
        "FleetName": row.fleet,
        "StackName": row.stack,
        "InstanceType": settings["InstanceType"],
        "EniPrivateIpAddress": row.private_address.clone().unwrap_or_default(),
        "StartTime": millis_to_rfc3339(row.start_time),
        "EndTime": millis_to_rfc3339(now),
        "ConnectedAtLeastOnce": row.connected_once,
        "ClientIpAddresses": client_ips,
        "HomeFoldersStorageLocation": settings["HomeFoldersBucket"]
            .as_str()
            .map(|b| format!("{b}/user/{}/", access_mode(&row.authentication_type).as_str()))
            .unwrap_or_default(),
        "UserSettings": user_settings,
        "MaxSessionDurationSeconds": settings["MaxUserDurationInSeconds"],
        "SessionType": if settings["FleetType"] == "ALWAYS_ON" { "ALWAYS_ON" } else { "ON_DEMAND" },
        "StreamView": settings["StreamView"],
        "Recorded": settings["SessionRecording"] == "ENABLED",
        "Applications": application.iter().collect::<Vec<_>>(),
        "InstanceId": instance,
        "EndReason": reason,
    });
    let event = ServiceEvent {
        source: "streaming",
        name: "SessionEnded",
        principal: "streaming.datasandbox",
        parameters,
        correlation_id: Some(row.correlation_id.clone()),
        effect: crate::core::platform::Effect::Recorded,
        ..ServiceEvent::default()
    };
    let _ = control.record_service_event(event).await;
    streaming.wake.notify_one();
    Ok(())
}
