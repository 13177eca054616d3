//! Verifying a posted response: decoded within bounds, its shape pinned down ([`super::shape`]),
//! everything but the signature read from its one assertion (destination, subject, bearer
//! confirmation, request, conditions, audience, attributes), the signatures checked by
//! xmlsec1, and its assertion id remembered so it is accepted once.

use base64::Engine as _;
use roxmltree::{Document, Node};

use super::provider::{IdentityProvider, ServiceProvider, identity_provider, request_id_valid, service_provider};
use super::shape::{Shape, shape};
use super::xml::{ASSERTION, child, children, is, malformed, plain_text, rejected, time};
use super::xmlsec::check_signature;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;
use crate::core::store::now_millis;
use crate::identity::repo;

const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
/// Authentication context classes that mean a second factor was proved at the IdP.
const MFA_CONTEXTS: &[&str] = &[
    "https://refeds.org/profile/mfa",
    "http://schemas.microsoft.com/claims/multipleauthn",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:TimeSyncToken",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract",
    "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorUnregistered",
];
/// AppStream's attribute names, so an IdP already set up for AppStream works unchanged.
pub(crate) const ROLE_ATTRIBUTE: &str = "https://aws.amazon.com/SAML/Attributes/Role";
pub(crate) const DURATION_ATTRIBUTE: &str = "https://aws.amazon.com/SAML/Attributes/SessionDuration";

/// How far the IdP's clock may be from ours.
pub(crate) const SKEW_MS: i64 = 120_000;
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// AppStream's default session length for SAML users, and the range it accepts.
const DEFAULT_SESSION_SECONDS: i64 = 3600;
const SESSION_SECONDS: std::ops::RangeInclusive<i64> = 900..=43_200;

/// What a verified assertion says.
#[derive(Debug)]
pub(crate) struct Verified {
    pub name_id: String,
    pub issuer: String,
    pub roles: Vec<String>,
    pub session_seconds: i64,
    pub mfa: bool,
    /// No request answered (IdP-initiated): nothing binds it to the browser that posted it.
    pub idp_initiated: bool,
}

/// The subject a response claims, unverified: only for the audit record of a refusal.
pub(crate) fn claimed_subject(response: &str) -> Option<String> {
    let bytes = decode(response).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let document = Document::parse(text).ok()?;
    let name_id = document.descendants().find(|n| is(*n, ASSERTION, "NameID"))?;
    Some(name_id.text().unwrap_or_default().chars().filter(|c| !c.is_control()).take(64).collect())
}

fn decode(response: &str) -> Result<Vec<u8>, ActionError> {
    let compact: String = response.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.len() > MAX_RESPONSE_BYTES * 4 / 3 + 4 {
        return Err(malformed(format!("the SAMLResponse is larger than {} KiB", MAX_RESPONSE_BYTES / 1024)));
    }
    base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| malformed("the SAMLResponse is not base64"))
}

/// Verifies a posted `SAMLResponse` (base64) completely, then records its assertion id so it
/// can never be used again.
/// `browser_request` is the request id the posting browser holds (its cookie from
/// `/saml/login`): a response that answers a request must answer that one.
pub(crate) async fn verify(plane: &Platform, response: &str, browser_request: Option<&str>) -> Result<Verified, ActionError> {
    let idp = identity_provider(plane)?;
    let sp = service_provider(plane);
    let bytes = decode(response)?;
    let text = String::from_utf8(bytes).map_err(|_| malformed("the SAMLResponse is not UTF-8"))?;
    let now = now_millis();
    let checked = {
        // roxmltree refuses DTDs, so no entity is ever expanded.
        let document = Document::parse(&text).map_err(|err| malformed(format!("the SAMLResponse is not well-formed XML: {err}")))?;
        let shape = shape(&document, &idp)?;
        let read = read_assertion(plane, &shape, &idp, &sp, now, browser_request)?;
        (read, shape.signed.iter().map(|s| (s.node_name, s.id.clone())).collect::<Vec<_>>())
    };
    let (read, signed) = checked;
    for (node_name, id) in &signed {
        check_signature(&text, &idp, node_name, id).await?;
    }
    if !repo::remember_once(&plane.store, &format!("saml:{}", read.assertion_id), read.expires).await? {
        return Err(rejected(ErrorCode::SAMLReplay, "this assertion has been used already; sign in again at the identity provider"));
    }
    Ok(read.verified)
}

struct Read {
    verified: Verified,
    assertion_id: String,
    expires: i64,
}

/// Everything but the signature: destination, subject, audience, times, request, attributes.
fn read_assertion(
    plane: &Platform,
    shape: &Shape,
    idp: &IdentityProvider,
    sp: &ServiceProvider,
    now: i64,
    browser_request: Option<&str>,
) -> Result<Read, ActionError> {
    let (response, assertion) = (shape.response, shape.assertion);
    if let Some(destination) = response.attribute("Destination")
        && destination != sp.acs
    {
        return Err(rejected(
            ErrorCode::SAMLDestinationMismatch,
            format!("the Response is addressed to `{destination}`, not to `{}`", sp.acs),
        ));
    }
    let assertion_id = assertion.attribute("ID").ok_or_else(|| malformed("the assertion has no ID"))?.to_owned();
    let subject = child(assertion, ASSERTION, "Subject").ok_or_else(|| malformed("the assertion has no Subject"))?;
    let name_id = name_id(subject)?;
    let confirmation_end = bearer_confirmation(plane, response, subject, sp, now, browser_request)?;
    let idp_initiated = response.attribute("InResponseTo").is_none();
    let not_on_or_after = conditions(assertion, sp, now)?;
    let mfa = children(assertion, ASSERTION, "AuthnStatement")
        .filter_map(|s| child(s, ASSERTION, "AuthnContext"))
        .filter_map(|c| child(c, ASSERTION, "AuthnContextClassRef"))
        .filter_map(|r| plain_text(r, "AuthnContextClassRef").ok())
        .any(|class| MFA_CONTEXTS.contains(&class.as_str()));
    let (roles, session_seconds) = attributes(plane, assertion, idp)?;
    let expires = not_on_or_after.unwrap_or(confirmation_end).max(confirmation_end) + SKEW_MS;
    Ok(Read {
        verified: Verified { name_id, issuer: idp.entity_id.clone(), roles, session_seconds, mfa, idp_initiated },
        assertion_id,
        expires,
    })
}

/// The subject's persistent NameID, which must be a user id: it names the user's home folder.
fn name_id(subject: Node) -> Result<String, ActionError> {
    let name_id_node = child(subject, ASSERTION, "NameID").ok_or_else(|| malformed("the Subject has no NameID"))?;
    if name_id_node.attribute("Format") == Some(TRANSIENT) {
        return Err(malformed(
            "the NameID is transient, which would give the user a new home folder at each sign-in; configure a persistent NameID",
        ));
    }
    let name_id = plain_text(name_id_node, "NameID")?;
    if model::UserId::new(name_id.clone()).is_err() {
        return Err(malformed(format!(
            "the NameID `{}` is not a user id (2–32 letters, digits and _+=,.@-); configure the IdP's persistent NameID so",
            name_id.chars().take(64).collect::<String>()
        )));
    }
    Ok(name_id)
}

/// The bearer confirmation: for us, still valid, answering our request if it names one, and
/// that request made from this browser. The answer is when the confirmation ends.
fn bearer_confirmation(
    plane: &Platform,
    response: Node,
    subject: Node,
    sp: &ServiceProvider,
    now: i64,
    browser_request: Option<&str>,
) -> Result<i64, ActionError> {
    let in_response_to = response.attribute("InResponseTo");
    let confirmation = children(subject, ASSERTION, "SubjectConfirmation")
        .find(|c| c.attribute("Method") == Some(BEARER))
        .and_then(|c| child(c, ASSERTION, "SubjectConfirmationData"))
        .ok_or_else(|| malformed("the Subject has no bearer SubjectConfirmationData"))?;
    let recipient = confirmation.attribute("Recipient").unwrap_or_default();
    if recipient != sp.acs {
        return Err(rejected(
            ErrorCode::SAMLRecipientMismatch,
            format!("the assertion is for the recipient `{recipient}`, not `{}`", sp.acs),
        ));
    }
    let confirmation_end = time(confirmation.attribute("NotOnOrAfter"), "SubjectConfirmationData NotOnOrAfter")?
        .ok_or_else(|| malformed("the SubjectConfirmationData has no NotOnOrAfter"))?;
    if confirmation_end + SKEW_MS <= now {
        return Err(rejected(ErrorCode::SAMLExpired, "the assertion's subject confirmation has expired; sign in again"));
    }
    if confirmation.attribute("InResponseTo") != in_response_to {
        return Err(malformed("the assertion answers another request than its Response"));
    }
    if let Some(request) = in_response_to
        && !request_id_valid(plane, request, now)?
    {
        return Err(rejected(
            ErrorCode::SAMLUnknownRequest,
            "the response answers a request this service did not make, or made more than ten minutes ago; sign in again",
        ));
    }
    // Login CSRF: someone else's answer to their own sign-in, posted from this browser.
    if let Some(request) = in_response_to
        && browser_request != Some(request)
    {
        return Err(rejected(
            ErrorCode::SAMLRequestNotFromThisBrowser,
            "the response answers a sign-in started in another browser (or this browser's sign-in cookie is gone); sign in again",
        ));
    }
    Ok(confirmation_end)
}

/// The assertion's conditions: valid now (within the clock skew) and for this service
/// provider. The answer is when the assertion stops being valid, if it says.
fn conditions(assertion: Node, sp: &ServiceProvider, now: i64) -> Result<Option<i64>, ActionError> {
    let conditions = child(assertion, ASSERTION, "Conditions").ok_or_else(|| malformed("the assertion has no Conditions"))?;
    if let Some(not_before) = time(conditions.attribute("NotBefore"), "NotBefore")?
        && not_before - SKEW_MS > now
    {
        return Err(rejected(ErrorCode::SAMLNotYetValid, "the assertion is not valid yet; check the IdP's clock"));
    }
    let not_on_or_after = time(conditions.attribute("NotOnOrAfter"), "NotOnOrAfter")?;
    if not_on_or_after.is_some_and(|end| end + SKEW_MS <= now) {
        return Err(rejected(ErrorCode::SAMLExpired, "the assertion has expired; sign in again"));
    }
    let audiences: Vec<String> = children(conditions, ASSERTION, "AudienceRestriction")
        .flat_map(|r| children(r, ASSERTION, "Audience"))
        .map(|a| plain_text(a, "Audience"))
        .collect::<Result<_, _>>()?;
    if !audiences.contains(&sp.entity_id) {
        return Err(rejected(
            ErrorCode::SAMLAudienceMismatch,
            format!("the assertion is for {audiences:?}, not for this service provider `{}`", sp.entity_id),
        ));
    }
    Ok(not_on_or_after)
}

/// AppStream's attributes: the roles granted through this provider, and the session length.
fn attributes(plane: &Platform, assertion: Node, idp: &IdentityProvider) -> Result<(Vec<String>, i64), ActionError> {
    let account = &plane.spec.account_id;
    let provider = model::arn::account_wide("identity", account, &format!("saml-provider/{}", idp.name));
    let role_prefix = model::arn::account_wide("identity", account, "role/");
    let values = |name: &str| -> Result<Vec<String>, ActionError> {
        children(assertion, ASSERTION, "AttributeStatement")
            .flat_map(|s| children(s, ASSERTION, "Attribute"))
            .filter(|a| a.attribute("Name") == Some(name))
            .flat_map(|a| children(a, ASSERTION, "AttributeValue"))
            .map(|v| plain_text(v, name))
            .collect()
    };
    let mut roles = Vec::new();
    for value in values(ROLE_ATTRIBUTE)? {
        // "role-arn,provider-arn", in either order, as AWS accepts.
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        let [a, b] = parts.as_slice() else { continue };
        let role = [(a, b), (b, a)].into_iter().find_map(|(r, p)| (*p == provider).then(|| r.strip_prefix(&role_prefix)).flatten());
        if let Some(role) =
            role.filter(|r| (1..=64).contains(&r.len()) && r.chars().all(|c| c.is_ascii_alphanumeric() || "+=.@_-".contains(c)))
        {
            roles.push(role.to_owned());
        }
    }
    if roles.is_empty() {
        return Err(ActionError::new(
            403,
            ErrorCode::SAMLNoRole,
            format!(
                "the assertion grants no role through `{provider}`; the IdP must send the `{ROLE_ATTRIBUTE}` attribute as `{role_prefix}<role>,{provider}`"
            ),
        ));
    }
    let session_seconds = match values(DURATION_ATTRIBUTE)?.first() {
        None => DEFAULT_SESSION_SECONDS,
        Some(value) => value
            .parse::<i64>()
            .ok()
            .filter(|s| SESSION_SECONDS.contains(s))
            .ok_or_else(|| malformed(format!("SessionDuration `{value}` is not a number of seconds in 900..=43200")))?,
    };
    Ok((roles, session_seconds))
}
