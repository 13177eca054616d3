//! AppStream's home-folder layout: `user/<access-mode>/<lower-hex sha256(user id)>/`.

use sha2::{Digest, Sha256};

use crate::ids::UserId;

/// How the user reached the platform; it picks the home-folder prefix, as in AppStream
/// (`custom` for streaming-URL users, `federated` for SAML) plus `local` for local accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    Custom,
    Federated,
    Local,
}

impl AccessMode {
    pub const ALL: [AccessMode; 3] = [AccessMode::Custom, AccessMode::Federated, AccessMode::Local];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Custom => "custom",
            AccessMode::Federated => "federated",
            AccessMode::Local => "local",
        }
    }

    pub fn parse(value: &str) -> Option<AccessMode> {
        AccessMode::ALL.into_iter().find(|mode| mode.as_str() == value)
    }

    /// AppStream's `AuthenticationType` for this mode.
    pub fn authentication_type(self) -> &'static str {
        match self {
            AccessMode::Custom => "API",
            AccessMode::Federated => "SAML",
            AccessMode::Local => "USERPOOL",
        }
    }
}

/// The owner of a home folder as it appears in object keys: access mode and hashed user id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HomeOwner {
    pub mode: AccessMode,
    pub user_hash: String,
}

impl HomeOwner {
    /// The owner of `user`'s home folder: lower-case hex SHA-256 of the id in its original case.
    pub fn of(mode: AccessMode, user: &UserId) -> HomeOwner {
        HomeOwner { mode, user_hash: hex::encode(Sha256::digest(user.as_str().as_bytes())) }
    }

    /// The key prefix of this home folder, with its trailing slash.
    pub fn prefix(&self) -> String {
        format!("user/{}/{}/", self.mode.as_str(), self.user_hash)
    }

    /// The home folder a key (or a listing prefix) lies in, if it lies entirely inside one.
    pub fn of_key(key: &str) -> Option<HomeOwner> {
        let rest = key.strip_prefix("user/")?;
        let (mode, rest) = rest.split_once('/')?;
        let (hash, _) = rest.split_once('/')?;
        let mode = AccessMode::parse(mode)?;
        let is_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        is_hash.then(|| HomeOwner { mode, user_hash: hash.to_owned() })
    }

    /// A stable id for policies: `<mode>/<hash>`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.mode.as_str(), self.user_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_appstream() {
        let user = UserId::new("alice").expect("valid");
        let owner = HomeOwner::of(AccessMode::Custom, &user);
        assert_eq!(owner.prefix(), "user/custom/2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90/");
        assert_eq!(HomeOwner::of_key(&format!("{}session.json", owner.prefix())), Some(owner.clone()));
        // The prefix itself (with its slash) lies in the folder; without the slash it does not.
        assert_eq!(HomeOwner::of_key(&owner.prefix()), Some(owner.clone()));
        assert_eq!(HomeOwner::of_key(owner.prefix().trim_end_matches('/')), None);
        assert_eq!(HomeOwner::of_key("user/custom/"), None);
        assert_eq!(HomeOwner::of_key("user/other/abc/x"), None);
    }
}
