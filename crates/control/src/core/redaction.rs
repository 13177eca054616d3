//! What of a call reaches its record: secrets and data hidden by member name, large
//! parameters summarized, member names and messages bounded by the trail's own limits.

use bytes::Bytes;
use serde_json::Value;

use crate::core::error::ActionError;

/// Members whose values are secrets or data; they never reach an audit record.
const HIDDEN_MEMBERS: &[&str] = &[
    "Body",
    "Value",
    "Spec",
    // A deploy's spec overrides, when its input does not parse (parsed, `Override` hides their values by type).
    "Overrides",
    "Plaintext",
    "CiphertextBlob",
    "Token",
    "SecretString",
    "Cookie",
    "StreamingURL",
    "AuthorizedUrl",
    // A session's handoff to its node: the URL carries a one-time code.
    "HandoffUrl",
    "Code",
    "NotebookUrl",
    "Password",
    "PreviousPassword",
    "ProposedPassword",
    "UserCode",
    "TotpCode",
    "SecretCode",
    "OtpauthUri",
];
pub(crate) const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// The longest error message a reply or record carries; longer ones are cut, saying so
/// (with room for that note, so the trail's own bound never cuts it again: the record and
/// the reply say the same).
const MAX_ERROR_MESSAGE_BYTES: usize = audit::bound::MAX_STRING_BYTES - 128;
/// The longest member name a request may use (AWS's longest are far shorter): the trail's own
/// bound, so that no two names a handler told apart become one in the record.
const MAX_MEMBER_NAME_BYTES: usize = audit::bound::MAX_MEMBER_NAME_BYTES;

pub(crate) fn bound_error(mut error: ActionError) -> ActionError {
    if error.message.len() > MAX_ERROR_MESSAGE_BYTES {
        error.message = audit::bound::cut(&error.message, MAX_ERROR_MESSAGE_BYTES).into_owned();
    }
    error
}

/// The first member name, at any depth, longer than [`MAX_MEMBER_NAME_BYTES`].
fn overlong_member(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) => map
            .iter()
            .find_map(|(key, member)| if key.len() > MAX_MEMBER_NAME_BYTES { Some(key.as_str()) } else { overlong_member(member) }),
        Value::Array(items) => items.iter().find_map(overlong_member),
        _ => None,
    }
}

/// Where the first string holding a NUL character is, at any depth (a member's name or its
/// value): `Outer.Inner[2]`, its names without control characters.
fn nul_at(value: &Value) -> Option<String> {
    // `head` followed by the path within it.
    let joined = |head: String, inner: String| match inner.chars().next() {
        None => head,
        Some('[') => head + &inner,
        Some(_) => format!("{head}.{inner}"),
    };
    match value {
        Value::String(text) => text.contains('\0').then(String::new),
        Value::Object(map) => map.iter().find_map(|(key, member)| {
            // A name is shown only on the path to a NUL: most requests hold none.
            let shown = || audit::bound::cut(&key.chars().filter(|c| !c.is_control()).take(64).collect::<String>(), 64).into_owned();
            if key.contains('\0') { Some(shown()) } else { nul_at(member).map(|inner| joined(shown(), inner)) }
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(n, item)| nul_at(item).map(|inner| joined(format!("[{n}]"), inner))),
        _ => None,
    }
}

/// Why a request that parsed is refused for a NUL character in it, if it is. No name or value
/// here holds one, and PostgreSQL's text cannot: such a request is refused alike on both
/// backends, saying where, rather than failing in the store; its record keeps what was sent.
pub(crate) fn nul_refusal(request: &Value) -> Option<ActionError> {
    let path = nul_at(request)?;
    Some(ActionError::validation(format!("no string in a request may hold a NUL character (\\u0000); `{path}` does")))
}

pub(crate) fn parse_body(body: &Result<Bytes, ActionError>) -> Result<Value, ActionError> {
    let bytes = body.as_ref().map_err(Clone::clone)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|err| ActionError::serialization(format!("the request body is not valid JSON: {err}")))?;
    if !value.is_object() {
        return Err(ActionError::serialization("the request body must be a JSON object"));
    }
    if let Some(name) = overlong_member(&value) {
        return Err(ActionError::validation(format!(
            "member names are at most {MAX_MEMBER_NAME_BYTES} bytes; the request has one of {} bytes (`{}`)",
            name.len(),
            audit::bound::cut(&name.chars().filter(|c| !c.is_control()).take(64).collect::<String>(), 64)
        )));
    }
    Ok(value)
}

/// Request parameters larger than this are summarized in the record, not copied.
const MAX_RECORDED_PARAMETERS: usize = 16 * 1024;

pub(crate) fn redact(value: Value) -> Value {
    summarize(hide_members(value))
}

/// Parameters too large to copy into a record, summarized.
pub(crate) fn summarize(value: Value) -> Value {
    let size = value.to_string().len();
    if size > MAX_RECORDED_PARAMETERS {
        return audit::bound::summary(&value, size);
    }
    value
}

/// Whether a member of this name is hidden: the name in [`HIDDEN_MEMBERS`] in any case and with
/// any separators, so that an input that does not parse (`previousPassword`,
/// `proposed_password`), which its record keeps as it came, hides what it meant too (review
/// finding).
/// Every record's parameters pass here, member by member: compared as they go, not copied.
fn hidden(name: &str) -> bool {
    let plain = || name.bytes().filter(u8::is_ascii_alphanumeric).map(|b| b.to_ascii_lowercase());
    HIDDEN_MEMBERS.iter().any(|hidden| hidden.bytes().map(|b| b.to_ascii_lowercase()).eq(plain()))
}

/// The members named in [`HIDDEN_MEMBERS`] hidden, at any depth.
pub(crate) fn hide_members(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, member) in map.iter_mut() {
                    if hidden(key) && !member.is_null() {
                        *member = Value::String(HIDDEN.into());
                    } else {
                        walk(member);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A secret's member spelt otherwise than the action's (which then refuses the input and
    /// records it as it came) is hidden too; other members are kept.
    #[test]
    fn secrets_are_hidden_however_their_members_are_spelt() {
        let recorded = hide_members(json!({
            "previousPassword": "old secret", "proposed_password": "new secret", "TOTP-code": "123456",
            "nested": [{ "password": "p" }], "NextToken": "kept", "UserName": "kept",
        }));
        assert_eq!(
            recorded,
            json!({
                "previousPassword": HIDDEN, "proposed_password": HIDDEN, "TOTP-code": HIDDEN,
                "nested": [{ "password": HIDDEN }], "NextToken": "kept", "UserName": "kept",
            })
        );
    }

    /// A NUL anywhere in a request (a name or a value, at any depth) is refused, saying where.
    #[test]
    fn a_nul_in_a_request_is_refused_with_where_it_is() {
        let refused = |value: Value| nul_refusal(&value).expect("refused").message;
        for (request, path) in [
            (json!({ "KeyId": "a\u{0}b" }), "`KeyId`"),
            (json!({ "LookupAttributes": [{ "AttributeKey": "K" }, { "AttributeKey": "X\u{0}" }] }), "`LookupAttributes[1].AttributeKey`"),
            (json!({ "Names": ["ok", "a\u{0}"] }), "`Names[1]`"),
            (json!({ "Nested": [[{ "In\u{0}ner": 1 }]] }), "`Nested[0][0].Inner`"),
        ] {
            let message = refused(request);
            assert!(message.contains("NUL") && message.contains(path), "{message}");
            assert!(!message.contains('\0'), "the message holds no NUL itself: {message:?}");
        }
        assert!(nul_refusal(&json!({ "Key": "a\u{1}b", "List": [1, "x"] })).is_none());
    }
}
