//! Handing a session's browser to the node that runs its instance. A streaming URL is
//! redeemed on whichever node the browser reached, but the display, the print folder and the
//! notebook proxy of an instance are on its own node. The session page asks
//! (`HandOffSession`, by its cookie) for a one-time code, valid for a minute, and goes to that
//! node's public URL with it; there `AcceptSessionHandoff` spends the code and sets a new
//! session cookie for that origin, which replaces the old one: from then on the session is
//! acted on only where it runs. No node relays another's traffic.

use rand::RngCore as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::repo::{self, SessionState};
use super::sessions::{caller_session, session};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::store::now_millis;

/// How long a handoff code may be used.
const HANDOFF_MS: i64 = 60_000;

/// `streaming:HandOffSession`: the URL that opens the caller's session on its instance's node.
pub(super) async fn hand_off(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    let session_id = caller_session(ctx).ok_or_else(|| ActionError::validation("HandOffSession needs the session's cookie"))?;
    ctx.authorize_always();
    let plane = ctx.platform;
    let row = session(plane, &session_id).await?;
    if row.state != SessionState::Active {
        return Err(ActionError::new(409, ErrorCode::ConcurrentModificationException, "only an active session is handed to its node"));
    }
    let instance = row.instance_id.as_deref().unwrap_or_default();
    let Some(node) = repo::instance_node(&plane.store, instance).await?.filter(|n| n.name != plane.node.name) else {
        return Err(ActionError::validation("the session runs on this node; open it here"));
    };
    let mut code = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut code);
    let code = hex::encode(code);
    repo::set_handoff(&plane.store, &session_id, &hash(&code), now_millis() + HANDOFF_MS).await?;
    Ok(json!({ "Node": node.name, "HandoffUrl": format!("{}/session/handoff/{code}", node.address) }))
}

/// `streaming:AcceptSessionHandoff`, by the handoff code (a credential, like a streaming
/// URL's token): on the node that runs the session's instance, spends the code and returns
/// the session's new cookie.
pub(super) async fn accept(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    let session_id = caller_session(ctx).ok_or_else(|| ActionError::validation("AcceptSessionHandoff needs a handoff code"))?;
    let plane = ctx.platform;
    let row = session(plane, &session_id).await?;
    let here = match row.instance_id.as_deref() {
        Some(instance) => repo::instance_node(&plane.store, instance).await?.is_some_and(|n| n.name == plane.node.name),
        None => false,
    };
    if !here {
        return Err(ActionError::validation("this node does not run the session's instance; open the handoff URL the session page gave"));
    }
    let mut cookie = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut cookie);
    let cookie = hex::encode(cookie);
    // Of two browsers presenting one code at once, one spends it.
    if !repo::take_handoff(&plane.store, &session_id, &hash(&cookie), now_millis()).await? {
        return Err(ActionError::new(403, ErrorCode::AccessDeniedException, "the handoff code is unknown, spent or expired"));
    }
    ctx.authorize_always();
    Ok(json!({ "SessionId": session_id, "Node": plane.node.name, "Cookie": cookie }))
}

fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
