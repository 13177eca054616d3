//! The SAML 2.0 service provider: the seed's enterprise sign-in (AppStream's SAML federation).
//!
//! The identity provider is trusted through its metadata, which the deploy's `saml` stack puts
//! in `<data-dir>/identity-providers/<idp_name>.xml`; it is read at each sign-in, so a deploy
//! or destroy takes effect at once. A response posted to the assertion consumer is
//! authentication (`Credentials::SamlResponse`), never an action's input, and is accepted only
//! if every check below holds; each failure has its own error code, and the pipeline audits it
//! with the subject the response claimed.
//!
//! The signature is checked by Debian's `xmlsec1` (the engine pysaml2 and most SPs use), never
//! by code of ours, with the IdP's certificate from the metadata as the only key (`KeyInfo` in
//! the message is ignored) and only same-document references. What xmlsec1 cannot know is
//! *which* element the application will read, so before it runs, the document's shape is
//! pinned down ([`shape`]): no DTD, unique IDs, exactly one assertion and it a child of the
//! response, signatures only on the response or that assertion, each referencing its own
//! parent, with SHA-2 algorithms and the exclusive canonicalization. Everything read
//! afterwards (subject, conditions, attributes) comes from that one assertion, and every
//! value read must be plain text (a comment inside a NameID is refused, not skipped).

use std::io::Write as _;
use std::time::Duration;

use base64::Engine as _;
use chrono::DateTime;
use roxmltree::{Document, Node};

use crate::core::error::ActionError;
use crate::core::platform::Platform;
use crate::core::store::now_millis;

const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
const REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const EXCLUSIVE_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const SIGNATURE_METHODS: &[&str] = &[
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
];
const DIGEST_METHODS: &[&str] = &[
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];
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
/// How long an SP-initiated request may wait for its response.
const REQUEST_LIFETIME_MS: i64 = 10 * 60_000;
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// AppStream's default session length for SAML users, and the range it accepts.
const DEFAULT_SESSION_SECONDS: i64 = 3600;
const SESSION_SECONDS: std::ops::RangeInclusive<i64> = 900..=43_200;

/// This service provider's names, derived from the public base URL.
pub(crate) struct ServiceProvider {
    pub entity_id: String,
    pub acs: String,
}

pub(crate) fn service_provider(plane: &Platform) -> ServiceProvider {
    let base = plane.public_base();
    ServiceProvider { entity_id: format!("{base}/saml/metadata"), acs: format!("{base}/saml/acs") }
}

/// The identity provider as its metadata describes it.
#[derive(Debug)]
pub(crate) struct IdentityProvider {
    pub name: String,
    pub entity_id: String,
    /// Signing certificates, base64 DER (more than one during a key rollover).
    pub certificates: Vec<String>,
    pub sso_redirect: Option<String>,
}

fn rejected(code: &'static str, message: impl Into<String>) -> ActionError {
    ActionError::new(401, code, message)
}

fn malformed(message: impl Into<String>) -> ActionError {
    rejected("InvalidSAMLResponse", message)
}

/// The deployed identity provider, or a clear error saying how to configure one.
pub(crate) fn identity_provider(plane: &Platform) -> Result<IdentityProvider, ActionError> {
    let name = plane.current.read().expect("spec lock").idp_name.clone();
    let path = plane.data_dir.join("identity-providers").join(format!("{name}.xml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ActionError::new(
                400,
                "SAMLNotConfigured",
                format!(
                    "no SAML identity provider `{name}` is deployed; set `idp_metadata` in the spec (or `-c idp_metadata=/path/idp.xml`) and deploy"
                ),
            ));
        }
        Err(err) => return Err(ActionError::internal(format_args!("reading {}: {err}", path.display()))),
    };
    parse_metadata(&name, &text).map_err(|message| ActionError::internal(format_args!("{}: {message}", path.display())))
}

/// Reads an IdP's metadata: its entity id, signing certificates and redirect-binding SSO URL.
pub(crate) fn parse_metadata(name: &str, text: &str) -> Result<IdentityProvider, String> {
    let document = Document::parse(text).map_err(|err| format!("not XML metadata: {err}"))?;
    let entity = document
        .descendants()
        .find(|n| is(*n, METADATA, "EntityDescriptor") && child(*n, METADATA, "IDPSSODescriptor").is_some())
        .ok_or("no EntityDescriptor with an IDPSSODescriptor")?;
    let entity_id = entity.attribute("entityID").ok_or("the EntityDescriptor has no entityID")?.to_owned();
    let idp = child(entity, METADATA, "IDPSSODescriptor").expect("checked above");
    let certificates: Vec<String> = children(idp, METADATA, "KeyDescriptor")
        .filter(|k| k.attribute("use").is_none_or(|u| u == "signing"))
        .flat_map(|k| k.descendants().filter(|n| is(*n, DSIG, "X509Certificate")))
        .map(|c| c.text().unwrap_or_default().split_whitespace().collect::<String>())
        .filter(|c| !c.is_empty())
        .collect();
    if certificates.is_empty() {
        return Err("the IDPSSODescriptor has no signing certificate (KeyDescriptor with X509Certificate)".into());
    }
    let sso_redirect = children(idp, METADATA, "SingleSignOnService")
        .find(|s| s.attribute("Binding") == Some(REDIRECT))
        .and_then(|s| s.attribute("Location"))
        .map(str::to_owned);
    Ok(IdentityProvider { name: name.to_owned(), entity_id, certificates, sso_redirect })
}

/// This SP's metadata, for the IdP's administrator.
pub(crate) fn sp_metadata(plane: &Platform) -> String {
    let sp = service_provider(plane);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="{METADATA}" entityID="{entity}">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true" protocolSupportEnumeration="{PROTOCOL}">
    <md:NameIDFormat>{PERSISTENT}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="{POST}" Location="{acs}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"#,
        entity = xml_escape(&sp.entity_id),
        acs = xml_escape(&sp.acs),
    )
}

/// The IdP's URL that starts an SP-initiated sign-in (redirect binding), with a fresh request
/// id that a response must answer within ten minutes, and the relay state passed through.
/// The request id is returned too: the gateway binds it to the browser (a cookie), and a
/// response answering it is accepted only from that browser.
pub(crate) fn login_url(plane: &Platform, relay_state: &str) -> Result<(String, String), ActionError> {
    if relay_state.len() > 80 {
        return Err(ActionError::validation("RelayState is longer than SAML's 80 bytes"));
    }
    let idp = identity_provider(plane)?;
    let sso = idp.sso_redirect.ok_or_else(|| {
        ActionError::new(
            400,
            "SAMLNotConfigured",
            "the IdP's metadata has no HTTP-Redirect SingleSignOnService; start the sign-in at the IdP instead",
        )
    })?;
    let sp = service_provider(plane);
    let id = request_id(plane, now_millis())?;
    let request = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="{PROTOCOL}" xmlns:saml="{ASSERTION}" ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{sso}" AssertionConsumerServiceURL="{acs}" ProtocolBinding="{POST}"><saml:Issuer>{entity}</saml:Issuer><samlp:NameIDPolicy Format="{PERSISTENT}" AllowCreate="true"/></samlp:AuthnRequest>"#,
        now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        sso = xml_escape(&sso),
        acs = xml_escape(&sp.acs),
        entity = xml_escape(&sp.entity_id),
    );
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflate.write_all(request.as_bytes()).map_err(ActionError::internal)?;
    let deflated = deflate.finish().map_err(ActionError::internal)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("SAMLRequest", &base64::engine::general_purpose::STANDARD.encode(deflated));
    if !relay_state.is_empty() {
        query.append_pair("RelayState", relay_state);
    }
    let separator = if sso.contains('?') { '&' } else { '?' };
    Ok((format!("{sso}{separator}{}", query.finish()), id))
}

/// A request id that proves itself: random, with its expiry, MAC'd with the server's key, so
/// an SP-initiated sign-in stores nothing until its response arrives.
fn request_id(plane: &Platform, now: i64) -> Result<String, ActionError> {
    let mut nonce = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let body = format!("{}x{}", hex::encode(nonce), now + REQUEST_LIFETIME_MS);
    let mac = plane.sign(format!("saml-request:{body}").as_bytes())?;
    Ok(format!("_ds{body}x{}", hex::encode(&mac[..16])))
}

fn request_id_valid(plane: &Platform, id: &str, now: i64) -> Result<bool, ActionError> {
    let Some(rest) = id.strip_prefix("_ds") else { return Ok(false) };
    let Some((body, mac)) = rest.rsplit_once('x') else { return Ok(false) };
    let expires = body.rsplit_once('x').and_then(|(_, e)| e.parse::<i64>().ok());
    let expected = plane.sign(format!("saml-request:{body}").as_bytes())?;
    let mac_ok = hex::decode(mac).is_ok_and(|m| m.len() == 16 && constant_time_eq(&m, &expected[..16]));
    Ok(mac_ok && expires.is_some_and(|e| e > now))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

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
    if !remember_once(plane, &format!("saml:{}", read.assertion_id), read.expires).await? {
        return Err(rejected("SAMLReplay", "this assertion has been used already; sign in again at the identity provider"));
    }
    Ok(read.verified)
}

/// A signed element: its kind for xmlsec1 and its ID.
struct Signed {
    node_name: &'static str,
    id: String,
}

struct Shape<'a, 'i> {
    response: Node<'a, 'i>,
    assertion: Node<'a, 'i>,
    signed: Vec<Signed>,
}

/// Pins down the document's structure so that the element whose signature is checked is the
/// element that is read.
fn shape<'a, 'i>(document: &'a Document<'i>, idp: &IdentityProvider) -> Result<Shape<'a, 'i>, ActionError> {
    let response = document.root_element();
    if !is(response, PROTOCOL, "Response") {
        return Err(malformed("the document is not a samlp:Response"));
    }
    if response.attribute("Version") != Some("2.0") {
        return Err(malformed("the Response is not SAML 2.0"));
    }
    // The issuer first: an unknown IdP is told so, whatever else is wrong.
    let issuers: Vec<String> =
        document.descendants().filter(|n| is(*n, ASSERTION, "Issuer")).map(|n| n.text().unwrap_or_default().trim().to_owned()).collect();
    if let Some(other) = issuers.iter().find(|i| **i != idp.entity_id) {
        return Err(rejected(
            "SAMLUnknownIssuer",
            format!("the response was issued by `{other}`, not by the trusted identity provider `{}`", idp.entity_id),
        ));
    }
    let status = child(response, PROTOCOL, "Status")
        .and_then(|s| child(s, PROTOCOL, "StatusCode"))
        .and_then(|c| c.attribute("Value"))
        .ok_or_else(|| malformed("the Response has no StatusCode"))?;
    if status != SUCCESS {
        return Err(rejected("SAMLStatusNotSuccess", format!("the identity provider did not sign the user in (status `{status}`)")));
    }
    if document.descendants().any(|n| is(n, ASSERTION, "EncryptedAssertion")) {
        return Err(malformed("encrypted assertions are not supported; configure the IdP to sign the assertion, not to encrypt it"));
    }
    let mut ids = std::collections::HashSet::new();
    for node in document.descendants().filter(Node::is_element) {
        if let Some(id) = node.attribute("ID")
            && !ids.insert(id)
        {
            return Err(rejected("SAMLSignatureWrapping", format!("the ID `{id}` appears twice: a signed element may have been copied")));
        }
    }
    let assertions: Vec<Node> = document.descendants().filter(|n| is(*n, ASSERTION, "Assertion")).collect();
    let assertion = match assertions.as_slice() {
        [one] if one.parent() == Some(response) => *one,
        [_] => return Err(rejected("SAMLSignatureWrapping", "the assertion is not a child of the Response")),
        [] => return Err(malformed("the Response holds no assertion")),
        _ => {
            return Err(rejected(
                "SAMLSignatureWrapping",
                format!("the Response holds {} assertions; exactly one is accepted", assertions.len()),
            ));
        }
    };
    let mut signed = Vec::new();
    for signature in document.descendants().filter(|n| is(*n, DSIG, "Signature")) {
        let parent = signature
            .parent()
            .filter(|p| *p == response || *p == assertion)
            .ok_or_else(|| rejected("SAMLSignatureWrapping", "a signature sits outside the Response and its assertion"))?;
        let node_name = if parent == response {
            "urn:oasis:names:tc:SAML:2.0:protocol:Response"
        } else {
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
        };
        if signed.iter().any(|s: &Signed| s.node_name == node_name) {
            return Err(rejected("SAMLSignatureWrapping", "an element carries two signatures"));
        }
        // xmlsec1 checks the first signature under the element it is pointed at: the
        // response's own must come before its assertion.
        if parent == response && signature.range().start > assertion.range().start {
            return Err(malformed("the Response's signature must precede its assertion"));
        }
        let id = parent.attribute("ID").ok_or_else(|| malformed("a signed element has no ID"))?;
        check_signed_info(signature, id)?;
        signed.push(Signed { node_name, id: id.to_owned() });
    }
    if signed.is_empty() {
        return Err(rejected("SAMLUnsigned", "neither the Response nor its assertion is signed"));
    }
    Ok(Shape { response, assertion, signed })
}

/// One reference, to the signature's own parent, with SHA-2 and exclusive canonicalization.
fn check_signed_info(signature: Node, id: &str) -> Result<(), ActionError> {
    let info = child(signature, DSIG, "SignedInfo").ok_or_else(|| malformed("a Signature has no SignedInfo"))?;
    let algorithm = |node: Option<Node>| node.and_then(|n| n.attribute("Algorithm")).unwrap_or_default().to_owned();
    let weak = |what: &str, value: &str| {
        rejected("SAMLWeakSignature", format!("the signature's {what} `{value}` is not accepted; configure the IdP for SHA-256"))
    };
    let canonicalization = algorithm(child(info, DSIG, "CanonicalizationMethod"));
    if canonicalization != EXCLUSIVE_C14N {
        return Err(malformed(format!("the canonicalization `{canonicalization}` is not accepted (exclusive C14N only)")));
    }
    let method = algorithm(child(info, DSIG, "SignatureMethod"));
    if !SIGNATURE_METHODS.contains(&method.as_str()) {
        return Err(weak("method", &method));
    }
    let references: Vec<Node> = children(info, DSIG, "Reference").collect();
    let [reference] = references.as_slice() else {
        return Err(rejected("SAMLSignatureWrapping", "a signature must have exactly one reference"));
    };
    if reference.attribute("URI") != Some(&format!("#{id}")) {
        return Err(rejected("SAMLSignatureWrapping", "a signature references another element than the one it sits in"));
    }
    let digest = algorithm(child(*reference, DSIG, "DigestMethod"));
    if !DIGEST_METHODS.contains(&digest.as_str()) {
        return Err(weak("digest", &digest));
    }
    if let Some(transforms) = child(*reference, DSIG, "Transforms") {
        for transform in transforms.children().filter(Node::is_element) {
            let name = transform.attribute("Algorithm").unwrap_or_default();
            if !is(transform, DSIG, "Transform") || ![ENVELOPED, EXCLUSIVE_C14N].contains(&name) {
                return Err(malformed(format!("the transform `{name}` is not accepted")));
            }
        }
    }
    Ok(())
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
        return Err(rejected("SAMLDestinationMismatch", format!("the Response is addressed to `{destination}`, not to `{}`", sp.acs)));
    }
    let assertion_id = assertion.attribute("ID").ok_or_else(|| malformed("the assertion has no ID"))?.to_owned();
    let subject = child(assertion, ASSERTION, "Subject").ok_or_else(|| malformed("the assertion has no Subject"))?;
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
    // The bearer confirmation: for us, still valid, answering our request if it names one.
    let in_response_to = response.attribute("InResponseTo");
    let confirmation = children(subject, ASSERTION, "SubjectConfirmation")
        .find(|c| c.attribute("Method") == Some(BEARER))
        .and_then(|c| child(c, ASSERTION, "SubjectConfirmationData"))
        .ok_or_else(|| malformed("the Subject has no bearer SubjectConfirmationData"))?;
    let recipient = confirmation.attribute("Recipient").unwrap_or_default();
    if recipient != sp.acs {
        return Err(rejected("SAMLRecipientMismatch", format!("the assertion is for the recipient `{recipient}`, not `{}`", sp.acs)));
    }
    let confirmation_end = time(confirmation.attribute("NotOnOrAfter"), "SubjectConfirmationData NotOnOrAfter")?
        .ok_or_else(|| malformed("the SubjectConfirmationData has no NotOnOrAfter"))?;
    if confirmation_end + SKEW_MS <= now {
        return Err(rejected("SAMLExpired", "the assertion's subject confirmation has expired; sign in again"));
    }
    if confirmation.attribute("InResponseTo") != in_response_to {
        return Err(malformed("the assertion answers another request than its Response"));
    }
    if let Some(request) = in_response_to
        && !request_id_valid(plane, request, now)?
    {
        return Err(rejected(
            "SAMLUnknownRequest",
            "the response answers a request this service did not make, or made more than ten minutes ago; sign in again",
        ));
    }
    // Login CSRF: someone else's answer to their own sign-in, posted from this browser.
    if let Some(request) = in_response_to
        && browser_request != Some(request)
    {
        return Err(rejected(
            "SAMLRequestNotFromThisBrowser",
            "the response answers a sign-in started in another browser (or this browser's sign-in cookie is gone); sign in again",
        ));
    }
    let idp_initiated = in_response_to.is_none();
    let conditions = child(assertion, ASSERTION, "Conditions").ok_or_else(|| malformed("the assertion has no Conditions"))?;
    if let Some(not_before) = time(conditions.attribute("NotBefore"), "NotBefore")?
        && not_before - SKEW_MS > now
    {
        return Err(rejected("SAMLNotYetValid", "the assertion is not valid yet; check the IdP's clock"));
    }
    let not_on_or_after = time(conditions.attribute("NotOnOrAfter"), "NotOnOrAfter")?;
    if not_on_or_after.is_some_and(|end| end + SKEW_MS <= now) {
        return Err(rejected("SAMLExpired", "the assertion has expired; sign in again"));
    }
    let audiences: Vec<String> = children(conditions, ASSERTION, "AudienceRestriction")
        .flat_map(|r| children(r, ASSERTION, "Audience"))
        .map(|a| plain_text(a, "Audience"))
        .collect::<Result<_, _>>()?;
    if !audiences.contains(&sp.entity_id) {
        return Err(rejected(
            "SAMLAudienceMismatch",
            format!("the assertion is for {audiences:?}, not for this service provider `{}`", sp.entity_id),
        ));
    }
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

/// AppStream's attributes: the roles granted through this provider, and the session length.
fn attributes(plane: &Platform, assertion: Node, idp: &IdentityProvider) -> Result<(Vec<String>, i64), ActionError> {
    let account = &plane.spec.account_id;
    let provider = format!("arn:datasandbox:identity::{account}:saml-provider/{}", idp.name);
    let role_prefix = format!("arn:datasandbox:identity::{account}:role/");
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
            "SAMLNoRole",
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

/// xmlsec1 checks under way at once, host-wide: each is a process of its own, and anyone can
/// post a response shaped well enough to reach one.
const XMLSEC_PARALLEL: usize = 2;
static XMLSEC: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(XMLSEC_PARALLEL);
/// How long a response waits for a free check before it is turned away.
const XMLSEC_WAIT: Duration = Duration::from_secs(5);

/// The signature, checked by xmlsec1 with the metadata's certificate as the only key.
async fn check_signature(document: &str, idp: &IdentityProvider, node_name: &str, id: &str) -> Result<(), ActionError> {
    let _permit = match tokio::time::timeout(XMLSEC_WAIT, XMLSEC.acquire()).await {
        Ok(permit) => permit.map_err(ActionError::internal)?,
        Err(_) => {
            return Err(ActionError::new(
                429,
                "TooManyRequestsException",
                "too many SAML sign-ins are being checked at once; try again in a moment",
            ));
        }
    };
    let dir = tempfile::tempdir().map_err(ActionError::internal)?;
    let message = dir.path().join("response.xml");
    tokio::fs::write(&message, document).await.map_err(ActionError::internal)?;
    for (index, certificate) in idp.certificates.iter().enumerate() {
        let pem = dir.path().join(format!("idp-{index}.pem"));
        let wrapped: Vec<&str> = certificate.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
        tokio::fs::write(&pem, format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", wrapped.join("\n")))
            .await
            .map_err(ActionError::internal)?;
        let run = tokio::process::Command::new("xmlsec1")
            .args(["--verify", "--enabled-reference-uris", "same-doc", "--enabled-key-data", "key-name", "--pubkey-cert-pem"])
            .arg(&pem)
            .args(["--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:Response"])
            .args(["--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"])
            .args(["--node-id", id])
            .arg(&message)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = match tokio::time::timeout(Duration::from_secs(10), run).await {
            Err(_) => return Err(ActionError::internal("xmlsec1 took more than 10 s to check a signature")),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(ActionError::internal("SAML sign-in needs Debian's xmlsec1 on the server: apt-get install xmlsec1"));
            }
            Ok(Err(err)) => return Err(ActionError::internal(format_args!("running xmlsec1: {err}"))),
            Ok(Ok(output)) => output,
        };
        let said = String::from_utf8_lossy(&output.stderr);
        if output.status.success() && said.lines().any(|l| l.trim() == "OK") {
            return Ok(());
        }
        tracing::debug!(node_name, stderr = %said, "xmlsec1 refused a signature");
    }
    let what = if node_name.ends_with(":Response") { "Response" } else { "assertion" };
    Err(rejected(
        "SAMLSignatureInvalid",
        format!("the {what}'s signature does not verify with the certificate of `{}` from its metadata", idp.entity_id),
    ))
}

/// The replay cache: an id (a SAML assertion's, an OIDC sign-in's state) is accepted once,
/// remembered until it could no longer be valid anyway. False if it was seen before.
pub(crate) async fn remember_once(plane: &Platform, id: &str, expires: i64) -> Result<bool, ActionError> {
    let pool = &plane.store.pool;
    sqlx::query("DELETE FROM federation_replay WHERE expires < $1").bind(now_millis()).execute(pool).await?;
    let inserted = sqlx::query("INSERT INTO federation_replay (id, expires) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(id)
        .bind(expires)
        .execute(pool)
        .await?;
    Ok(inserted.rows_affected() == 1)
}

fn time(value: Option<&str>, what: &str) -> Result<Option<i64>, ActionError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v).map(|t| t.timestamp_millis()).map_err(|_| malformed(format!("{what} `{v}` is not a time")))
        })
        .transpose()
}

/// An element's text, refusing anything but text inside (a comment could cut a value short
/// in one reader and not in another).
fn plain_text(node: Node, what: &str) -> Result<String, ActionError> {
    let mut text = String::new();
    for part in node.children() {
        if !part.is_text() {
            return Err(malformed(format!("the {what} holds something other than text")));
        }
        text.push_str(part.text().unwrap_or_default());
    }
    Ok(text.trim().to_owned())
}

fn is(node: Node, namespace: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(namespace) && node.tag_name().name() == name
}

fn child<'a, 'i>(node: Node<'a, 'i>, namespace: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is(*c, namespace, name))
}

fn children<'a, 'i>(node: Node<'a, 'i>, namespace: &'static str, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| is(*c, namespace, name))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDP: &str = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.test/idp">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>ENC</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:KeyDescriptor><ds:KeyInfo><ds:X509Data><ds:X509Certificate>
      MIIB
      AAAA
    </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.test/post"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.test/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#;

    #[test]
    fn metadata_gives_the_signing_certificates_and_the_redirect_endpoint() {
        let idp = parse_metadata("corp", IDP).expect("metadata");
        assert_eq!(idp.entity_id, "https://idp.test/idp");
        assert_eq!(idp.certificates, vec!["MIIBAAAA".to_owned()], "the encryption key is not a signing key");
        assert_eq!(idp.sso_redirect.as_deref(), Some("https://idp.test/sso"));
        let doctype = format!("<!DOCTYPE x [<!ENTITY e \"x\">]>{IDP}");
        assert!(parse_metadata("corp", &doctype).is_err(), "no DTDs");
        assert!(parse_metadata("corp", &IDP.replace("IDPSSODescriptor", "SPSSODescriptor")).is_err());
    }

    #[test]
    fn values_must_be_plain_text() {
        let document = Document::parse(r#"<a><n>alice<!-- -->.evil</n><m> bob </m></a>"#).expect("xml");
        let root = document.root_element();
        let [n, m] = [0, 1].map(|i| root.children().filter(Node::is_element).nth(i).expect("child"));
        assert!(plain_text(n, "NameID").is_err(), "a comment inside a value is refused, not skipped");
        assert_eq!(plain_text(m, "NameID").expect("text"), "bob");
    }
}
