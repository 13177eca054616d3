//! The `nodes` and `cluster_secrets` tables: typed rows and every statement the cluster makes.

use base64::Engine as _;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::core::error::ActionError;
use crate::core::store::Store;

pub(crate) const ACTIVE: &str = "ACTIVE";
pub(crate) const LOST: &str = "LOST";
const STOPPED: &str = "STOPPED";

/// A node as `nodes` holds it.
pub(crate) struct NodeRow {
    pub name: String,
    pub epoch: i64,
    pub state: String,
    pub address: String,
    pub host: String,
    pub data_dir: String,
    pub vpc_cidr: String,
    pub started: i64,
    pub heartbeat: i64,
    pub lease_expires: i64,
    pub lost_at: Option<i64>,
    pub instances: i64,
    pub id_slots: i64,
    pub relay_address: Option<String>,
}

impl NodeRow {
    fn from_row(row: &AnyRow) -> Result<NodeRow, ActionError> {
        Ok(NodeRow {
            name: row.try_get("name")?,
            epoch: row.try_get("epoch")?,
            state: row.try_get("state")?,
            address: row.try_get("address")?,
            host: row.try_get("host")?,
            data_dir: row.try_get("data_dir")?,
            vpc_cidr: row.try_get("vpc_cidr")?,
            started: row.try_get("started")?,
            heartbeat: row.try_get("heartbeat")?,
            lease_expires: row.try_get("lease_expires")?,
            lost_at: row.try_get("lost_at")?,
            instances: row.try_get("instances")?,
            id_slots: row.try_get("id_slots")?,
            relay_address: row.try_get("relay_address")?,
        })
    }
}

pub(crate) async fn list(store: &Store) -> Result<Vec<NodeRow>, ActionError> {
    let rows = sqlx::query("SELECT * FROM nodes ORDER BY name").fetch_all(&store.pool).await?;
    rows.iter().map(NodeRow::from_row).collect()
}

pub(crate) async fn get(store: &Store, name: &str) -> Result<Option<NodeRow>, ActionError> {
    let row = sqlx::query("SELECT * FROM nodes WHERE name = $1").bind(name).fetch_optional(&store.pool).await?;
    row.as_ref().map(NodeRow::from_row).transpose()
}

/// Another node whose lease still holds, if any.
pub(crate) async fn live_other_node(store: &Store, me: &str, now: i64) -> Result<Option<NodeRow>, ActionError> {
    let row = sqlx::query("SELECT * FROM nodes WHERE name <> $1 AND state = $2 AND lease_expires > $3 LIMIT 1")
        .bind(me)
        .bind(ACTIVE)
        .bind(now)
        .fetch_optional(&store.pool)
        .await?;
    row.as_ref().map(NodeRow::from_row).transpose()
}

/// What a node claims when it joins.
pub(crate) struct Claim<'a> {
    pub name: &'a str,
    pub host: &'a str,
    pub data_dir: &'a str,
    pub address: &'a str,
    pub vpc_cidr: &'a str,
    pub id_slots: i64,
    pub now: i64,
    pub lease_expires: i64,
}

/// Takes the node's row under a new epoch, unless a live lease of another process holds it
/// (the same host and data directory is this node restarting). Returns the new epoch.
pub(crate) async fn claim(store: &Store, claim: &Claim<'_>) -> Result<Option<i64>, ActionError> {
    let row = sqlx::query(
        "INSERT INTO nodes (name, epoch, state, address, host, data_dir, vpc_cidr, started, heartbeat, lease_expires, instances, id_slots)
         VALUES ($1, 1, $2, $3, $4, $5, $6, $7, $7, $8, 0, $9)
         ON CONFLICT (name) DO UPDATE SET epoch = nodes.epoch + 1, state = $2, address = $3, host = $4, data_dir = $5,
             vpc_cidr = $6, started = $7, heartbeat = $7, lease_expires = $8, lost_at = NULL, instances = 0, id_slots = $9
         WHERE nodes.state <> $2 OR nodes.lease_expires <= $7 OR (nodes.host = $4 AND nodes.data_dir = $5)
         RETURNING epoch",
    )
    .bind(claim.name)
    .bind(ACTIVE)
    .bind(claim.address)
    .bind(claim.host)
    .bind(claim.data_dir)
    .bind(claim.vpc_cidr)
    .bind(claim.now)
    .bind(claim.lease_expires)
    .bind(claim.id_slots)
    .fetch_optional(&store.pool)
    .await?;
    row.map(|r| r.try_get::<i64, _>("epoch")).transpose().map_err(ActionError::from)
}

/// A heartbeat's renewal.
pub(crate) struct Renewal<'a> {
    pub name: &'a str,
    pub epoch: i64,
    pub address: &'a str,
    pub relay_address: Option<&'a str>,
    pub now: i64,
    pub lease_expires: i64,
}

/// Renews the lease if the node still holds it under its epoch; false when it does not.
pub(crate) async fn renew(store: &Store, renewal: &Renewal<'_>) -> Result<bool, ActionError> {
    let done = sqlx::query(
        "UPDATE nodes SET heartbeat = $1, lease_expires = $2, address = $3, relay_address = $7,
             instances = (SELECT COUNT(*) FROM instances WHERE node = $4 AND state IN ('PENDING', 'RUNNING', 'STOPPING'))
         WHERE name = $4 AND epoch = $5 AND state = $6",
    )
    .bind(renewal.now)
    .bind(renewal.lease_expires)
    .bind(renewal.address)
    .bind(renewal.name)
    .bind(renewal.epoch)
    .bind(ACTIVE)
    .bind(renewal.relay_address)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks every other active node whose lease ran out as lost; returns those this call marked
/// (a node that another sweeper marked first is not among them).
pub(crate) async fn mark_lost(store: &Store, me: &str, now: i64) -> Result<Vec<NodeRow>, ActionError> {
    let rows = sqlx::query("UPDATE nodes SET state = $1, lost_at = $2 WHERE state = $3 AND lease_expires < $2 AND name <> $4 RETURNING *")
        .bind(LOST)
        .bind(now)
        .bind(ACTIVE)
        .bind(me)
        .fetch_all(&store.pool)
        .await?;
    rows.iter().map(NodeRow::from_row).collect()
}

/// Which nodes' rows a marking reaches: the node a sweep just took for lost, or every node
/// still lost. The sweep marks every lost node's rows again each time: a node's fenced write
/// (an instance's insert, a notebook's start) that read its lease before the sweep took it
/// can commit after the sweep (PostgreSQL reads the fence in the write's own snapshot), and
/// what it wrote would wait for that node alone.
#[derive(Clone, Copy)]
pub(crate) enum Gone<'a> {
    Node(&'a str),
    EveryLost,
}

impl Gone<'_> {
    /// The condition on `table`'s `node` column; `Node` binds its name as `$next`. With
    /// `while_lost`, a node named is marked only while still lost: one that came back
    /// meanwhile owns what it has started since (an instance). Its notebooks' rows are marked
    /// even so: it starts them again only once the sweep has failed them.
    fn condition(self, table: &str, next: usize, while_lost: bool) -> String {
        let lost = format!("EXISTS (SELECT 1 FROM nodes n WHERE n.name = {table}.node AND n.state = '{LOST}')");
        match self {
            Gone::Node(_) if while_lost => format!("{table}.node = ${next} AND {lost}"),
            Gone::Node(_) => format!("{table}.node = ${next}"),
            Gone::EveryLost => lost,
        }
    }

    fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>
    where
        Self: 'q,
    {
        match self {
            Gone::Node(node) => query.bind(node),
            Gone::EveryLost => query,
        }
    }
}

/// A lost node's instances that were still alive become `LOST`: they hold no capacity, their
/// sessions end, and the node destroys them when it comes back. Returns how many.
pub(crate) async fn mark_instances_lost(store: &Store, gone: Gone<'_>) -> Result<u64, ActionError> {
    let sql = format!(
        "UPDATE instances SET state = $1 WHERE state IN ('PENDING', 'RUNNING', 'STOPPING') AND {}",
        gone.condition("instances", 2, true)
    );
    let done = gone.bind(sqlx::query(&sql).bind(LOST)).execute(&store.pool).await?;
    Ok(done.rows_affected())
}

/// A lost node's notebooks that were not at rest fail (their volumes are on its disk): their
/// access ends now, and they start again once the node is back. Returns how many.
pub(crate) async fn mark_notebooks_lost(store: &Store, gone: Gone<'_>) -> Result<u64, ActionError> {
    let mut tx = store.pool.begin().await?;
    let sql = format!(
        "DELETE FROM notebook_access WHERE notebook IN
             (SELECT name FROM notebooks WHERE {} AND state <> 'Stopped' AND state <> 'Failed')",
        gone.condition("notebooks", 1, false)
    );
    gone.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
    let sql = format!(
        "UPDATE notebooks SET state = 'Failed', instance_id = NULL, failure_reason = $1
         WHERE {} AND state <> 'Stopped' AND state <> 'Failed'",
        gone.condition("notebooks", 2, false)
    );
    let reason = match gone {
        Gone::Node(node) => format!("node `{node}`, which holds the notebook's volume, was lost; start the notebook again once it is back"),
        Gone::EveryLost => "the node that holds the notebook's volume was lost; start the notebook again once it is back".to_owned(),
    };
    let done = gone.bind(sqlx::query(&sql).bind(reason)).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// Where a live node's notebook relay listens, if it is live and published one.
pub(crate) async fn live_relay(store: &Store, node: &str, now: i64) -> Result<Option<String>, ActionError> {
    let row = sqlx::query("SELECT relay_address FROM nodes WHERE name = $1 AND state = $2 AND lease_expires >= $3")
        .bind(node)
        .bind(ACTIVE)
        .bind(now)
        .fetch_optional(&store.pool)
        .await?;
    Ok(row.and_then(|r| r.try_get::<Option<String>, _>("relay_address").ok().flatten()))
}

/// A clean stop: the lease ends now, under the node's own epoch only.
pub(crate) async fn leave(store: &Store, name: &str, epoch: i64, now: i64) -> Result<(), ActionError> {
    sqlx::query("UPDATE nodes SET state = $1, lease_expires = $2, instances = 0 WHERE name = $3 AND epoch = $4 AND state = $5")
        .bind(STOPPED)
        .bind(now)
        .bind(name)
        .bind(epoch)
        .bind(ACTIVE)
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// The wrapped secret stored under `name`, storing `wrapped` first if there is none (the
/// first node's); base64 in the row, so both stores keep it as text.
pub(crate) async fn secret_or_insert(store: &Store, name: &str, wrapped: &[u8]) -> Result<Vec<u8>, ActionError> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(wrapped);
    sqlx::query("INSERT INTO cluster_secrets (name, wrapped) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(&encoded)
        .execute(&store.pool)
        .await?;
    let stored: String =
        sqlx::query("SELECT wrapped FROM cluster_secrets WHERE name = $1").bind(name).fetch_one(&store.pool).await?.try_get("wrapped")?;
    base64::engine::general_purpose::STANDARD
        .decode(stored)
        .map_err(|e| ActionError::internal(format_args!("cluster secret `{name}`: {e}")))
}

/// A live node and the instances it may run.
pub(crate) struct LiveNode {
    pub name: String,
    pub capacity: i64,
    pub running: i64,
}

/// The nodes whose leases hold, by name.
pub(crate) async fn live_nodes(store: &Store, now: i64) -> Result<Vec<LiveNode>, ActionError> {
    let rows = sqlx::query("SELECT name, id_slots, instances FROM nodes WHERE state = $1 AND lease_expires > $2 ORDER BY name")
        .bind(ACTIVE)
        .bind(now)
        .fetch_all(&store.pool)
        .await?;
    rows.iter()
        .map(|r| Ok(LiveNode { name: r.try_get("name")?, capacity: r.try_get("id_slots")?, running: r.try_get("instances")? }))
        .collect()
}

/// A leaving node's queued sessions that it took but started nothing for go back to the queue
/// (a lost node's go back at the sweep, with those of every node gone).
pub(crate) async fn release_sessions(store: &Store, node: &str) -> Result<u64, ActionError> {
    let done = sqlx::query(
        "UPDATE sessions SET node = NULL WHERE node = $1 AND state = 'PENDING'
         AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.session_id = sessions.session_id)",
    )
    .bind(node)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected())
}

/// Queued sessions held by a node that no longer holds its lease (lost or stopped), which took
/// them and started nothing for them, go back to the queue. Run at every sweep: a node's claim
/// that committed just after the sweep that took the node for lost (PostgreSQL reads the
/// fence in its own snapshot) would otherwise wait for that node alone.
pub(crate) async fn release_sessions_of_gone_nodes(store: &Store) -> Result<u64, ActionError> {
    let done = sqlx::query(
        "UPDATE sessions SET node = NULL WHERE state = 'PENDING' AND node IS NOT NULL
         AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = sessions.node AND n.state = $1)
         AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.session_id = sessions.session_id)",
    )
    .bind(ACTIVE)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::{Gone, mark_instances_lost, mark_notebooks_lost, release_sessions_of_gone_nodes};
    use crate::core::store::Store;

    /// Review finding: a claim that committed after the sweep took its node for lost kept the
    /// session that node's for good. Every sweep gives back what a node no longer holding its
    /// lease holds; an active node's sessions, and one with an instance, stay.
    #[tokio::test]
    async fn every_sweep_marks_what_lost_nodes_hold_and_gives_back_the_queued_sessions_of_nodes_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(None, dir.path()).await.expect("open");
        let run = |sql: String| {
            let store = &store;
            async move { sqlx::query(&sql).execute(&store.pool).await.expect(&sql) }
        };
        for (name, state) in [("a", "LOST"), ("b", "ACTIVE"), ("c", "STOPPED")] {
            run(format!(
                "INSERT INTO nodes (name, epoch, state, address, host, data_dir, vpc_cidr, started, heartbeat, lease_expires)
                 VALUES ('{name}', 1, '{state}', '', '', '', '', 0, 0, 0)"
            ))
            .await;
        }
        for (session, node) in [("s-a", "a"), ("s-b", "b"), ("s-c", "c"), ("s-a-started", "a")] {
            run(format!(
                "INSERT INTO sessions (session_id, user_id, authentication_type, stack, fleet, state, connection_state, settings, correlation_id,
                 cookie_hash, queued, start_time, max_expiration, last_input, connected_once, client_ips, node)
                 VALUES ('{session}', 'nora', 'API', 'stack', 'fleet', 'PENDING', 'NOT_CONNECTED', '{{}}', 'c', '{session}', 1, 1, 2, 1, 0, '[]', '{node}')"
            ))
            .await;
        }
        run("INSERT INTO instances (instance_id, image, instance_type, state, link_index, host_interface, host_address, private_address, credential_expires, created, session_id, node)
             VALUES ('i-1', 'base', 't', 'PENDING', 0, 'h', '10.0.0.1', '10.0.0.2', 0, 0, 's-a-started', 'a')".to_owned())
        .await;
        // A lost node's late insert (its fenced write committed after the sweep) is marked at
        // the next sweep, as the sweep that took the node marked the rest (review finding: its
        // session waited for the lost node until its queue timeout); an active or stopped
        // node's rows stay.
        for (instance, node, state) in [("i-b", "b", "RUNNING"), ("i-c", "c", "PENDING"), ("i-a-ended", "a", "TERMINATED")] {
            run(format!(
                "INSERT INTO instances (instance_id, image, instance_type, state, link_index, host_interface, host_address, private_address, credential_expires, created, node)
                 VALUES ('{instance}', 'base', 't', '{state}', 1, 'h', '10.0.0.1', '10.0.0.3', 0, 0, '{node}')"
            ))
            .await;
        }
        for (notebook, node) in [("nb-a", "a"), ("nb-b", "b")] {
            run(format!(
                "INSERT INTO notebooks (name, instance_type, volume_size_gb, kms_key_id, state, wrapped_key, created, node)
                 VALUES ('{notebook}', 't', 5, 'k', 'InService', 'w', 0, '{node}')"
            ))
            .await;
            run(format!(
                "INSERT INTO notebook_access (cookie_hash, notebook, session_id, expires, created) VALUES ('{notebook}', '{notebook}', 's', 9, 0)"
            ))
            .await;
        }
        assert_eq!(mark_instances_lost(&store, Gone::Node("b")).await.expect("marked"), 0, "a node back from lost keeps what it runs");
        assert_eq!(mark_instances_lost(&store, Gone::EveryLost).await.expect("marked"), 1);
        assert_eq!(mark_notebooks_lost(&store, Gone::EveryLost).await.expect("marked"), 1);
        let state_of = |table: &'static str, key: &'static str, id: &'static str| {
            let store = &store;
            async move {
                let row =
                    sqlx::query(&format!("SELECT state FROM {table} WHERE {key} = $1")).bind(id).fetch_one(&store.pool).await.expect("row");
                sqlx::Row::try_get::<String, _>(&row, "state").expect("state")
            }
        };
        assert_eq!(state_of("instances", "instance_id", "i-1").await, "LOST");
        assert_eq!(state_of("instances", "instance_id", "i-b").await, "RUNNING");
        assert_eq!(state_of("instances", "instance_id", "i-c").await, "PENDING");
        assert_eq!(state_of("instances", "instance_id", "i-a-ended").await, "TERMINATED");
        assert_eq!(state_of("notebooks", "name", "nb-a").await, "Failed");
        assert_eq!(state_of("notebooks", "name", "nb-b").await, "InService");
        let access = sqlx::query("SELECT notebook FROM notebook_access").fetch_all(&store.pool).await.expect("access").len();
        assert_eq!(access, 1, "only the lost node's notebook lost its access");
        assert_eq!(release_sessions_of_gone_nodes(&store).await.expect("released"), 2);
        let node_of = |session: &'static str| {
            let store = &store;
            async move {
                let row =
                    sqlx::query("SELECT node FROM sessions WHERE session_id = $1").bind(session).fetch_one(&store.pool).await.expect("row");
                sqlx::Row::try_get::<Option<String>, _>(&row, "node").expect("node")
            }
        };
        assert_eq!(node_of("s-a").await, None);
        assert_eq!(node_of("s-c").await, None);
        assert_eq!(node_of("s-b").await.as_deref(), Some("b"));
        assert_eq!(node_of("s-a-started").await.as_deref(), Some("a"), "a session with an instance is the lost node's to end");
    }
}
