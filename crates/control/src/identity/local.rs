//! Local users for small sites (AppStream's user pool, access mode `local`): a password
//! hashed with argon2id, an optional TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s),
//! and guards against guessing that a stranger cannot turn against the account's owner.
//!
//! Signing in is authentication (`Credentials::LocalUser`): the password never reaches an
//! action's input or a record. Every refusal is the same answer (`NotAuthorizedException`,
//! one message) whatever was wrong — unknown name, wrong password, missing or wrong code — and
//! costs the same argon2 work, so that it tells nothing about the account: not whether it
//! exists, and not whether the password was right when the code was missing. A TOTP code is
//! accepted once: the time step it belongs to must be newer than the last one used. A token
//! issued after a TOTP check carries `mfa`, which reaches the audit record
//! (`mfaAuthenticated`) and the policies (`principal.mfa`).
//!
//! Guessing is slowed per source, never per account: an account lock would let anyone lock
//! anyone out. Each attempt takes its slot in the address's budget *before* the password is
//! checked (so that concurrent attempts cannot all slip under the limit), and counts as a
//! failure unless it succeeds. An address may fail at most 20 times a minute across accounts
//! and run 2 checks at once; after 5 failures on one account, that address waits 2^(n-5)
//! seconds (at most 15 minutes) between tries on that account. Argon2 (19 MiB each) runs at
//! most `ARGON2_PARALLEL` at a time on the whole host.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::lookups::SessionLookup;
use super::repo;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::core::clock::Clock;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

/// Failed sign-ins one address may make per minute, across accounts.
const ADDRESS_FAILURES_PER_MINUTE: usize = 20;
/// Password checks one address may have under way at once.
const ADDRESS_IN_FLIGHT: usize = 2;
/// Failures on one account from one address before that address must wait between tries.
const FREE_FAILURES: usize = 5;
/// The longest wait, and how long failures on an account are remembered.
const MAX_BACKOFF_MILLIS: i64 = 15 * 60 * 1000;
/// Argon2 verifications under way at once, host-wide.
const ARGON2_PARALLEL: usize = 4;
/// Accounts tracked per source before the oldest are forgotten: the memory an attacker with
/// many addresses can make the throttle hold is bounded.
const TRACKED_ACCOUNTS: usize = 50_000;
const TOTP_STEP: u64 = 30;
/// Wrong codes with the right password, from any address, before the account refuses every
/// sign-in for `SECOND_FACTOR_LOCK_MILLIS` (and after each further one). Only someone who
/// holds the password can cause it, so no stranger locks anyone out; with it, guessing the
/// code from many addresses gets a handful of tries a quarter hour, not a hundred a second.
const SECOND_FACTOR_FAILURES: i64 = 10;
const SECOND_FACTOR_LOCK_MILLIS: i64 = 15 * 60 * 1000;
/// How long a sign-in waits for its turn at argon2 before it is told to try again.
const ARGON2_QUEUE_MILLIS: u64 = 10_000;

/// Sign-in budgets by source (in memory: a restart forgets them) and the host-wide argon2 gate.
pub(crate) struct Throttle {
    /// When a failure happened and when its wait ends are read from one clock.
    clock: Clock,
    sources: Mutex<Sources>,
    argon2: tokio::sync::Semaphore,
}

#[derive(Default)]
struct Sources {
    /// Failure times by address (the last minute's).
    failures: HashMap<String, VecDeque<i64>>,
    /// Checks under way by address.
    in_flight: HashMap<String, usize>,
    /// Failure times by (address, account), within `MAX_BACKOFF_MILLIS`.
    per_account: HashMap<(String, String), VecDeque<i64>>,
}

impl Throttle {
    /// A throttle that reads the time from `clock`.
    pub(crate) fn new(clock: Clock) -> Throttle {
        Throttle { clock, sources: Mutex::new(Sources::default()), argon2: tokio::sync::Semaphore::new(ARGON2_PARALLEL) }
    }
}

/// How long an address waits after `failures` recent failures on one account.
fn backoff_millis(failures: usize) -> i64 {
    if failures < FREE_FAILURES {
        return 0;
    }
    let exponent = (failures - FREE_FAILURES).min(20) as u32;
    (1000i64 << exponent).min(MAX_BACKOFF_MILLIS)
}

/// An attempt's place in its address's budget, taken before the password is checked. It
/// counts as a failure unless `succeeded` is called.
pub(crate) struct Attempt<'a> {
    throttle: &'a Throttle,
    address: String,
    account: String,
    succeeded: bool,
}

impl Throttle {
    /// Takes a slot for a sign-in attempt on `account` from `address`, or says how long to wait.
    pub(crate) fn begin(&self, address: &str, account: &str) -> Result<Attempt<'_>, ActionError> {
        let now = self.clock.now_millis();
        let address = &source_of(address);
        let mut sources = self.sources.lock().expect("throttle lock");
        let Sources { failures, in_flight, per_account } = &mut *sources;
        // What has aged out is forgotten, so that the maps stay as small as the recent traffic.
        failures.retain(|_, times| {
            while times.front().is_some_and(|t| *t <= now - 60_000) {
                times.pop_front();
            }
            !times.is_empty()
        });
        per_account.retain(|_, times| {
            while times.front().is_some_and(|t| *t <= now - MAX_BACKOFF_MILLIS) {
                times.pop_front();
            }
            !times.is_empty()
        });
        if per_account.len() > TRACKED_ACCOUNTS {
            // Under a flood from very many sources: keep the last minute's, then nothing.
            per_account.retain(|_, times| times.back().is_some_and(|t| *t > now - 60_000));
            if per_account.len() > TRACKED_ACCOUNTS {
                per_account.clear();
            }
        }
        let busy = in_flight.get(address).copied().unwrap_or(0);
        let recent = failures.get(address).map_or(0, VecDeque::len);
        if recent + busy >= ADDRESS_FAILURES_PER_MINUTE {
            return Err(too_many("too many failed sign-ins from this address; wait a minute"));
        }
        if busy >= ADDRESS_IN_FLIGHT {
            return Err(too_many("sign-ins from this address are already being checked; wait for their answer"));
        }
        let key = (address.to_owned(), account.to_owned());
        if let Some(times) = per_account.get(&key) {
            let wait = times.back().map_or(0, |last| last + backoff_millis(times.len() + busy) - now);
            if wait > 0 {
                return Err(too_many(&format!("too many failed sign-ins to this account from this address; wait {} s", wait / 1000 + 1)));
            }
        }
        *in_flight.entry(address.to_owned()).or_default() += 1;
        Ok(Attempt { throttle: self, address: address.to_owned(), account: account.to_owned(), succeeded: false })
    }

    /// Forgets the failures on `account` from every address (`identity:UnlockLocalUser`).
    fn forget(&self, account: &str) {
        self.sources.lock().expect("throttle lock").per_account.retain(|(_, name), _| name != account);
    }

    /// Runs an argon2 computation through the host-wide gate, off the async runtime.
    pub(super) async fn argon2<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ActionError> {
        // Under a flood every sign-in would queue behind it, however long; past a bound it
        // is told to come back.
        let permit = tokio::time::timeout(std::time::Duration::from_millis(ARGON2_QUEUE_MILLIS), self.argon2.acquire()).await;
        let _permit = permit
            .map_err(|_| too_many("the server is busy checking sign-ins; try again in a few seconds"))?
            .map_err(ActionError::internal)?;
        tokio::task::spawn_blocking(work).await.map_err(ActionError::internal)
    }
}

impl Attempt<'_> {
    pub(crate) fn succeeded(mut self) {
        self.succeeded = true;
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let now = self.throttle.clock.now_millis();
        let mut sources = self.throttle.sources.lock().expect("throttle lock");
        if let Some(busy) = sources.in_flight.get_mut(&self.address) {
            *busy = busy.saturating_sub(1);
            if *busy == 0 {
                sources.in_flight.remove(&self.address);
            }
        }
        if !self.succeeded {
            sources.failures.entry(self.address.clone()).or_default().push_back(now);
            sources.per_account.entry((self.address.clone(), self.account.clone())).or_default().push_back(now);
        }
    }
}

/// The source a budget belongs to: an IPv4 address, or an IPv6 address's /64 (one host
/// usually holds a whole /64, so its addresses are one source).
fn source_of(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or_else(|| address.to_owned(), |v4| v4.to_string()),
        _ => address.to_owned(),
    }
}

fn too_many(message: &str) -> ActionError {
    ActionError::new(429, ErrorCode::TooManyRequestsException, message.to_owned())
}

fn rejected() -> ActionError {
    ActionError::new(401, ErrorCode::NotAuthorizedException, "the user name, password or code is not valid")
}

pub(super) fn hash(password: &str) -> Result<String, ActionError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(ActionError::internal)?;
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(ActionError::internal)
}

/// A hash of a random password, verified for unknown names so that they cost the same
/// argon2 work as known ones.
fn decoy() -> String {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY
        .get_or_init(|| {
            let mut random = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut random);
            hash(&hex::encode(random)).unwrap_or_default()
        })
        .clone()
}

fn verify(password: String, stored: String) -> bool {
    let Ok(parsed) = PasswordHash::new(&stored) else { return false };
    argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

fn totp(secret: &[u8]) -> Result<totp_rs::TOTP, ActionError> {
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, TOTP_STEP, secret.to_vec()).map_err(ActionError::internal)
}

/// The time step `code` belongs to among the current one and its neighbours, if any.
fn matching_step(secret: &[u8], code: &str, now_seconds: u64) -> Result<Option<u64>, ActionError> {
    let totp = totp(secret)?;
    let step = now_seconds / TOTP_STEP;
    Ok([step.saturating_sub(1), step, step + 1].into_iter().find(|s| totp.generate(s * TOTP_STEP) == code))
}

/// What a successful sign-in proved.
pub(crate) struct SignedIn {
    pub user_name: String,
    pub roles: Vec<String>,
    pub mfa: bool,
    /// The generation of the credentials proved: the token made for this sign-in acts only
    /// while the user still has it.
    pub credential_epoch: i64,
}

/// Checks a local user's password (and TOTP code, once enrolled), within the source's budget.
pub(crate) async fn sign_in(
    plane: &Platform,
    throttle: &Throttle,
    user_name: &str,
    password: &str,
    code: Option<&str>,
    source_ip: &str,
) -> Result<SignedIn, ActionError> {
    let now = now_millis();
    // The slot is taken before any work: a refusal from here on counts as a failure.
    let attempt = throttle.begin(source_ip, user_name)?;
    // No user's name holds a NUL (and PostgreSQL's text cannot): answered as an unknown name.
    let row = if user_name.contains('\0') { None } else { repo::find_local_user(&plane.store, user_name).await? };
    let given = password.to_owned();
    let Some(row) = row else {
        // The same work, and the same answer when argon2 is too busy, as for a known name.
        throttle.argon2(move || verify(given, decoy())).await?;
        return Err(rejected());
    };
    let stored = row.password_hash;
    let password_ok = throttle.argon2(move || verify(given, stored)).await?;
    let secret = match row.totp_secret {
        Some(wrapped) => Some(plane.keys.unwrap(&hex::decode(wrapped).map_err(ActionError::internal)?)?),
        None => None,
    };
    let step = match (&secret, code) {
        (Some(secret), Some(code)) => matching_step(secret, code, (now / 1000) as u64)?,
        _ => None,
    };
    let last_step = row.totp_last_step;
    let second_factor_ok = match (&secret, step) {
        (None, _) => code.is_none(),
        (Some(_), Some(step)) => last_step.is_none_or(|last| step as i64 > last),
        (Some(_), None) => false,
    };
    // One answer for every failure: a missing code is not told apart from a wrong password,
    // or the answer would confirm the password to whoever lacks the code; nor is a locked
    // account told apart.
    let locked = row.locked_until.is_some_and(|until| until > now);
    if password_ok && secret.is_some() && !second_factor_ok && !locked {
        second_factor_failed(plane, user_name, source_ip, now).await?;
    }
    if locked || !(password_ok && second_factor_ok) {
        return Err(rejected());
    }
    // The step is taken only if no other sign-in took it (or a later one) meanwhile.
    let steps = (step.map(|s| s as i64).or(last_step), step.is_some());
    if !repo::take_sign_in(&plane.store, user_name, steps, row.credential_epoch, now).await? {
        return Err(rejected());
    }
    attempt.succeeded();
    let roles = row.roles;
    Ok(SignedIn {
        user_name: user_name.to_owned(),
        roles: roles.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect(),
        mfa: secret.is_some(),
        credential_epoch: row.credential_epoch,
    })
}

/// Counts a wrong code that came with the right password; when it locks the account, the
/// trail says so (`LocalUserLocked`), for the operator to act on: the password is known to
/// someone trying codes.
async fn second_factor_failed(plane: &Platform, user_name: &str, source_ip: &str, now: i64) -> Result<(), ActionError> {
    let until = now + SECOND_FACTOR_LOCK_MILLIS;
    if repo::second_factor_failed(&plane.store, user_name, SECOND_FACTOR_FAILURES, until).await? {
        let event = crate::core::platform::ServiceEvent {
            source: "identity",
            name: "LocalUserLocked",
            principal: "identity.datasandbox",
            parameters: json!({
                "UserName": user_name,
                "Reason": "the right password came with a wrong or missing second-factor code too often: unlock, and have the user change their password at once",
                "LockedUntil": millis_to_rfc3339(until),
            }),
            source_ip: Some(source_ip.to_owned()),
            effect: crate::core::platform::Effect::Recorded,
            ..crate::core::platform::ServiceEvent::default()
        };
        plane.record_service_event(event).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateInput {
    user_name: model::UserId,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// `identity:CreateLocalUser` (operators): a user of the `local` access mode.
pub(crate) async fn create(throttle: &Throttle, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateInput = ctx.parse(input)?;
    check_password("Password", &input.password)?;
    if let Some(bad) = input.roles.iter().find(|r| r.is_empty() || r.contains(',') || r.len() > 64) {
        return Err(ActionError::validation(format!("role `{bad}` must be 1..=64 characters without `,`")));
    }
    ctx.authorize(policy::Resource::Service("identity".into()))?;
    let password = input.password.clone();
    let hashed = throttle.argon2(move || hash(&password)).await??;
    let created = now_millis();
    let name = &input.user_name;
    match repo::insert_local_user(&ctx.platform.store, name.as_str(), &hashed, &input.roles.join(","), created).await? {
        Ok(()) => {}
        Err(repo::NameTaken::InUse) => {
            return Err(ActionError::conflict(ErrorCode::UsernameExistsException, format!("local user `{name}` already exists")));
        }
        Err(repo::NameTaken::Retired(at)) => {
            return Err(ActionError::conflict(
                ErrorCode::UsernameExistsException,
                format!(
                    "user name `{name}` belonged to a local user deleted at {}: their home folder, airlock requests and exports are filed under it, so it is not given to anyone again; choose another name",
                    millis_to_rfc3339(at)
                ),
            ));
        }
    }
    Ok(json!({ "UserName": input.user_name, "CreatedTime": millis_to_rfc3339(created), "Roles": input.roles }))
}

pub(super) fn check_password(member: &str, password: &str) -> Result<(), ActionError> {
    let length = password.chars().count();
    if (12..=256).contains(&length) {
        Ok(())
    } else {
        Err(ActionError::validation(format!("{member} must be 12..=256 characters, not {length}")))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NameInput {
    user_name: model::UserId,
}

/// `identity:DeleteLocalUser` (operators): the user, their sign-ins and their streaming
/// sessions end together (a session's cookie and its instance's credential act as the user
/// until it ends), and their name is retired.
pub(crate) async fn delete(sessions: &dyn SessionLookup, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    ctx.authorize(policy::Resource::Service("identity".into()))?;
    let name = input.user_name.as_str();
    if !repo::delete_local_user(&ctx.platform.store, name, now_millis()).await? {
        return Err(ActionError::not_found(ErrorCode::UserNotFoundException, format!("no local user `{name}`")));
    }
    let ended = sessions.end_sessions_of_local_user(name, "USER_DELETED").await.map_err(|err| {
        ActionError::internal(format_args!(
            "local user `{name}` is deleted, but their streaming sessions could not all be ended ({err}); end them with streaming:ExpireSession"
        ))
    })?;
    Ok(json!({ "EndedSessions": ended }))
}

/// Whether a local user of this name exists now (a streaming URL made for one that is deleted
/// since opens nothing).
pub(crate) async fn exists(store: &crate::core::store::Store, user_name: &str) -> Result<bool, ActionError> {
    Ok(repo::local_user_exists(store, user_name).await?)
}

/// `identity:UnlockLocalUser` (operators): forgets the failures on the account, so that no
/// address has to wait before trying it again.
pub(crate) async fn unlock(throttle: &Throttle, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    ctx.authorize(policy::Resource::Service("identity".into()))?;
    if !repo::unlock_local_user(&ctx.platform.store, input.user_name.as_str()).await? {
        return Err(ActionError::not_found(ErrorCode::UserNotFoundException, format!("no local user `{}`", input.user_name)));
    }
    throttle.forget(input.user_name.as_str());
    Ok(json!({}))
}

/// The local user a caller is, from a token `identity:SignIn` issued (never an instance's,
/// a session's or a link's credential, which act for the user but are not their sign-in).
pub(super) fn caller_local_user(ctx: &Ctx<'_>) -> Result<String, ActionError> {
    match &ctx.caller.principal {
        policy::Principal::User { user, channel: policy::Channel::Bearer, .. } if user.mode() == model::AccessMode::Local => {
            Ok(user.user().to_string())
        }
        _ => Err(ActionError::validation(
            "only a signed-in local user enrolls a TOTP device or changes their password (sign in with identity:SignIn)",
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct AssociateInput {
    /// The account's password: a token alone (which may have been taken) does not choose the
    /// account's second factor.
    #[serde(default)]
    password: Option<String>,
    /// A current code of the device enrolled now, when there is one: replacing a device takes
    /// the old one.
    #[serde(default)]
    totp_code: Option<String>,
}

/// `identity:AssociateSoftwareToken` (the user, signed in, proving the password again and,
/// when a device is enrolled, a current code from it): a new TOTP secret, pending until a code
/// from it is verified. Cognito's name for it.
pub(crate) async fn associate(throttle: &Throttle, ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: AssociateInput = ctx.parse(input)?;
    let user = caller_local_user(ctx)?;
    let Some(password) = input.password.filter(|p| !p.is_empty()) else {
        return Err(ActionError::validation(
            "enrolling a TOTP device needs the account's Password (and TotpCode, a current code of the device enrolled now, if any)",
        ));
    };
    ctx.authorize_always();
    let code = input.totp_code.as_deref().map(str::trim).filter(|c| !c.is_empty());
    // The same check, budget and answer as a sign-in: this is one.
    sign_in(ctx.platform, throttle, &user, &password, code, ctx.source_ip).await?;
    let mut secret = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let wrapped = hex::encode(ctx.platform.keys.wrap(&secret));
    repo::set_totp_pending(&ctx.platform.store, &user, &wrapped).await?;
    let encoded = totp_rs::Secret::Raw(secret.to_vec()).to_encoded().to_string();
    let uri = format!("otpauth://totp/DataSandbox:{user}?secret={encoded}&issuer=DataSandbox&algorithm=SHA1&digits=6&period=30");
    Ok(json!({ "SecretCode": encoded, "OtpauthUri": uri }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct VerifyInput {
    user_code: String,
}

/// `identity:VerifySoftwareToken` (the user, signed in): a code from the pending secret makes
/// it the account's second factor; from then on signing in needs a code.
pub(crate) async fn verify_token(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: VerifyInput = ctx.parse(input)?;
    let user = caller_local_user(ctx)?;
    ctx.authorize_always();
    let plane = ctx.platform;
    let pending: String = repo::totp_pending(&plane.store, &user)
        .await?
        .ok_or_else(|| ActionError::validation("no TOTP device is being enrolled; call identity:AssociateSoftwareToken first"))?;
    let secret = plane.keys.unwrap(&hex::decode(&pending).map_err(ActionError::internal)?)?;
    let step = matching_step(&secret, input.user_code.trim(), (now_millis() / 1000) as u64)?.ok_or_else(|| {
        ActionError::new(400, ErrorCode::CodeMismatchException, "the code does not match the new TOTP secret; check the device's clock")
    })?;
    repo::confirm_totp(&plane.store, &user, step as i64).await?;
    Ok(json!({ "Status": "SUCCESS" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_matches_rfc_6238_and_its_neighbouring_steps_only() {
        // RFC 6238's SHA-1 test secret and vectors (the last six digits of the 8-digit codes).
        let secret = b"12345678901234567890";
        assert_eq!(matching_step(secret, "287082", 59).expect("totp"), Some(1));
        assert_eq!(matching_step(secret, "081804", 1_111_111_109).expect("totp"), Some(37_037_036));
        assert_eq!(matching_step(secret, "287082", 59 + 30 * 3).expect("totp"), None, "three steps later it is stale");
        assert_eq!(matching_step(secret, "000000", 59).expect("totp"), None);
    }

    #[test]
    fn guessing_waits_per_source_and_the_slot_is_taken_before_the_work() {
        let clock = Clock::manual(1_800_000_000_000);
        let throttle = Throttle::new(clock.clone());
        // Five failures on dave from one address: that address waits, another does not.
        for _ in 0..FREE_FAILURES {
            drop(throttle.begin("192.0.2.1", "dave").expect("a slot"));
        }
        assert_eq!(throttle.begin("192.0.2.1", "dave").err().map(|e| e.code), Some(ErrorCode::TooManyRequestsException));
        throttle.begin("192.0.2.2", "dave").expect("the owner's address is not held up").succeeded();
        // The wait doubles and ends.
        clock.advance(5_000);
        assert!(throttle.begin("192.0.2.1", "dave").is_ok());
        // Two checks at once per address: a third is turned away before any work.
        let first = throttle.begin("192.0.2.3", "a1").expect("a slot");
        let second = throttle.begin("192.0.2.3", "a2").expect("a slot");
        assert!(throttle.begin("192.0.2.3", "a3").is_err());
        drop((first, second));
        // One IPv6 /64 is one source.
        let held = [throttle.begin("2001:db8::1", "x1").expect("slot"), throttle.begin("2001:db8::2", "x2").expect("slot")];
        assert!(throttle.begin("2001:db8::3", "x3").is_err());
        drop(held);
        // An operator's unlock forgets the account's failures everywhere.
        throttle.forget("dave");
        clock.advance(1);
        assert!(throttle.begin("192.0.2.1", "dave").is_ok());
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let stored = hash("correct horse battery").expect("hash");
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse battery".into(), stored.clone()));
        assert!(!verify("correct horse battery!".into(), stored));
        assert!(decoy().starts_with("$argon2id$") && !verify(String::new(), decoy()), "the decoy is real work and matches nothing");
    }
}
