//! The short-lived user tokens: issued by an operator (`identity:CreateSessionToken`) or by a
//! sign-in (`identity:SignIn`, `identity:AssumeRoleWithSAML`,
//! `identity:AssumeRoleWithWebIdentity`), `identity:GetCallerIdentity`, and
//! `identity:SignOut`, which ends one. Only a token's hash is stored.

use model::{AccessMode, UserId, UserRef};
use policy::Channel;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::repo::{self, TokenChannel, TokenRow};
use crate::core::caller::Empty;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::store::{millis_to_rfc3339, now_millis};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateSessionTokenInput {
    user_id: UserId,
    #[serde(default = "default_mode")]
    access_mode: AccessMode,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default = "default_duration")]
    duration_seconds: i64,
}

fn default_mode() -> AccessMode {
    AccessMode::Custom
}

fn default_duration() -> i64 {
    3600
}

pub(crate) async fn create_session_token(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateSessionTokenInput = ctx.parse(input)?;
    if !(900..=43_200).contains(&input.duration_seconds) {
        return Err(ActionError::validation(format!("DurationSeconds {} is outside 900..=43200", input.duration_seconds)));
    }
    if let Some(bad) = input.roles.iter().find(|r| r.is_empty() || r.contains(',') || r.len() > 64) {
        return Err(ActionError::validation(format!("role `{bad}` must be 1..=64 characters without `,`")));
    }
    let user = match input.access_mode {
        AccessMode::Custom => UserRef::custom(input.user_id),
        // A person's sign-in is their own: a token an operator issued for a local or federated
        // user would act as them (their home folder, their requests), on the record as them
        // (review finding). Only an application's own users get issued tokens.
        AccessMode::Local => {
            return Err(ActionError::validation(
                "AccessMode `local` is given only by the user's own sign-in (identity:SignIn); issued tokens are for `custom` users",
            ));
        }
        AccessMode::Federated => {
            return Err(ActionError::validation(
                "AccessMode `federated` is given only by a SAML or OpenID Connect sign-in; issued tokens are for `custom` users",
            ));
        }
    };
    ctx.authorize(policy::Resource::Service("identity".into()))?;
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let grant = Grant { user: &user, channel: TokenChannel::Issued, roles: &input.roles, mfa: false, correlation_id: &correlation_id };
    issue_token(ctx, grant, input.duration_seconds).await
}

/// Who a new token is for.
struct Grant<'a> {
    user: &'a UserRef,
    channel: TokenChannel,
    roles: &'a [String],
    mfa: bool,
    correlation_id: &'a str,
}

/// A new bearer token: only its hash is stored.
async fn issue_token(ctx: &mut Ctx<'_>, grant: Grant<'_>, duration_seconds: i64) -> Result<Value, ActionError> {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = format!("dst_{}", hex::encode(raw));
    let now = now_millis();
    let expires = now + duration_seconds * 1000;
    let row = TokenRow {
        user_id: grant.user.user().as_str().to_owned(),
        access_mode: grant.user.mode().as_str().to_owned(),
        issuer: grant.user.issuer_str().map(str::to_owned),
        channel: Some(grant.channel),
        roles: grant.roles.join(","),
        correlation_id: grant.correlation_id.to_owned(),
        created: now,
        expires,
        mfa: grant.mfa,
        // A local user's token holds the credentials' generation their sign-in proved.
        credential_epoch: ctx.caller.credential_epoch,
    };
    if !repo::insert_token(&ctx.platform.store, &hex::encode(Sha256::digest(token.as_bytes())), &row).await? {
        return Err(ActionError::not_found(ErrorCode::UserNotFoundException, format!("no local user `{}`", grant.user.user())));
    }
    let home = grant.user.home();
    ctx.set_correlation_id(grant.correlation_id.to_owned());
    Ok(json!({
        "Token": token,
        "Expiration": millis_to_rfc3339(expires),
        "UserId": grant.user.user(),
        "HomeFolderPrefix": home.prefix(),
        "CorrelationId": grant.correlation_id,
        "MfaAuthenticated": grant.mfa,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SignInInput {
    #[serde(default = "default_duration")]
    duration_seconds: i64,
}

/// `identity:SignIn`: the caller proved a local user's password (and code) in authenticating;
/// this issues their token, marked with whether a second factor was proved.
pub(crate) async fn sign_in(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: SignInInput = ctx.parse(input)?;
    if !(900..=43_200).contains(&input.duration_seconds) {
        return Err(ActionError::validation(format!("DurationSeconds {} is outside 900..=43200", input.duration_seconds)));
    }
    // Only the sign-in itself (name and password) issues a token: never an instance's, a
    // session's or another token's credential, which would turn a bounded credential into a
    // free-standing one.
    let (user, mfa, roles) = match ctx.caller.principal.clone() {
        policy::Principal::User { user, channel: Channel::SignIn, mfa, roles } if user.mode() == AccessMode::Local => (user, mfa, roles),
        _ => return Err(ActionError::validation("identity:SignIn signs in a local user: send UserName and Password")),
    };
    // The sign-in itself was the authentication; the token is the caller's own.
    ctx.authorize_always();
    let correlation_id = ctx.caller.correlation_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let grant = Grant { user: &user, channel: TokenChannel::SignIn, roles: &roles, mfa, correlation_id: &correlation_id };
    issue_token(ctx, grant, input.duration_seconds).await
}

/// `identity:AssumeRoleWithSAML` and `identity:AssumeRoleWithWebIdentity` (STS's names): the
/// caller proved a verified SAML assertion or OIDC ID token in authenticating; this issues
/// their token for the session length it allows, with the roles it granted and whether the
/// provider said a second factor was used.
pub(crate) async fn assume_federated_role(ctx: &mut Ctx<'_>, input: Value, protocol: &str) -> Result<Value, ActionError> {
    let _: Empty = ctx.parse(input)?;
    let federation = ctx.caller.federation.clone().filter(|f| f.protocol == protocol);
    let (Some(federation), policy::Principal::User { user, channel: Channel::SignIn, mfa, roles }) =
        (federation, ctx.caller.principal.clone())
    else {
        return Err(ActionError::validation(match protocol {
            "SAML" => "identity:AssumeRoleWithSAML takes a SAMLResponse: post it to /saml/acs",
            _ => "identity:AssumeRoleWithWebIdentity takes an OpenID Connect sign-in: start it at /oidc/login",
        }));
    };
    // The assertion or token itself was the authentication; the new token is the caller's own.
    ctx.authorize_always();
    let correlation_id = ctx.caller.correlation_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let grant = Grant { user: &user, channel: TokenChannel::SignIn, roles: &roles, mfa, correlation_id: &correlation_id };
    let mut issued = issue_token(ctx, grant, federation.session_seconds).await?;
    issued["Issuer"] = json!(federation.issuer);
    issued["Roles"] = json!(roles);
    if let Some(relay_state) = federation.relay_state {
        issued["RelayState"] = json!(relay_state);
    }
    if federation.idp_initiated {
        issued["IdpInitiated"] = json!(true);
    }
    Ok(issued)
}

pub(crate) async fn get_caller_identity(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: Empty = ctx.parse(input)?;
    ctx.authorize_always();
    let identity = &ctx.caller.identity;
    let mut out =
        json!({ "Type": identity.kind, "PrincipalId": identity.principal_id, "Arn": identity.arn, "UserName": identity.user_name });
    // Beyond STS: when the caller's credential stops working, for pages that hold a stream open.
    if let Some(expires) = ctx.caller.expires {
        out["Expiration"] = json!(crate::core::store::millis_to_rfc3339(expires));
    }
    Ok(out)
}

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SignOutInput {
    token: crate::core::recorded::Redacted<String>,
}

/// Whether `token` is an issued token that has not ended (signed out, its user deleted, or
/// expired).
pub(super) async fn holds(store: &crate::core::store::Store, token: &str) -> bool {
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    matches!(repo::find_token(store, &hash).await, Ok(Some(row)) if row.expires > now_millis())
}

/// `identity:SignOut`: one of the caller's own tokens (the one a page's cookie held) stops
/// working at once. Clearing the cookie alone left the token valid until it expired, up to 12
/// hours, for whoever had copied it (review finding).
pub(crate) async fn sign_out(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: SignOutInput = ctx.parse_recorded(input)?;
    ctx.authorize_always();
    let policy::Principal::User { user, .. } = &ctx.caller.principal else {
        return Err(ActionError::validation("only a user's sign-in is signed out of"));
    };
    let hash = hex::encode(Sha256::digest(input.token.0.as_bytes()));
    if !repo::delete_token_of(&ctx.platform.store, &hash, user).await? {
        return Err(ActionError::validation("the token is not one of your sign-ins (or it has ended already)"));
    }
    Ok(json!({}))
}
