//! Who is calling: the credentials a transport presents, and the caller they prove.
//! Authenticating them is `identity`'s work; every layer reads the result.

use audit::{SessionContext, SessionContextAttributes, UserIdentity};
use model::UserRef;
use policy::{Channel, Principal};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::core::error::{ActionError, ErrorCode};
use crate::core::store::millis_to_rfc3339;

/// What a transport knows about who is calling.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Peer credentials of a connection on the control socket.
    Peer { uid: u32 },
    /// `Authorization: Bearer <token>` on the HTTP API.
    Bearer(String),
    /// The operator console's cookie: a bearer token that must also hold the `admin` role.
    Console(String),
    /// No credentials at all.
    Anonymous,
    /// `Authorization: Bearer <instance credential>` on the endpoint, from an instance link.
    Instance { token: String, source_ip: String },
    /// The instance's dataset mount, acting for the instance (and so for its session's user)
    /// with its credential. Only the control plane makes these (no transport does): the
    /// dataset actions take no other.
    DatasetMount { token: String, source_ip: String },
    /// A program inside an instance that holds no credential (the kiosk browser of a pixel
    /// session), known only by the instance link the call arrives on: it acts for that
    /// instance's ACTIVE session, as the session's cookie would.
    InstanceLink { source_ip: String },
    /// The token of a streaming URL being opened: it names the user, and its signature is checked.
    StreamingUrl(String),
    /// The cookie a redeemed streaming URL set: the session's user.
    SessionCookie(String),
    /// A one-time code that hands a session to the node running its instance: the session's
    /// user, on that node only.
    SessionHandoff(String),
    /// A local user signing in (`identity:SignIn`): name, password and, once enrolled, a TOTP
    /// code, from the address the attempt comes from. Never part of an action's input.
    LocalUser { user_name: String, password: Secret, totp_code: Option<Secret>, source_ip: String },
    /// A `SAMLResponse` posted to the assertion consumer (base64, as posted), from the address
    /// the browser posted it from. Never part of an action's input.
    /// A posted SAML response, with the request id the posting browser holds (its `/saml/login`
    /// cookie), if any.
    SamlResponse { response: String, source_ip: String, browser_request: Option<String> },
    /// What a browser brought back to `/oidc/callback`. Never part of an action's input.
    OidcCallback(OidcCallback),
    /// A built-in function invoked by the platform, carrying the correlation id of the event.
    Function { name: String, correlation_id: Option<String> },
    /// A caller the pipeline has already authenticated, whose action takes further actions in
    /// their name (a deploy's steps): each is authorized and audited as that caller.
    Delegated(Delegated),
}

/// The roles that may use the console: operators (`admin`), and the airlock's reviewers and
/// auditors, for its review queue. The policies still decide every action.
pub const CONSOLE_ROLES: [&str; 3] = ["admin", "reviewer", "auditor"];

/// The operator console's check: its caller must hold the console's role.
pub(crate) fn console_access(credentials: &Credentials, caller: &Caller) -> Result<(), ActionError> {
    if !matches!(credentials, Credentials::Console(_)) {
        return Ok(());
    }
    if matches!(&caller.principal, Principal::User { roles, .. } if roles.iter().any(|r| CONSOLE_ROLES.contains(&r.as_str()))) {
        return Ok(());
    }
    let who = caller.identity.user_name.as_deref().unwrap_or(&caller.identity.principal_id);
    Err(ActionError::new(
        403,
        ErrorCode::ConsoleAccessDenied,
        format!("`{who}` holds none of the roles the console requires ({}); ask an operator to grant one", CONSOLE_ROLES.join(", ")),
    ))
}

/// A password or code: printed as `***`, never as itself.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// An authenticated caller handed to further actions; only the control plane can make one.
#[derive(Debug, Clone)]
pub struct Delegated(pub(crate) Box<Caller>);

impl Delegated {
    pub(crate) fn of(caller: Caller) -> Delegated {
        Delegated(Box::new(caller))
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub identity: UserIdentity,
    pub correlation_id: Option<String>,
    /// Set when the caller signed in through the SAML identity provider just now.
    pub federation: Option<Federation>,
    /// When the caller's credential stops being valid (Unix milliseconds), if it does.
    pub expires: Option<i64>,
    /// A local user who proved their password just now: the generation of their credentials,
    /// which the token made for them holds.
    pub credential_epoch: Option<i64>,
}

/// What a verified SAML assertion or OIDC ID token said beyond who the user is.
#[derive(Debug, Clone)]
pub struct Federation {
    /// `SAML` or `OIDC`: which sign-in action the verification belongs to.
    pub protocol: &'static str,
    pub issuer: String,
    pub session_seconds: i64,
    /// What to open after the sign-in, when the verified message carried it (OIDC's state).
    pub relay_state: Option<String>,
    /// An IdP-initiated SAML sign-in: it answers no request of this browser's, so the page
    /// must not act on it (launch anything) before the user has seen whose sign-in it is.
    pub idp_initiated: bool,
}

/// What the browser brought back to `/oidc/callback`.
#[derive(Debug, Clone)]
pub struct OidcCallback {
    pub code: Option<String>,
    pub state: String,
    /// The provider's `error` (and description), when it refused.
    pub error: Option<String>,
    /// The state the gateway's cookie holds for this browser.
    pub browser_state: Option<String>,
}

/// A person's principal (reached through `channel`) and their identity in records: one ARN
/// (the user's own, [`UserRef::arn`]), one principal id, whatever the credential.
#[allow(clippy::too_many_arguments, reason = "each is one part of who the caller is; a struct would only rename them")]
pub(crate) fn person(
    account_id: &str,
    user: &UserRef,
    channel: Channel,
    kind: &str,
    mfa: bool,
    roles: Vec<String>,
    issuer: Option<Value>,
    created: i64,
) -> (Principal, UserIdentity) {
    let identity = UserIdentity {
        kind: kind.into(),
        principal_id: user.principal_id(),
        arn: user.arn(account_id),
        account_id: account_id.to_owned(),
        user_name: Some(user.user().to_string()),
        session_context: Some(session_context(created, mfa, issuer)),
    };
    (Principal::User { user: user.clone(), channel, mfa, roles }, identity)
}

/// The host's operator, on the control socket as local user `name`: no session, the ARN names
/// the account's operator.
pub(crate) fn operator_identity(account_id: &str, uid: u32, name: String) -> UserIdentity {
    UserIdentity {
        kind: "Operator".into(),
        principal_id: format!("uid:{uid}"),
        arn: model::arn::account_wide("identity", account_id, &format!("operator/{name}")),
        account_id: account_id.to_owned(),
        user_name: Some(name),
        session_context: None,
    }
}

/// An instance that proved its credential: the ARN is the instance's own, the session issuer
/// names it as streaming does, and `user_name` is its session's user when it acts for one.
pub(crate) fn instance_identity(
    account_id: &str,
    region: &str,
    instance_id: &str,
    user_name: Option<String>,
    created: i64,
) -> UserIdentity {
    let issuer = json!({
        "type": "Instance",
        "principalId": instance_id,
        "arn": model::arn::regional("streaming", region, account_id, &format!("instance/{instance_id}")),
    });
    UserIdentity {
        kind: "Instance".into(),
        principal_id: format!("instance:{instance_id}"),
        arn: model::arn::account_wide("identity", account_id, &format!("instance/{instance_id}")),
        account_id: account_id.to_owned(),
        user_name,
        session_context: Some(session_context(created, false, Some(issuer))),
    }
}

/// A built-in function the platform invoked: recorded as the role it assumes, as AWS records a
/// Lambda function.
pub(crate) fn function_identity(account_id: &str, name: &str, created: i64) -> UserIdentity {
    let issuer = json!({ "type": "Role", "principalId": format!("function-{name}"), "userName": format!("function-{name}") });
    UserIdentity {
        kind: "AssumedRole".into(),
        principal_id: format!("function:{name}"),
        arn: model::arn::account_wide("identity", account_id, &format!("assumed-role/function-{name}/{name}")),
        account_id: account_id.to_owned(),
        user_name: Some(format!("function/{name}")),
        session_context: Some(session_context(created, false, Some(issuer))),
    }
}

/// The platform itself, or one of its components (`gateway.datasandbox`, …), as the author of
/// a service event.
pub(crate) fn service_identity(account_id: &str, principal: &str) -> UserIdentity {
    UserIdentity {
        kind: "AWSService".into(),
        principal_id: principal.into(),
        arn: String::new(),
        account_id: account_id.to_owned(),
        user_name: None,
        session_context: None,
    }
}

/// Who a caller claimed to be when nothing was proved (a refused sign-in, an anonymous call):
/// no ARN, since an ARN would say the principal is known.
pub(crate) fn unproved_identity(account_id: &str, kind: &str, principal_id: String, user_name: Option<String>) -> UserIdentity {
    UserIdentity {
        kind: kind.into(),
        principal_id,
        arn: String::new(),
        account_id: account_id.to_owned(),
        user_name,
        session_context: None,
    }
}

/// When the credential was made, whether a second factor was proved, and who issued it.
fn session_context(created: i64, mfa: bool, issuer: Option<Value>) -> SessionContext {
    SessionContext {
        attributes: SessionContextAttributes { creation_date: millis_to_rfc3339(created), mfa_authenticated: mfa.to_string() },
        session_issuer: issuer,
    }
}

/// The input of an action that takes no members.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Empty {}
