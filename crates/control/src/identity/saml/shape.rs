//! The shape of a response, pinned down before anything in it is believed: what xmlsec1
//! cannot know is *which* element the application will read, so the element whose signature
//! is checked must be the element that is read.

use roxmltree::{Document, Node};

use super::provider::IdentityProvider;
use super::xml::{ASSERTION, DSIG, PROTOCOL, child, children, is, malformed, rejected};
use crate::core::error::{ActionError, ErrorCode};

const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
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

/// A signed element: its kind for xmlsec1 and its ID.
pub(super) struct Signed {
    pub node_name: &'static str,
    pub id: String,
}

/// A response whose structure was checked: its one assertion and the elements signed.
pub(super) struct Shape<'a, 'i> {
    pub response: Node<'a, 'i>,
    pub assertion: Node<'a, 'i>,
    pub signed: Vec<Signed>,
}

/// Pins down the document's structure so that the element whose signature is checked is the
/// element that is read.
pub(super) fn shape<'a, 'i>(document: &'a Document<'i>, idp: &IdentityProvider) -> Result<Shape<'a, 'i>, ActionError> {
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
            ErrorCode::SAMLUnknownIssuer,
            format!("the response was issued by `{other}`, not by the trusted identity provider `{}`", idp.entity_id),
        ));
    }
    let status = child(response, PROTOCOL, "Status")
        .and_then(|s| child(s, PROTOCOL, "StatusCode"))
        .and_then(|c| c.attribute("Value"))
        .ok_or_else(|| malformed("the Response has no StatusCode"))?;
    if status != SUCCESS {
        return Err(rejected(
            ErrorCode::SAMLStatusNotSuccess,
            format!("the identity provider did not sign the user in (status `{status}`)"),
        ));
    }
    if document.descendants().any(|n| is(n, ASSERTION, "EncryptedAssertion")) {
        return Err(malformed("encrypted assertions are not supported; configure the IdP to sign the assertion, not to encrypt it"));
    }
    unique_ids(document)?;
    let assertions: Vec<Node> = document.descendants().filter(|n| is(*n, ASSERTION, "Assertion")).collect();
    let assertion = match assertions.as_slice() {
        [one] if one.parent() == Some(response) => *one,
        [_] => return Err(rejected(ErrorCode::SAMLSignatureWrapping, "the assertion is not a child of the Response")),
        [] => return Err(malformed("the Response holds no assertion")),
        _ => {
            return Err(rejected(
                ErrorCode::SAMLSignatureWrapping,
                format!("the Response holds {} assertions; exactly one is accepted", assertions.len()),
            ));
        }
    };
    let mut signed = Vec::new();
    for signature in document.descendants().filter(|n| is(*n, DSIG, "Signature")) {
        let parent = signature
            .parent()
            .filter(|p| *p == response || *p == assertion)
            .ok_or_else(|| rejected(ErrorCode::SAMLSignatureWrapping, "a signature sits outside the Response and its assertion"))?;
        let node_name = if parent == response {
            "urn:oasis:names:tc:SAML:2.0:protocol:Response"
        } else {
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
        };
        if signed.iter().any(|s: &Signed| s.node_name == node_name) {
            return Err(rejected(ErrorCode::SAMLSignatureWrapping, "an element carries two signatures"));
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
        return Err(rejected(ErrorCode::SAMLUnsigned, "neither the Response nor its assertion is signed"));
    }
    Ok(Shape { response, assertion, signed })
}

/// No two elements share an ID: a signed element copied elsewhere would be one.
fn unique_ids(document: &Document<'_>) -> Result<(), ActionError> {
    let mut ids = std::collections::HashSet::new();
    for node in document.descendants().filter(Node::is_element) {
        if let Some(id) = node.attribute("ID")
            && !ids.insert(id)
        {
            return Err(rejected(
                ErrorCode::SAMLSignatureWrapping,
                format!("the ID `{id}` appears twice: a signed element may have been copied"),
            ));
        }
    }
    Ok(())
}

/// One reference, to the signature's own parent, with SHA-2 and exclusive canonicalization.
fn check_signed_info(signature: Node, id: &str) -> Result<(), ActionError> {
    let info = child(signature, DSIG, "SignedInfo").ok_or_else(|| malformed("a Signature has no SignedInfo"))?;
    let algorithm = |node: Option<Node>| node.and_then(|n| n.attribute("Algorithm")).unwrap_or_default().to_owned();
    let weak = |what: &str, value: &str| {
        rejected(ErrorCode::SAMLWeakSignature, format!("the signature's {what} `{value}` is not accepted; configure the IdP for SHA-256"))
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
        return Err(rejected(ErrorCode::SAMLSignatureWrapping, "a signature must have exactly one reference"));
    };
    if reference.attribute("URI") != Some(&format!("#{id}")) {
        return Err(rejected(ErrorCode::SAMLSignatureWrapping, "a signature references another element than the one it sits in"));
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
