//! The notebooks' tables, typed: `notebooks` (its rows, the states a notebook passes through,
//! the queries on it), `notebook_urls` (presigned URLs) and `notebook_access` (notebook cookies),
//! and the two addresses of the instance a pixel session's notebook URL is bound to.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;
use crate::core::store::now_millis;

crate::core::codec::stored_as_text! {
    /// SageMaker's notebook instance states, as the table keeps them.
    pub(super) enum NotebookState {
        Pending = "Pending",
        InService = "InService",
        Stopping = "Stopping",
        Stopped = "Stopped",
        Failed = "Failed",
    }
}

impl NotebookState {
    /// Stopped or failed: nothing of the notebook runs, so it may start, change or go.
    pub(super) fn is_at_rest(self) -> bool {
        matches!(self, NotebookState::Stopped | NotebookState::Failed)
    }
}

impl std::fmt::Display for NotebookState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

pub(super) struct NotebookRow {
    pub name: String,
    pub instance_type: String,
    pub volume_size_gb: i64,
    pub kms_key_id: String,
    pub owner: Option<String>,
    pub owner_mode: Option<String>,
    pub owner_issuer: Option<String>,
    pub state: NotebookState,
    pub failure_reason: Option<String>,
    pub instance_id: Option<String>,
    /// The volume's data key, wrapped by the notebook's key (base64).
    pub wrapped_key: String,
    pub created: i64,
    /// The node whose disk holds the volume, which alone runs the notebook.
    pub node: Option<String>,
}

impl NotebookRow {
    fn from_row(row: &AnyRow) -> Result<NotebookRow, ActionError> {
        let state: String = row.try_get("state")?;
        Ok(NotebookRow {
            name: row.try_get("name")?,
            instance_type: row.try_get("instance_type")?,
            volume_size_gb: row.try_get("volume_size_gb")?,
            kms_key_id: row.try_get("kms_key_id")?,
            owner: row.try_get("owner")?,
            owner_mode: row.try_get("owner_mode")?,
            owner_issuer: row.try_get("owner_issuer")?,
            state: NotebookState::parse(&state).ok_or_else(|| ActionError::internal(format_args!("unknown notebook state `{state}`")))?,
            failure_reason: row.try_get("failure_reason")?,
            instance_id: row.try_get("instance_id")?,
            wrapped_key: row.try_get("wrapped_key")?,
            created: row.try_get("created")?,
            node: row.try_get("node")?,
        })
    }
}

fn not_found(name: &str) -> ActionError {
    ActionError::not_found(ErrorCode::ResourceNotFound, format!("notebook instance `{name}` does not exist"))
}

/// The notebook named `name`, or SageMaker's not-found error.
pub(super) async fn find(plane: &Platform, name: &str) -> Result<NotebookRow, ActionError> {
    let row = sqlx::query("SELECT * FROM notebooks WHERE name = $1").bind(name).fetch_optional(&plane.store.pool).await?;
    NotebookRow::from_row(&row.ok_or_else(|| not_found(name))?)
}

pub(super) async fn exists(plane: &Platform, name: &str) -> Result<bool, ActionError> {
    Ok(sqlx::query("SELECT name FROM notebooks WHERE name = $1").bind(name).fetch_optional(&plane.store.pool).await?.is_some())
}

/// Every notebook, by name.
pub(super) async fn all(plane: &Platform) -> Result<Vec<NotebookRow>, ActionError> {
    let rows = sqlx::query("SELECT * FROM notebooks ORDER BY name").fetch_all(&plane.store.pool).await?;
    rows.iter().map(NotebookRow::from_row).collect()
}

/// The name and volume size in GiB of each notebook whose volume is on this node's disk.
pub(super) async fn volume_sizes(plane: &Platform) -> Result<Vec<(String, i64)>, ActionError> {
    let rows = sqlx::query("SELECT name, volume_size_gb FROM notebooks WHERE node = $1")
        .bind(&plane.node.name)
        .fetch_all(&plane.store.pool)
        .await?;
    Ok(rows.iter().map(|row| Ok((row.try_get("name")?, row.try_get("volume_size_gb")?))).collect::<Result<_, sqlx::Error>>()?)
}

/// A notebook about to start for the first time.
pub(super) struct NewNotebook<'a> {
    pub name: &'a str,
    pub instance_type: &'a str,
    pub volume_size_gb: i64,
    pub kms_key_id: &'a str,
    pub owner: Option<String>,
    pub wrapped_key: String,
    pub owner_mode: Option<&'a str>,
    pub owner_issuer: Option<&'a str>,
}

pub(super) async fn insert(plane: &Platform, new: NewNotebook<'_>) -> Result<(), ActionError> {
    sqlx::query(
        "INSERT INTO notebooks (name, instance_type, volume_size_gb, kms_key_id, owner, state, instance_id, wrapped_key, created, owner_mode, owner_issuer, node, node_epoch)
         VALUES ($1, $2, $3, $4, $5, 'Pending', NULL, $6, $7, $8, $9, $10, $11)",
    )
    .bind(new.name)
    .bind(new.instance_type)
    .bind(new.volume_size_gb)
    .bind(new.kms_key_id)
    .bind(new.owner)
    .bind(new.wrapped_key)
    .bind(now_millis())
    .bind(new.owner_mode)
    .bind(new.owner_issuer)
    .bind(&plane.node.name)
    .bind(plane.node.epoch())
    .execute(&plane.store.pool)
    .await?;
    Ok(())
}

/// Asks for a state change, from `from` only: true if this call made it (any node may ask; the
/// notebook's node carries it out).
pub(super) async fn request_state(plane: &Platform, name: &str, from: &[NotebookState], to: NotebookState) -> Result<bool, ActionError> {
    let states: Vec<String> = from.iter().map(|s| format!("'{}'", s.as_str())).collect();
    let sql = format!("UPDATE notebooks SET state = $1, failure_reason = NULL WHERE name = $2 AND state IN ({})", states.join(", "));
    let done = sqlx::query(&sql).bind(to.as_str()).bind(name).execute(&plane.store.pool).await?;
    Ok(done.rows_affected() == 1)
}

/// The owner's writes: each holds only while this node still holds its lease under the epoch
/// it believes it has (`core::node`), and the notebook is still its own; each records that
/// epoch. `set` numbers its values from `$4`.
async fn owner_write(plane: &Platform, name: &str, set: &str, values: &[&str]) -> Result<(), sqlx::Error> {
    let fence = crate::core::node::fence(2, 3);
    let sql = format!("UPDATE notebooks SET {set}, node_epoch = $3 WHERE name = $1 AND node = $2 AND {fence}");
    let mut query = sqlx::query(&sql).bind(name).bind(&plane.node.name).bind(plane.node.epoch());
    for value in values {
        query = query.bind(*value);
    }
    if query.execute(&plane.store.pool).await?.rows_affected() == 0 {
        tracing::warn!(notebook = name, node = %plane.node.name, epoch = plane.node.epoch(), "a fenced notebook write touched 0 rows");
    }
    Ok(())
}

/// A state change by the notebook's node (to Stopping as it stops).
pub(super) async fn set_state(plane: &Platform, name: &str, state: NotebookState) -> Result<(), ActionError> {
    owner_write(plane, name, "state = $4", &[state.as_str()]).await?;
    Ok(())
}

pub(super) async fn mark_failed(plane: &Platform, name: &str, reason: &str) -> Result<(), sqlx::Error> {
    owner_write(plane, name, "state = 'Failed', failure_reason = $4", &[reason]).await
}

pub(super) async fn set_instance(plane: &Platform, name: &str, instance_id: &str) -> Result<(), ActionError> {
    owner_write(plane, name, "instance_id = $4", &[instance_id]).await?;
    Ok(())
}

/// InService, from Pending only: a stop asked for meanwhile (Stopping, or already Stopped)
/// stays, and finds a running notebook to stop.
pub(super) async fn mark_in_service(plane: &Platform, name: &str) -> Result<(), ActionError> {
    owner_write(plane, name, "state = CASE WHEN state = 'Pending' THEN 'InService' ELSE state END, failure_reason = NULL", &[]).await?;
    Ok(())
}

pub(super) async fn mark_stopped(plane: &Platform, name: &str) -> Result<(), ActionError> {
    owner_write(plane, name, "state = 'Stopped', instance_id = NULL", &[]).await?;
    Ok(())
}

/// This node's notebooks and their states.
pub(super) async fn on_this_node(plane: &Platform) -> Result<Vec<(String, NotebookState)>, ActionError> {
    let rows = sqlx::query("SELECT name, state FROM notebooks WHERE node = $1").bind(&plane.node.name).fetch_all(&plane.store.pool).await?;
    rows.iter()
        .map(|row| {
            let state: String = row.try_get("state")?;
            let state =
                NotebookState::parse(&state).ok_or_else(|| ActionError::internal(format_args!("unknown notebook state `{state}`")))?;
            Ok((row.try_get("name")?, state))
        })
        .collect()
}

/// Notebooks made before nodes existed become this node's: their volumes are on its disk (on
/// SQLite it is the only node).
pub(super) async fn adopt(plane: &Platform) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE notebooks SET node = $1, node_epoch = $2 WHERE node IS NULL")
        .bind(&plane.node.name)
        .bind(plane.node.epoch())
        .execute(&plane.store.pool)
        .await
        .map(drop)
}

pub(super) async fn update_type_and_size(
    plane: &Platform,
    name: &str,
    instance_type: &str,
    volume_size_gb: i64,
) -> Result<(), ActionError> {
    sqlx::query("UPDATE notebooks SET instance_type = $1, volume_size_gb = $2 WHERE name = $3")
        .bind(instance_type)
        .bind(volume_size_gb)
        .bind(name)
        .execute(&plane.store.pool)
        .await?;
    Ok(())
}

/// Deletes a notebook at rest; false if it is not (any more): a start from another node won.
pub(super) async fn delete(plane: &Platform, name: &str) -> Result<bool, ActionError> {
    let done = sqlx::query("DELETE FROM notebooks WHERE name = $1 AND state IN ('Stopped', 'Failed')")
        .bind(name)
        .execute(&plane.store.pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends every notebook cookie of a notebook.
pub(super) async fn delete_access(plane: &Platform, name: &str) -> Result<(), ActionError> {
    sqlx::query("DELETE FROM notebook_access WHERE notebook = $1").bind(name).execute(&plane.store.pool).await?;
    // The proxy's reused checks of those cookies end with them.
    plane.changes.advance();
    Ok(())
}

/// The names of this node's notebooks not stopped or failed (a row that cannot be read is left
/// out): another node's are its own to stop.
pub(super) async fn names_not_at_rest(plane: &Platform) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT name FROM notebooks WHERE state != 'Stopped' AND state != 'Failed' AND node = $1")
        .bind(&plane.node.name)
        .fetch_all(&plane.store.pool)
        .await?;
    Ok(rows.iter().filter_map(|row| row.try_get::<String, _>("name").ok()).collect())
}

/// Every notebook's name (a row that cannot be read is left out).
pub(super) async fn all_names(plane: &Platform) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT name FROM notebooks").fetch_all(&plane.store.pool).await?;
    Ok(rows.iter().filter_map(|row| row.try_get::<String, _>("name").ok()).collect())
}

/// A presigned notebook URL (`notebook_urls`), found by the hash of its token.
pub(super) struct NotebookUrlRow {
    pub notebook: String,
    pub session_id: String,
    /// How long the cookie it is redeemed for lasts, in milliseconds.
    pub session_expiration: i64,
    pub expires: i64,
    /// For a pixel session, the instance whose browser alone may open it.
    pub instance_address: Option<String>,
}

/// A notebook cookie (`notebook_access`), found by its hash.
pub(super) struct NotebookAccessRow {
    pub session_id: String,
    pub expires: i64,
    /// For a pixel session, the instance whose browser alone may use it.
    pub instance_address: Option<String>,
}

/// A presigned URL to insert; its hash stands for the token, which is never stored.
pub(super) struct NewNotebookUrl<'a> {
    pub url_hash: &'a str,
    pub notebook: &'a str,
    pub session_id: &'a str,
    pub session_expiration: i64,
    pub expires: i64,
    pub created: i64,
    pub instance_address: Option<String>,
}

/// A notebook cookie to insert; its hash stands for the cookie.
pub(super) struct NewNotebookAccess<'a> {
    pub cookie_hash: &'a str,
    pub notebook: &'a str,
    pub session_id: &'a str,
    pub expires: i64,
    pub created: i64,
    pub instance_address: Option<&'a str>,
}

pub(super) async fn insert_url(plane: &Platform, new: NewNotebookUrl<'_>) -> Result<(), ActionError> {
    sqlx::query(
        "INSERT INTO notebook_urls (url_hash, notebook, session_id, session_expiration, expires, redeemed, created, instance_address)
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7)",
    )
    .bind(new.url_hash)
    .bind(new.notebook)
    .bind(new.session_id)
    .bind(new.session_expiration)
    .bind(new.expires)
    .bind(new.created)
    .bind(new.instance_address)
    .execute(&plane.store.pool)
    .await?;
    Ok(())
}

pub(super) async fn find_url(plane: &Platform, url_hash: &str) -> Result<Option<NotebookUrlRow>, ActionError> {
    let row = sqlx::query("SELECT * FROM notebook_urls WHERE url_hash = $1").bind(url_hash).fetch_optional(&plane.store.pool).await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(NotebookUrlRow {
        notebook: row.try_get("notebook")?,
        session_id: row.try_get("session_id")?,
        session_expiration: row.try_get("session_expiration")?,
        expires: row.try_get("expires")?,
        instance_address: row.try_get("instance_address")?,
    }))
}

/// Marks a URL redeemed unless it already was: whether this call redeemed it (a URL opens once).
pub(super) async fn redeem_url(plane: &Platform, url_hash: &str, now: i64) -> Result<bool, ActionError> {
    let used = sqlx::query("UPDATE notebook_urls SET redeemed = $1 WHERE url_hash = $2 AND redeemed IS NULL")
        .bind(now)
        .bind(url_hash)
        .execute(&plane.store.pool)
        .await?;
    Ok(used.rows_affected() != 0)
}

pub(super) async fn insert_access(plane: &Platform, new: NewNotebookAccess<'_>) -> Result<(), ActionError> {
    sqlx::query(
        "INSERT INTO notebook_access (cookie_hash, notebook, session_id, expires, created, instance_address) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new.cookie_hash)
    .bind(new.notebook)
    .bind(new.session_id)
    .bind(new.expires)
    .bind(new.created)
    .bind(new.instance_address)
    .execute(&plane.store.pool)
    .await?;
    Ok(())
}

pub(super) async fn find_access(plane: &Platform, cookie_hash: &str, notebook: &str) -> Result<Option<NotebookAccessRow>, ActionError> {
    let row = sqlx::query("SELECT * FROM notebook_access WHERE cookie_hash = $1 AND notebook = $2")
        .bind(cookie_hash)
        .bind(notebook)
        .fetch_optional(&plane.store.pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(NotebookAccessRow {
        session_id: row.try_get("session_id")?,
        expires: row.try_get("expires")?,
        instance_address: row.try_get("instance_address")?,
    }))
}

/// The private and host (endpoint) addresses of the instance a pixel session runs on.
pub(super) async fn instance_addresses(plane: &Platform, instance_id: &str) -> Result<Option<(String, String)>, ActionError> {
    let row = sqlx::query("SELECT private_address, host_address FROM instances WHERE instance_id = $1")
        .bind(instance_id)
        .fetch_optional(&plane.store.pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((row.try_get("private_address")?, row.try_get("host_address")?)))
}
