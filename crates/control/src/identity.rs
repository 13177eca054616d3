//! The identity service: authenticating every call ([`authenticate`]: the credentials a
//! transport presents turned into a [`Caller`](crate::core::caller::Caller)), the short-lived
//! user tokens ([`tokens`]), local users ([`local`]) and federated sign-in ([`saml`], [`oidc`]).

mod authenticate;
pub(crate) mod local;
mod lookups;
pub(crate) mod oidc;
mod password;
mod repo;
pub(crate) mod saml;
mod state;
mod tokens;

use futures::future::BoxFuture;
use serde_json::{Value, json};

pub(crate) use lookups::{InstanceCaller, InstanceLookup, SessionLookup};
pub(crate) use state::Identity;

use crate::core::actions::IdentityAction;
use crate::core::caller::{Caller, Credentials};
use crate::core::error::ActionError;
use crate::core::pipeline::{Authenticate, Ctx};
use crate::core::platform::ServiceEvent;

impl Identity {
    pub(crate) async fn dispatch(&self, ctx: &mut Ctx<'_>, action: IdentityAction, input: Value) -> Result<Value, ActionError> {
        match action {
            IdentityAction::CreateSessionToken => tokens::create_session_token(ctx, input).await,
            IdentityAction::GetCallerIdentity => tokens::get_caller_identity(ctx, input).await,
            IdentityAction::SignOut => tokens::sign_out(ctx, input).await,
            IdentityAction::SignIn => tokens::sign_in(ctx, input).await,
            IdentityAction::AssumeRoleWithSAML => tokens::assume_federated_role(ctx, input, "SAML").await,
            IdentityAction::AssumeRoleWithWebIdentity => tokens::assume_federated_role(ctx, input, "OIDC").await,
            IdentityAction::CreateLocalUser => local::create(&self.throttle, ctx, input).await,
            IdentityAction::DeleteLocalUser => local::delete(&*self.sessions, ctx, input).await,
            IdentityAction::UnlockLocalUser => local::unlock(&self.throttle, ctx, input).await,
            IdentityAction::ChangePassword => password::change_password(&self.throttle, &*self.sessions, ctx, input).await,
            IdentityAction::AssociateSoftwareToken => local::associate(&self.throttle, ctx, input).await,
            IdentityAction::VerifySoftwareToken => local::verify_token(ctx, input).await,
        }
    }

    /// Whether `token` is a sign-in's token that still holds (a read error counts as not).
    pub(crate) async fn token_holds(&self, token: &str) -> bool {
        tokens::holds(&self.platform.store, token).await
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
        Box::pin(authenticate::authenticate(self, credentials, action))
    }

    fn claimed_identity(&self, credentials: &Credentials) -> audit::UserIdentity {
        authenticate::unauthenticated_identity(credentials, &self.platform.spec.account_id)
    }
}
