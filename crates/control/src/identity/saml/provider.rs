//! The identity provider as its metadata describes it, and this service provider's side of a
//! sign-in: its own metadata for the IdP's administrator, and the redirect that starts an
//! SP-initiated sign-in with a request id that proves itself.

use std::io::Write as _;

use base64::Engine as _;
use roxmltree::Document;

use super::xml::{ASSERTION, DSIG, METADATA, PROTOCOL, child, children, is, xml_escape};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;
use crate::core::store::now_millis;

const REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
const POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
const PERSISTENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";
/// How long an SP-initiated request may wait for its response.
const REQUEST_LIFETIME_MS: i64 = 10 * 60_000;

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

/// The deployed identity provider, or a clear error saying how to configure one.
pub(crate) fn identity_provider(plane: &Platform) -> Result<IdentityProvider, ActionError> {
    let name = plane.current.read().expect("spec lock").idp_name.clone();
    let path = plane.data_dir.join("identity-providers").join(format!("{name}.xml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ActionError::new(
                400,
                ErrorCode::SAMLNotConfigured,
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
            ErrorCode::SAMLNotConfigured,
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

pub(super) fn request_id_valid(plane: &Platform, id: &str, now: i64) -> Result<bool, ActionError> {
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
}
