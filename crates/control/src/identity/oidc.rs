//! OpenID Connect, the second federation protocol: the authorization code flow with PKCE
//! (S256), as a relying party of the provider named in the spec's `[oidc]`.
//!
//! The sign-in stores nothing before the provider answers. Its `state` is self-verifying:
//! random, with an expiry and the relay state (what to open afterwards), MAC'd with the
//! server's key; the PKCE verifier and the nonce are MACs of the state, so only this server can
//! know them, and the gateway binds the state to the browser that started it (a cookie it
//! must present). The callback is authentication (`Credentials::OidcCallback`): the state is
//! checked, the code is exchanged at the token endpoint with the verifier, and the ID token is
//! verified with the provider's published keys — an asymmetric algorithm only, the key named
//! by `kid`, issuer, audience (and `azp`), expiry with bounded skew, and the nonce — and then
//! the state is spent (a replay cache), so a callback URL works once.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::JwkSet};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;
use crate::core::store::now_millis;

const STATE_LIFETIME_MS: i64 = 10 * 60_000;
const SKEW_SECONDS: u64 = 120;
/// RFC 8176 methods that mean more than one factor.
const MFA_METHODS: &[&str] = &["mfa", "otp", "hwk", "sms", "swk"];
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn rejected(code: ErrorCode, message: impl Into<String>) -> ActionError {
    ActionError::new(401, code, message)
}

fn settings(plane: &Platform) -> Result<model::spec::OidcSpec, ActionError> {
    plane.spec.oidc.clone().ok_or_else(|| {
        ActionError::new(
            400,
            ErrorCode::OIDCNotConfigured,
            "no OpenID Connect provider is configured; set [oidc] issuer and client_id in the spec",
        )
    })
}

pub(crate) fn redirect_uri(plane: &Platform) -> String {
    format!("{}/oidc/callback", plane.public_base())
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn mac(plane: &Platform, purpose: &str, value: &str) -> Result<Vec<u8>, ActionError> {
    plane.sign(format!("oidc-{purpose}:{value}").as_bytes())
}

/// The PKCE verifier and the nonce of a state: derived, never stored.
fn secrets_of(plane: &Platform, state: &str) -> Result<(String, String), ActionError> {
    Ok((b64url(&mac(plane, "verifier", state)?), b64url(&mac(plane, "nonce", state)?)))
}

fn make_state(plane: &Platform, relay_state: &str, now: i64) -> Result<String, ActionError> {
    let mut nonce = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let body =
        b64url(serde_json::json!({ "n": hex::encode(nonce), "e": now + STATE_LIFETIME_MS, "r": relay_state }).to_string().as_bytes());
    Ok(format!("{body}.{}", b64url(&mac(plane, "state", &body)?)))
}

/// The relay state a genuine, unexpired state carries.
pub(crate) fn check_state(plane: &Platform, state: &str, now: i64) -> Result<String, ActionError> {
    let invalid =
        || rejected(ErrorCode::OIDCInvalidState, "the sign-in's state was not made by this service or has expired; sign in again");
    let (body, tag) = state.split_once('.').ok_or_else(invalid)?;
    let expected = b64url(&mac(plane, "state", body)?);
    if expected.len() != tag.len() || expected.bytes().zip(tag.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
        return Err(invalid());
    }
    let claims: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(invalid)?;
    if claims["e"].as_i64().is_none_or(|expires| expires <= now) {
        return Err(invalid());
    }
    Ok(claims["r"].as_str().unwrap_or_default().to_owned())
}

/// The client for the provider's endpoints: bounded in time, never following redirects. Made
/// once (it loads the host's root certificates) and shared by every sign-in.
fn client() -> Result<reqwest::Client, ActionError> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(ActionError::internal)?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

fn provider_unreachable(what: &str, err: impl std::fmt::Debug) -> ActionError {
    tracing::warn!(what, error = ?err, "the OpenID provider could not be reached");
    ActionError::new(502, ErrorCode::OIDCProviderUnavailable, format!("the OpenID provider's {what} could not be read; try again later"))
}

async fn get_json(client: &reqwest::Client, url: &str, what: &str) -> Result<Value, ActionError> {
    // A GET is safe to send twice: one more try, a moment later, when the first cannot be sent.
    let reply = match client.get(url).send().await {
        Ok(reply) => reply,
        Err(first) => {
            tracing::info!(what, error = ?first, "the OpenID provider could not be reached; trying once more");
            tokio::time::sleep(Duration::from_millis(250)).await;
            client.get(url).send().await.map_err(|e| provider_unreachable(what, e))?
        }
    };
    if !reply.status().is_success() {
        return Err(provider_unreachable(what, reply.status()));
    }
    let bytes = reply.bytes().await.map_err(|e| provider_unreachable(what, e))?;
    serde_json::from_slice(&bytes).map_err(|e| provider_unreachable(what, e))
}

/// The provider's endpoints, from its discovery document, which must name the configured issuer.
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

async fn discover(client: &reqwest::Client, issuer: &str) -> Result<Provider, ActionError> {
    let document = get_json(client, &format!("{issuer}/.well-known/openid-configuration"), "discovery document").await?;
    if document["issuer"].as_str() != Some(issuer) {
        return Err(provider_unreachable("discovery document", format_args!("it names the issuer {}", document["issuer"])));
    }
    if let Some(methods) = document["code_challenge_methods_supported"].as_array()
        && !methods.iter().any(|m| m == "S256")
    {
        return Err(provider_unreachable("discovery document", "it does not support PKCE with S256"));
    }
    let field = |name: &str| {
        let url = document[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| provider_unreachable("discovery document", format_args!("it has no {name}")))?;
        // The code and the client's secret go to the token endpoint, and the keys that make
        // an ID token believed come from the keys' URL: neither over plain HTTP elsewhere.
        if !model::spec::provider_url_allowed(&url) {
            return Err(provider_unreachable("discovery document", format_args!("its {name} `{url}` is not an https:// URL")));
        }
        Ok(url)
    };
    Ok(Provider {
        authorization_endpoint: field("authorization_endpoint")?,
        token_endpoint: field("token_endpoint")?,
        jwks_uri: field("jwks_uri")?,
    })
}

/// Where a browser starts an OIDC sign-in, and the state the gateway binds to that browser.
pub(crate) async fn login_url(plane: &Platform, relay_state: &str) -> Result<(String, String), ActionError> {
    if relay_state.len() > 256 {
        return Err(ActionError::validation("the relay state is longer than 256 bytes"));
    }
    let settings = settings(plane)?;
    let provider = discover(&client()?, &settings.issuer).await?;
    let state = make_state(plane, relay_state, now_millis())?;
    let (verifier, nonce) = secrets_of(plane, &state)?;
    let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", &settings.client_id)
        .append_pair("redirect_uri", &redirect_uri(plane))
        .append_pair("scope", &settings.scopes)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let separator = if provider.authorization_endpoint.contains('?') { '&' } else { '?' };
    Ok((format!("{}{separator}{}", provider.authorization_endpoint, query.finish()), state))
}

/// What a verified ID token says.
#[derive(Debug)]
pub(crate) struct Verified {
    pub user: String,
    pub session_seconds: i64,
    pub relay_state: String,
    pub issuer: String,
    pub roles: Vec<String>,
    pub mfa: bool,
}

/// The callback: the state checked, the code exchanged, the ID token verified, the state spent.
pub(crate) async fn verify(plane: &Platform, callback: &crate::core::caller::OidcCallback) -> Result<Verified, ActionError> {
    let settings = settings(plane)?;
    if callback.browser_state.as_deref() != Some(callback.state.as_str()) {
        return Err(rejected(ErrorCode::OIDCStateMismatch, "this sign-in was not started in this browser; start it again from the portal"));
    }
    let now = now_millis();
    let relay_state = check_state(plane, &callback.state, now)?;
    // The state is spent by its first callback, whatever follows: a callback URL works once.
    spend(plane, &callback.state, now + STATE_LIFETIME_MS).await?;
    if let Some(error) = &callback.error {
        return Err(rejected(ErrorCode::OIDCProviderError, format!("the OpenID provider did not sign the user in: {error}")));
    }
    let code = callback
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| rejected(ErrorCode::OIDCInvalidCallback, "the callback carries no code"))?;
    let (verifier, nonce) = secrets_of(plane, &callback.state)?;
    let client = client()?;
    let provider = discover(&client, &settings.issuer).await?;
    let redirect = redirect_uri(plane);
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect.as_str()),
        ("client_id", settings.client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    if let Some(secret) = &settings.client_secret {
        form.push(("client_secret", secret));
    }
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let reply = client
        .post(&provider.token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| provider_unreachable("token endpoint", e))?;
    let status = reply.status();
    let answer: Value = reply.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
    if !status.is_success() {
        let said = answer["error_description"].as_str().or(answer["error"].as_str()).unwrap_or("no reason given");
        return Err(rejected(ErrorCode::OIDCTokenRejected, format!("the OpenID provider refused the code ({status}): {said}")));
    }
    let id_token =
        answer["id_token"].as_str().ok_or_else(|| rejected(ErrorCode::OIDCInvalidToken, "the token response has no id_token"))?;
    let keys: JwkSet =
        serde_json::from_value(get_json(&client, &provider.jwks_uri, "keys").await?).map_err(|e| provider_unreachable("keys", e))?;
    let verified = check_id_token(id_token, &keys, &settings, &nonce)?;
    Ok(Verified { relay_state, ..verified })
}

/// Verifies an ID token against the provider's keys and this sign-in's nonce.
pub(crate) fn check_id_token(token: &str, keys: &JwkSet, settings: &model::spec::OidcSpec, nonce: &str) -> Result<Verified, ActionError> {
    let invalid = |code: ErrorCode, message: String| rejected(code, message);
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| invalid(ErrorCode::OIDCInvalidToken, format!("the ID token is not a signed JWT with an accepted algorithm: {e}")))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(invalid(
            ErrorCode::OIDCInvalidToken,
            format!("the ID token's algorithm {:?} is not accepted (asymmetric signatures only)", header.alg),
        ));
    }
    let key = match &header.kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or_else(|| invalid(ErrorCode::OIDCSignatureInvalid, "the ID token is signed with a key the provider does not publish".into()))?;
    let key = DecodingKey::from_jwk(key)
        .map_err(|e| invalid(ErrorCode::OIDCSignatureInvalid, format!("the provider's key cannot be used: {e}")))?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = SKEW_SECONDS;
    validation.validate_nbf = true;
    validation.set_audience(&[&settings.client_id]);
    validation.set_issuer(&[&settings.issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => {
            invalid(ErrorCode::OIDCSignatureInvalid, "the ID token's signature does not verify with the provider's key".into())
        }
        ErrorKind::ExpiredSignature => invalid(ErrorCode::OIDCExpired, "the ID token has expired; sign in again".into()),
        ErrorKind::ImmatureSignature => {
            invalid(ErrorCode::OIDCNotYetValid, "the ID token is not valid yet; check the provider's clock".into())
        }
        ErrorKind::InvalidAudience => {
            invalid(ErrorCode::OIDCAudienceMismatch, format!("the ID token was issued to another client than `{}`", settings.client_id))
        }
        ErrorKind::InvalidIssuer => invalid(ErrorCode::OIDCIssuerMismatch, format!("the ID token was not issued by `{}`", settings.issuer)),
        other => invalid(ErrorCode::OIDCInvalidToken, format!("the ID token is not valid: {other:?}")),
    })?;
    let claims = data.claims;
    if claims["aud"].as_array().is_some_and(|a| a.len() > 1) && claims["azp"].as_str() != Some(settings.client_id.as_str()) {
        return Err(invalid(
            ErrorCode::OIDCAudienceMismatch,
            "the ID token names several audiences and is not authorized for this client".into(),
        ));
    }
    if claims["nonce"].as_str() != Some(nonce) {
        return Err(invalid(ErrorCode::OIDCNonceMismatch, "the ID token was not issued for this sign-in (its nonce differs)".into()));
    }
    let user = claims[settings.user_claim.as_str()]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid(ErrorCode::OIDCNoUser, format!("the ID token has no `{}` claim", settings.user_claim)))?;
    if model::UserId::new(user.clone()).is_err() {
        return Err(invalid(
            ErrorCode::OIDCNoUser,
            format!(
                "the `{}` claim is not a user id (2–32 letters, digits and _+=,.@-); set oidc.user_claim to another claim",
                settings.user_claim
            ),
        ));
    }
    let roles = roles_of(&claims[settings.roles_claim.as_str()]);
    let methods: HashSet<&str> = claims["amr"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let mfa = MFA_METHODS.iter().any(|m| methods.contains(m));
    Ok(Verified {
        user,
        session_seconds: settings.session_seconds,
        relay_state: String::new(),
        issuer: settings.issuer.clone(),
        roles,
        mfa,
    })
}

/// The roles a claim grants (an array, or a space-separated string), keeping only names a
/// policy can match.
fn roles_of(claim: &Value) -> Vec<String> {
    let roles: Vec<String> = match claim {
        Value::Array(values) => values.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Value::String(text) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    roles
        .into_iter()
        .filter(|r| (1..=64).contains(&r.len()) && r.chars().all(|c| c.is_ascii_alphanumeric() || "+=.@_-".contains(c)))
        .collect()
}

/// A state opens one sign-in.
async fn spend(plane: &Platform, state: &str, expires: i64) -> Result<(), ActionError> {
    let key = format!("oidc:{}", b64url(&Sha256::digest(state.as_bytes())));
    if !super::repo::remember_once(&plane.store, &key, expires).await? {
        return Err(rejected(ErrorCode::OIDCReplay, "this sign-in's callback has been used already; sign in again"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test key pair (RSA 2048, made for these tests only): the private key as PKCS#1 DER in
    /// base64, and the public half as a JWK.
    const PRIVATE_DER: &str = include_str!("oidc_test_key.b64");
    const PUBLIC_JWK: &str = include_str!("oidc_test_key.jwk");

    fn settings() -> model::spec::OidcSpec {
        model::spec::OidcSpec {
            issuer: "https://op.test".into(),
            client_id: "datasandbox".into(),
            client_secret: None,
            scopes: "openid".into(),
            user_claim: "sub".into(),
            roles_claim: "roles".into(),
            session_seconds: 3600,
        }
    }

    fn mint(header: jsonwebtoken::Header, claims: Value) -> String {
        let der = base64::engine::general_purpose::STANDARD.decode(PRIVATE_DER.trim()).expect("key");
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_rsa_der(&der)).expect("sign")
    }

    fn keys() -> JwkSet {
        serde_json::from_str(&format!("{{\"keys\":[{PUBLIC_JWK}]}}")).expect("jwks")
    }

    fn good() -> Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({ "iss": "https://op.test", "aud": "datasandbox", "sub": "alice", "exp": now + 300, "iat": now,
                            "nonce": "n-1", "roles": ["saml-stack"], "amr": ["pwd", "otp"] })
    }

    fn rs256() -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some("test".into());
        header
    }

    fn code_of(token: &str) -> String {
        match check_id_token(token, &keys(), &settings(), "n-1") {
            Ok(v) => format!("ok:{}:{}:{}", v.user, v.roles.join(","), v.mfa),
            Err(e) => e.code.as_str().to_owned(),
        }
    }

    #[test]
    fn id_tokens_are_checked_claim_by_claim() {
        assert_eq!(code_of(&mint(rs256(), good())), "ok:alice:saml-stack:true");
        let with = |key: &str, value: Value| {
            let mut claims = good();
            claims[key] = value;
            mint(rs256(), claims)
        };
        let now = chrono::Utc::now().timestamp();
        for (token, code) in [
            (with("aud", "another-client".into()), "OIDCAudienceMismatch"),
            (with("aud", serde_json::json!(["datasandbox", "other"])), "OIDCAudienceMismatch"),
            (with("iss", "https://evil.test".into()), "OIDCIssuerMismatch"),
            (with("exp", (now - 600).into()), "OIDCExpired"),
            (with("nbf", (now + 600).into()), "OIDCNotYetValid"),
            (with("nonce", "n-2".into()), "OIDCNonceMismatch"),
            (with("sub", "has a space".into()), "OIDCNoUser"),
        ] {
            assert_eq!(code_of(&token), code, "{token}");
        }
        // A valid token with one character of its payload changed.
        let token = mint(rs256(), good());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts[1]).expect("payload");
        let forged = String::from_utf8(payload).expect("utf8").replace("alice", "admin");
        parts[1] = b64url(forged.as_bytes());
        assert_eq!(code_of(&parts.join(".")), "OIDCSignatureInvalid");
        // alg=none, and HS256 keyed with anything: not accepted.
        let none = format!("{}.{}.", b64url(br#"{"alg":"none","kid":"test"}"#), b64url(good().to_string().as_bytes()));
        assert_eq!(code_of(&none), "OIDCInvalidToken");
        let mut hs = jsonwebtoken::Header::new(Algorithm::HS256);
        hs.kid = Some("test".into());
        let hmac = jsonwebtoken::encode(&hs, &good(), &jsonwebtoken::EncodingKey::from_secret(PUBLIC_JWK.as_bytes())).expect("hs256");
        assert_eq!(code_of(&hmac), "OIDCInvalidToken");
        // A key the provider does not publish.
        let mut other = rs256();
        other.kid = Some("other".into());
        assert_eq!(code_of(&mint(other, good())), "OIDCSignatureInvalid");
    }
}
