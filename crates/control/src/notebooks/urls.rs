//! Presigned notebook URLs: single-use, valid for minutes, bound to the streaming session (and,
//! for a pixel session, the instance) they were made for, and redeemed for a notebook cookie.

use super::repo::{self, NewNotebookAccess, NewNotebookUrl, NotebookRow, NotebookState};
use crate::core::codec::bounded;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::store::now_millis;
use crate::streaming::repo::{SessionRow, SessionState};
use policy::Resource;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How long a presigned notebook URL may be opened, in seconds (AWS: 5 minutes; scaled like
/// session timeouts).
const URL_VALIDITY_SECONDS: i64 = 5 * 60;

/// A notebook with an owner opens only in its owner's sessions: the same user id *and* access
/// mode *and* identity provider (a local `bob` and a SAML `bob` are two people).
fn check_owner(notebook: &NotebookRow, session: &SessionRow, name: &str) -> Result<(), ActionError> {
    let Some(owner) = &notebook.owner else { return Ok(()) };
    let refused = |why: String| Err(ActionError::new(403, ErrorCode::NotebookOwnedByAnotherUser, why));
    let Some(mode) = notebook.owner_mode.as_deref().and_then(model::AccessMode::parse) else {
        return refused(format!(
            "notebook instance `{name}` was made before owners carried their access mode; an operator must recreate it for its owner"
        ));
    };
    let issuer = &notebook.owner_issuer;
    let owner = model::UserRef::from_parts(mode, issuer.as_deref(), owner).map_err(ActionError::internal)?;
    let user = session.user()?;
    if owner != user {
        return refused(format!("notebook instance `{name}` belongs to {owner}, not to this session's {user}"));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PresignInput {
    notebook_instance_name: String,
    #[serde(default)]
    session_expiration_duration_in_seconds: Option<i64>,
    /// The streaming session the URL is for: only that session can open it (DataSandbox's
    /// addition; AWS's URL is a bearer token).
    streaming_session_id: String,
}

pub(super) async fn presign(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: PresignInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let duration = bounded("SessionExpirationDurationInSeconds", input.session_expiration_duration_in_seconds, 43_200, 1800..=43_200)?;
    let notebook = repo::find(plane, &input.notebook_instance_name).await?;
    let session = crate::streaming::sessions::session(plane, &input.streaming_session_id).await?;
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let state = notebook.state;
    if state != NotebookState::InService {
        return Err(ActionError::new(
            400,
            ErrorCode::ValidationException,
            format!("notebook instance `{}` is {state}, not InService", input.notebook_instance_name),
        ));
    }
    if session.state != SessionState::Active {
        return Err(ActionError::validation(format!("streaming session `{}` is not ACTIVE", input.streaming_session_id)));
    }
    check_owner(&notebook, &session, &input.notebook_instance_name)?;
    // A pixel session's URL opens only in the browser inside its instance, through the
    // endpoint on that instance's link; a direct session's, in the browser holding its cookie.
    let settings: Value = serde_json::from_str(&session.settings).map_err(ActionError::internal)?;
    let link = match settings["StreamView"].as_str() {
        // The browser is the user's device: file transfer controls cannot hold there.
        Some("DIRECT") if transfers_disabled(&settings) => {
            return Err(ActionError::validation(format!(
                "streaming session `{}` is DIRECT with FILE_UPLOAD or FILE_DOWNLOAD disabled: its notebook would be in the user's browser, \
                 where they cannot hold; stream the session (DESKTOP or APP) instead",
                input.streaming_session_id
            )));
        }
        Some("DIRECT") => None,
        _ => {
            let instance = session.instance_id.as_deref().unwrap_or_default();
            let addresses = repo::instance_addresses(plane, instance)
                .await?
                .ok_or_else(|| ActionError::validation(format!("streaming session `{}` has no instance", input.streaming_session_id)))?;
            Some(addresses)
        }
    };
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let now = now_millis();
    let new_url = NewNotebookUrl {
        url_hash: &hex::encode(Sha256::digest(token.as_bytes())),
        notebook: &input.notebook_instance_name,
        session_id: &input.streaming_session_id,
        session_expiration: duration * 1000,
        expires: now + crate::streaming::scaled_ms(plane, URL_VALIDITY_SECONDS),
        created: now,
        instance_address: link.as_ref().map(|(private, _)| private.clone()),
    };
    repo::insert_url(plane, new_url).await?;
    let url = match &link {
        Some((_, endpoint)) => format!("http://{endpoint}:{}/notebook-auth/{token}", plane.spec.endpoint_port),
        None => {
            let url = format!("{}/notebook-auth/{token}", plane.public_base());
            // The session's page offers it; it opens only with that session's cookie.
            crate::streaming::sessions::set_notebook_url(&plane.store, &input.streaming_session_id, &url).await?;
            url
        }
    };
    Ok(json!({ "AuthorizedUrl": url }))
}

/// Whether a session's settings disable FILE_UPLOAD or FILE_DOWNLOAD.
fn transfers_disabled(settings: &Value) -> bool {
    settings["UserSettings"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| (s["Action"] == "FILE_UPLOAD" || s["Action"] == "FILE_DOWNLOAD") && s["Permission"] == "DISABLED")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RedeemInput {
    token: String,
}

/// Opens a presigned URL in the browser of the session it was made for: once, within five
/// minutes; returns the notebook cookie, valid for the URL's session expiration or until the
/// streaming session ends.
pub(super) async fn redeem(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: RedeemInput = ctx.parse(input)?;
    let plane = ctx.platform;
    let caller_session = crate::streaming::sessions::caller_session(ctx);
    ctx.authorize(Resource::Service("notebooks".into()))?;
    let url = repo::find_url(plane, &hex::encode(Sha256::digest(input.token.as_bytes())))
        .await?
        .ok_or_else(|| ActionError::new(403, ErrorCode::InvalidNotebookURL, "this notebook URL is not valid"))?;
    let bound = &url.session_id;
    let instance_address = &url.instance_address;
    if instance_address.as_deref().is_some_and(|address| address != ctx.source_ip) {
        return Err(ActionError::new(
            403,
            ErrorCode::NotebookURLBoundToInstance,
            "this notebook URL opens only in the browser of its session's workspace; it cannot be used from anywhere else",
        ));
    }
    if caller_session.as_deref() != Some(bound.as_str()) {
        return Err(ActionError::new(
            403,
            ErrorCode::NotebookURLBoundToAnotherSession,
            "this notebook URL belongs to another streaming session",
        ));
    }
    if url.expires <= now_millis() {
        return Err(ActionError::new(
            403,
            ErrorCode::ExpiredNotebookURL,
            "this notebook URL expired (they are valid for 5 minutes); start again from the launcher",
        ));
    }
    let session = crate::streaming::sessions::session(plane, bound).await?;
    if session.state != SessionState::Active {
        return Err(ActionError::new(403, ErrorCode::SessionEnded, "the streaming session of this notebook URL has ended"));
    }
    if !repo::redeem_url(plane, &hex::encode(Sha256::digest(input.token.as_bytes())), now_millis()).await? {
        return Err(ActionError::new(
            403,
            ErrorCode::NotebookURLAlreadyUsed,
            "this notebook URL was already used; each opens the notebook once",
        ));
    }
    let notebook = &url.notebook;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let cookie = hex::encode(raw);
    let lifetime = url.session_expiration;
    let access = NewNotebookAccess {
        cookie_hash: &hex::encode(Sha256::digest(cookie.as_bytes())),
        notebook,
        session_id: bound,
        expires: now_millis() + lifetime,
        created: now_millis(),
        instance_address: instance_address.as_deref(),
    };
    repo::insert_access(plane, access).await?;
    Ok(json!({ "NotebookInstanceName": notebook, "Cookie": cookie, "MaxAgeSeconds": lifetime / 1000 }))
}
