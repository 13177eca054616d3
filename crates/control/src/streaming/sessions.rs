//! Streaming URLs and sessions.
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
use policy::Resource;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::stacks::UserSetting;
use super::{Streaming, not_found, scaled_ms};
use crate::core::caller::Caller;
use crate::core::codec::{bounded, decode_token, encode_token};
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::platform::{Platform, ServiceEvent};
use crate::core::store::{millis_to_rfc3339, now_millis};
use crate::identity::SessionLookup;

/// A session's live side: its event channel and the time of its user's last input.
pub(crate) struct Live {
    pub connections: usize,
    pub last_input: i64,
    pub events: tokio::sync::broadcast::Sender<Value>,
    pub warned: Vec<&'static str>,
}

impl Live {
    fn new() -> Live {
        Live { connections: 0, last_input: now_millis(), events: tokio::sync::broadcast::channel(32).0, warned: Vec::new() }
    }
}

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
            .map_err(|_| ActionError::new(400, "MalformedStreamingURL", "the URL names no valid user"))
    }
}

/// Who a session (a row of `sessions`) is for.
pub(crate) fn session_user(row: &sqlx::any::AnyRow) -> Result<model::UserRef, ActionError> {
    let mode = access_mode(&row.try_get::<String, _>("authentication_type")?);
    let issuer: Option<String> = row.try_get("issuer")?;
    model::UserRef::from_parts(mode, issuer.as_deref(), &row.try_get::<String, _>("user_id")?).map_err(|err| {
        ActionError::new(401, "SessionPredatesIdentity", format!("this session's user is not complete ({err}); start a new session"))
    })
}

/// The home-folder access mode of a session's `AuthenticationType` (AppStream's layout).
pub(crate) fn access_mode(authentication_type: &str) -> model::AccessMode {
    match authentication_type {
        "USERPOOL" => model::AccessMode::Local,
        "SAML" => model::AccessMode::Federated,
        _ => model::AccessMode::Custom,
    }
}

fn verify(plane: &Platform, token: &str) -> Result<Claims, ActionError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let malformed = || ActionError::new(400, "MalformedStreamingURL", "this is not a streaming URL; copy the whole URL you were given");
    let (claims_text, signature) = token.split_once('.').ok_or_else(malformed)?;
    let claims_bytes = b64.decode(claims_text).map_err(|_| malformed())?;
    let signature = b64.decode(signature).map_err(|_| malformed())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&plane.url_key()?).map_err(ActionError::internal)?;
    mac.update(&claims_bytes);
    mac.verify_slice(&signature).map_err(|_| {
        ActionError::new(403, "InvalidStreamingURLSignature", "this streaming URL was altered or was not made by this environment")
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
const ENDED_SESSION_ACTION: &str = "streaming:GetSessionStatus";

/// Authenticates a session's cookie as that session's user; the session is the issuer. Once
/// the session has ended the cookie acts for nobody, except to read how its session ended.
pub(crate) async fn cookie_caller(plane: &Platform, cookie: &str, action: &str) -> Result<Caller, ActionError> {
    let row = sqlx::query("SELECT * FROM sessions WHERE cookie_hash = $1")
        .bind(hex::encode(Sha256::digest(cookie.as_bytes())))
        .fetch_optional(&plane.store.pool)
        .await?
        .ok_or_else(|| ActionError::unauthenticated("the session cookie is not valid; open your streaming URL again"))?;
    if row.try_get::<String, _>("state")? == "EXPIRED" && action != ENDED_SESSION_ACTION {
        return Err(ActionError::unauthenticated("this session has ended, and its cookie with it; open a new streaming URL"));
    }
    let user = session_user(&row)?;
    let session: String = row.try_get("session_id")?;
    let issuer = json!({ "type": "StreamingSession", "principalId": session });
    Ok(user_caller(plane, &user, policy::Channel::Session, issuer, row.try_get("correlation_id")?))
}

/// The ACTIVE session served by the running instance whose private address `source_ip` is
/// (the endpoint only hears instance links, reverse-path filtered).
pub(crate) async fn link_caller(plane: &Platform, source_ip: &str) -> Result<Caller, ActionError> {
    let row = sqlx::query(
        "SELECT s.session_id, s.user_id, s.correlation_id, s.authentication_type, s.issuer, i.instance_id FROM instances i JOIN sessions s ON s.instance_id = i.instance_id
         WHERE i.private_address = $1 AND i.state = 'RUNNING' AND s.state = 'ACTIVE'",
    )
    .bind(source_ip)
    .fetch_optional(&plane.store.pool)
    .await?
    .ok_or_else(|| ActionError::unauthenticated("no active session is served from this address"))?;
    let user = session_user(&row)?;
    let session: String = row.try_get("session_id")?;
    let instance: String = row.try_get("instance_id")?;
    let issuer = json!({ "type": "StreamingSession", "principalId": session, "instanceId": instance });
    Ok(user_caller(plane, &user, policy::Channel::Link, issuer, row.try_get("correlation_id")?))
}

/// A session's user as a caller: recorded with the user's own ARN (mode and provider), the
/// session or URL as the issuer.
fn user_caller(plane: &Platform, user: &model::UserRef, channel: policy::Channel, issuer: Value, correlation_id: Option<String>) -> Caller {
    let (principal, identity) =
        crate::core::caller::person(&plane.spec.account_id, user, channel, "User", false, Vec::new(), Some(issuer), now_millis());
    Caller { principal, identity, correlation_id, federation: None, expires: None }
}

/// The session a cookie caller holds, if the caller came with one.
pub(crate) fn caller_session(ctx: &Ctx<'_>) -> Option<String> {
    let issuer = ctx.caller.identity.session_context.as_ref()?.session_issuer.as_ref()?;
    (issuer["type"] == "StreamingSession").then(|| issuer["principalId"].as_str().map(str::to_owned)).flatten()
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

fn check_user_id(user: &str) -> Result<model::UserId, ActionError> {
    let ok = (2..=32).contains(&user.chars().count())
        && user.chars().all(|c| c.is_alphanumeric() || c == '_' || matches!(c, '+' | '=' | ',' | '.' | '@' | '-'));
    if !ok {
        return Err(ActionError::validation(format!("UserId `{user}` must be 2..=32 characters of letters, digits and _+=,.@-")));
    }
    model::UserId::new(user.to_owned()).map_err(|e| ActionError::validation(format!("UserId `{user}`: {e}")))
}

pub(super) async fn create_url(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateUrlInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let user = model::UserRef::custom(check_user_id(&input.user_id)?);
    let validity = bounded("Validity", input.validity, 60, 1..=604_800)?;
    if input.session_context.as_ref().is_some_and(|c| c.is_empty() || c.chars().count() > 1000) {
        return Err(ActionError::validation("SessionContext must be 1..=1000 characters"));
    }
    let stack = super::stacks::stack_row(plane, &input.stack_name).await?;
    let fleet = super::fleets::fleet_row(plane, &input.fleet_name).await?;
    let stack_fleet: Option<String> = stack.try_get("fleet")?;
    if stack_fleet.as_deref() != Some(input.fleet_name.as_str()) {
        return Err(ActionError::new(
            400,
            "InvalidParameterCombinationException",
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
            "OperationNotPermittedException",
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
    sqlx::query(
        "INSERT INTO streaming_urls (url_id, stack, fleet, user_id, application_id, session_context, expires, redeemed, created, authentication_type, issuer)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10)",
    )
    .bind(&claims.url_id)
    .bind(&claims.stack)
    .bind(&claims.fleet)
    .bind(&claims.user)
    .bind(&claims.application)
    .bind(&input.session_context)
    .bind(expires)
    .bind(now_millis())
    .bind(authentication)
    .bind(&claims.issuer)
    .execute(&plane.store.pool)
    .await?;
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

pub(super) async fn redeem(streaming: &Arc<Streaming>, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: RedeemInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let claims = verify(plane, &input.token)?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    if claims.expires <= now_millis() {
        return Err(ActionError::new(
            403,
            "ExpiredStreamingURL",
            format!("this streaming URL expired at {}; ask for a new one", millis_to_rfc3339(claims.expires)),
        ));
    }
    let fleet = super::fleets::fleet_row(plane, &claims.fleet).await?;
    let stack = super::stacks::stack_row(plane, &claims.stack).await?;
    let state: String = fleet.try_get("state")?;
    if state != "RUNNING" || stack.try_get::<Option<String>, _>("fleet")?.as_deref() != Some(claims.fleet.as_str()) {
        return Err(ActionError::new(
            400,
            "OperationNotPermittedException",
            format!("fleet `{}` no longer serves stack `{}` ({state}); ask for a new URL", claims.fleet, claims.stack),
        ));
    }
    let user = claims.user_ref()?;
    // The row says whom the URL was made for; the claims must say the same. (A stolen signing
    // key would otherwise let a URL made for one user be redeemed as another.)
    let row =
        sqlx::query("SELECT * FROM streaming_urls WHERE url_id = $1")
            .bind(&claims.url_id)
            .fetch_optional(&plane.store.pool)
            .await?
            .ok_or_else(|| ActionError::new(403, "InvalidStreamingURLSignature", "this streaming URL was not made by this environment"))?;
    let row_authentication = row.try_get::<Option<String>, _>("authentication_type")?.unwrap_or_else(|| "API".to_owned());
    let row_issuer = row.try_get::<Option<String>, _>("issuer")?.filter(|i| !i.is_empty());
    if row.try_get::<String, _>("user_id")? != claims.user
        || row.try_get::<String, _>("stack")? != claims.stack
        || row.try_get::<String, _>("fleet")? != claims.fleet
        || row_authentication != user.mode().authentication_type()
        || row_issuer.as_deref() != user.issuer_str()
    {
        return Err(ActionError::new(
            403,
            "StreamingURLMismatch",
            "this streaming URL's claims do not match the URL that was made; it cannot be opened",
        ));
    }
    let limits = super::engine::queue_limits(plane, &claims.fleet);
    let waiting: i64 = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE fleet = $1 AND state = 'PENDING'")
        .bind(&claims.fleet)
        .fetch_one(&plane.store.pool)
        .await?
        .try_get("n")?;
    if waiting >= i64::from(limits.max_queue) {
        return Err(ActionError::new(
            429,
            "LimitExceededException",
            format!("no streaming resources are available: {waiting} users already wait for fleet `{}`; try again later", claims.fleet),
        ));
    }
    // One user holds at most `max_sessions_per_user` places (waiting or active) on a fleet.
    let held: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM sessions WHERE fleet = $1 AND state IN ('PENDING', 'ACTIVE') AND user_id = $2
         AND authentication_type = $3 AND COALESCE(issuer, '') = $4",
    )
    .bind(&claims.fleet)
    .bind(user.user().as_str())
    .bind(user.mode().authentication_type())
    .bind(user.issuer_str().unwrap_or_default())
    .fetch_one(&plane.store.pool)
    .await?
    .try_get("n")?;
    if held >= i64::from(limits.max_sessions_per_user) {
        return Err(ActionError::new(
            429,
            "LimitExceededException",
            format!(
                "you already hold {held} sessions on fleet `{}`, its limit per user (max_sessions_per_user); end one first",
                claims.fleet
            ),
        ));
    }
    let used = sqlx::query("UPDATE streaming_urls SET redeemed = $1 WHERE url_id = $2 AND redeemed IS NULL")
        .bind(now_millis())
        .bind(&claims.url_id)
        .execute(&plane.store.pool)
        .await?;
    if used.rows_affected() == 0 {
        return Err(ActionError::new(403, "StreamingURLAlreadyUsed", "this streaming URL was already used; each URL opens one session"));
    }
    let session_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    ctx.set_correlation_id(correlation_id.clone());
    let mut cookie = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut cookie);
    let cookie = hex::encode(cookie);
    let settings: Vec<UserSetting> = serde_json::from_str(&stack.try_get::<String, _>("user_settings")?).map_err(ActionError::internal)?;
    let fleet_max: i64 = fleet.try_get("max_user_duration")?;
    let max_duration = claims.max_duration.map_or(fleet_max, |d| d.min(fleet_max));
    let context: Option<String> = sqlx::query("SELECT session_context FROM streaming_urls WHERE url_id = $1")
        .bind(&claims.url_id)
        .fetch_one(&plane.store.pool)
        .await?
        .try_get("session_context")?;
    let snapshot = json!({
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
        "Application": claims.application.clone().or(stack.try_get::<Option<String>, _>("default_application")?),
    });
    let now = now_millis();
    sqlx::query(
        "INSERT INTO sessions (session_id, user_id, authentication_type, stack, fleet, application_id, session_context, state, connection_state,
         settings, correlation_id, cookie_hash, queued, start_time, max_expiration, last_input, connected_once, client_ips, issuer)
         VALUES ($1, $2, $13, $3, $4, $5, $6, 'PENDING', 'NOT_CONNECTED', $7, $8, $9, $10, $10, $11, $10, 0, $12, $14)",
    )
    .bind(&session_id)
    .bind(&claims.user)
    .bind(&claims.stack)
    .bind(&claims.fleet)
    .bind(&claims.application)
    .bind(&context)
    .bind(snapshot.to_string())
    .bind(&correlation_id)
    .bind(hex::encode(Sha256::digest(cookie.as_bytes())))
    .bind(now)
    .bind(now + scaled_ms(plane, max_duration))
    .bind(json!([ctx.source_ip]).to_string())
    .bind(user.mode().authentication_type())
    .bind(user.issuer_str())
    .execute(&plane.store.pool)
    .await?;
    streaming.live.lock().expect("live lock").insert(session_id.clone(), Live::new());
    plane.changes.user(&user);
    // A warm instance is taken at once; otherwise the engine serves the queue.
    super::engine::try_assign_warm(streaming, &session_id).await;
    streaming.wake.notify_one();
    let mut out = session_status(plane, &session_id).await?;
    out["Cookie"] = json!(cookie);
    Ok(out)
}

pub(super) async fn get_status(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    let session = caller_session(ctx).ok_or_else(|| ActionError::validation("GetSessionStatus needs the session's cookie"))?;
    ctx.authorize_always();
    session_status(ctx.platform, &session).await
}

/// What the session page shows: state, queue position and estimate, end reason.
pub(crate) async fn session_status(plane: &Platform, session_id: &str) -> Result<Value, ActionError> {
    let row = session_row(plane, session_id).await?;
    let mut out = session_json(&row)?;
    let state: String = row.try_get("state")?;
    if state == "PENDING" {
        let fleet: String = row.try_get("fleet")?;
        let queued: i64 = row.try_get("queued")?;
        let ahead: i64 = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE fleet = $1 AND state = 'PENDING' AND (queued < $2 OR (queued = $2 AND session_id < $3))")
            .bind(&fleet)
            .bind(queued)
            .bind(session_id)
            .fetch_one(&plane.store.pool)
            .await?
            .try_get("n")?;
        out["QueuePosition"] = json!(ahead + 1);
        out["EstimatedWaitSeconds"] = json!(super::engine::estimate_wait_seconds(plane, &fleet, ahead + 1).await?);
    }
    out["EndReason"] = json!(row.try_get::<Option<String>, _>("end_reason")?);
    if state == "ACTIVE" {
        out["NotebookUrl"] = json!(row.try_get::<Option<String>, _>("notebook_url")?);
    }
    // The application the session started (the URL's, or its stack's default).
    let application = match row.try_get::<Option<String>, _>("application_id")? {
        Some(application) => Some(application),
        None => sqlx::query("SELECT default_application FROM stacks WHERE name = $1")
            .bind(row.try_get::<String, _>("stack")?)
            .fetch_optional(&plane.store.pool)
            .await?
            .map(|r| r.try_get::<Option<String>, _>("default_application"))
            .transpose()?
            .flatten(),
    };
    out["ApplicationId"] = json!(application);
    // Break-glass is never silent: the user sees what operators ran in their instance.
    if let Some(instance) = row.try_get::<Option<String>, _>("instance_id")? {
        let execs = sqlx::query("SELECT operator, command, exit_code, time FROM instance_execs WHERE instance_id = $1 ORDER BY time")
            .bind(&instance)
            .fetch_all(&plane.store.pool)
            .await?;
        let execs = execs
            .iter()
            .map(|e| {
                Ok(json!({
                    "Operator": e.try_get::<String, _>("operator")?,
                    "Command": serde_json::from_str::<Value>(&e.try_get::<String, _>("command")?).unwrap_or(Value::Null),
                    "ExitCode": e.try_get::<Option<i64>, _>("exit_code")?,
                    "Time": millis_to_rfc3339(e.try_get("time")?),
                }))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        out["OperatorCommands"] = json!(execs);
    }
    let settings: Value = serde_json::from_str(&row.try_get::<String, _>("settings")?).map_err(ActionError::internal)?;
    out["StreamView"] = settings["StreamView"].clone();
    out["RedirectURL"] = settings["RedirectURL"].clone();
    out["UserSettings"] = settings["UserSettings"].clone();
    Ok(out)
}

pub(crate) async fn session_row(plane: &Platform, session_id: &str) -> Result<sqlx::any::AnyRow, ActionError> {
    sqlx::query("SELECT * FROM sessions WHERE session_id = $1")
        .bind(session_id)
        .fetch_optional(&plane.store.pool)
        .await?
        .ok_or_else(|| not_found("session", session_id))
}

/// A session in AWS's shape.
fn session_json(row: &sqlx::any::AnyRow) -> Result<Value, ActionError> {
    let instance: Option<String> = row.try_get("instance_id")?;
    let address: Option<String> = row.try_get("private_address")?;
    let mut session = json!({
        "Id": row.try_get::<String, _>("session_id")?,
        "UserId": row.try_get::<String, _>("user_id")?,
        "StackName": row.try_get::<String, _>("stack")?,
        "FleetName": row.try_get::<String, _>("fleet")?,
        "State": row.try_get::<String, _>("state")?,
        "ConnectionState": row.try_get::<String, _>("connection_state")?,
        "StartTime": millis_to_rfc3339(row.try_get("start_time")?),
        "MaxExpirationTime": millis_to_rfc3339(row.try_get("max_expiration")?),
        "AuthenticationType": row.try_get::<String, _>("authentication_type")?,
    });
    session["SessionId"] = session["Id"].clone();
    // DataSandbox's addition: a federated user's identity provider, part of who they are.
    if let Some(issuer) = row.try_get::<Option<String>, _>("issuer")?.filter(|i| !i.is_empty()) {
        session["Issuer"] = json!(issuer);
    }
    if let (Some(instance), Some(address)) = (instance, address) {
        session["InstanceId"] = json!(instance);
        session["NetworkAccessConfiguration"] = json!({ "EniPrivateIpAddress": address, "EniId": format!("eni-{}", &instance[2..]) });
    }
    Ok(session)
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
        return Err(ActionError::new(400, "InvalidParameterCombinationException", "UserId needs AuthenticationType, as in AWS"));
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
    super::stacks::stack_row(plane, &input.stack_name).await?;
    super::fleets::fleet_row(plane, &input.fleet_name).await?;
    ctx.authorize(Resource::Service("streaming".into()))?;
    let (after_time, after_id) = after.clone().unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(
        "SELECT * FROM sessions WHERE stack = $1 AND fleet = $2
         AND (($9 = '' AND state IN ('PENDING', 'ACTIVE')) OR session_id = $9)
         AND ($3 = '' OR (user_id = $3 AND authentication_type = $4)) AND ($5 = '' OR instance_id = $5)
         AND (start_time > $6 OR (start_time = $6 AND session_id > $7))
         ORDER BY start_time, session_id LIMIT $8",
    )
    .bind(&input.stack_name)
    .bind(&input.fleet_name)
    .bind(input.user_id.clone().unwrap_or_default())
    .bind(input.authentication_type.clone().unwrap_or_default())
    .bind(input.instance_id.clone().unwrap_or_default())
    .bind(after_time)
    .bind(&after_id)
    .bind(limit + 1)
    .bind(input.session_id.clone().unwrap_or_default())
    .fetch_all(&plane.store.pool)
    .await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let sessions = page.iter().map(session_json).collect::<Result<Vec<_>, _>>()?;
    let mut out = json!({ "Sessions": sessions });
    if more && let Some(last) = page.last() {
        out["NextToken"] =
            json!(encode_token(&format!("{} {}", last.try_get::<i64, _>("start_time")?, last.try_get::<String, _>("session_id")?)));
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
    let portal_owner = match (super::portal::portal_user(&ctx.caller.principal), session_row(plane, &input.session_id).await.ok()) {
        (Some(me), Some(row)) => session_user(&row).is_ok_and(|owner| owner == me),
        _ => false,
    };
    let own = portal_owner || caller_session(ctx).is_some_and(|s| s == input.session_id);
    if own {
        ctx.authorize_always();
    } else {
        ctx.authorize(Resource::Service("streaming".into()))?;
    }
    session_row(plane, &input.session_id).await?;
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

/// The first half of ending a session, at once: EXPIRED, and its page told. False when the
/// session had already ended.
pub(crate) async fn mark_ended(streaming: &Streaming, session_id: &str, reason: &str) -> Result<bool, ActionError> {
    let plane = &*streaming.pipeline.platform;
    let ended = sqlx::query("UPDATE sessions SET state = 'EXPIRED', connection_state = 'NOT_CONNECTED', end_time = $1, end_reason = $2 WHERE session_id = $3 AND state != 'EXPIRED'")
        .bind(now_millis())
        .bind(reason)
        .bind(session_id)
        .execute(&plane.store.pool)
        .await?;
    if ended.rows_affected() == 0 {
        return Ok(false);
    }
    if let Some(live) = streaming.live.lock().expect("live lock").remove(session_id) {
        let _ = live.events.send(json!({ "type": "ended", "Reason": reason }));
    }
    super::session_changed(plane, session_id).await;
    Ok(true)
}

/// The second half, which may take the instance's grace period: the instance stopped, and the
/// `SessionEnded` record.
pub(crate) async fn finish_ended(streaming: &Streaming, session_id: &str, reason: &str) -> Result<(), ActionError> {
    let control = &streaming.pipeline;
    let plane = &*control.platform;
    let row = session_row(plane, session_id).await?;
    let now: i64 = row.try_get::<Option<i64>, _>("end_time")?.unwrap_or_else(now_millis);
    let instance: Option<String> = row.try_get("instance_id")?;
    if let Some(instance) = &instance
        && let Err(err) = crate::instances::stop_instance(&streaming.instances, instance).await
        && err.status != 404
    {
        tracing::warn!(session = session_id, instance, error = %err, "stopping the session's instance");
    }
    let settings: Value = serde_json::from_str(&row.try_get::<String, _>("settings")?).map_err(ActionError::internal)?;
    let user_settings: serde_json::Map<String, Value> = settings["UserSettings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["Action"].as_str()?.to_owned(), s["Permission"].clone())))
        .collect();
    let user: String = row.try_get("user_id")?;
    let user_ref = session_user(&row).ok();
    let client_ips: Value = serde_json::from_str(&row.try_get::<String, _>("client_ips")?).unwrap_or(json!([]));
    let application: Option<String> = row.try_get("application_id")?;
    let parameters = json!({
        "SessionId": session_id,
        "UserId": user,
        "UserArn": user_ref.as_ref().map(|u| u.arn(&plane.spec.account_id)).unwrap_or_default(),
        "AuthenticationType": row.try_get::<String, _>("authentication_type")?,
        "AuthenticationTypeUserId": user,
        "FleetName": row.try_get::<String, _>("fleet")?,
        "StackName": row.try_get::<String, _>("stack")?,
        "InstanceType": settings["InstanceType"],
        "EniPrivateIpAddress": row.try_get::<Option<String>, _>("private_address")?.unwrap_or_default(),
        "StartTime": millis_to_rfc3339(row.try_get("start_time")?),
        "EndTime": millis_to_rfc3339(now),
        "ConnectedAtLeastOnce": row.try_get::<i64, _>("connected_once")? != 0,
        "ClientIpAddresses": client_ips,
        "HomeFoldersStorageLocation": settings["HomeFoldersBucket"]
            .as_str()
            .map(|b| format!("{b}/user/{}/", access_mode(&row.try_get::<String, _>("authentication_type").unwrap_or_default()).as_str()))
            .unwrap_or_default(),
        "UserSettings": user_settings,
        "MaxSessionDurationSeconds": settings["MaxUserDurationInSeconds"],
        "SessionType": if settings["FleetType"] == "ALWAYS_ON" { "ALWAYS_ON" } else { "ON_DEMAND" },
        "StreamView": settings["StreamView"],
        "Applications": application.into_iter().collect::<Vec<_>>(),
        "InstanceId": instance,
        "EndReason": reason,
    });
    let event = ServiceEvent {
        source: "streaming",
        name: "SessionEnded",
        principal: "streaming.datasandbox",
        parameters,
        correlation_id: Some(row.try_get("correlation_id")?),
        effect: crate::core::platform::Effect::Recorded,
        ..ServiceEvent::default()
    };
    let _ = control.record_service_event(event).await;
    streaming.wake.notify_one();
    Ok(())
}

/// A live connection of a session's page (the gateway's WebSocket): it makes the session
/// CONNECTED while open, carries its input (for the idle timeout) and its events.
pub struct SessionConnection {
    pub session_id: String,
    pub events: tokio::sync::broadcast::Receiver<Value>,
    streaming: Arc<Streaming>,
    client_ip: String,
}

impl Streaming {
    /// Opens a session's live connection, by its cookie.
    pub(crate) async fn connect_session(self: &Arc<Self>, cookie: &str, client_ip: &str) -> Result<SessionConnection, ActionError> {
        let plane = &*self.pipeline.platform;
        // An ended session is refused below, with its own answer (410).
        let caller = cookie_caller(plane, cookie, ENDED_SESSION_ACTION).await?;
        let issuer = caller.identity.session_context.and_then(|c| c.session_issuer).unwrap_or_default();
        let session_id = issuer["principalId"].as_str().unwrap_or_default().to_owned();
        let row = session_row(plane, &session_id).await?;
        if row.try_get::<String, _>("state")? == "EXPIRED" {
            return Err(ActionError::new(410, "SessionEnded", "this session has ended; ask for a new streaming URL"));
        }
        // Recorded before the connection counts; refused when it cannot be recorded.
        self.connection_event("SessionConnected", &session_id, client_ip, row.try_get("correlation_id")?).await?;
        let events = {
            let mut live = self.live.lock().expect("live lock");
            let entry = live.entry(session_id.clone()).or_insert_with(Live::new);
            entry.connections += 1;
            entry.last_input = now_millis();
            entry.events.subscribe()
        };
        let mut ips: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("client_ips")?).unwrap_or_default();
        if !ips.iter().any(|ip| ip == client_ip) {
            ips.push(client_ip.to_owned());
        }
        sqlx::query("UPDATE sessions SET connection_state = 'CONNECTED', connected_once = 1, disconnected_at = NULL, client_ips = $1 WHERE session_id = $2")
            .bind(json!(ips).to_string())
            .bind(&session_id)
            .execute(&plane.store.pool)
            .await?;
        super::session_changed(plane, &session_id).await;
        Ok(SessionConnection { session_id, events, streaming: self.clone(), client_ip: client_ip.to_owned() })
    }

    async fn connection_event(
        &self,
        name: &str,
        session_id: &str,
        client_ip: &str,
        correlation_id: Option<String>,
    ) -> Result<(), ActionError> {
        let event = ServiceEvent {
            source: "streaming",
            name,
            principal: "gateway.datasandbox",
            parameters: json!({ "SessionId": session_id, "ClientIp": client_ip }),
            correlation_id,
            effect: if name == "SessionConnected" { crate::core::platform::Effect::Gated } else { crate::core::platform::Effect::Recorded },
            ..ServiceEvent::default()
        };
        self.pipeline.record_service_event(event).await
    }

    /// The session's current status, for its page.
    pub(crate) async fn session_status(&self, session_id: &str) -> Result<Value, ActionError> {
        session_status(&self.pipeline.platform, session_id).await
    }
}

impl SessionConnection {
    /// The user pressed a key or moved the pointer.
    pub fn input(&self) {
        if let Some(live) = self.streaming.live.lock().expect("live lock").get_mut(&self.session_id) {
            live.last_input = now_millis();
            live.warned.retain(|w| *w != "IDLE");
        }
    }

    /// The connection closed; with no other open, the session is NOT_CONNECTED from now.
    pub async fn close(self) {
        let plane = &*self.streaming.pipeline.platform;
        let last = {
            let mut live = self.streaming.live.lock().expect("live lock");
            match live.get_mut(&self.session_id) {
                Some(entry) => {
                    entry.connections = entry.connections.saturating_sub(1);
                    entry.connections == 0
                }
                None => true,
            }
        };
        if last {
            let _ = sqlx::query(
                "UPDATE sessions SET connection_state = 'NOT_CONNECTED', disconnected_at = $1 WHERE session_id = $2 AND state != 'EXPIRED'",
            )
            .bind(now_millis())
            .bind(&self.session_id)
            .execute(&plane.store.pool)
            .await;
            super::session_changed(plane, &self.session_id).await;
        }
        let correlation = session_row(plane, &self.session_id).await.ok().and_then(|r| r.try_get("correlation_id").ok());
        let _ = self.streaming.connection_event("SessionDisconnected", &self.session_id, &self.client_ip, correlation).await;
    }
}
