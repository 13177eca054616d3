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
    /// A local user's sign-in: the credentials' generation it proved (`credential_epoch`).
    pub credential_epoch: Option<i64>,
}

/// The token whose SHA-256 is `token_hash`, if one was issued and still acts: a local user's
/// only while the user exists with the credentials it proved (not after a password change or
/// the user's deletion, however a sign-in in flight raced them: review finding).
pub(super) async fn find_token(store: &Store, token_hash: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT user_id, access_mode, issuer, channel, roles, correlation_id, created, expires, mfa, credential_epoch FROM tokens t
         WHERE token_hash = $1 AND (access_mode <> 'local' OR EXISTS (
             SELECT 1 FROM local_users u WHERE u.user_name = t.user_id AND u.credential_epoch = COALESCE(t.credential_epoch, 0)))",
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
        credential_epoch: row.try_get("credential_epoch")?,
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
        "INSERT INTO tokens (token_hash, user_id, access_mode, roles, correlation_id, created, expires, mfa, issuer, channel, credential_epoch)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
         WHERE $3 <> 'local' OR EXISTS (SELECT 1 FROM local_users WHERE user_name = $2 AND credential_epoch = $11)",
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
    .bind(token.credential_epoch)
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
    /// Raised by every password change (`credential_epoch`).
    pub credential_epoch: i64,
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
        credential_epoch: row.try_get("credential_epoch")?,
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
/// `step_proved`) is taken, unless another sign-in took it or a later one meanwhile, the
/// account was locked meanwhile, or its credentials changed since the sign-in read them
/// (`epoch`): decided here, on the row as it is now, not as it was before argon2 ran (review
/// finding: sign-ins held in argon2's queue past a lock all went on). False if any did.
pub(super) async fn take_sign_in(
    store: &Store,
    user_name: &str,
    (last_step, step_proved): (Option<i64>, bool),
    epoch: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE local_users SET failed_attempts = 0, locked_until = NULL, totp_last_step = $1
         WHERE user_name = $2 AND ($3 = 0 OR totp_last_step IS NULL OR totp_last_step < $1)
           AND credential_epoch = $4 AND (locked_until IS NULL OR locked_until <= $5)",
    )
    .bind(last_step)
    .bind(user_name)
    .bind(i64::from(step_proved))
    .bind(epoch)
    .bind(now)
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
    let mut tx = store.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO local_users (user_name, password_hash, roles, failed_attempts, created)
         SELECT $1, $2, $3, 0, $4 WHERE NOT EXISTS (SELECT 1 FROM retired_user_names WHERE user_name = $1)
         ON CONFLICT (user_name) DO NOTHING",
    )
    .bind(user_name)
    .bind(password_hash)
    .bind(roles)
    .bind(created)
    .execute(&mut *tx)
    .await?;
    // Asked again in a statement of its own: on PostgreSQL, an insert that waited for a
    // concurrent deletion to commit judged `NOT EXISTS` before it, and would reuse the name.
    let retired_now: Option<i64> =
        sqlx::query_scalar("SELECT retired FROM retired_user_names WHERE user_name = $1").bind(user_name).fetch_optional(&mut *tx).await?;
    if inserted.rows_affected() != 0 && retired_now.is_none() {
        tx.commit().await?;
        return Ok(Ok(()));
    }
    tx.rollback().await?;
    Ok(Err(retired_now.map_or(NameTaken::InUse, NameTaken::Retired)))
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

/// A local user's new password hash, replacing the credentials of generation `proved` only;
/// every token of theirs ends with the old password. False if there is no such user, or
/// their credentials changed since.
pub(super) async fn set_password(store: &Store, user_name: &str, password_hash: &str, proved: i64) -> Result<bool, sqlx::Error> {
    let mut tx = store.pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE local_users SET password_hash = $1, credential_epoch = credential_epoch + 1 WHERE user_name = $2 AND credential_epoch = $3",
    )
    .bind(password_hash)
    .bind(user_name)
    .bind(proved)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM tokens WHERE user_id = $1 AND access_mode = 'local'").bind(user_name).execute(&mut *tx).await?;
    // The user's streaming URLs not opened yet are spent: one made with the old password
    // would otherwise open a session after the change ended theirs (review finding).
    sqlx::query("UPDATE streaming_urls SET redeemed = $1 WHERE user_id = $2 AND authentication_type = 'USERPOOL' AND redeemed IS NULL")
        .bind(crate::core::store::now_millis())
        .bind(user_name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(updated.rows_affected() != 0)
}

/// Whether a local user of this name exists now.
pub(super) async fn local_user_exists(store: &Store, user_name: &str) -> Result<bool, sqlx::Error> {
    let found = sqlx::query("SELECT 1 FROM local_users WHERE user_name = $1").bind(user_name).fetch_optional(&store.pool).await?;
    Ok(found.is_some())
}

/// Lifts an account's lock; false if there was no such user. Its count of wrong codes stays
/// until its next sign-in: whoever holds the password and was guessing gets one more wrong
/// code before the lock is back, not ten (review finding).
pub(super) async fn unlock_local_user(store: &Store, user_name: &str) -> Result<bool, sqlx::Error> {
    let updated =
        sqlx::query("UPDATE local_users SET locked_until = NULL WHERE user_name = $1").bind(user_name).execute(&store.pool).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn token(user: &str, epoch: Option<i64>) -> TokenRow {
        TokenRow {
            user_id: user.to_owned(),
            access_mode: "local".to_owned(),
            issuer: None,
            channel: Some(TokenChannel::SignIn),
            roles: String::new(),
            correlation_id: "c".to_owned(),
            created: 0,
            expires: i64::MAX,
            mfa: false,
            credential_epoch: epoch,
        }
    }

    /// A sign-in that read the user's credentials before a password change, a lock or the
    /// user's deletion committed (argon2 can hold it for seconds) gets no token, and a token
    /// that got in anyway acts for nobody (review findings).
    #[tokio::test]
    async fn what_a_sign_in_proved_must_still_hold_when_its_token_is_made_and_used() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(None, dir.path()).await.expect("open");
        assert!(insert_local_user(&store, "gina", "h1", "", 0).await.expect("insert").is_ok());
        let read = find_local_user(&store, "gina").await.expect("find").expect("gina");
        assert_eq!(read.credential_epoch, 0);
        assert!(insert_token(&store, "t1", &token("gina", Some(0))).await.expect("insert"));
        assert!(find_token(&store, "t1").await.expect("find").is_some());
        // The password changes while a sign-in that read epoch 0 runs argon2.
        assert!(set_password(&store, "gina", "h2", 0).await.expect("set"));
        assert!(!set_password(&store, "gina", "h3", 0).await.expect("set"), "a change proved on the old password went through");
        assert!(find_token(&store, "t1").await.expect("find").is_none(), "the old sign-in's token still acts");
        assert!(!take_sign_in(&store, "gina", (None, false), 0, 1).await.expect("take"), "a sign-in of the old password went on");
        assert!(!insert_token(&store, "t2", &token("gina", Some(0))).await.expect("insert"), "a token of the old password was made");
        // One that got in however: it acts for nobody.
        sqlx::query("INSERT INTO tokens (token_hash, user_id, access_mode, roles, correlation_id, created, expires, mfa, credential_epoch) VALUES ('t3', 'gina', 'local', '', 'c', 0, 9223372036854775807, 0, 0)")
            .execute(&store.pool)
            .await
            .expect("insert");
        assert!(find_token(&store, "t3").await.expect("find").is_none());
        assert!(take_sign_in(&store, "gina", (None, false), 1, 1).await.expect("take"), "the new password's sign-in");
        // Locked meanwhile: the sign-in is refused, then taken once the lock ends.
        for _ in 0..3 {
            second_factor_failed(&store, "gina", 3, 1_000).await.expect("counted");
        }
        assert!(!take_sign_in(&store, "gina", (None, false), 1, 999).await.expect("take"), "a sign-in went on past the lock");
        assert!(take_sign_in(&store, "gina", (None, false), 1, 1_000).await.expect("take"));
        // Deleted: its tokens act for nobody, and its name is not given again.
        assert!(insert_token(&store, "t4", &token("gina", Some(1))).await.expect("insert"));
        assert!(delete_local_user(&store, "gina", 5).await.expect("delete"));
        sqlx::query("INSERT INTO tokens (token_hash, user_id, access_mode, roles, correlation_id, created, expires, mfa, credential_epoch) VALUES ('t5', 'gina', 'local', '', 'c', 0, 9223372036854775807, 0, 1)")
            .execute(&store.pool)
            .await
            .expect("insert");
        assert!(find_token(&store, "t5").await.expect("find").is_none(), "a deleted user's token acts");
        assert!(matches!(insert_local_user(&store, "gina", "h3", "", 6).await.expect("insert"), Err(NameTaken::Retired(5))));
    }
}
