//! Authentication: turning the credentials a transport presents into a [`Caller`], one
//! function per kind of credential. Every identity record comes from a builder of
//! `core::caller`, so that one principal has one ARN whatever the credential.

use model::{AccessMode, Issuer, UserId, UserRef};
use policy::{Channel, Principal};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::lookups::InstanceLookup;
use super::repo::{self, TokenChannel};
use super::state::Identity;
use super::{local, oidc, saml};
use crate::core::caller::{
    Caller, Credentials, Delegated, Federation, OidcCallback, Secret, function_identity, instance_identity, operator_identity, person,
    unproved_identity,
};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;
use crate::core::store::{Store, now_millis};

/// Who a refused authentication is recorded as: the name that was tried for a failed sign-in
/// (never the password), the subject a refused SAML response claimed (unverified), else
/// anonymous.
pub(super) fn unauthenticated_identity(credentials: &Credentials, account_id: &str) -> audit::UserIdentity {
    let (kind, principal_id, user_name) = match credentials {
        Credentials::LocalUser { user_name, .. } => {
            let tried: String = user_name.chars().filter(|c| !c.is_control()).take(64).collect();
            ("User", format!("local:{tried}"), Some(tried))
        }
        Credentials::SamlResponse { response, .. } => {
            let claimed = saml::claimed_subject(response);
            ("SAMLUser", format!("federated:{}", claimed.as_deref().unwrap_or("unknown")), claimed)
        }
        _ => ("Anonymous", "anonymous".to_owned(), None),
    };
    unproved_identity(account_id, kind, principal_id, user_name)
}

/// Who `credentials` are, for a call of `action` (an ended session's cookie is good for its
/// own status and nothing else).
pub(super) async fn authenticate(identity: &Identity, credentials: &Credentials, action: &str) -> Result<Caller, ActionError> {
    let plane = &*identity.platform;
    let (store, account_id) = (&plane.store, plane.spec.account_id.as_str());
    match credentials {
        Credentials::Instance { token, source_ip } | Credentials::DatasetMount { token, source_ip } => {
            instance_caller(plane, &*identity.instances, token, source_ip).await
        }
        Credentials::Peer { uid } => operator_caller(plane, *uid),
        Credentials::Bearer(token) => user_from_token(store, account_id, token).await,
        // Whether the token may use the console is the pipeline's check, so that a refusal is
        // recorded with who was refused.
        Credentials::Console(token) => user_from_token(store, account_id, token).await,
        Credentials::LocalUser { user_name, password, totp_code, source_ip } => {
            local_user_caller(identity, user_name, password, totp_code.as_ref(), source_ip).await
        }
        Credentials::SamlResponse { response, browser_request, .. } => saml_caller(plane, response, browser_request.as_deref()).await,
        Credentials::OidcCallback(callback) => oidc_caller(plane, callback).await,
        Credentials::StreamingUrl(token) => identity.sessions.url_caller(token),
        Credentials::SessionCookie(cookie) => identity.sessions.cookie_caller(cookie, action).await,
        Credentials::SessionHandoff(code) => identity.sessions.handoff_caller(code).await,
        Credentials::InstanceLink { source_ip } => identity.sessions.link_caller(source_ip).await,
        Credentials::Anonymous => Err(ActionError::unauthenticated(
            "the request carries no credentials; send `Authorization: Bearer <token>` or use the control socket",
        )),
        Credentials::Delegated(Delegated(caller)) => Ok((**caller).clone()),
        Credentials::Function { name, correlation_id } => Ok(Caller {
            principal: Principal::Function { name: name.clone() },
            identity: function_identity(account_id, name, now_millis()),
            correlation_id: correlation_id.clone(),
            federation: None,
            expires: None,
            credential_epoch: None,
        }),
    }
}

/// An instance calling with its credential from its own link: it acts for its session's user,
/// within that user's policy, or as itself when it serves no session.
async fn instance_caller(plane: &Platform, instances: &dyn InstanceLookup, token: &str, source_ip: &str) -> Result<Caller, ActionError> {
    let instance = instances.instance_by_credential(token, source_ip).await?;
    let (account_id, region) = (plane.spec.account_id.as_str(), plane.spec.region.as_str());
    let identity = |user_name: Option<String>| instance_identity(account_id, region, &instance.instance_id, user_name, now_millis());
    match (&instance.user_id, instance.access_mode.as_deref().and_then(AccessMode::parse)) {
        (Some(user), Some(mode)) => {
            let user_ref = UserRef::from_parts(mode, instance.issuer.as_deref(), user).map_err(ActionError::internal)?;
            Ok(Caller {
                principal: Principal::User { user: user_ref, channel: Channel::Instance, mfa: false, roles: Vec::new() },
                identity: identity(Some(user.clone())),
                correlation_id: instance.correlation_id.clone(),
                federation: None,
                expires: None,
                credential_epoch: None,
            })
        }
        _ => Ok(Caller {
            principal: Principal::Instance { id: instance.instance_id.clone(), roles: vec!["instance".into()] },
            identity: identity(None),
            correlation_id: instance.correlation_id.clone(),
            federation: None,
            expires: None,
            credential_epoch: None,
        }),
    }
}

/// A connection on the control socket: its owner or root.
fn operator_caller(plane: &Platform, uid: u32) -> Result<Caller, ActionError> {
    // The socket is mode 0600, so only its owner and root can connect; check anyway.
    if uid != 0 && uid != plane.socket_owner {
        return Err(ActionError::unauthenticated(format!("uid {uid} may not use the control socket")));
    }
    Ok(Caller {
        principal: Principal::Operator { uid },
        identity: operator_identity(&plane.spec.account_id, uid, user_name_of(uid)),
        correlation_id: None,
        federation: None,
        expires: None,
        credential_epoch: None,
    })
}

/// A local user who proved their password (and code, once enrolled).
async fn local_user_caller(
    identity: &Identity,
    user_name: &str,
    password: &Secret,
    totp_code: Option<&Secret>,
    source_ip: &str,
) -> Result<Caller, ActionError> {
    let plane = &*identity.platform;
    let signed_in = local::sign_in(plane, &identity.throttle, user_name, &password.0, totp_code.map(|c| c.0.as_str()), source_ip).await?;
    let user = UserRef::local(UserId::new(signed_in.user_name.clone()).map_err(|_| local_rejected())?);
    let (principal, identity) =
        person(&plane.spec.account_id, &user, Channel::SignIn, "User", signed_in.mfa, signed_in.roles, None, now_millis());
    let correlation_id = Some(uuid::Uuid::new_v4().to_string());
    Ok(Caller { principal, identity, correlation_id, federation: None, expires: None, credential_epoch: Some(signed_in.credential_epoch) })
}

/// A user the SAML identity provider vouched for in a verified response.
async fn saml_caller(plane: &Platform, response: &str, browser_request: Option<&str>) -> Result<Caller, ActionError> {
    let account_id = plane.spec.account_id.as_str();
    let verified = saml::verify(plane, response, browser_request).await?;
    let provider = model::arn::account_wide("identity", account_id, &format!("saml-provider/{}", plane.current().idp_name));
    let issuer = json!({ "type": "SAMLProvider", "arn": provider, "issuer": verified.issuer });
    let federation = Federation {
        protocol: "SAML",
        issuer: verified.issuer,
        session_seconds: verified.session_seconds,
        relay_state: None,
        idp_initiated: verified.idp_initiated,
    };
    federated_caller(account_id, &verified.name_id, verified.mfa, verified.roles, "SAMLUser", issuer, federation)
}

/// A user the OpenID Connect provider vouched for in a verified ID token.
async fn oidc_caller(plane: &Platform, callback: &OidcCallback) -> Result<Caller, ActionError> {
    let verified = oidc::verify(plane, callback).await?;
    let issuer = json!({ "type": "WebIdentityProvider", "issuer": verified.issuer });
    let federation = Federation {
        protocol: "OIDC",
        issuer: verified.issuer,
        session_seconds: verified.session_seconds,
        relay_state: Some(verified.relay_state),
        idp_initiated: false,
    };
    federated_caller(&plane.spec.account_id, &verified.user, verified.mfa, verified.roles, "WebIdentityUser", issuer, federation)
}

/// A user an identity provider vouched for: their home folder is `user/federated/…`, hashed
/// with the provider's issuer, so that two providers' users of one name stay apart.
fn federated_caller(
    account_id: &str,
    user: &str,
    mfa: bool,
    roles: Vec<String>,
    kind: &str,
    issuer: Value,
    federation: Federation,
) -> Result<Caller, ActionError> {
    let user = UserRef::federated(
        Issuer::new(federation.issuer.clone()).map_err(ActionError::internal)?,
        UserId::new(user.to_owned()).map_err(ActionError::internal)?,
    );
    let (principal, identity) = person(account_id, &user, Channel::SignIn, kind, mfa, roles, Some(issuer), now_millis());
    let correlation_id = Some(uuid::Uuid::new_v4().to_string());
    Ok(Caller { principal, identity, correlation_id, federation: Some(federation), expires: None, credential_epoch: None })
}

fn local_rejected() -> ActionError {
    ActionError::new(401, ErrorCode::NotAuthorizedException, "the user name, password or code is not valid")
}

/// The user a bearer token (or the console's cookie, which holds one) was issued for, until it
/// expires.
async fn user_from_token(store: &Store, account_id: &str, token: &str) -> Result<Caller, ActionError> {
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let Some(row) = repo::find_token(store, &hash).await? else {
        return Err(ActionError::unauthenticated("the bearer token is not valid"));
    };
    if row.expires <= now_millis() {
        return Err(ActionError::unauthenticated("the bearer token has expired; ask for a new one"));
    }
    let mode_text = &row.access_mode;
    let mode = AccessMode::parse(mode_text).ok_or_else(|| ActionError::internal(format_args!("token has access mode `{mode_text}`")))?;
    let user = UserRef::from_parts(mode, row.issuer.as_deref(), &row.user_id).map_err(ActionError::internal)?;
    let roles = row.roles.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect();
    let channel = match row.channel {
        Some(TokenChannel::Issued) => Channel::IssuedToken,
        _ => Channel::Bearer,
    };
    let (principal, identity) = person(account_id, &user, channel, "User", row.mfa, roles, None, row.created);
    let correlation_id = Some(row.correlation_id);
    Ok(Caller { principal, identity, correlation_id, federation: None, expires: Some(row.expires), credential_epoch: row.credential_epoch })
}

/// The name of a local uid, from the passwd database, or `uid-<n>`; read again after a
/// minute (the operator's every call asks, and the file changes seldom).
fn user_name_of(uid: u32) -> String {
    static NAMES: std::sync::Mutex<Vec<(u32, String, std::time::Instant)>> = std::sync::Mutex::new(Vec::new());
    const FOR: std::time::Duration = std::time::Duration::from_secs(60);
    let mut names = NAMES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    names.retain(|(_, _, read)| read.elapsed() < FOR);
    if let Some((_, name, _)) = names.iter().find(|(id, _, _)| *id == uid) {
        return name.clone();
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_owned())
        })
        .unwrap_or_else(|| format!("uid-{uid}"));
    names.push((uid, name.clone(), std::time::Instant::now()));
    name
}
