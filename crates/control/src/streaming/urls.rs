//! Streaming URLs: minting them (`CreateStreamingURL`, and the portal's launch), redeeming
//! them into sessions, and authenticating what a session's user presents (the URL, the session's
//! cookie, or the instance link a session is served over).
//!
//! A streaming URL carries a token `<claims>.<signature>` (base64url JSON claims — URL id,
//! stack, fleet, user, application, expiry — and their HMAC-SHA256 under a key that never
//! leaves the data directory). The signature is checked when the URL is presented, as
//! authentication; redemption then checks expiry and consumes the URL's row atomically, so a
//! URL works once. Redeeming creates a session (PENDING), mints its correlation id and a
//! cookie, snapshots the stack's settings and the fleet's timeouts into it, and queues it for
//! an instance; the engine (or, for a warm ALWAYS_ON instance, the redemption itself) makes it
//! ACTIVE.

use std::sync::Arc;

use base64::Engine as _;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use model::spec::FleetType;
use policy::Resource;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::engine::try_assign_warm;
use super::fleets::{fleet_row, fleet_type_of};
use super::queue::queue_limits;
use super::repo::{self, NewSession, NewUrl, SessionState};
use super::sessions::{access_mode, check_user_id, session_status};
use super::stacks::{UserSetting, stack_row};
use super::state::{Live, Streaming, scaled_ms};
use crate::core::caller::Caller;
use crate::core::codec::bounded;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};
use crate::identity::SessionLookup;

/// What a streaming URL's token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    #[serde(rename = "u")]
    url_id: String,
    #[serde(rename = "s")]
    stack: String,
    #[serde(rename = "f")]
    fleet: String,
    #[serde(rename = "i")]
    user: String,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    application: Option<String>,
    #[serde(rename = "e")]
    expires: i64,
    /// AppStream's `AuthenticationType` of the session: absent for `API` (operator-made URLs),
    /// `USERPOOL` for a local user launching from the portal.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    authentication: Option<String>,
    /// A SAML user's `SessionDuration`: the session ends by then even if the fleet allows more.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    max_duration: Option<i64>,
    /// The identity provider of a federated (`SAML`) user: part of who the user is.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
}

impl Claims {
    /// The user the URL is for.
    fn user_ref(&self) -> Result<model::UserRef, ActionError> {
        let mode = access_mode(self.authentication.as_deref().unwrap_or("API"));
        model::UserRef::from_parts(mode, self.issuer.as_deref(), &self.user)
            .map_err(|_| ActionError::new(400, ErrorCode::MalformedStreamingURL, "the URL names no valid user"))
    }
}

fn verify(plane: &Platform, token: &str) -> Result<Claims, ActionError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let malformed =
        || ActionError::new(400, ErrorCode::MalformedStreamingURL, "this is not a streaming URL; copy the whole URL you were given");
    let (claims_text, signature) = token.split_once('.').ok_or_else(malformed)?;
    let claims_bytes = b64.decode(claims_text).map_err(|_| malformed())?;
    let signature = b64.decode(signature).map_err(|_| malformed())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&plane.url_key()?).map_err(ActionError::internal)?;
    mac.update(&claims_bytes);
    mac.verify_slice(&signature).map_err(|_| {
        ActionError::new(403, ErrorCode::InvalidStreamingURLSignature, "this streaming URL was altered or was not made by this environment")
    })?;
    serde_json::from_slice(&claims_bytes).map_err(|_| malformed())
}

impl SessionLookup for Streaming {
    fn url_caller(&self, token: &str) -> Result<Caller, ActionError> {
        url_caller(&self.pipeline.platform, token)
    }

    fn cookie_caller<'a>(&'a self, cookie: &'a str, action: &'a str) -> BoxFuture<'a, Result<Caller, ActionError>> {
        Box::pin(cookie_caller(&self.pipeline.platform, cookie, action))
    }

    fn link_caller<'a>(&'a self, source_ip: &'a str) -> BoxFuture<'a, Result<Caller, ActionError>> {
        Box::pin(link_caller(&self.pipeline.platform, source_ip))
    }

    fn handoff_caller<'a>(&'a self, code: &'a str) -> BoxFuture<'a, Result<Caller, ActionError>> {
        Box::pin(handoff_caller(&self.pipeline.platform, code))
    }

    fn end_sessions_of_local_user<'a>(
        &'a self,
        user_name: &'a str,
        reason: &'static str,
    ) -> BoxFuture<'a, Result<Vec<String>, ActionError>> {
        Box::pin(super::sessions::end_sessions_of_local_user(self, user_name, reason))
    }
}

/// Authenticates the bearer of a streaming URL as the user the URL names.
pub(crate) fn url_caller(plane: &Platform, token: &str) -> Result<Caller, ActionError> {
    let claims = verify(plane, token)?;
    let user = claims.user_ref()?;
    let issuer = json!({ "type": "StreamingURL", "principalId": claims.url_id });
    Ok(user_caller(plane, &user, policy::Channel::StreamingUrl, issuer, None))
}

/// The one action an ended session's cookie may still call: its own status, so that its page
/// can say how it ended.
pub(super) const ENDED_SESSION_ACTION: &str = "streaming:GetSessionStatus";

/// Authenticates a session's cookie as that session's user; the session is the issuer. Once
/// the session has ended the cookie acts for nobody, except to read how its session ended.
pub(crate) async fn cookie_caller(plane: &Platform, cookie: &str, action: &str) -> Result<Caller, ActionError> {
    let row = repo::find_session_by_cookie(&plane.store, &hex::encode(Sha256::digest(cookie.as_bytes())))
        .await?
        .ok_or_else(|| ActionError::unauthenticated("the session cookie is not valid; open your streaming URL again"))?;
    if row.state == SessionState::Expired && action != ENDED_SESSION_ACTION {
        return Err(ActionError::unauthenticated("this session has ended, and its cookie with it; open a new streaming URL"));
    }
    let user = row.user()?;
    let issuer = json!({ "type": "StreamingSession", "principalId": row.session_id });
    Ok(user_caller(plane, &user, policy::Channel::Session, issuer, Some(row.correlation_id)))
}

/// Authenticates a handoff code as the user of the ACTIVE session it was given for.
pub(crate) async fn handoff_caller(plane: &Platform, code: &str) -> Result<Caller, ActionError> {
    let refused = || ActionError::unauthenticated("the handoff code is unknown, spent or expired; reload the session page");
    let session_id =
        repo::find_handoff(&plane.store, &hex::encode(Sha256::digest(code.as_bytes())), now_millis()).await?.ok_or_else(refused)?;
    let row = super::sessions::session(plane, &session_id).await?;
    let user = row.user()?;
    let issuer = json!({ "type": "StreamingSession", "principalId": row.session_id });
    Ok(user_caller(plane, &user, policy::Channel::Session, issuer, Some(row.correlation_id)))
}

/// The ACTIVE session served by the running instance whose private address `source_ip` is
/// (the endpoint only hears instance links, reverse-path filtered).
pub(crate) async fn link_caller(plane: &Platform, source_ip: &str) -> Result<Caller, ActionError> {
    let linked = repo::find_session_served_from(&plane.store, &plane.node.name, source_ip)
        .await?
        .ok_or_else(|| ActionError::unauthenticated("no active session is served from this address"))?;
    let user = linked.user?;
    let issuer = json!({ "type": "StreamingSession", "principalId": linked.session_id, "instanceId": linked.instance_id });
    Ok(user_caller(plane, &user, policy::Channel::Link, issuer, Some(linked.correlation_id)))
}

/// A session's user as a caller: recorded with the user's own ARN (mode and provider), the
/// session or URL as the issuer.
fn user_caller(plane: &Platform, user: &model::UserRef, channel: policy::Channel, issuer: Value, correlation_id: Option<String>) -> Caller {
    let (principal, identity) =
        crate::core::caller::person(&plane.spec.account_id, user, channel, "User", false, Vec::new(), Some(issuer), now_millis());
    Caller { principal, identity, correlation_id, federation: None, expires: None, credential_epoch: None }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateUrlInput {
    stack_name: String,
    fleet_name: String,
    user_id: String,
    #[serde(default)]
    application_id: Option<String>,
    #[serde(default)]
    validity: Option<i64>,
    #[serde(default)]
    session_context: Option<String>,
}

pub(super) async fn create_url(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateUrlInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let user = model::UserRef::custom(check_user_id(&input.user_id)?);
    let validity = bounded("Validity", input.validity, 60, 1..=604_800)?;
    if input.session_context.as_ref().is_some_and(|c| c.is_empty() || c.chars().count() > 1000) {
        return Err(ActionError::validation("SessionContext must be 1..=1000 characters"));
    }
    let stack = stack_row(plane, &input.stack_name).await?;
    let fleet = fleet_row(plane, &input.fleet_name).await?;
    let stack_fleet: Option<String> = stack.try_get("fleet")?;
    if stack_fleet.as_deref() != Some(input.fleet_name.as_str()) {
        return Err(ActionError::new(
            400,
            ErrorCode::InvalidParameterCombinationException,
            format!(
                "stack `{}` streams from {}, not fleet `{}`",
                input.stack_name,
                stack_fleet.map_or("no fleet".to_owned(), |f| format!("fleet `{f}`")),
                input.fleet_name
            ),
        ));
    }
    if let Some(app) = &input.application_id {
        let image: String = fleet.try_get("image")?;
        let catalog = crate::instances::catalog(plane, &image)?;
        if !catalog.iter().any(|a| a == app) {
            return Err(ActionError::validation(format!(
                "ApplicationId `{app}` is not in image `{image}`'s catalog ({})",
                catalog.join(", ")
            )));
        }
    }
    ctx.authorize(Resource::Service("streaming".into()))?;
    let url = UrlFor {
        stack: input.stack_name,
        fleet: input.fleet_name,
        user,
        application: input.application_id,
        session_context: input.session_context,
        max_duration: None,
    };
    mint_url(plane, &fleet, url, validity).await
}

/// What a streaming URL opens, for whom.
pub(crate) struct UrlFor {
    pub stack: String,
    pub fleet: String,
    /// Who the URL is for; their mode is the session's `AuthenticationType`.
    pub user: model::UserRef,
    pub application: Option<String>,
    pub session_context: Option<String>,
    /// Seconds the session may last at most (below the fleet's maximum), if anything limits it.
    pub max_duration: Option<i64>,
}

/// Signs a streaming URL for a RUNNING fleet and records it (its row is consumed on use).
pub(crate) async fn mint_url(plane: &Platform, fleet: &sqlx::any::AnyRow, input: UrlFor, validity: i64) -> Result<Value, ActionError> {
    let state: String = fleet.try_get("state")?;
    if state != "RUNNING" {
        return Err(ActionError::new(
            400,
            ErrorCode::OperationNotPermittedException,
            format!("fleet `{}` is {state}; streaming URLs are made only for a RUNNING fleet", input.fleet),
        ));
    }
    let mut raw = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let expires = now_millis() + validity * 1000;
    let authentication = input.user.mode().authentication_type();
    let claims = Claims {
        url_id: hex::encode(raw),
        stack: input.stack.clone(),
        fleet: input.fleet.clone(),
        user: input.user.user().to_string(),
        application: input.application.clone(),
        expires,
        authentication: (authentication != "API").then(|| authentication.to_owned()),
        max_duration: input.max_duration,
        issuer: input.user.issuer_str().map(str::to_owned),
    };
    // The context travels in the URL's row, not in the token: it is data, never trusted. The
    // row also holds whom the URL is for, which redemption compares with the claims.
    let url = NewUrl {
        url_id: &claims.url_id,
        stack: &claims.stack,
        fleet: &claims.fleet,
        user_id: &claims.user,
        application_id: claims.application.as_deref(),
        session_context: input.session_context.as_deref(),
        expires,
        created: now_millis(),
        authentication_type: authentication,
        issuer: claims.issuer.as_deref(),
    };
    repo::insert_url(&plane.store, url).await?;
    let claims_bytes = serde_json::to_vec(&claims).map_err(ActionError::internal)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!("{}.{}", b64.encode(&claims_bytes), b64.encode(plane.sign(&claims_bytes)?));
    let base = plane.public_base();
    Ok(json!({ "StreamingURL": format!("{base}/streaming/{token}"), "Expires": millis_to_rfc3339(expires) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RedeemInput {
    token: String,
}

/// `streaming:RedeemStreamingURL`: the URL checked (signature, expiry, the fleet still serving
/// its stack, the row it was made with, room in the queue), consumed, and turned into a PENDING
/// session with its cookie; a warm instance is taken at once, otherwise the engine serves it.
pub(super) async fn redeem(streaming: &Arc<Streaming>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: RedeemInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let claims = verify(plane, &input.token)?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    let (fleet, stack) = still_served(plane, &claims).await?;
    let user = claims.user_ref()?;
    check_made_as_claimed(plane, &claims, &user).await?;
    if user.mode() == model::AccessMode::Local && !crate::identity::local::exists(&plane.store, &claims.user).await? {
        return Err(ActionError::new(
            403,
            ErrorCode::AccessDeniedException,
            format!("local user `{}` was deleted: their streaming URLs open nothing", claims.user),
        ));
    }
    check_queue_room(plane, &claims.fleet, &user).await?;
    consume(plane, &claims.url_id).await?;
    let session_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    ctx.set_correlation_id(correlation_id.clone());
    let mut cookie = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut cookie);
    let cookie = hex::encode(cookie);
    let snapshot = snapshot(plane, &claims, &fleet, &stack).await?;
    // An ALWAYS_ON fleet's session is offered this node's warm instances first; an ON_DEMAND
    // fleet has none, and its engines claim the session (the node with the most room first).
    let warm = fleet_type_of(&fleet.try_get::<String, _>("fleet_type")?) == FleetType::AlwaysOn;
    let now = now_millis();
    let session = NewSession {
        session_id: &session_id,
        user_id: &claims.user,
        user: &user,
        stack: &claims.stack,
        fleet: &claims.fleet,
        application_id: claims.application.as_deref(),
        session_context: snapshot.context.as_deref(),
        settings: snapshot.settings.to_string(),
        correlation_id: &correlation_id,
        cookie_hash: hex::encode(Sha256::digest(cookie.as_bytes())),
        now,
        max_expiration: now + scaled_ms(plane, snapshot.max_duration),
        client_ips: json!([ctx.source_ip]).to_string(),
        node: warm.then_some(&plane.node),
    };
    if !repo::insert_session(&plane.store, session).await? {
        return Err(ActionError::new(
            403,
            ErrorCode::AccessDeniedException,
            format!("local user `{}` was deleted: their streaming URLs open nothing", claims.user),
        ));
    }
    streaming.live.lock().expect("live lock").insert(session_id.clone(), Live::new());
    plane.changes.user(&user);
    // A warm instance of this node is taken at once (the session was inserted as this node's,
    // so no other node's engine takes it meanwhile); otherwise it is given back and the
    // engines serve the queue.
    if warm {
        try_assign_warm(streaming, &session_id).await;
    }
    streaming.wake.notify_one();
    let mut out = session_status(plane, &session_id).await?;
    out["Cookie"] = json!(cookie);
    Ok(out)
}

/// The URL has not expired, and its fleet is RUNNING and still serves its stack: the fleet's
/// and the stack's rows, for the session's snapshot.
async fn still_served(plane: &Platform, claims: &Claims) -> Result<(sqlx::any::AnyRow, sqlx::any::AnyRow), ActionError> {
    if claims.expires <= now_millis() {
        return Err(ActionError::new(
            403,
            ErrorCode::ExpiredStreamingURL,
            format!("this streaming URL expired at {}; ask for a new one", millis_to_rfc3339(claims.expires)),
        ));
    }
    let fleet = fleet_row(plane, &claims.fleet).await?;
    let stack = stack_row(plane, &claims.stack).await?;
    let state: String = fleet.try_get("state")?;
    if state != "RUNNING" || stack.try_get::<Option<String>, _>("fleet")?.as_deref() != Some(claims.fleet.as_str()) {
        return Err(ActionError::new(
            400,
            ErrorCode::OperationNotPermittedException,
            format!("fleet `{}` no longer serves stack `{}` ({state}); ask for a new URL", claims.fleet, claims.stack),
        ));
    }
    Ok((fleet, stack))
}

/// The row says whom the URL was made for; the claims must say the same. (A stolen signing
/// key would otherwise let a URL made for one user be redeemed as another.)
async fn check_made_as_claimed(plane: &Platform, claims: &Claims, user: &model::UserRef) -> Result<(), ActionError> {
    let row = repo::find_url(&plane.store, &claims.url_id).await?.ok_or_else(|| {
        ActionError::new(403, ErrorCode::InvalidStreamingURLSignature, "this streaming URL was not made by this environment")
    })?;
    let row_authentication = row.authentication_type.unwrap_or_else(|| "API".to_owned());
    let row_issuer = row.issuer.filter(|i| !i.is_empty());
    if row.user_id != claims.user
        || row.stack != claims.stack
        || row.fleet != claims.fleet
        || row_authentication != user.mode().authentication_type()
        || row_issuer.as_deref() != user.issuer_str()
    {
        return Err(ActionError::new(
            403,
            ErrorCode::StreamingURLMismatch,
            "this streaming URL's claims do not match the URL that was made; it cannot be opened",
        ));
    }
    Ok(())
}

/// The fleet's queue has room, and the user holds fewer places on the fleet than its limit.
async fn check_queue_room(plane: &Platform, fleet: &str, user: &model::UserRef) -> Result<(), ActionError> {
    let limits = queue_limits(plane, fleet);
    let waiting = repo::count_waiting(&plane.store, fleet).await?;
    if waiting >= i64::from(limits.max_queue) {
        return Err(ActionError::new(
            429,
            ErrorCode::LimitExceededException,
            format!("no streaming resources are available: {waiting} users already wait for fleet `{fleet}`; try again later"),
        ));
    }
    // One user holds at most `max_sessions_per_user` places (waiting or active) on a fleet.
    let held = repo::count_held(&plane.store, fleet, user).await?;
    if held >= i64::from(limits.max_sessions_per_user) {
        return Err(ActionError::new(
            429,
            ErrorCode::LimitExceededException,
            format!("you already hold {held} sessions on fleet `{fleet}`, its limit per user (max_sessions_per_user); end one first"),
        ));
    }
    Ok(())
}

/// Marks the URL used, atomically: of two redemptions at once, one wins.
async fn consume(plane: &Platform, url_id: &str) -> Result<(), ActionError> {
    if !repo::mark_redeemed(&plane.store, url_id, now_millis()).await? {
        return Err(ActionError::new(
            403,
            ErrorCode::StreamingURLAlreadyUsed,
            "this streaming URL was already used; each URL opens one session",
        ));
    }
    Ok(())
}

/// What a session keeps of its stack and fleet as they were when it started (later changes
/// do not reach it), with the URL's session context.
struct Snapshot {
    settings: Value,
    max_duration: i64,
    context: Option<String>,
}

async fn snapshot(
    plane: &Platform,
    claims: &Claims,
    fleet: &sqlx::any::AnyRow,
    stack: &sqlx::any::AnyRow,
) -> Result<Snapshot, ActionError> {
    let settings: Vec<UserSetting> = serde_json::from_str(&stack.try_get::<String, _>("user_settings")?).map_err(ActionError::internal)?;
    let fleet_max: i64 = fleet.try_get("max_user_duration")?;
    let max_duration = claims.max_duration.map_or(fleet_max, |d| d.min(fleet_max));
    let context = repo::url_session_context(&plane.store, &claims.url_id).await?;
    let settings = json!({
        "UserSettings": settings,
        "MaxUserDurationInSeconds": max_duration,
        "DisconnectTimeoutInSeconds": fleet.try_get::<i64, _>("disconnect_timeout")?,
        "IdleDisconnectTimeoutInSeconds": fleet.try_get::<i64, _>("idle_disconnect_timeout")?,
        // The stack's DIRECT hands the notebook to the browser; otherwise the fleet's view streams pixels.
        "StreamView": match stack.try_get::<Option<String>, _>("stream_view")?.as_deref() {
            Some("DIRECT") => "DIRECT".to_owned(),
            _ => fleet.try_get::<String, _>("stream_view")?,
        },
        "InstanceType": fleet.try_get::<String, _>("instance_type")?,
        "ImageName": fleet.try_get::<String, _>("image")?,
        "FleetType": fleet.try_get::<String, _>("fleet_type")?,
        "HomeFoldersBucket": stack.try_get::<Option<String>, _>("home_folders_bucket")?,
        "RedirectURL": stack.try_get::<Option<String>, _>("redirect_url")?,
        "Watermark": stack.try_get::<Option<String>, _>("watermark")?.unwrap_or_else(|| "DISABLED".to_owned()),
        "SessionRecording": stack.try_get::<Option<String>, _>("session_recording")?.unwrap_or_else(|| "DISABLED".to_owned()),
        "Application": claims.application.clone().or(stack.try_get::<Option<String>, _>("default_application")?),
    });
    Ok(Snapshot { settings, max_duration, context })
}
