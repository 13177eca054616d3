//! The `sessions` table, typed: the one file of streaming that reads its rows, so that a
//! session's states are an enum (`SessionState`, `ConnectionState`) rather than strings spread
//! over the service, and a column is named in one place.
//!
//! The other tables streaming reads have a file each beside this one (`repo/stacks.rs`,
//! `repo/execs.rs`), as have `streaming_urls` (`repo/urls.rs`) and what the sessions table
//! holds about nodes (`repo/nodes.rs`), re-exported here so the service names one repository.
//!
//! Each function is one statement, the same SQL the service ran before it had a repository.

mod execs;
mod nodes;
mod stacks;
mod urls;

pub(crate) use execs::execs_in;
pub(crate) use nodes::{
    claim_for_node, claim_session, find_handoff, instance_node, list_queue_entries, release_session, set_handoff, still_claimed,
    take_handoff,
};
pub(crate) use stacks::{any_allows, default_application};
pub(crate) use urls::{NewUrl, find_url, insert_url, mark_redeemed, url_session_context};

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::core::error::{ActionError, ErrorCode};
use crate::core::store::Store;

crate::core::codec::stored_as_text! {
    /// Where a session is in its life: waiting for an instance, served by one, or over.
    pub(crate) enum SessionState {
        Pending = "PENDING",
        Active = "ACTIVE",
        Expired = "EXPIRED",
    }
}

crate::core::codec::stored_as_text! {
    /// Whether a session's page holds a live connection to it.
    pub(crate) enum ConnectionState {
        Connected = "CONNECTED",
        NotConnected = "NOT_CONNECTED",
    }
}

/// A row of `sessions`, as far as the service reads it (not the cookie's hash, which is only
/// looked up by, nor `last_input`, which the live side keeps).
pub(crate) struct SessionRow {
    pub session_id: String,
    pub user_id: String,
    /// AppStream's `AuthenticationType`: API, USERPOOL or SAML.
    pub authentication_type: String,
    /// A federated user's identity provider.
    pub issuer: Option<String>,
    pub stack: String,
    pub fleet: String,
    pub application_id: Option<String>,
    pub session_context: Option<String>,
    pub state: SessionState,
    pub connection_state: ConnectionState,
    pub instance_id: Option<String>,
    pub private_address: Option<String>,
    /// The stack's settings and the fleet's timeouts as they were when the session started (JSON).
    pub settings: String,
    pub correlation_id: String,
    pub queued: i64,
    pub start_time: i64,
    pub max_expiration: i64,
    pub connected_once: bool,
    /// The addresses its page connected from (a JSON array).
    pub client_ips: String,
    pub end_time: Option<i64>,
    pub end_reason: Option<String>,
    pub notebook_url: Option<String>,
}

impl SessionRow {
    fn from_row(row: &AnyRow) -> Result<SessionRow, ActionError> {
        let state: String = row.try_get("state")?;
        let connection: String = row.try_get("connection_state")?;
        Ok(SessionRow {
            session_id: row.try_get("session_id")?,
            user_id: row.try_get("user_id")?,
            authentication_type: row.try_get("authentication_type")?,
            issuer: row.try_get("issuer")?,
            stack: row.try_get("stack")?,
            fleet: row.try_get("fleet")?,
            application_id: row.try_get("application_id")?,
            session_context: row.try_get("session_context")?,
            state: SessionState::parse(&state).ok_or_else(|| ActionError::internal(format!("a session in state `{state}`")))?,
            connection_state: ConnectionState::parse(&connection)
                .ok_or_else(|| ActionError::internal(format!("a session in connection state `{connection}`")))?,
            instance_id: row.try_get("instance_id")?,
            private_address: row.try_get("private_address")?,
            settings: row.try_get("settings")?,
            correlation_id: row.try_get("correlation_id")?,
            queued: row.try_get("queued")?,
            start_time: row.try_get("start_time")?,
            max_expiration: row.try_get("max_expiration")?,
            connected_once: row.try_get::<i64, _>("connected_once")? != 0,
            client_ips: row.try_get("client_ips")?,
            end_time: row.try_get("end_time")?,
            end_reason: row.try_get("end_reason")?,
            notebook_url: row.try_get("notebook_url")?,
        })
    }

    /// Who the session is for.
    pub(crate) fn user(&self) -> Result<model::UserRef, ActionError> {
        user_of(&self.authentication_type, self.issuer.as_deref(), &self.user_id)
    }
}

/// The home-folder access mode of a session's `AuthenticationType` (AppStream's layout).
pub(crate) fn access_mode(authentication_type: &str) -> model::AccessMode {
    match authentication_type {
        "USERPOOL" => model::AccessMode::Local,
        "SAML" => model::AccessMode::Federated,
        _ => model::AccessMode::Custom,
    }
}

fn user_of(authentication_type: &str, issuer: Option<&str>, user_id: &str) -> Result<model::UserRef, ActionError> {
    model::UserRef::from_parts(access_mode(authentication_type), issuer, user_id).map_err(|err| {
        ActionError::new(
            401,
            ErrorCode::SessionPredatesIdentity,
            format!("this session's user is not complete ({err}); start a new session"),
        )
    })
}

/// Who the session of a row with its user's three columns is for.
fn row_user(row: &AnyRow) -> Result<model::UserRef, ActionError> {
    let issuer: Option<String> = row.try_get("issuer")?;
    user_of(&row.try_get::<String, _>("authentication_type")?, issuer.as_deref(), &row.try_get::<String, _>("user_id")?)
}

async fn find_session_row(store: &Store, session_id: &str) -> Result<Option<AnyRow>, ActionError> {
    Ok(sqlx::query("SELECT * FROM sessions WHERE session_id = $1").bind(session_id).fetch_optional(&store.pool).await?)
}

pub(crate) async fn find_session(store: &Store, session_id: &str) -> Result<Option<SessionRow>, ActionError> {
    find_session_row(store, session_id).await?.as_ref().map(SessionRow::from_row).transpose()
}

/// Shows the session's page the notebook URL it offers (a direct session's, opened with its cookie).
pub(crate) async fn set_notebook_url(store: &Store, session_id: &str, url: &str) -> Result<(), ActionError> {
    sqlx::query("UPDATE sessions SET notebook_url = $1 WHERE session_id = $2").bind(url).bind(session_id).execute(&store.pool).await?;
    Ok(())
}

/// The session whose cookie hashes to `cookie_hash`.
pub(crate) async fn find_session_by_cookie(store: &Store, cookie_hash: &str) -> Result<Option<SessionRow>, ActionError> {
    let row = sqlx::query("SELECT * FROM sessions WHERE cookie_hash = $1").bind(cookie_hash).fetch_optional(&store.pool).await?;
    row.as_ref().map(SessionRow::from_row).transpose()
}

/// The ACTIVE session a RUNNING instance serves, by the instance's private address.
pub(crate) struct LinkedSession {
    pub session_id: String,
    pub correlation_id: String,
    pub instance_id: String,
    pub user: Result<model::UserRef, ActionError>,
}

/// Among `node`'s instances: nodes on different hosts hand out the same addresses.
pub(crate) async fn find_session_served_from(
    store: &Store,
    node: &str,
    private_address: &str,
) -> Result<Option<LinkedSession>, ActionError> {
    let row = sqlx::query(
        "SELECT s.session_id, s.user_id, s.correlation_id, s.authentication_type, s.issuer, i.instance_id FROM instances i JOIN sessions s ON s.instance_id = i.instance_id
         WHERE i.private_address = $1 AND i.state = 'RUNNING' AND s.state = 'ACTIVE' AND i.node = $2",
    )
    .bind(private_address)
    .bind(node)
    .fetch_optional(&store.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(LinkedSession {
        user: row_user(&row),
        session_id: row.try_get("session_id")?,
        correlation_id: row.try_get("correlation_id")?,
        instance_id: row.try_get("instance_id")?,
    }))
}

/// How many sessions wait in `fleet`'s queue.
pub(crate) async fn count_waiting(store: &Store, fleet: &str) -> Result<i64, ActionError> {
    Ok(sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE fleet = $1 AND state = 'PENDING'")
        .bind(fleet)
        .fetch_one(&store.pool)
        .await?
        .try_get("n")?)
}

/// How many places (waiting or active) `user` holds on `fleet`.
pub(crate) async fn count_held(store: &Store, fleet: &str, user: &model::UserRef) -> Result<i64, ActionError> {
    Ok(sqlx::query(
        "SELECT COUNT(*) AS n FROM sessions WHERE fleet = $1 AND state IN ('PENDING', 'ACTIVE') AND user_id = $2
         AND authentication_type = $3 AND COALESCE(issuer, '') = $4",
    )
    .bind(fleet)
    .bind(user.user().as_str())
    .bind(user.mode().authentication_type())
    .bind(user.issuer_str().unwrap_or_default())
    .fetch_one(&store.pool)
    .await?
    .try_get("n")?)
}

/// How many sessions wait ahead of the one queued at `queued` as `session_id`.
pub(crate) async fn count_ahead(store: &Store, fleet: &str, queued: i64, session_id: &str) -> Result<i64, ActionError> {
    Ok(sqlx::query(
        "SELECT COUNT(*) AS n FROM sessions WHERE fleet = $1 AND state = 'PENDING' AND (queued < $2 OR (queued = $2 AND session_id < $3))",
    )
    .bind(fleet)
    .bind(queued)
    .bind(session_id)
    .fetch_one(&store.pool)
    .await?
    .try_get("n")?)
}

/// A new session, PENDING and NOT_CONNECTED, queued at `now`.
pub(crate) struct NewSession<'a> {
    pub session_id: &'a str,
    /// The user's id as the URL's claims spell it, and who they are.
    pub user_id: &'a str,
    pub user: &'a model::UserRef,
    pub stack: &'a str,
    pub fleet: &'a str,
    pub application_id: Option<&'a str>,
    pub session_context: Option<&'a str>,
    pub settings: String,
    pub correlation_id: &'a str,
    pub cookie_hash: String,
    pub now: i64,
    pub max_expiration: i64,
    pub client_ips: String,
    /// The node that redeemed the URL, for a session of an ALWAYS_ON fleet: it offers the
    /// session its own warm instances first, before any other node's engine can take it, and
    /// gives it back if it has none free. `None` (ON_DEMAND): the engines claim it. A node
    /// that no longer holds its lease under its epoch inserts the session as no node's.
    pub node: Option<&'a crate::core::node::Node>,
}

/// Inserts a new session; false, inserting nothing, for a local user who no longer exists (a
/// redemption that checked the user before `DeleteLocalUser` committed would otherwise leave
/// a session its ending never saw).
pub(crate) async fn insert_session(store: &Store, session: NewSession<'_>) -> Result<bool, ActionError> {
    // The sweep gives back the sessions of a node taken for lost; one such a node inserted
    // after it as its own would wait for that node alone.
    let sql = format!(
        "INSERT INTO sessions (session_id, user_id, authentication_type, stack, fleet, application_id, session_context, state, connection_state,
         settings, correlation_id, cookie_hash, queued, start_time, max_expiration, last_input, connected_once, client_ips, issuer, node)
         SELECT $1, $2, $13, $3, $4, $5, $6, 'PENDING', 'NOT_CONNECTED', $7, $8, $9, $10, $10, $11, $10, 0, $12, $14,
                CASE WHEN {} THEN $15 END
         WHERE $13 <> 'USERPOOL' OR EXISTS (SELECT 1 FROM local_users WHERE user_name = $2)",
        crate::core::node::fence(15, 16)
    );
    let inserted = sqlx::query(&sql)
        .bind(session.session_id)
        .bind(session.user_id)
        .bind(session.stack)
        .bind(session.fleet)
        .bind(session.application_id)
        .bind(session.session_context)
        .bind(session.settings)
        .bind(session.correlation_id)
        .bind(session.cookie_hash)
        .bind(session.now)
        .bind(session.max_expiration)
        .bind(session.client_ips)
        .bind(session.user.mode().authentication_type())
        .bind(session.user.issuer_str())
        .bind(session.node.map(|node| node.name.as_str()))
        .bind(session.node.map(crate::core::node::Node::epoch))
        .execute(&store.pool)
        .await?;
    Ok(inserted.rows_affected() != 0)
}

/// Ends the session, once: false when it had already ended.
pub(crate) async fn mark_expired(store: &Store, session_id: &str, now: i64, reason: &str) -> Result<bool, ActionError> {
    let ended = sqlx::query("UPDATE sessions SET state = 'EXPIRED', connection_state = 'NOT_CONNECTED', end_time = $1, end_reason = $2 WHERE session_id = $3 AND state != 'EXPIRED'")
        .bind(now)
        .bind(reason)
        .bind(session_id)
        .execute(&store.pool)
        .await?;
    Ok(ended.rows_affected() != 0)
}

/// A page connected: CONNECTED, once at least, from `client_ips` (a JSON array).
pub(crate) async fn mark_connected(store: &Store, session_id: &str, client_ips: &str) -> Result<(), ActionError> {
    sqlx::query("UPDATE sessions SET connection_state = 'CONNECTED', connected_once = 1, disconnected_at = NULL, client_ips = $1 WHERE session_id = $2")
        .bind(client_ips)
        .bind(session_id)
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// The last page disconnected at `now` (an ended session stays as it ended).
pub(crate) async fn mark_disconnected(store: &Store, session_id: &str, now: i64) -> Result<(), ActionError> {
    sqlx::query(
        "UPDATE sessions SET connection_state = 'NOT_CONNECTED', disconnected_at = $1 WHERE session_id = $2 AND state != 'EXPIRED'",
    )
    .bind(now)
    .bind(session_id)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// What `DescribeSessions` filters by ('' for a filter not given) and where its page starts.
pub(crate) struct SessionFilter<'a> {
    pub stack: &'a str,
    pub fleet: &'a str,
    pub user_id: String,
    pub authentication_type: String,
    pub instance_id: String,
    /// One session by id, in any state; '' for the PENDING and ACTIVE ones.
    pub session_id: String,
    pub after_time: i64,
    pub after_id: &'a str,
    pub limit: i64,
}

/// One page of sessions in start order (up to `limit`).
pub(crate) async fn list_sessions(store: &Store, filter: SessionFilter<'_>) -> Result<Vec<SessionRow>, ActionError> {
    let rows = sqlx::query(
        "SELECT * FROM sessions WHERE stack = $1 AND fleet = $2
         AND (($9 = '' AND state IN ('PENDING', 'ACTIVE')) OR session_id = $9)
         AND ($3 = '' OR (user_id = $3 AND authentication_type = $4)) AND ($5 = '' OR instance_id = $5)
         AND (start_time > $6 OR (start_time = $6 AND session_id > $7))
         ORDER BY start_time, session_id LIMIT $8",
    )
    .bind(filter.stack)
    .bind(filter.fleet)
    .bind(filter.user_id)
    .bind(filter.authentication_type)
    .bind(filter.instance_id)
    .bind(filter.after_time)
    .bind(filter.after_id)
    .bind(filter.limit)
    .bind(filter.session_id)
    .fetch_all(&store.pool)
    .await?;
    rows.iter().map(SessionRow::from_row).collect()
}

/// A user's newest sessions (at most 20), by id.
pub(crate) async fn list_user_session_ids(store: &Store, user: &model::UserRef) -> Result<Vec<String>, ActionError> {
    let rows = sqlx::query(
        "SELECT session_id FROM sessions WHERE user_id = $1 AND authentication_type = $2 AND COALESCE(issuer, '') = $3
         ORDER BY start_time DESC LIMIT 20",
    )
    .bind(user.user().as_str())
    .bind(user.mode().authentication_type())
    .bind(user.issuer_str().unwrap_or_default())
    .fetch_all(&store.pool)
    .await?;
    Ok(rows.iter().map(|row| row.try_get("session_id")).collect::<Result<_, _>>()?)
}

/// A session the engine watches for its timeouts: PENDING or ACTIVE.
pub(crate) struct OpenSession {
    pub session_id: String,
    pub fleet: String,
    pub state: SessionState,
    pub connection_state: ConnectionState,
    pub queued: i64,
    pub active_time: Option<i64>,
    pub max_expiration: i64,
    pub disconnected_at: Option<i64>,
    /// As in `SessionRow`: the settings and timeouts it started with (JSON).
    pub settings: String,
}

pub(crate) async fn list_open_sessions(store: &Store) -> Result<Vec<OpenSession>, ActionError> {
    let rows = sqlx::query(
        "SELECT session_id, fleet, state, connection_state, queued, active_time, max_expiration, disconnected_at, settings FROM sessions WHERE state IN ('PENDING', 'ACTIVE')",
    )
    .fetch_all(&store.pool)
    .await?;
    let open = |row: &AnyRow| {
        let state: String = row.try_get("state")?;
        let connection: String = row.try_get("connection_state")?;
        Ok(OpenSession {
            session_id: row.try_get("session_id")?,
            fleet: row.try_get("fleet")?,
            state: SessionState::parse(&state).ok_or_else(|| ActionError::internal(format!("a session in state `{state}`")))?,
            connection_state: ConnectionState::parse(&connection)
                .ok_or_else(|| ActionError::internal(format!("a session in connection state `{connection}`")))?,
            queued: row.try_get("queued")?,
            active_time: row.try_get("active_time")?,
            max_expiration: row.try_get("max_expiration")?,
            disconnected_at: row.try_get("disconnected_at")?,
            settings: row.try_get("settings")?,
        })
    };
    rows.iter().map(open).collect()
}

async fn ids(store: &Store, query: &str, fleet: Option<&str>) -> Result<Vec<String>, ActionError> {
    let mut query = sqlx::query(query);
    if let Some(fleet) = fleet {
        query = query.bind(fleet);
    }
    Ok(query.fetch_all(&store.pool).await?.iter().map(|row| row.try_get("session_id")).collect::<Result<_, _>>()?)
}

/// The sessions of `fleet` not yet ended.
pub(crate) async fn list_unended_session_ids(store: &Store, fleet: &str) -> Result<Vec<String>, ActionError> {
    ids(store, "SELECT session_id FROM sessions WHERE fleet = $1 AND state != 'EXPIRED'", Some(fleet)).await
}

/// The sessions of local user `user_name` (USERPOOL) not yet ended, on any fleet.
pub(crate) async fn list_unended_sessions_of_local_user(store: &Store, user_name: &str) -> Result<Vec<String>, ActionError> {
    let rows =
        sqlx::query("SELECT session_id FROM sessions WHERE user_id = $1 AND authentication_type = 'USERPOOL' AND state != 'EXPIRED'")
            .bind(user_name)
            .fetch_all(&store.pool)
            .await?;
    Ok(rows.iter().map(|row| row.try_get("session_id")).collect::<Result<_, _>>()?)
}

/// The sessions a node ends when it starts or stops: those on its own instances, and, when no
/// other node is alive to serve them (`alone`), those still waiting for an instance.
pub(crate) async fn list_node_unended_session_ids(store: &Store, node: &str, alone: bool) -> Result<Vec<String>, ActionError> {
    let rows = sqlx::query(
        "SELECT session_id FROM sessions s WHERE state != 'EXPIRED' AND (
             EXISTS (SELECT 1 FROM instances i WHERE (i.instance_id = s.instance_id OR i.session_id = s.session_id) AND (i.node = $1 OR i.node IS NULL))
             OR ($2 = 1 AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = s.instance_id OR i.session_id = s.session_id)))",
    )
    .bind(node)
    .bind(i64::from(alone))
    .fetch_all(&store.pool)
    .await?;
    Ok(rows.iter().map(|r| r.try_get("session_id")).collect::<Result<_, _>>()?)
}

/// Sessions on instances whose node was lost: the streaming engine ends them.
pub(crate) async fn list_sessions_on_lost_instances(store: &Store) -> Result<Vec<String>, ActionError> {
    ids(
        store,
        "SELECT session_id FROM sessions s WHERE state IN ('PENDING', 'ACTIVE')
         AND EXISTS (SELECT 1 FROM instances i WHERE (i.instance_id = s.instance_id OR i.session_id = s.session_id) AND i.state = 'LOST')",
        None,
    )
    .await
}

/// The sessions not yet ended of local users who no longer exist.
pub(crate) async fn list_sessions_of_deleted_local_users(store: &Store) -> Result<Vec<String>, ActionError> {
    ids(
        store,
        "SELECT session_id FROM sessions s WHERE state IN ('PENDING', 'ACTIVE') AND authentication_type = 'USERPOOL'
         AND NOT EXISTS (SELECT 1 FROM local_users u WHERE u.user_name = s.user_id)",
        None,
    )
    .await
}

/// `fleet`'s queue, first come first.
pub(crate) async fn list_queue(store: &Store, fleet: &str) -> Result<Vec<String>, ActionError> {
    ids(store, "SELECT session_id FROM sessions WHERE fleet = $1 AND state = 'PENDING' ORDER BY queued, session_id", Some(fleet)).await
}

/// The PENDING session is ACTIVE on `instance_id` from `now`: false if it was no longer PENDING.
pub(crate) async fn mark_active(store: &Store, session_id: &str, instance_id: &str, address: &str, now: i64) -> Result<bool, ActionError> {
    let done = sqlx::query(
        "UPDATE sessions SET state = 'ACTIVE', instance_id = $1, private_address = $2, active_time = $3 WHERE session_id = $4 AND state = 'PENDING'",
    )
    .bind(instance_id)
    .bind(address)
    .bind(now)
    .bind(session_id)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How long `fleet`'s sessions that ended since `since` lasted on average (ms), if any did.
pub(crate) async fn mean_duration_since(store: &Store, fleet: &str, since: i64) -> Result<Option<f64>, ActionError> {
    // PostgreSQL averages integers as NUMERIC, which the Any driver cannot read: both stores
    // give a double when asked for one.
    let recent = sqlx::query(
        "SELECT CAST(AVG(end_time - start_time) AS DOUBLE PRECISION) AS mean FROM sessions WHERE fleet = $1 AND end_time IS NOT NULL AND end_time > $2",
    )
    .bind(fleet)
            .bind(since)
            .fetch_one(&store.pool)
            .await?;
    Ok(recent.try_get::<Option<f64>, _>("mean").ok().flatten())
}

#[cfg(test)]
mod tests {
    use super::{NewSession, claim_for_node, claim_session, insert_session, release_session, still_claimed};
    use crate::core::node::Node;
    use crate::core::store::Store;

    /// A node of the store, ACTIVE under `epoch`, as this process knows itself.
    async fn node(store: &Store, name: &str, epoch: i64) -> Node {
        sqlx::query(
            "INSERT INTO nodes (name, epoch, state, address, host, data_dir, vpc_cidr, started, heartbeat, lease_expires)
             VALUES ($1, $2, 'ACTIVE', '', '', '', '', 0, 0, 0)",
        )
        .bind(name)
        .bind(epoch)
        .execute(&store.pool)
        .await
        .expect("node row");
        let node = Node::new(name);
        node.set_epoch(epoch);
        node
    }

    fn session<'a>(id: &'a str, user: &'a model::UserRef, node: Option<&'a Node>) -> NewSession<'a> {
        NewSession {
            session_id: id,
            user_id: "nora",
            user,
            stack: "stack",
            fleet: "fleet",
            application_id: None,
            session_context: None,
            settings: "{}".to_owned(),
            correlation_id: "c-1",
            cookie_hash: "00".to_owned(),
            now: 1,
            max_expiration: 2,
            client_ips: "[]".to_owned(),
            node,
        }
    }

    async fn node_of(store: &Store, session_id: &str) -> Option<String> {
        sqlx::Row::try_get(
            &sqlx::query("SELECT node FROM sessions WHERE session_id = $1").bind(session_id).fetch_one(&store.pool).await.expect("row"),
            "node",
        )
        .expect("node")
    }

    /// CI stop 39: a session redeemed on node a ran on b, whose engine took it from the queue
    /// before a offered it a's warm instances. A session is inserted as its redeemer's: no other
    /// node takes it until the redeemer gives it back.
    #[tokio::test]
    async fn a_redeemed_session_is_its_redeemers_until_given_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(None, dir.path()).await.expect("open");
        let (a, b) = (node(&store, "a", 1).await, node(&store, "b", 1).await);
        let user = model::UserRef::custom(model::UserId::new("nora").expect("user id"));
        assert!(insert_session(&store, session("s-1", &user, Some(&a))).await.expect("inserted"));
        assert_eq!(node_of(&store, "s-1").await.as_deref(), Some("a"));
        assert!(!claim_session(&store, "s-1", &b).await.expect("claim"), "b took a session a had not given back");
        assert!(claim_session(&store, "s-1", &a).await.expect("claim"), "the redeemer could not take its own session");
        release_session(&store, "s-1", "a").await.expect("released");
        assert!(claim_session(&store, "s-1", &b).await.expect("claim"), "a session given back stayed the redeemer's");
    }

    /// A node taken for lost (its sessions given back by the sweep) or running under an epoch
    /// it no longer holds takes no session: one it inserted or claimed after the sweep would
    /// have waited for it alone. Before, the insert and both claims named the node unfenced.
    #[tokio::test]
    async fn a_node_that_lost_its_lease_takes_no_session() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(None, dir.path()).await.expect("open");
        let (a, b) = (node(&store, "a", 1).await, node(&store, "b", 1).await);
        let user = model::UserRef::custom(model::UserId::new("nora").expect("user id"));
        sqlx::query("UPDATE nodes SET state = 'LOST' WHERE name = 'a'").execute(&store.pool).await.expect("lost");
        assert!(insert_session(&store, session("s-1", &user, Some(&a))).await.expect("inserted"));
        assert_eq!(node_of(&store, "s-1").await, None, "a node taken for lost inserted a session as its own");
        assert!(!claim_session(&store, "s-1", &a).await.expect("claim"), "a lost node claimed a warm session");
        assert!(!claim_for_node(&store, "s-1", "fleet", &a, 10).await.expect("claim"), "a lost node claimed a queued session");
        // Rejoined under epoch 2: the process still on epoch 1 takes nothing; the new one does.
        sqlx::query("UPDATE nodes SET state = 'ACTIVE', epoch = 2 WHERE name = 'a'").execute(&store.pool).await.expect("rejoined");
        assert!(!claim_session(&store, "s-1", &a).await.expect("claim"), "a stale epoch claimed a session");
        a.set_epoch(2);
        assert!(claim_for_node(&store, "s-1", "fleet", &a, 10).await.expect("claim"), "the rejoined node could not claim");
        assert_eq!(node_of(&store, "s-1").await.as_deref(), Some("a"));
        assert!(!claim_session(&store, "s-1", &b).await.expect("claim"), "b took a's session");
        // A launch's failure ends the session only if it is still the node's under the lease
        // it was claimed with (review finding: a launch begun before the node was lost ended
        // the session another node served).
        assert!(still_claimed(&store, "s-1", "a", 2).await.expect("held"));
        assert!(!still_claimed(&store, "s-1", "a", 1).await.expect("held"), "a claim of the old epoch still holds");
        assert!(!still_claimed(&store, "s-1", "b", 1).await.expect("held"));
    }
}
