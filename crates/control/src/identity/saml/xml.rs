//! SAML's XML as this service provider reads it: the namespaces, elements found by namespace
//! and name, values that must be plain text, and the refusals a response earns.

use chrono::DateTime;
use roxmltree::Node;

use crate::core::error::{ActionError, ErrorCode};

pub(super) const PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub(super) const ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub(super) const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
pub(super) const METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";

/// A refusal of the sign-in, with its own error code.
pub(super) fn rejected(code: ErrorCode, message: impl Into<String>) -> ActionError {
    ActionError::new(401, code, message)
}

/// A response that is not what SAML says it must be.
pub(super) fn malformed(message: impl Into<String>) -> ActionError {
    rejected(ErrorCode::InvalidSAMLResponse, message)
}

pub(super) fn time(value: Option<&str>, what: &str) -> Result<Option<i64>, ActionError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v).map(|t| t.timestamp_millis()).map_err(|_| malformed(format!("{what} `{v}` is not a time")))
        })
        .transpose()
}

/// An element's text, refusing anything but text inside (a comment could cut a value short
/// in one reader and not in another).
pub(super) fn plain_text(node: Node, what: &str) -> Result<String, ActionError> {
    let mut text = String::new();
    for part in node.children() {
        if !part.is_text() {
            return Err(malformed(format!("the {what} holds something other than text")));
        }
        text.push_str(part.text().unwrap_or_default());
    }
    Ok(text.trim().to_owned())
}

pub(super) fn is(node: Node, namespace: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(namespace) && node.tag_name().name() == name
}

pub(super) fn child<'a, 'i>(node: Node<'a, 'i>, namespace: &str, name: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| is(*c, namespace, name))
}

pub(super) fn children<'a, 'i>(node: Node<'a, 'i>, namespace: &'static str, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(move |c| is(*c, namespace, name))
}

pub(super) fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use roxmltree::Document;

    use super::*;

    #[test]
    fn values_must_be_plain_text() {
        let document = Document::parse(r#"<a><n>alice<!-- -->.evil</n><m> bob </m></a>"#).expect("xml");
        let root = document.root_element();
        let [n, m] = [0, 1].map(|i| root.children().filter(Node::is_element).nth(i).expect("child"));
        assert!(plain_text(n, "NameID").is_err(), "a comment inside a value is refused, not skipped");
        assert_eq!(plain_text(m, "NameID").expect("text"), "bob");
    }
}
