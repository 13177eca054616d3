//! Local users for small sites (AppStream's user pool, access mode `local`): a password
//! hashed with argon2id, an optional TOTP second factor (RFC 6238: SHA-1, 6 digits, 30 s),
//! and guards against guessing — five failures in a row lock the account for 15 minutes, and
//! one address may fail at most 20 times a minute, whatever the accounts.
//!
//! Signing in is authentication (`Credentials::LocalUser`): the password never reaches an
//! action's input or a record. A failure says only that the name, password or code was not
//! accepted (an unknown name costs the same argon2 work as a known one), is audited with the
//! name tried, and counts toward the lock. A TOTP code is accepted once: the time step it
//! belongs to must be newer than the last one used. A token issued after a TOTP check carries
//! `mfa`, which reaches the audit record (`mfaAuthenticated`) and the policies (`principal.mfa`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::error::ActionError;
use crate::pipeline::{Ctx, Plane};
use crate::store::{millis_to_rfc3339, now_millis};

/// Consecutive failures that lock an account, and for how long.
pub(crate) const LOCK_AFTER: i64 = 5;
pub(crate) const LOCK_MILLIS: i64 = 15 * 60 * 1000;
/// Failed sign-ins one address may make per minute, across accounts.
const ADDRESS_FAILURES_PER_MINUTE: usize = 20;
const TOTP_STEP: u64 = 30;

/// Recent sign-in failures by source address (in memory: a restart forgets them, the
/// per-account lock is in the store).
#[derive(Default)]
pub(crate) struct Throttle(Mutex<HashMap<String, VecDeque<i64>>>);

impl Throttle {
    fn recent(&self, address: &str, now: i64) -> usize {
        let mut failures = self.0.lock().expect("throttle lock");
        // Addresses whose failures are all older than a minute are forgotten.
        failures.retain(|_, times| {
            while times.front().is_some_and(|t| *t <= now - 60_000) {
                times.pop_front();
            }
            !times.is_empty()
        });
        failures.get(address).map_or(0, VecDeque::len)
    }

    fn failed(&self, address: &str, now: i64) {
        self.0.lock().expect("throttle lock").entry(address.to_owned()).or_default().push_back(now);
    }
}

fn rejected() -> ActionError {
    ActionError::new(401, "NotAuthorizedException", "the user name, password or code is not valid")
}

fn hash(password: &str) -> Result<String, ActionError> {
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
}

/// Checks a local user's password (and TOTP code, once enrolled), counting failures.
pub(crate) async fn sign_in(
    plane: &Plane,
    user_name: &str,
    password: &str,
    code: Option<&str>,
    source_ip: &str,
) -> Result<SignedIn, ActionError> {
    let now = now_millis();
    if plane.identity_throttle.recent(source_ip, now) >= ADDRESS_FAILURES_PER_MINUTE {
        return Err(ActionError::new(429, "TooManyRequestsException", "too many failed sign-ins from this address; wait a minute"));
    }
    let row = sqlx::query("SELECT * FROM local_users WHERE user_name = $1").bind(user_name).fetch_optional(&plane.store.pool).await?;
    let fail = |plane: &Plane| plane.identity_throttle.failed(source_ip, now);
    let Some(row) = row else {
        let given = password.to_owned();
        let _ = tokio::task::spawn_blocking(move || verify(given, decoy())).await;
        fail(plane);
        return Err(rejected());
    };
    if let Some(until) = row.try_get::<Option<i64>, _>("locked_until")?.filter(|until| *until > now) {
        fail(plane);
        return Err(ActionError::new(
            403,
            "AccountLocked",
            format!(
                "the account is locked after {LOCK_AFTER} failed sign-ins; try again in {} s or ask an operator",
                (until - now) / 1000 + 1
            ),
        ));
    }
    let stored: String = row.try_get("password_hash")?;
    let given = password.to_owned();
    let password_ok = tokio::task::spawn_blocking(move || verify(given, stored)).await.map_err(ActionError::internal)?;
    let secret = match row.try_get::<Option<String>, _>("totp_secret")? {
        Some(wrapped) => Some(plane.keys.unwrap(&hex::decode(wrapped).map_err(ActionError::internal)?)?),
        None => None,
    };
    let step = match (&secret, code) {
        (Some(secret), Some(code)) => matching_step(secret, code, (now / 1000) as u64)?,
        _ => None,
    };
    let last_step: Option<i64> = row.try_get("totp_last_step")?;
    let second_factor_ok = match (&secret, step) {
        (None, _) => code.is_none(),
        (Some(_), Some(step)) => last_step.is_none_or(|last| step as i64 > last),
        (Some(_), None) => false,
    };
    if !(password_ok && second_factor_ok) {
        fail(plane);
        let failures: i64 = row.try_get::<i64, _>("failed_attempts")? + 1;
        let (failures, locked) = if failures >= LOCK_AFTER { (0, Some(now + LOCK_MILLIS)) } else { (failures, None) };
        sqlx::query("UPDATE local_users SET failed_attempts = $1, locked_until = $2 WHERE user_name = $3")
            .bind(failures)
            .bind(locked)
            .bind(user_name)
            .execute(&plane.store.pool)
            .await?;
        // A missing code for an enrolled user is said plainly: the password was not the issue.
        if password_ok && secret.is_some() && code.is_none() {
            return Err(ActionError::new(401, "MfaCodeRequired", "this account has TOTP enrolled: send TotpCode with the password"));
        }
        return Err(rejected());
    }
    sqlx::query("UPDATE local_users SET failed_attempts = 0, locked_until = NULL, totp_last_step = $1 WHERE user_name = $2")
        .bind(step.map(|s| s as i64).or(last_step))
        .bind(user_name)
        .execute(&plane.store.pool)
        .await?;
    let roles: String = row.try_get("roles")?;
    Ok(SignedIn {
        user_name: user_name.to_owned(),
        roles: roles.split(',').filter(|r| !r.is_empty()).map(str::to_owned).collect(),
        mfa: secret.is_some(),
    })
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
pub(crate) async fn create(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CreateInput = ctx.parse(input)?;
    let length = input.password.chars().count();
    if !(12..=256).contains(&length) {
        return Err(ActionError::validation(format!("Password must be 12..=256 characters, not {length}")));
    }
    if let Some(bad) = input.roles.iter().find(|r| r.is_empty() || r.contains(',') || r.len() > 64) {
        return Err(ActionError::validation(format!("role `{bad}` must be 1..=64 characters without `,`")));
    }
    ctx.authorize(policy::Resource::Service("identity".into()))?;
    let password = input.password.clone();
    let hashed = tokio::task::spawn_blocking(move || hash(&password)).await.map_err(ActionError::internal)??;
    let created = now_millis();
    let inserted = sqlx::query(
        "INSERT INTO local_users (user_name, password_hash, roles, failed_attempts, created) VALUES ($1, $2, $3, 0, $4) ON CONFLICT (user_name) DO NOTHING",
    )
    .bind(input.user_name.as_str())
    .bind(&hashed)
    .bind(input.roles.join(","))
    .bind(created)
    .execute(&ctx.plane.store.pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ActionError::conflict("UsernameExistsException", format!("local user `{}` already exists", input.user_name)));
    }
    Ok(json!({ "UserName": input.user_name, "CreatedTime": millis_to_rfc3339(created), "Roles": input.roles }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NameInput {
    user_name: model::UserId,
}

/// `identity:DeleteLocalUser` (operators).
pub(crate) async fn delete(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    ctx.authorize(policy::Resource::Service("identity".into()))?;
    let deleted =
        sqlx::query("DELETE FROM local_users WHERE user_name = $1").bind(input.user_name.as_str()).execute(&ctx.plane.store.pool).await?;
    if deleted.rows_affected() == 0 {
        return Err(ActionError::not_found("UserNotFoundException", format!("no local user `{}`", input.user_name)));
    }
    Ok(json!({}))
}

/// `identity:UnlockLocalUser` (operators): clears a lock and the failure count.
pub(crate) async fn unlock(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: NameInput = ctx.parse(input)?;
    ctx.authorize(policy::Resource::Service("identity".into()))?;
    let updated = sqlx::query("UPDATE local_users SET failed_attempts = 0, locked_until = NULL WHERE user_name = $1")
        .bind(input.user_name.as_str())
        .execute(&ctx.plane.store.pool)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(ActionError::not_found("UserNotFoundException", format!("no local user `{}`", input.user_name)));
    }
    Ok(json!({}))
}

/// The local user a caller is, from a token `identity:SignIn` issued.
fn caller_local_user(ctx: &Ctx<'_>) -> Result<String, ActionError> {
    match &ctx.caller.principal {
        policy::Principal::User { id, access_mode, .. } if access_mode == "local" => Ok(id.clone()),
        _ => Err(ActionError::validation("only a signed-in local user enrolls a TOTP device (sign in with identity:SignIn)")),
    }
}

/// `identity:AssociateSoftwareToken` (the user, signed in): a new TOTP secret, pending until
/// a code from it is verified. Cognito's name for it.
pub(crate) async fn associate(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: super::Empty = ctx.parse(input)?;
    let user = caller_local_user(ctx)?;
    ctx.authorize_always();
    let mut secret = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let wrapped = hex::encode(ctx.plane.keys.wrap(&secret));
    sqlx::query("UPDATE local_users SET totp_pending = $1 WHERE user_name = $2")
        .bind(&wrapped)
        .bind(&user)
        .execute(&ctx.plane.store.pool)
        .await?;
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
    let plane = ctx.plane;
    let row = sqlx::query("SELECT totp_pending FROM local_users WHERE user_name = $1").bind(&user).fetch_one(&plane.store.pool).await?;
    let pending: String = row
        .try_get::<Option<String>, _>("totp_pending")?
        .ok_or_else(|| ActionError::validation("no TOTP device is being enrolled; call identity:AssociateSoftwareToken first"))?;
    let secret = plane.keys.unwrap(&hex::decode(&pending).map_err(ActionError::internal)?)?;
    let step = matching_step(&secret, input.user_code.trim(), (now_millis() / 1000) as u64)?.ok_or_else(|| {
        ActionError::new(400, "CodeMismatchException", "the code does not match the new TOTP secret; check the device's clock")
    })?;
    sqlx::query("UPDATE local_users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $1 WHERE user_name = $2")
        .bind(step as i64)
        .bind(&user)
        .execute(&plane.store.pool)
        .await?;
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
    fn passwords_hash_with_argon2id_and_verify() {
        let stored = hash("correct horse battery").expect("hash");
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse battery".into(), stored.clone()));
        assert!(!verify("correct horse battery!".into(), stored));
        assert!(decoy().starts_with("$argon2id$") && !verify(String::new(), decoy()), "the decoy is real work and matches nothing");
    }
}
