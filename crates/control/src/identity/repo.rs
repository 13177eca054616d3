//! The identity service's tables: `tokens` (by their hash only), `local_users`, and
//! `federation_replay` (the SAML assertions and OIDC states already used). The SQL and the
//! reading of rows stay here; the service sees typed rows.

use sqlx::Row;

use crate::core::store::{Store, now_millis};

crate::core::codec::stored_as_text! {
    /// How a token was issued (`tokens.channel`): by an operator (`identity:CreateSessionToken`)
    /// or by a sign-in.
    pub(super) enum TokenChannel {
        Issued = "issued",
        SignIn = "sign-in",
    }
}

/// A stored token: who it is for, as the columns hold it.
pub(super) struct TokenRow {
    pub user_id: String,
    pub access_mode: String,
    pub issuer: Option<String>,
    /// None for a row from before the column, or a value this build does not know.
    pub channel: Option<TokenChannel>,
    /// Comma-separated.
    pub roles: String,
    pub correlation_id: String,
    pub created: i64,
    pub expires: i64,
    pub mfa: bool,
}

/// The token whose SHA-256 is `token_hash`, if one was issued.
pub(super) async fn find_token(store: &Store, token_hash: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT user_id, access_mode, issuer, channel, roles, correlation_id, created, expires, mfa FROM tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&store.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(TokenRow {
        user_id: row.try_get("user_id")?,
        access_mode: row.try_get("access_mode")?,
        issuer: row.try_get("issuer")?,
        channel: row.try_get::<Option<String>, _>("channel")?.as_deref().and_then(TokenChannel::parse),
        roles: row.try_get("roles")?,
        correlation_id: row.try_get("correlation_id")?,
        created: row.try_get("created")?,
        expires: row.try_get("expires")?,
        mfa: row.try_get::<Option<i64>, _>("mfa")?.unwrap_or(0) == 1,
    }))
}

/// Deletes the token `token_hash` if it is `user`'s; whether it was.
pub(super) async fn delete_token_of(store: &Store, token_hash: &str, user: &model::UserRef) -> Result<bool, sqlx::Error> {
    let deleted =
        sqlx::query("DELETE FROM tokens WHERE token_hash = $1 AND user_id = $2 AND access_mode = $3 AND COALESCE(issuer, '') = $4")
            .bind(token_hash)
            .bind(user.user().as_str())
            .bind(user.mode().as_str())
            .bind(user.issuer_str().unwrap_or_default())
            .execute(&store.pool)
            .await?;
    Ok(deleted.rows_affected() != 0)
}

/// Stores a new token by its hash; false, storing nothing, for a local user who no longer
/// exists (a sign-in that checked the user before `DeleteLocalUser` committed stored its
/// token after it, and the deleted user's token held: review finding).
pub(super) async fn insert_token(store: &Store, token_hash: &str, token: &TokenRow) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO tokens (token_hash, user_id, access_mode, roles, correlation_id, created, expires, mfa, issuer, channel)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
         WHERE $3 <> 'local' OR EXISTS (SELECT 1 FROM local_users WHERE user_name = $2)",
    )
    .bind(token_hash)
    .bind(&token.user_id)
    .bind(&token.access_mode)
    .bind(&token.roles)
    .bind(&token.correlation_id)
    .bind(token.created)
    .bind(token.expires)
    .bind(i64::from(token.mfa))
    .bind(&token.issuer)
    .bind(token.channel.map(TokenChannel::as_str))
    .execute(&store.pool)
    .await?;
    Ok(inserted.rows_affected() != 0)
}

/// What a sign-in checks of a local user.
pub(super) struct LocalUserRow {
    pub password_hash: String,
    /// Wrapped with the server's key, hex.
    pub totp_secret: Option<String>,
    pub totp_last_step: Option<i64>,
    /// Comma-separated.
    pub roles: String,
    /// Until when (milliseconds) the account refuses every sign-in: its second factor failed
    /// too often with the right password.
    pub locked_until: Option<i64>,
}

pub(super) async fn find_local_user(store: &Store, user_name: &str) -> Result<Option<LocalUserRow>, sqlx::Error> {
    let row = sqlx::query("SELECT * FROM local_users WHERE user_name = $1").bind(user_name).fetch_optional(&store.pool).await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(LocalUserRow {
        password_hash: row.try_get("password_hash")?,
        totp_secret: row.try_get("totp_secret")?,
        totp_last_step: row.try_get("totp_last_step")?,
        roles: row.try_get("roles")?,
        locked_until: row.try_get("locked_until")?,
    }))
}

/// The right password came with a wrong or missing code: one more failure on the account,
/// which is locked until `lock_until` once there are `most` of them since its last sign-in.
/// Whether this failure locked it.
pub(super) async fn second_factor_failed(store: &Store, user_name: &str, most: i64, lock_until: i64) -> Result<bool, sqlx::Error> {
    let failures: Option<i64> = sqlx::query_scalar(
        "UPDATE local_users SET failed_attempts = failed_attempts + 1,
             locked_until = CASE WHEN failed_attempts + 1 >= $2 THEN $3 ELSE locked_until END
         WHERE user_name = $1 RETURNING failed_attempts",
    )
    .bind(user_name)
    .bind(most)
    .bind(lock_until)
    .fetch_optional(&store.pool)
    .await?;
    Ok(failures.is_some_and(|n| n >= most))
}

/// A successful sign-in: the failures are forgotten and the TOTP step (when one was proved,
/// `step_proved`) is taken, unless another sign-in took it or a later one meanwhile. False
/// if it was.
pub(super) async fn take_sign_in(store: &Store, user_name: &str, last_step: Option<i64>, step_proved: bool) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE local_users SET failed_attempts = 0, locked_until = NULL, totp_last_step = $1
         WHERE user_name = $2 AND ($3 = 0 OR totp_last_step IS NULL OR totp_last_step < $1)",
    )
    .bind(last_step)
    .bind(user_name)
    .bind(i64::from(step_proved))
    .execute(&store.pool)
    .await?;
    Ok(taken.rows_affected() != 0)
}

/// Why a name could not be given to a new local user.
pub(super) enum NameTaken {
    /// A local user has it.
    InUse,
    /// A deleted local user had it, at this time (milliseconds): what they owned is filed under it.
    Retired(i64),
}

/// A new local user, unless the name is in use or retired.
pub(super) async fn insert_local_user(
    store: &Store,
    user_name: &str,
    password_hash: &str,
    roles: &str,
    created: i64,
) -> Result<Result<(), NameTaken>, sqlx::Error> {
    // `WHERE NOT EXISTS` also keeps SQLite from reading `ON CONFLICT` as a join's.
    let inserted = sqlx::query(
        "INSERT INTO local_users (user_name, password_hash, roles, failed_attempts, created)
         SELECT $1, $2, $3, 0, $4 WHERE NOT EXISTS (SELECT 1 FROM retired_user_names WHERE user_name = $1)
         ON CONFLICT (user_name) DO NOTHING",
    )
    .bind(user_name)
    .bind(password_hash)
    .bind(roles)
    .bind(created)
    .execute(&store.pool)
    .await?;
    if inserted.rows_affected() != 0 {
        return Ok(Ok(()));
    }
    let retired: Option<i64> = sqlx::query_scalar("SELECT retired FROM retired_user_names WHERE user_name = $1")
        .bind(user_name)
        .fetch_optional(&store.pool)
        .await?;
    Ok(Err(retired.map_or(NameTaken::InUse, NameTaken::Retired)))
}

/// False if there was no such user. Every token issued for the user goes with them: a token
/// names its user and roles by itself, so a deleted user's sign-in (with its roles, an
/// admin's among them) held for up to 12 hours, and passed for a new user of the same name
/// (review finding).
/// The name is retired with the user (see `retired_user_names`).
pub(super) async fn delete_local_user(store: &Store, user_name: &str, now: i64) -> Result<bool, sqlx::Error> {
    let mut tx = store.pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM local_users WHERE user_name = $1").bind(user_name).execute(&mut *tx).await?;
    if deleted.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND access_mode = 'local'").bind(user_name).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO retired_user_names (user_name, retired) VALUES ($1, $2) ON CONFLICT (user_name) DO NOTHING")
        .bind(user_name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// A local user's new password hash; every token of theirs ends with the old password.
/// False if there is no such user.
pub(super) async fn set_password(store: &Store, user_name: &str, password_hash: &str) -> Result<bool, sqlx::Error> {
    let mut tx = store.pool.begin().await?;
    let updated = sqlx::query("UPDATE local_users SET password_hash = $1 WHERE user_name = $2")
        .bind(password_hash)
        .bind(user_name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND access_mode = 'local'").bind(user_name).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(updated.rows_affected() != 0)
}

/// Whether a local user of this name exists now.
pub(super) async fn local_user_exists(store: &Store, user_name: &str) -> Result<bool, sqlx::Error> {
    let found = sqlx::query("SELECT 1 FROM local_users WHERE user_name = $1").bind(user_name).fetch_optional(&store.pool).await?;
    Ok(found.is_some())
}

/// Forgets the failures on an account; false if there was no such user.
pub(super) async fn unlock_local_user(store: &Store, user_name: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query("UPDATE local_users SET failed_attempts = 0, locked_until = NULL WHERE user_name = $1")
        .bind(user_name)
        .execute(&store.pool)
        .await?;
    Ok(updated.rows_affected() != 0)
}

/// A TOTP secret (wrapped, hex) pending until a code from it is verified.
pub(super) async fn set_totp_pending(store: &Store, user_name: &str, wrapped: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE local_users SET totp_pending = $1 WHERE user_name = $2").bind(wrapped).bind(user_name).execute(&store.pool).await?;
    Ok(())
}

/// The pending TOTP secret of a user who exists (it is an error if they do not).
pub(super) async fn totp_pending(store: &Store, user_name: &str) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query("SELECT totp_pending FROM local_users WHERE user_name = $1").bind(user_name).fetch_one(&store.pool).await?;
    row.try_get("totp_pending")
}

/// The pending secret becomes the account's second factor, `step` its last used step.
pub(super) async fn confirm_totp(store: &Store, user_name: &str, step: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE local_users SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $1 WHERE user_name = $2")
        .bind(step)
        .bind(user_name)
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// The replay cache: an id (a SAML assertion's, an OIDC sign-in's state) is accepted once,
/// remembered until it could no longer be valid anyway. False if it was seen before.
pub(super) async fn remember_once(store: &Store, id: &str, expires: i64) -> Result<bool, sqlx::Error> {
    let pool = &store.pool;
    sqlx::query("DELETE FROM federation_replay WHERE expires < $1").bind(now_millis()).execute(pool).await?;
    let inserted = sqlx::query("INSERT INTO federation_replay (id, expires) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(id)
        .bind(expires)
        .execute(pool)
        .await?;
    Ok(inserted.rows_affected() == 1)
}
