//! Authentication: turning the credentials a transport presents into a [`Caller`], and the
//! short-lived user tokens of `identity:CreateSessionToken`.

use audit::{SessionContext, SessionContextAttributes, UserIdentity};
use futures::future::BoxFuture;
use model::{AccessMode, Issuer, UserId, UserRef};
use policy::{Channel, Principal};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::sync::Arc;

pub(crate) mod local;
pub(crate) mod oidc;
pub(crate) mod saml;

use crate::core::actions::IdentityAction;
use crate::core::caller::{Caller, Credentials, Delegated, Empty, Federation, person};
use crate::core::error::ActionError;
use crate::core::pipeline::Authenticate;
use crate::core::pipeline::Ctx;
use crate::core::platform::{Platform, ServiceEvent};
use crate::core::store::{Store, millis_to_rfc3339, now_millis};

/// The sessions' side of authentication, owned here and implemented by `streaming`: a
/// streaming URL's token, a session's cookie and an instance link each stand for a session's
/// user.
pub(crate) trait SessionLookup: Send + Sync {
    /// The user a streaming URL names, once its signature and expiry are checked.
    fn url_caller(&self, token: &str) -> Result<Caller, ActionError>;
    /// The user of the session a cookie belongs to (an ended session's is good for `action`
    /// only when that is its own status).
    fn cookie_caller<'a>(&'a self, cookie: &'a str, action: &'a str) -> BoxFuture<'a, Result<Caller, ActionError>>;
    /// The user of the ACTIVE session of the instance whose link a call arrives on.
    fn link_caller<'a>(&'a self, source_ip: &'a str) -> BoxFuture<'a, Result<Caller, ActionError>>;
}

/// The instances' side of authentication, owned here and implemented by `instances`.
pub(crate) trait InstanceLookup: Send + Sync {
    /// The running instance whose current (or previous, unexpired) credential `token` is,
    /// calling from its own link's address.
    fn instance_by_credential<'a>(&'a self, token: &'a str, source_ip: &'a str) -> BoxFuture<'a, Result<InstanceCaller, ActionError>>;
}

/// An instance that proved its credential, and the session it serves, if any.
pub(crate) struct InstanceCaller {
    pub instance_id: String,
    pub user_id: Option<String>,
    pub access_mode: Option<String>,
    pub issuer: Option<String>,
    pub correlation_id: Option<String>,
}

/// The identity service: authenticates every call, and answers `identity:` actions.
pub(crate) struct Identity {
    platform: Arc<Platform>,
    /// Recent failed sign-ins of local users, by address.
    throttle: local::Throttle,
    sessions: Arc<dyn SessionLookup>,
    instances: Arc<dyn InstanceLookup>,
}

impl Identity {
    pub(crate) fn new(platform: Arc<Platform>, sessions: Arc<dyn SessionLookup>, instances: Arc<dyn InstanceLookup>) -> Identity {
        Identity { platform, throttle: local::Throttle::default(), sessions, instances }
    }

    pub(crate) async fn dispatch(&self, ctx: &mut Ctx<'_>, action: IdentityAction, input: Value) -> Result<Value, ActionError> {
        match action {
            IdentityAction::CreateSessionToken => create_session_token(ctx, input).await,
            IdentityAction::GetCallerIdentity => get_caller_identity(ctx, input).await,
            IdentityAction::SignIn => sign_in(ctx, input).await,
            IdentityAction::AssumeRoleWithSAML => assume_federated_role(ctx, input, "SAML").await,
            IdentityAction::AssumeRoleWithWebIdentity => assume_federated_role(ctx, input, "OIDC").await,
            IdentityAction::CreateLocalUser => local::create(&self.throttle, ctx, input).await,
            IdentityAction::DeleteLocalUser => local::delete(ctx, input).await,
            IdentityAction::UnlockLocalUser => local::unlock(&self.throttle, ctx, input).await,
            IdentityAction::AssociateSoftwareToken => local::associate(&self.throttle, ctx, input).await,
            IdentityAction::VerifySoftwareToken => local::verify_token(ctx, input).await,
        }
    }

    /// This service provider's SAML metadata, served at `/saml/metadata`.
    pub(crate) fn saml_metadata(&self) -> String {
        saml::sp_metadata(&self.platform)
    }

    /// Where a browser starts an SP-initiated SAML sign-in: the IdP's redirect-binding URL
    /// with a fresh AuthnRequest carrying `relay_state`, and the request id for the gateway
    /// to bind to the browser. A refusal is recorded (`identity:SignInStartRefused`) with the
    /// browser's address.
    pub(crate) async fn saml_login_url(&self, relay_state: &str, source_ip: &str) -> Result<(String, String), ActionError> {
        let started = saml::login_url(&self.platform, relay_state);
        self.sign_in_start(&started, "SAML", relay_state, source_ip).await;
        started
    }

    /// Where a browser starts an OpenID Connect sign-in, and the state to bind to that browser.
    /// A refusal is recorded (`identity:SignInStartRefused`) with the browser's address.
    pub(crate) async fn oidc_login_url(&self, relay_state: &str, source_ip: &str) -> Result<(String, String), ActionError> {
        let started = oidc::login_url(&self.platform, relay_state).await;
        self.sign_in_start(&started, "OIDC", relay_state, source_ip).await;
        started
    }

    async fn sign_in_start<T>(&self, started: &Result<T, ActionError>, protocol: &str, relay_state: &str, source_ip: &str) {
        if let Err(err) = started {
            let parameters = json!({ "Protocol": protocol, "RelayState": relay_state });
            let event = ServiceEvent {
                source: "identity",
                name: "SignInStartRefused",
                principal: "gateway.datasandbox",
                parameters,
                error: Some(err),
                source_ip: Some(source_ip.to_owned()),
                ..ServiceEvent::default()
            };
            let _ = self.platform.record_service_event(event).await;
        }
    }

    /// Which federated sign-ins are set up: (SAML, OpenID Connect).
    pub(crate) fn federation_providers(&self) -> (bool, bool) {
        let name = self.platform.current().idp_name.clone();
        let saml = self.platform.data_dir.join("identity-providers").join(format!("{name}.xml")).exists();
        (saml, self.platform.spec.oidc.is_some())
    }
}

impl Authenticate for Identity {
    fn authenticate<'a>(&'a self, credentials: &'a Credentials, action: &'a str) -> BoxFuture<'a, Result<Caller, ActionError>> {
        Box::pin(authenticate(self, credentials, action))
    }

    fn claimed_identity(&self, credentials: &Credentials) -> UserIdentity {
        unauthenticated_identity(credentials, &self.platform.spec.account_id)
    }
}

/// Who a refused authentication is recorded as: the name that was tried for a failed sign-in
/// (never the password), the subject a refused SAML response claimed (unverified), else
/// anonymous.
fn unauthenticated_identity(credentials: &Credentials, account_id: &str) -> audit::UserIdentity {
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
    audit::UserIdentity {
        kind: kind.into(),
        principal_id,
        arn: String::new(),
        account_id: account_id.to_owned(),
        user_name,
        session_context: None,
    }
}

/// Who `credentials` are, for a call of `action` (an ended session's cookie is good for its
/// own status and nothing else).
async fn authenticate(identity: &Identity, credentials: &Credentials, action: &str) -> Result<Caller, ActionError> {
    let plane = &*identity.platform;
    let (store, account_id, socket_owner) = (&plane.store, plane.spec.account_id.as_str(), plane.socket_owner);
    match credentials {
        Credentials::Instance { token, source_ip } => {
            let instance = identity.instances.instance_by_credential(token, source_ip).await?;
            let issuer = json!({ "type": "Instance", "principalId": instance.instance_id, "arn": format!("arn:datasandbox:streaming:{}:{account_id}:instance/{}", plane.spec.region, instance.instance_id) });
            let identity = |kind: &str, user_name: Option<String>| UserIdentity {
                kind: kind.into(),
                principal_id: format!("instance:{}", instance.instance_id),
                arn: format!("arn:datasandbox:identity::{account_id}:instance/{}", instance.instance_id),
                account_id: account_id.to_owned(),
                user_name,
                session_context: Some(SessionContext {
                    attributes: SessionContextAttributes {
                        creation_date: millis_to_rfc3339(now_millis()),
                        mfa_authenticated: "false".into(),
                    },
                    session_issuer: Some(issuer.clone()),
                }),
            };
            // An instance acts for its session's user, within that user's policy.
            match (&instance.user_id, instance.access_mode.as_deref().and_then(AccessMode::parse)) {
                (Some(user), Some(mode)) => {
                    let user_ref = UserRef::from_parts(mode, instance.issuer.as_deref(), user).map_err(ActionError::internal)?;
                    Ok(Caller {
                        principal: Principal::User { user: user_ref, channel: Channel::Instance, mfa: false, roles: Vec::new() },
                        identity: identity("Instance", Some(user.clone())),
                        correlation_id: instance.correlation_id.clone(),
                        federation: None,
                        expires: None,
                    })
                }
                _ => Ok(Caller {
                    principal: Principal::Instance { id: instance.instance_id.clone(), roles: vec!["instance".into()] },
                    identity: identity("Instance", None),
                    correlation_id: instance.correlation_id.clone(),
                    federation: None,
                    expires: None,
                }),
            }
        }
        Credentials::Peer { uid } => {
            // The socket is mode 0600, so only its owner and root can connect; check anyway.
            if *uid != 0 && *uid != socket_owner {
                return Err(ActionError::unauthenticated(format!("uid {uid} may not use the control socket")));
            }
            let name = user_name_of(*uid);
            Ok(Caller {
                principal: Principal::Operator { uid: *uid },
                identity: UserIdentity {
                    kind: "Operator".into(),
                    principal_id: format!("uid:{uid}"),
                    arn: format!("arn:datasandbox:identity::{account_id}:operator/{name}"),
                    account_id: account_id.to_owned(),
                    user_name: Some(name),
                    session_context: None,
                },
                correlation_id: None,
                federation: None,
                expires: None,
            })
        }
        Credentials::Bearer(token) => user_from_token(store, account_id, token).await,
        // Whether the token may use the console is the pipeline's check, so that a refusal is
        // recorded with who was refused.
        Credentials::Console(token) => user_from_token(store, account_id, token).await,
        Credentials::LocalUser { user_name, password, totp_code, source_ip } => {
            let signed_in =
                local::sign_in(plane, &identity.throttle, user_name, &password.0, totp_code.as_ref().map(|c| c.0.as_str()), source_ip)
                    .await?;
            let user = UserRef::local(UserId::new(signed_in.user_name.clone()).map_err(|_| local_rejected())?);
            let (principal, identity) =
                person(account_id, &user, Channel::SignIn, "User", signed_in.mfa, signed_in.roles, None, now_millis());
            Ok(Caller { principal, identity, correlation_id: Some(uuid::Uuid::new_v4().to_string()), federation: None, expires: None })
        }
        Credentials::SamlResponse { response, browser_request, .. } => {
            let verified = saml::verify(plane, response, browser_request.as_deref()).await?;
            let provider =
                format!("arn:datasandbox:identity::{account_id}:saml-provider/{}", plane.current.read().expect("spec lock").idp_name);
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
        Credentials::OidcCallback(callback) => {
            let verified = oidc::verify(plane, callback).await?;
            let issuer = json!({ "type": "WebIdentityProvider", "issuer": verified.issuer });
            let federation = Federation {
                protocol: "OIDC",
                issuer: verified.issuer,
                session_seconds: verified.session_seconds,
                relay_state: Some(verified.relay_state),
                idp_initiated: false,
            };
            federated_caller(account_id, &verified.user, verified.mfa, verified.roles, "WebIdentityUser", issuer, federation)
        }
        Credentials::StreamingUrl(token) => identity.sessions.url_caller(token),
        Credentials::SessionCookie(cookie) => identity.sessions.cookie_caller(cookie, action).await,
        Credentials::InstanceLink { source_ip } => identity.sessions.link_caller(source_ip).await,
        Credentials::Anonymous => Err(ActionError::unauthenticated(
            "the request carries no credentials; send `Authorization: Bearer <token>` or use the control socket",
        )),
        Credentials::Delegated(Delegated(caller)) => Ok((**caller).clone()),
        Credentials::Function { name, correlation_id } => Ok(Caller {
            principal: Principal::Function { name: name.clone() },
            identity: UserIdentity {
                kind: "AssumedRole".into(),
                principal_id: format!("function:{name}"),
                arn: format!("arn:datasandbox:identity::{account_id}:assumed-role/function-{name}/{name}"),
                account_id: account_id.to_owned(),
                user_name: Some(format!("function/{name}")),
                session_context: Some(SessionContext {
                    attributes: SessionContextAttributes {
                        creation_date: millis_to_rfc3339(now_millis()),
                        mfa_authenticated: "false".into(),
                    },
                    session_issuer: Some(
                        json!({ "type": "Role", "principalId": format!("function-{name}"), "userName": format!("function-{name}") }),
                    ),
                }),
            },
            correlation_id: correlation_id.clone(),
            federation: None,
            expires: None,
        }),
    }
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
    Ok(Caller { principal, identity, correlation_id: Some(uuid::Uuid::new_v4().to_string()), federation: Some(federation), expires: None })
}

fn local_rejected() -> ActionError {
    ActionError::new(401, "NotAuthorizedException", "the user name, password or code is not valid")
}

async fn user_from_token(store: &Store, account_id: &str, token: &str) -> Result<Caller, ActionError> {
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let row = sqlx::query(
        "SELECT user_id, access_mode, issuer, channel, roles, correlation_id, created, expires, mfa FROM tokens WHERE token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&store.pool)
    .await?;
    let Some(row) = row else {
        return Err(ActionError::unauthenticated("the bearer token is not valid"));
    };
    let expires: i64 = row.try_get("expires")?;
    if expires <= now_millis() {
        return Err(ActionError::unauthenticated("the bearer token has expired; ask for a new one"));
    }
    let user_id: String = row.try_get("user_id")?;
    let mode_text: String = row.try_get("access_mode")?;
    let roles: String = row.try_get("roles")?;
    let created: i64 = row.try_get("created")?;
    let mfa = row.try_get::<Option<i64>, _>("mfa")?.unwrap_or(0) == 1;
    let mode = AccessMode::parse(&mode_text).ok_or_else(|| ActionError::internal(format_args!("token has access mode `{mode_text}`")))?;
    let user =
        UserRef::from_parts(mode, row.try_get::<Option<String>, _>("issuer")?.as_deref(), &user_id).map_err(ActionError::internal)?;
    let roles = roles.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect();
    let channel = match row.try_get::<Option<String>, _>("channel")?.as_deref() {
        Some(ISSUED) => Channel::IssuedToken,
        _ => Channel::Bearer,
    };
    let (principal, identity) = person(account_id, &user, channel, "User", mfa, roles, None, created);
    Ok(Caller { principal, identity, correlation_id: Some(row.try_get("correlation_id")?), federation: None, expires: Some(expires) })
}

/// The name of a local uid, from the passwd database, or `uid-<n>`.
fn user_name_of(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_owned())
        })
        .unwrap_or_else(|| format!("uid-{uid}"))
}

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
        AccessMode::Local => UserRef::local(input.user_id),
        // Only an identity provider's verified word makes a federated user.
        AccessMode::Federated => {
            return Err(ActionError::validation(
                "AccessMode `federated` is given only by a SAML or OpenID Connect sign-in; use `custom` or `local`",
            ));
        }
    };
    ctx.authorize(policy::Resource::Service("identity".into()))?;
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let grant = Grant { user: &user, channel: ISSUED, roles: &input.roles, mfa: false, correlation_id: &correlation_id };
    issue_token(ctx, grant, input.duration_seconds).await
}

/// `tokens.channel` of a token an operator issued (`identity:CreateSessionToken`); a sign-in's
/// is `sign-in`.
const ISSUED: &str = "issued";

/// Who a new token is for.
struct Grant<'a> {
    user: &'a UserRef,
    /// `ISSUED` or `sign-in`.
    channel: &'static str,
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
    sqlx::query(
        "INSERT INTO tokens (token_hash, user_id, access_mode, roles, correlation_id, created, expires, mfa, issuer, channel) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(hex::encode(Sha256::digest(token.as_bytes())))
    .bind(grant.user.user().as_str())
    .bind(grant.user.mode().as_str())
    .bind(grant.roles.join(","))
    .bind(grant.correlation_id)
    .bind(now)
    .bind(expires)
    .bind(i64::from(grant.mfa))
    .bind(grant.user.issuer_str())
    .bind(grant.channel)
    .execute(&ctx.platform.store.pool)
    .await?;
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
    let grant = Grant { user: &user, channel: "sign-in", roles: &roles, mfa, correlation_id: &correlation_id };
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
    let grant = Grant { user: &user, channel: "sign-in", roles: &roles, mfa, correlation_id: &correlation_id };
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
