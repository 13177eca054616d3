//! Members every service reads the same way: bounded numbers, base64 and pagination tokens.

use crate::core::error::ActionError;

/// An optional numeric member with its default, checked against its allowed range.
pub(crate) fn bounded(member: &str, value: Option<i64>, default: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64, ActionError> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ActionError::validation(format!("{member} {value} is outside {}..={}", range.start(), range.end())))
    }
}

/// `bytes` with each `<marker><hex><hex>` escape (`%2F` in a URL, `#2F` in a PDF name) decoded;
/// a marker not followed by two hex digits stays as it is.
pub fn hex_unescaped(bytes: &[u8], marker: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[at], bytes.get(at + 1).copied().and_then(hex), bytes.get(at + 2).copied().and_then(hex)) {
            (byte, Some(high), Some(low)) if byte == marker => {
                out.push((high * 16 + low) as u8);
                at += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                at += 1;
            }
        }
    }
    out
}

/// Decodes a base64 member, naming it in the error.
pub(crate) fn decode_base64(member: &str, value: &str) -> Result<Vec<u8>, ActionError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|err| ActionError::validation(format!("`{member}` is not valid base64: {err}")))
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Pagination tokens are opaque to callers: base64 of the position to resume after.
pub(crate) fn decode_token(token: Option<&str>) -> Result<Option<String>, ActionError> {
    let Some(token) = token else { return Ok(None) };
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| ActionError::validation("the pagination token is invalid; pass the token a previous response returned"))?;
    // No position holds a NUL (PostgreSQL's text cannot, and the request's own strings are
    // refused with one): a token that decodes to one was not ours.
    match String::from_utf8(bytes) {
        Ok(position) if !position.contains('\0') => Ok(Some(position)),
        _ => Err(ActionError::validation("the pagination token is invalid; pass the token a previous response returned")),
    }
}

pub(crate) fn encode_token(position: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position.as_bytes())
}

/// A closed set of values stored as text in the metadata store: the enum, the text of each
/// variant, and the way back (`parse` is `None` for any other text).
macro_rules! stored_as_text {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($(#[$variant_meta])* $variant,)* }

        impl $name {
            #[allow(dead_code, reason = "not every stored enum is written as text")]
            $vis fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            #[allow(dead_code, reason = "not every stored enum is read back")]
            $vis fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)* _ => None }
            }
        }
    };
}
pub(crate) use stored_as_text;
