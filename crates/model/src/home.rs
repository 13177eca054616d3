//! Who a person is ([`UserRef`]: access mode, identity provider, user id) and AppStream's
//! home-folder layout derived from it: `user/<access-mode>/<lower-hex sha256>/`.
//!
//! A user id alone names nobody: local names are chosen by operators, federated ones by each
//! identity provider (`NameID`, `sub`), custom ones by whatever application calls
//! `CreateStreamingURL`, and nothing keeps these namespaces apart. So everything that belongs
//! to a person — home folder, notebook, sessions, portal associations, the ARN in records — is
//! keyed by the whole [`UserRef`]. Local and custom home folders keep AppStream's hash of the
//! user id; a federated user's hash covers the issuer too (`sha256(issuer "\n" user)`), so
//! that `bob` of one identity provider never lands in the folder of `bob` of another.

use sha2::{Digest, Sha256};

use crate::ids::{InvalidName, Issuer, UserId};

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

/// A person, as every part of the platform must name them: how they reached it, which identity
/// provider vouched for them (federated users only), and their id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserRef {
    mode: AccessMode,
    issuer: Option<Issuer>,
    user: UserId,
}

impl UserRef {
    /// A local account (`identity:CreateLocalUser`).
    pub fn local(user: UserId) -> UserRef {
        UserRef { mode: AccessMode::Local, issuer: None, user }
    }

    /// A user an application names in `CreateStreamingURL` or `CreateSessionToken`.
    pub fn custom(user: UserId) -> UserRef {
        UserRef { mode: AccessMode::Custom, issuer: None, user }
    }

    /// A user a SAML or OpenID Connect identity provider vouched for.
    pub fn federated(issuer: Issuer, user: UserId) -> UserRef {
        UserRef { mode: AccessMode::Federated, issuer: Some(issuer), user }
    }

    /// From stored columns: a federated user must have an issuer, the others must not.
    pub fn from_parts(mode: AccessMode, issuer: Option<&str>, user: &str) -> Result<UserRef, InvalidName> {
        let user = UserId::new(user)?;
        match (mode, issuer.filter(|i| !i.is_empty())) {
            (AccessMode::Federated, Some(issuer)) => Ok(UserRef::federated(Issuer::new(issuer)?, user)),
            (AccessMode::Federated, None) => {
                Err(InvalidName { what: "federated user", value: user.to_string(), reason: "names no identity provider".into() })
            }
            (AccessMode::Local, None) => Ok(UserRef::local(user)),
            (AccessMode::Custom, None) => Ok(UserRef::custom(user)),
            (_, Some(_)) => Err(InvalidName {
                what: "user",
                value: user.to_string(),
                reason: format!("is of access mode `{}`, which has no identity provider", mode.as_str()),
            }),
        }
    }

    pub fn mode(&self) -> AccessMode {
        self.mode
    }

    pub fn issuer(&self) -> Option<&Issuer> {
        self.issuer.as_ref()
    }

    /// The issuer as stored in a column: `None` unless federated.
    pub fn issuer_str(&self) -> Option<&str> {
        self.issuer.as_ref().map(Issuer::as_str)
    }

    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// A short, stable tag of the issuer for ARNs and ids: 16 hex digits of its SHA-256.
    fn issuer_tag(&self) -> Option<String> {
        self.issuer.as_ref().map(|issuer| hex::encode(Sha256::digest(issuer.as_str().as_bytes()))[..16].to_owned())
    }

    /// The user's ARN in audit records: `…:user/<mode>/<user>`, and for a federated user
    /// `…:user/federated/<issuer tag>/<user>`.
    pub fn arn(&self, account_id: &str) -> String {
        match self.issuer_tag() {
            Some(tag) => crate::arn::account_wide("identity", account_id, &format!("user/federated/{tag}/{}", self.user)),
            None => crate::arn::account_wide("identity", account_id, &format!("user/{}/{}", self.mode.as_str(), self.user)),
        }
    }

    /// The principal id in audit records: `<mode>:<user>` or `federated:<issuer tag>:<user>`.
    pub fn principal_id(&self) -> String {
        match self.issuer_tag() {
            Some(tag) => format!("federated:{tag}:{}", self.user),
            None => format!("{}:{}", self.mode.as_str(), self.user),
        }
    }

    /// The user's home folder.
    pub fn home(&self) -> HomeOwner {
        let hashed = match &self.issuer {
            Some(issuer) => format!("{}\n{}", issuer.as_str(), self.user.as_str()),
            None => self.user.as_str().to_owned(),
        };
        HomeOwner { mode: self.mode, user_hash: hex::encode(Sha256::digest(hashed.as_bytes())) }
    }

    /// The name of the user's own notebook: `nb-` and 32 hex digits of the SHA-256 of their
    /// home folder's id, which already covers mode, issuer and user.
    pub fn notebook_name(&self) -> String {
        format!("nb-{}", &hex::encode(Sha256::digest(format!("notebook\n{}", self.home().id()).as_bytes()))[..32])
    }
}

impl std::fmt::Display for UserRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.issuer {
            Some(issuer) => write!(f, "{} user `{}` of `{}`", self.mode.as_str(), self.user, issuer),
            None => write!(f, "{} user `{}`", self.mode.as_str(), self.user),
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
    /// The owner of `user`'s home folder: lower-case hex SHA-256 of the id in its original
    /// case (with the issuer before it, for a federated user).
    pub fn of(user: &UserRef) -> HomeOwner {
        user.home()
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
        let user = UserRef::custom(UserId::new("alice").expect("valid"));
        let owner = HomeOwner::of(&user);
        assert_eq!(owner.prefix(), "user/custom/2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90/");
        assert_eq!(HomeOwner::of_key(&format!("{}session.json", owner.prefix())), Some(owner.clone()));
        // The prefix itself (with its slash) lies in the folder; without the slash it does not.
        assert_eq!(HomeOwner::of_key(&owner.prefix()), Some(owner.clone()));
        assert_eq!(HomeOwner::of_key(owner.prefix().trim_end_matches('/')), None);
        assert_eq!(HomeOwner::of_key("user/custom/"), None);
        assert_eq!(HomeOwner::of_key("user/other/abc/x"), None);
    }

    #[test]
    fn attack_f04_one_name_in_different_modes_or_providers_is_different_people() {
        let bob = || UserId::new("bob").expect("valid");
        let issuer = |i: &str| Issuer::new(i).expect("valid");
        let people = [
            UserRef::local(bob()),
            UserRef::custom(bob()),
            UserRef::federated(issuer("https://idp.example/saml"), bob()),
            UserRef::federated(issuer("https://login.example/oidc"), bob()),
        ];
        for (i, a) in people.iter().enumerate() {
            for b in &people[i + 1..] {
                assert_ne!(a.home(), b.home(), "{a} and {b} share a home folder");
                assert_ne!(a.notebook_name(), b.notebook_name(), "{a} and {b} share a notebook");
                assert_ne!(a.arn("0"), b.arn("0"), "{a} and {b} share an ARN");
                assert_ne!(a.principal_id(), b.principal_id());
            }
        }
        // Local and custom folders stay AppStream's; a federated hash covers the issuer.
        assert_eq!(people[0].home().user_hash, hex::encode(Sha256::digest(b"bob")));
        assert_eq!(people[2].home().user_hash, hex::encode(Sha256::digest(b"https://idp.example/saml\nbob")));
        let tag = &hex::encode(Sha256::digest(b"https://idp.example/saml"))[..16];
        assert_eq!(people[2].arn("1"), format!("arn:datasandbox:identity::1:user/federated/{tag}/bob"));
        assert!(UserRef::from_parts(AccessMode::Federated, None, "bob").is_err(), "a federated user names their provider");
        assert!(UserRef::from_parts(AccessMode::Local, Some("x"), "bob").is_err());
        assert_eq!(UserRef::from_parts(AccessMode::Local, Some(""), "bob").expect("empty is none"), people[0]);
        assert!(Issuer::new("a\nb").is_err(), "no newline in an issuer");
    }
}
