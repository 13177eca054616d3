//! What the sessions table holds about nodes: which node runs a session's instance, the
//! queued sessions a node claims to start, and the one-time codes that hand a session's
//! browser to its node.

use sqlx::Row;

use crate::core::error::ActionError;
use crate::core::node::{Node, fence};
use crate::core::store::Store;

/// A queued session and when it joined the queue.
pub(crate) struct QueueEntry {
    pub session_id: String,
    pub queued: i64,
}

/// `fleet`'s queue, first come first, with the times they joined it.
pub(crate) async fn list_queue_entries(store: &Store, fleet: &str) -> Result<Vec<QueueEntry>, ActionError> {
    let rows = sqlx::query("SELECT session_id, queued FROM sessions WHERE fleet = $1 AND state = 'PENDING' ORDER BY queued, session_id")
        .bind(fleet)
        .fetch_all(&store.pool)
        .await?;
    rows.iter().map(|r| Ok(QueueEntry { session_id: r.try_get("session_id")?, queued: r.try_get("queued")? })).collect()
}

/// Takes a queued ON_DEMAND session for `node` to start its instance, if no other node took it
/// and the fleet has room for one more: instances not ended, plus sessions taken whose instance
/// is not recorded yet, stay under `desired`. The fleet's row is written first, so that claims
/// on one fleet run one at a time on either store (a row lock on PostgreSQL, the write lock on
/// SQLite) and two nodes never both take the last place. A node that no longer holds its lease
/// under its epoch takes nothing.
pub(crate) async fn claim_for_node(store: &Store, session_id: &str, fleet: &str, node: &Node, desired: i64) -> Result<bool, ActionError> {
    let mut tx = store.write().await?;
    sqlx::query("UPDATE fleets SET name = name WHERE name = $1").bind(fleet).execute(&mut *tx).await?;
    let taken: i64 = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM instances WHERE fleet = $1 AND state IN ('PENDING', 'RUNNING', 'STOPPING'))
              + (SELECT COUNT(*) FROM sessions s WHERE s.fleet = $1 AND s.state = 'PENDING' AND s.node IS NOT NULL AND s.session_id <> $2
                   AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.session_id = s.session_id)) AS taken",
    )
    .bind(fleet)
    .bind(session_id)
    .fetch_one(&mut *tx)
    .await?
    .try_get("taken")?;
    if taken >= desired {
        return Ok(false);
    }
    let claimed =
        sqlx::query(&claim_sql()).bind(&node.name).bind(session_id).bind(node.epoch()).execute(&mut *tx).await?.rows_affected() == 1;
    tx.commit().await?;
    Ok(claimed)
}

/// The node an instance runs on, and its public URL.
pub(crate) struct InstanceNode {
    pub name: String,
    pub address: String,
}

pub(crate) async fn instance_node(store: &Store, instance_id: &str) -> Result<Option<InstanceNode>, ActionError> {
    let row = sqlx::query("SELECT n.name, n.address FROM instances i JOIN nodes n ON n.name = i.node WHERE i.instance_id = $1")
        .bind(instance_id)
        .fetch_optional(&store.pool)
        .await?;
    row.map(|r| Ok(InstanceNode { name: r.try_get("name")?, address: r.try_get("address")? })).transpose()
}

/// Records a handoff code's hash for an active session (a new one replaces the last).
pub(crate) async fn set_handoff(store: &Store, session_id: &str, code_hash: &str, expires: i64) -> Result<(), ActionError> {
    sqlx::query("UPDATE sessions SET handoff_hash = $1, handoff_expires = $2 WHERE session_id = $3 AND state = 'ACTIVE'")
        .bind(code_hash)
        .bind(expires)
        .bind(session_id)
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// The active session a live handoff code belongs to.
pub(crate) async fn find_handoff(store: &Store, code_hash: &str, now: i64) -> Result<Option<String>, ActionError> {
    let row = sqlx::query("SELECT session_id FROM sessions WHERE handoff_hash = $1 AND handoff_expires > $2 AND state = 'ACTIVE'")
        .bind(code_hash)
        .bind(now)
        .fetch_optional(&store.pool)
        .await?;
    Ok(row.map(|r| r.try_get("session_id")).transpose()?)
}

/// Spends a session's live handoff code (its bearer was authenticated by it): the session's
/// cookie becomes `cookie_hash`'s, once.
pub(crate) async fn take_handoff(store: &Store, session_id: &str, cookie_hash: &str, now: i64) -> Result<bool, ActionError> {
    let done = sqlx::query(
        "UPDATE sessions SET cookie_hash = $1, handoff_hash = NULL, handoff_expires = NULL
         WHERE session_id = $2 AND handoff_hash IS NOT NULL AND handoff_expires > $3 AND state = 'ACTIVE'",
    )
    .bind(cookie_hash)
    .bind(session_id)
    .bind(now)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes a queued session for `node` to serve from its own warm instances, unless another node
/// took it or `node` no longer holds its lease under its epoch.
pub(crate) async fn claim_session(store: &Store, session_id: &str, node: &Node) -> Result<bool, ActionError> {
    let done = sqlx::query(&claim_sql()).bind(&node.name).bind(session_id).bind(node.epoch()).execute(&store.pool).await?;
    Ok(done.rows_affected() == 1)
}

/// A queued session taken for node `$1` (epoch `$3`): `$2`, unless another node holds it or the
/// node was taken for lost (its sessions were given back then, and one it took after would wait
/// for it alone).
fn claim_sql() -> String {
    format!("UPDATE sessions SET node = $1 WHERE session_id = $2 AND state = 'PENDING' AND (node IS NULL OR node = $1) AND {}", fence(1, 3))
}

/// Whether `session_id` is still queued and `node`'s, under the lease `epoch` it was claimed with.
pub(crate) async fn still_claimed(store: &Store, session_id: &str, node: &str, epoch: i64) -> Result<bool, ActionError> {
    let sql = format!("SELECT 1 AS held FROM sessions WHERE session_id = $1 AND state = 'PENDING' AND node = $2 AND {}", fence(2, 3));
    Ok(sqlx::query(&sql).bind(session_id).bind(node).bind(epoch).fetch_optional(&store.pool).await?.is_some())
}

/// Gives a queued session back when the node that took it had no instance for it.
pub(crate) async fn release_session(store: &Store, session_id: &str, node: &str) -> Result<(), ActionError> {
    sqlx::query("UPDATE sessions SET node = NULL WHERE session_id = $1 AND node = $2 AND state = 'PENDING'")
        .bind(session_id)
        .bind(node)
        .execute(&store.pool)
        .await?;
    Ok(())
}
