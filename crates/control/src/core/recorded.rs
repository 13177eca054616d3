//! Redaction by type. An input parsed with [`Ctx::parse_recorded`](crate::core::pipeline::Ctx::parse_recorded)
//! is recorded as its typed value serializes, not as the caller sent it: a [`Redacted`] field
//! is recorded as `HIDDEN_DUE_TO_SECURITY_REASONS` whatever its member is called, and an
//! [`Override`] as its key only. Hiding by member name (`HIDDEN_MEMBERS`) stays for inputs
//! that do not parse and for actions not yet typed this way.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::redaction::HIDDEN;

/// A secret or data: parsed as `T`, recorded hidden, printed as `***`.
pub(crate) struct Redacted<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Redacted<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Redacted)
    }
}

impl<T> Serialize for Redacted<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(HIDDEN)
    }
}

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A spec override, `key=value` (`datasandbox up -c …`): recorded as `key=` and the hidden
/// marker. Which settings are secrets (`oidc.client_secret`, a future one) is the spec's
/// business; the trail keeps which settings were overridden, never a value.
pub(crate) struct Override(pub String);

impl<'de> Deserialize<'de> for Override {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Override)
    }
}

impl Serialize for Override {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let key = self.0.split_once('=').map_or(self.0.as_str(), |(key, _)| key);
        serializer.serialize_str(&format!("{key}={HIDDEN}"))
    }
}

impl std::fmt::Debug for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.0.split_once('=').map_or(self.0.as_str(), |(key, _)| key);
        write!(f, "{key}=***")
    }
}
