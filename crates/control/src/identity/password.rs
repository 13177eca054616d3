//! `identity:ChangePassword`: a signed-in local user's new password, proved by the old one
//! (and a code, once a TOTP device is enrolled). Every sign-in of the user ends with it, and,
//! if the user asks, every streaming session of theirs: whoever held the old password may have
//! started a workspace with it, which acts as the user until it ends.

use serde::Deserialize;
use serde_json::{Value, json};

use super::local::{Throttle, caller_local_user, check_password, hash, sign_in};
use super::lookups::SessionLookup;
use super::repo;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ChangePasswordInput {
    previous_password: String,
    proposed_password: String,
    /// A current code, once a TOTP device is enrolled: a token alone (which may have been
    /// taken) does not change the password.
    #[serde(default)]
    totp_code: Option<String>,
    /// Whether the user's streaming sessions end too (`PASSWORD_CHANGED`), for a user who
    /// changes a password they think was taken.
    #[serde(default)]
    end_streaming_sessions: bool,
}

/// `identity:ChangePassword` (the user, signed in, proving the password and code again, as
/// Cognito's takes the previous password): the new password, and every sign-in of the user
/// ends, this one too, so that whoever held the old password or a token holds nothing; with
/// `EndStreamingSessions`, their sessions end as well, listed in the answer.
pub(crate) async fn change_password(
    throttle: &Throttle,
    sessions: &dyn SessionLookup,
    ctx: &mut Ctx<'_>,
    input: Value,
) -> Result<Value, ActionError> {
    let input: ChangePasswordInput = ctx.parse(input)?;
    let user = caller_local_user(ctx)?;
    check_password("ProposedPassword", &input.proposed_password)?;
    ctx.authorize_always();
    let code = input.totp_code.as_deref().map(str::trim).filter(|c| !c.is_empty());
    // The old password first, within the sign-in's budget: the new hash costs argon2 too, and
    // a token alone must not buy it (review finding).
    let proved = sign_in(ctx.platform, throttle, &user, &input.previous_password, code, ctx.source_ip).await?;
    let proposed = input.proposed_password;
    let hashed = throttle.argon2(move || hash(&proposed)).await??;
    // Only the credentials just proved are replaced: a second change racing this one, by
    // someone holding the old password, does not overwrite it.
    if !repo::set_password(&ctx.platform.store, &user, &hashed, proved.credential_epoch).await? {
        return Err(ActionError::conflict(
            ErrorCode::ConflictException,
            format!("the password of `{user}` changed meanwhile (or the user was deleted); sign in again"),
        ));
    }
    if !input.end_streaming_sessions {
        return Ok(json!({ "SignedOut": true, "EndedSessions": [] }));
    }
    // The password is changed whatever comes next: the answer, and its record, say so, and
    // what could not be ended.
    Ok(match sessions.end_sessions_of_local_user(&user, "PASSWORD_CHANGED").await {
        Ok(ended) => json!({ "SignedOut": true, "EndedSessions": ended }),
        Err(err) => json!({
            "SignedOut": true,
            "EndedSessions": [],
            "SessionsNotEnded": format!("your sessions could not all be ended ({}); end them from the portal", err.message),
        }),
    })
}
