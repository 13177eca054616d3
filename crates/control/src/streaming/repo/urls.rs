//! The `streaming_urls` table, typed: a URL made, looked up, and redeemed once.

use sqlx::Row;

use crate::core::error::ActionError;
use crate::core::store::Store;

/// A streaming URL's row: whom it was made for (which redemption compares with its claims) and
/// the session context it carries (data, never trusted, so never in the token).
pub(crate) struct UrlRow {
    pub user_id: String,
    pub stack: String,
    pub fleet: String,
    /// Absent for URLs made before it was recorded: those are `API`.
    pub authentication_type: Option<String>,
    pub issuer: Option<String>,
}

/// A new streaming URL, not yet redeemed.
pub(crate) struct NewUrl<'a> {
    pub url_id: &'a str,
    pub stack: &'a str,
    pub fleet: &'a str,
    pub user_id: &'a str,
    pub application_id: Option<&'a str>,
    pub session_context: Option<&'a str>,
    pub expires: i64,
    pub created: i64,
    pub authentication_type: &'a str,
    pub issuer: Option<&'a str>,
}

pub(crate) async fn insert_url(store: &Store, url: NewUrl<'_>) -> Result<(), ActionError> {
    sqlx::query(
        "INSERT INTO streaming_urls (url_id, stack, fleet, user_id, application_id, session_context, expires, redeemed, created, authentication_type, issuer)
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10)",
    )
    .bind(url.url_id)
    .bind(url.stack)
    .bind(url.fleet)
    .bind(url.user_id)
    .bind(url.application_id)
    .bind(url.session_context)
    .bind(url.expires)
    .bind(url.created)
    .bind(url.authentication_type)
    .bind(url.issuer)
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub(crate) async fn find_url(store: &Store, url_id: &str) -> Result<Option<UrlRow>, ActionError> {
    let row = sqlx::query("SELECT * FROM streaming_urls WHERE url_id = $1").bind(url_id).fetch_optional(&store.pool).await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(UrlRow {
        user_id: row.try_get("user_id")?,
        stack: row.try_get("stack")?,
        fleet: row.try_get("fleet")?,
        authentication_type: row.try_get("authentication_type")?,
        issuer: row.try_get("issuer")?,
    }))
}

/// Marks the URL used at `now`, atomically: false when it already was.
pub(crate) async fn mark_redeemed(store: &Store, url_id: &str, now: i64) -> Result<bool, ActionError> {
    let used = sqlx::query("UPDATE streaming_urls SET redeemed = $1 WHERE url_id = $2 AND redeemed IS NULL")
        .bind(now)
        .bind(url_id)
        .execute(&store.pool)
        .await?;
    Ok(used.rows_affected() != 0)
}

/// The session context the URL carries.
pub(crate) async fn url_session_context(store: &Store, url_id: &str) -> Result<Option<String>, ActionError> {
    Ok(sqlx::query("SELECT session_context FROM streaming_urls WHERE url_id = $1")
        .bind(url_id)
        .fetch_one(&store.pool)
        .await?
        .try_get("session_context")?)
}
