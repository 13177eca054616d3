//! Newtype identifiers, validated at construction.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name or identifier was rejected; the message names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{value}` {reason}")]
pub struct InvalidName {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

impl InvalidName {
    fn new(what: &'static str, value: &str, reason: impl Into<String>) -> InvalidName {
        // Long or binary input is shortened so that an error message stays readable and bounded.
        let mut shown: String = value.chars().take(80).collect();
        if shown.len() < value.len() {
            shown.push('…');
        }
        InvalidName { what, value: shown.escape_debug().to_string(), reason: reason.into() }
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $validate:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<$name, InvalidName> {
                let value = value.into();
                $validate(&value)?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let raw = String::deserialize(d)?;
                $name::new(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// A streaming user id: AppStream's `UserId`, 2–32 characters of `[\w+=,.@-]`.
    UserId,
    validate_user_id
);

string_newtype!(
    /// The identity provider that vouched for a federated user: a SAML IdP's entity id or an
    /// OpenID provider's issuer URL, 1–1024 characters with no control character (so that a
    /// newline can separate it from the user id wherever the two are hashed together).
    Issuer,
    validate_issuer
);

string_newtype!(
    /// A bucket name under S3's rules: 3–63 characters of lower-case letters, digits, `-` and
    /// `.`, starting and ending with a letter or digit, not shaped like an IP address.
    BucketName,
    validate_bucket_name
);

string_newtype!(
    /// An object key: 1–1024 bytes of UTF-8, no NUL or other control character, no empty,
    /// `.` or `..` path segment, no leading `/`.
    ObjectKey,
    validate_object_key
);

string_newtype!(
    /// A parameter name as in SSM Parameter Store: up to 2048 characters of
    /// `[a-zA-Z0-9_.-/]`; hierarchical names start with `/` and have at most 15 levels.
    ParameterName,
    validate_parameter_name
);

fn validate_user_id(value: &str) -> Result<(), InvalidName> {
    let count = value.chars().count();
    if !(2..=32).contains(&count) {
        return Err(InvalidName::new("user id", value, format!("has {count} characters; allowed 2..=32")));
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_alphanumeric() || *c == '_' || "+=,.@-".contains(*c))) {
        return Err(InvalidName::new(
            "user id",
            value,
            format!("contains `{}`; allowed are letters, digits and _+=,.@-", bad.escape_debug()),
        ));
    }
    Ok(())
}

fn validate_issuer(value: &str) -> Result<(), InvalidName> {
    let count = value.chars().count();
    if !(1..=1024).contains(&count) {
        return Err(InvalidName::new("issuer", value, format!("has {count} characters; allowed 1..=1024")));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidName::new("issuer", value, "contains a control character"));
    }
    Ok(())
}

fn validate_bucket_name(value: &str) -> Result<(), InvalidName> {
    let err = |reason: &str| Err(InvalidName::new("bucket name", value, reason));
    if !(3..=63).contains(&value.len()) {
        return err("must be 3..=63 characters long");
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')) {
        return Err(InvalidName::new(
            "bucket name",
            value,
            format!("contains `{}`; allowed are lower-case letters, digits, `-` and `.`", bad.escape_debug()),
        ));
    }
    let first_last_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_last_ok(value.chars().next()) || !first_last_ok(value.chars().last()) {
        return err("must start and end with a letter or digit");
    }
    if value.contains("..") {
        return err("must not contain two adjacent periods");
    }
    if value.parse::<std::net::Ipv4Addr>().is_ok() {
        return err("must not be formatted as an IP address");
    }
    Ok(())
}

fn validate_object_key(value: &str) -> Result<(), InvalidName> {
    let err = |reason: &str| Err(InvalidName::new("object key", value, reason));
    if value.is_empty() {
        return err("is empty");
    }
    if value.len() > 1024 {
        return Err(InvalidName::new("object key", value, format!("is {} bytes long; at most 1024 are allowed", value.len())));
    }
    if value.contains('\0') {
        return err("contains a NUL character");
    }
    if value.chars().any(char::is_control) {
        return err("contains a control character");
    }
    if value.starts_with('/') {
        return err("must not start with `/`");
    }
    // A trailing `/` is a folder marker, as in S3 consoles; every other segment must be a name.
    let trimmed = value.strip_suffix('/').unwrap_or(value);
    for segment in trimmed.split('/') {
        match segment {
            "" => return err("contains an empty path segment (`//`)"),
            "." | ".." => return err("contains a `.` or `..` path segment"),
            _ => {}
        }
    }
    Ok(())
}

fn validate_parameter_name(value: &str) -> Result<(), InvalidName> {
    let err = |reason: &str| Err(InvalidName::new("parameter name", value, reason));
    if value.is_empty() || value.len() > 2048 {
        return err("must be 1..=2048 characters long");
    }
    if let Some(bad) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c))) {
        return Err(InvalidName::new("parameter name", value, format!("contains `{}`; allowed are a-zA-Z0-9_.-/", bad.escape_debug())));
    }
    if value.contains('/') {
        if !value.starts_with('/') {
            return err("is hierarchical and must start with `/`");
        }
        if value.ends_with('/') || value.contains("//") {
            return err("must not end with `/` or contain an empty level");
        }
        if value.matches('/').count() > 15 {
            return err("has more than 15 levels");
        }
    }
    let lowered = value.trim_start_matches('/').to_ascii_lowercase();
    if lowered.starts_with("aws") || lowered.starts_with("ssm") {
        return err("must not start with `aws` or `ssm` (reserved)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_and_reject() {
        let cases: &[(&str, bool, bool, bool)] = &[
            // value, user id ok, bucket ok, key ok
            ("ab", true, false, true),
            ("alice@example.com", true, false, true),
            ("a", false, false, true),
            ("my-bucket", true, true, true),
            ("My_Bucket", true, false, true),
            ("192.168.1.1", true, false, true),
            ("user/custom/x/session.json", false, false, true),
            ("a/../b", false, false, false),
            ("a//b", false, false, false),
            ("/abs", false, false, false),
            ("folder/", false, false, true),
            ("nul\0byte", false, false, false),
            ("quote\"name", false, false, true),
        ];
        for (value, user, bucket, key) in cases {
            assert_eq!(UserId::new(*value).is_ok(), *user, "user id {value:?}");
            assert_eq!(BucketName::new(*value).is_ok(), *bucket, "bucket {value:?}");
            assert_eq!(ObjectKey::new(*value).is_ok(), *key, "key {value:?}");
        }
        assert!(ObjectKey::new("k".repeat(1024)).is_ok());
        assert!(ObjectKey::new("k".repeat(1025)).is_err());
        assert!(ParameterName::new("/datasandbox/bucket").is_ok());
        assert!(ParameterName::new("plain-name").is_ok());
        assert!(ParameterName::new("/aws/x").is_err());
        assert!(ParameterName::new("no/leading").is_err());
    }

    #[test]
    fn error_message_names_the_value() {
        let err = BucketName::new("Bad_Name").expect_err("upper case is invalid");
        assert_eq!(err.to_string(), "bucket name `Bad_Name` contains `B`; allowed are lower-case letters, digits, `-` and `.`");
    }
}
