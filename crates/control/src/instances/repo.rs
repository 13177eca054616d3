//! The `instances` table: typed rows, the states an instance passes through, and every query
//! the instances service makes. No other instances file reads a column by name.

use std::net::Ipv4Addr;

use serde_json::{Value, json};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::core::error::{ActionError, ErrorCode};
use crate::core::node::fence;
use crate::core::platform::Platform;
use crate::core::store::{Store, millis_to_rfc3339, now_millis};

crate::core::codec::stored_as_text! {
    /// Where an instance is in its life. PENDING, RUNNING and STOPPING instances still hold a link
    /// (and, after a crash, are reconciled); TERMINATED and FAILED rows stay for the record.
    pub(super) enum InstanceState {
        Pending = "PENDING",
        Running = "RUNNING",
        Stopping = "STOPPING",
        Terminated = "TERMINATED",
        Failed = "FAILED",
        /// Its node was lost (its lease ran out): it holds no capacity, and the node destroys
        /// it when it comes back.
        Lost = "LOST",
    }
}

impl InstanceState {
    /// Whether the instance has ended, for good or by failing to start.
    pub(super) fn has_ended(self) -> bool {
        matches!(self, InstanceState::Terminated | InstanceState::Failed)
    }
}

/// An instance as `DescribeInstances` shows it.
pub(super) struct InstanceRow {
    pub instance_id: String,
    pub image: String,
    pub instance_type: String,
    pub state: InstanceState,
    pub private_address: String,
    pub host_address: String,
    pub user_id: Option<String>,
    pub created: i64,
}

impl InstanceRow {
    fn from_row(row: &AnyRow) -> Result<InstanceRow, ActionError> {
        let state: String = row.try_get("state")?;
        Ok(InstanceRow {
            instance_id: row.try_get("instance_id")?,
            image: row.try_get("image")?,
            instance_type: row.try_get("instance_type")?,
            state: InstanceState::parse(&state).ok_or_else(|| ActionError::internal(format_args!("unknown instance state `{state}`")))?,
            private_address: row.try_get("private_address")?,
            host_address: row.try_get("host_address")?,
            user_id: row.try_get("user_id")?,
            created: row.try_get("created")?,
        })
    }

    /// The instance in the API's members.
    pub(super) fn to_json(&self) -> Value {
        json!({
            "InstanceId": self.instance_id,
            "ImageName": self.image,
            "InstanceType": self.instance_type,
            "State": self.state.as_str(),
            "PrivateIpAddress": self.private_address,
            "EndpointAddress": self.host_address,
            "UserId": self.user_id,
            "CreatedTime": millis_to_rfc3339(self.created),
        })
    }
}

/// One instance, which must exist.
pub(super) async fn find(plane: &Platform, instance_id: &str) -> Result<InstanceRow, ActionError> {
    let row = sqlx::query("SELECT * FROM instances WHERE instance_id = $1").bind(instance_id).fetch_one(&plane.store.pool).await?;
    InstanceRow::from_row(&row)
}

/// Every instance, oldest first.
pub(super) async fn all(plane: &Platform) -> Result<Vec<InstanceRow>, ActionError> {
    let rows = sqlx::query("SELECT * FROM instances ORDER BY created").fetch_all(&plane.store.pool).await?;
    rows.iter().map(InstanceRow::from_row).collect()
}

/// The link indexes held by this node's instances that have not ended (inside the allocating
/// transaction): links are a host's, so other nodes' instances hold none of this one's.
pub(super) async fn used_link_indexes(conn: &mut AnyConnection, node: &str) -> Result<Vec<i64>, ActionError> {
    let rows = sqlx::query(
        "SELECT link_index FROM instances WHERE state IN ('PENDING', 'RUNNING', 'STOPPING', 'LOST') AND (node = $1 OR node IS NULL)",
    )
    .bind(node)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(|r| r.try_get("link_index")).collect::<Result<_, _>>()?)
}

/// The row of an instance about to be made, recorded PENDING before anything of it exists.
pub(super) struct NewInstance<'a> {
    pub instance_id: &'a str,
    pub image: &'a str,
    pub instance_type: &'a str,
    pub link_index: i64,
    pub link: &'a sandbox::network::Link,
    pub user_id: Option<String>,
    pub access_mode: Option<&'a str>,
    pub credential_hash: String,
    pub credential_expires: i64,
    pub correlation_id: Option<String>,
    pub fleet: Option<String>,
    pub session_id: Option<String>,
    pub issuer: Option<&'a str>,
    /// The node that starts it, and the epoch of that node's lease.
    pub node: &'a str,
    pub node_epoch: i64,
}

/// Fenced: a node that no longer holds its lease starts nothing (its instances were taken for
/// lost, and a new one's session given back), and is told so.
pub(super) async fn insert_pending(conn: &mut AnyConnection, new: NewInstance<'_>) -> Result<(), ActionError> {
    let sql = format!(
        "INSERT INTO instances (instance_id, image, instance_type, state, link_index, host_interface, host_address, private_address, user_id, access_mode,
         credential_hash, credential_expires, correlation_id, created, fleet, session_id, issuer, node, node_epoch)
         SELECT $1, $2, $3, 'PENDING', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18 WHERE {}",
        fence(17, 18)
    );
    let done = sqlx::query(&sql)
        .bind(new.instance_id)
        .bind(new.image)
        .bind(new.instance_type)
        .bind(new.link_index)
        .bind(&new.link.host_interface)
        .bind(new.link.host_address.to_string())
        .bind(new.link.instance_address.to_string())
        .bind(new.user_id)
        .bind(new.access_mode)
        .bind(new.credential_hash)
        .bind(new.credential_expires)
        .bind(new.correlation_id)
        .bind(now_millis())
        .bind(new.fleet)
        .bind(new.session_id)
        .bind(new.issuer)
        .bind(new.node)
        .bind(new.node_epoch)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ActionError::new(
            503,
            ErrorCode::ServiceUnavailable,
            format!(
                "node `{}` no longer holds its lease (other nodes took it for lost): it starts no instance until it joins again",
                new.node
            ),
        ));
    }
    Ok(())
}

/// Logs a fenced write that changed nothing: this node lost its lease, and what it owned is
/// no longer its to change.
fn fenced(plane: &Platform, instance_id: &str, what: &str, done: &sqlx::any::AnyQueryResult) {
    if done.rows_affected() == 0 {
        tracing::warn!(node = %plane.node.name, epoch = plane.node.epoch(), instance = instance_id, what, "a fenced write touched 0 rows");
    }
}

pub(super) async fn mark_running(plane: &Platform, instance_id: &str, init_pid: i64) -> Result<(), ActionError> {
    let sql =
        format!("UPDATE instances SET state = 'RUNNING', init_pid = $1 WHERE instance_id = $2 AND state = 'PENDING' AND {}", fence(3, 4));
    let done = sqlx::query(&sql)
        .bind(init_pid)
        .bind(instance_id)
        .bind(&plane.node.name)
        .bind(plane.node.epoch())
        .execute(&plane.store.pool)
        .await?;
    fenced(plane, instance_id, "mark running", &done);
    Ok(())
}

/// An instance that could not start: FAILED, its row kept for the record.
pub(super) async fn mark_failed(plane: &Platform, instance_id: &str) -> Result<(), sqlx::Error> {
    let sql = format!("UPDATE instances SET state = 'FAILED', ended = $1 WHERE instance_id = $2 AND {}", fence(3, 4));
    let done = sqlx::query(&sql)
        .bind(now_millis())
        .bind(instance_id)
        .bind(&plane.node.name)
        .bind(plane.node.epoch())
        .execute(&plane.store.pool)
        .await?;
    fenced(plane, instance_id, "mark failed", &done);
    Ok(())
}

pub(super) async fn mark_stopping(plane: &Platform, instance_id: &str) -> Result<(), sqlx::Error> {
    let sql =
        format!("UPDATE instances SET state = 'STOPPING' WHERE instance_id = $1 AND state IN ('PENDING', 'RUNNING') AND {}", fence(2, 3));
    let done = sqlx::query(&sql).bind(instance_id).bind(&plane.node.name).bind(plane.node.epoch()).execute(&plane.store.pool).await?;
    fenced(plane, instance_id, "mark stopping", &done);
    Ok(())
}

/// An ended instance: TERMINATED, its credentials gone.
pub(super) async fn mark_terminated(plane: &Platform, instance_id: &str) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE instances SET state = 'TERMINATED', credential_hash = NULL, previous_credential_hash = NULL, ended = $1 WHERE instance_id = $2 AND {}",
        fence(3, 4)
    );
    let done = sqlx::query(&sql)
        .bind(now_millis())
        .bind(instance_id)
        .bind(&plane.node.name)
        .bind(plane.node.epoch())
        .execute(&plane.store.pool)
        .await?;
    fenced(plane, instance_id, "mark terminated", &done);
    Ok(())
}

/// The session a fleet instance is handed to.
pub(super) struct AssignedTo<'a> {
    pub user_id: String,
    pub access_mode: &'a str,
    pub session_id: Option<String>,
    pub correlation_id: &'a str,
    pub issuer: Option<&'a str>,
}

pub(super) async fn assign(plane: &Platform, instance_id: &str, to: AssignedTo<'_>) -> Result<(), ActionError> {
    sqlx::query(
        "UPDATE instances SET user_id = $1, access_mode = $2, session_id = $3, correlation_id = $4, issuer = $5 WHERE instance_id = $6",
    )
    .bind(to.user_id)
    .bind(to.access_mode)
    .bind(to.session_id)
    .bind(to.correlation_id)
    .bind(to.issuer)
    .bind(instance_id)
    .execute(&plane.store.pool)
    .await?;
    Ok(())
}

/// The link an instance was given (an unreadable address reads as 0.0.0.0).
fn link_from(row: &AnyRow) -> Result<sandbox::network::Link, sqlx::Error> {
    Ok(sandbox::network::Link {
        host_interface: row.try_get("host_interface")?,
        host_address: row.try_get::<String, _>("host_address")?.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        instance_address: row.try_get::<String, _>("private_address")?.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
    })
}

pub(super) async fn link_of(plane: &Platform, instance_id: &str) -> Result<sandbox::network::Link, ActionError> {
    let row = sqlx::query("SELECT host_interface, host_address, private_address FROM instances WHERE instance_id = $1")
        .bind(instance_id)
        .fetch_one(&plane.store.pool)
        .await?;
    Ok(link_from(&row)?)
}

/// An operator's command in an instance, kept for its user to see.
pub(super) struct Exec<'a> {
    pub instance_id: &'a str,
    pub operator: &'a str,
    pub command: String,
    pub exit_code: Option<i64>,
}

pub(super) async fn record_exec(plane: &Platform, exec: Exec<'_>) -> Result<(), ActionError> {
    sqlx::query("INSERT INTO instance_execs (instance_id, operator, command, exit_code, time) VALUES ($1, $2, $3, $4, $5)")
        .bind(exec.instance_id)
        .bind(exec.operator)
        .bind(exec.command)
        .bind(exec.exit_code)
        .bind(now_millis())
        .execute(&plane.store.pool)
        .await?;
    Ok(())
}

/// The user an instance serves, as recorded: id, access mode and identity provider.
pub(super) struct InstanceUser {
    pub user_id: Option<String>,
    pub access_mode: Option<String>,
    pub issuer: Option<String>,
}

pub(super) async fn user_of(plane: &Platform, instance_id: &str) -> Result<InstanceUser, ActionError> {
    let row = sqlx::query("SELECT user_id, access_mode, issuer FROM instances WHERE instance_id = $1")
        .bind(instance_id)
        .fetch_one(&plane.store.pool)
        .await?;
    Ok(InstanceUser { user_id: row.try_get("user_id")?, access_mode: row.try_get("access_mode")?, issuer: row.try_get("issuer")? })
}

/// A running instance whose credential expires before `before`, with its init's pid if known.
pub(super) struct DueForRotation {
    pub instance_id: String,
    pub init_pid: Option<i64>,
}

/// This node's own: another node's init pid names nothing here (or a process of another
/// instance, which would be handed the credential).
pub(super) async fn due_for_rotation(store: &Store, node: &str, before: i64) -> Result<Vec<DueForRotation>, ActionError> {
    let rows = sqlx::query(
        "SELECT instance_id, init_pid, credential_hash, credential_expires FROM instances WHERE state = 'RUNNING' AND credential_expires < $1 AND node = $2",
    )
    .bind(before)
    .bind(node)
    .fetch_all(&store.pool)
        .await?;
    let due = rows
        .iter()
        .map(|row| Ok(DueForRotation { instance_id: row.try_get("instance_id")?, init_pid: row.try_get("init_pid")? }))
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(due)
}

/// The new credential becomes current; the one it replaces stays valid until its own expiry.
/// Fenced: only the node that runs the instance, while it holds its lease.
pub(super) async fn rotate_credential(plane: &Platform, instance_id: &str, hash: String, expires: i64) -> Result<(), ActionError> {
    let sql = format!(
        "UPDATE instances SET previous_credential_hash = credential_hash, previous_credential_expires = credential_expires,
         credential_hash = $1, credential_expires = $2 WHERE instance_id = $3 AND state = 'RUNNING' AND node = $4 AND {}",
        fence(4, 5)
    );
    let done = sqlx::query(&sql)
        .bind(hash)
        .bind(expires)
        .bind(instance_id)
        .bind(&plane.node.name)
        .bind(plane.node.epoch())
        .execute(&plane.store.pool)
        .await?;
    fenced(plane, instance_id, "rotate the credential", &done);
    Ok(())
}

/// What the endpoint checks a call against: the instance on the caller's link and its two
/// valid credentials (the current and the one it replaced), each with its expiry.
pub(super) struct EndpointRow {
    pub instance_id: String,
    pub user_id: Option<String>,
    pub access_mode: Option<String>,
    pub issuer: Option<String>,
    pub correlation_id: Option<String>,
    pub credentials: [(Option<String>, Option<i64>); 2],
}

/// This node's running (or stopping) instance whose private address is `address`: a call on
/// this node's endpoint comes from one of its own links, and nodes on different hosts hand
/// out the same addresses.
pub(super) async fn serving_at(store: &Store, node: &str, address: &str) -> Result<Option<EndpointRow>, ActionError> {
    let row = sqlx::query(
        "SELECT instance_id, user_id, access_mode, issuer, credential_hash, credential_expires, previous_credential_hash, previous_credential_expires, correlation_id
         FROM instances WHERE private_address = $1 AND state IN ('RUNNING', 'STOPPING') AND node = $2",
    )
    .bind(address)
    .bind(node)
    .fetch_optional(&store.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(EndpointRow {
        instance_id: row.try_get("instance_id")?,
        user_id: row.try_get("user_id")?,
        access_mode: row.try_get("access_mode")?,
        issuer: row.try_get("issuer")?,
        correlation_id: row.try_get("correlation_id")?,
        credentials: [
            (row.try_get("credential_hash")?, row.try_get("credential_expires")?),
            (row.try_get("previous_credential_hash")?, row.try_get("previous_credential_expires")?),
        ],
    }))
}

/// An instance recorded as not yet ended, with what its teardown needs.
pub(super) struct Unended {
    pub instance_id: String,
    pub link: sandbox::network::Link,
    pub init_pid: Option<i64>,
}

/// This node's instances that its rows still call alive, or that other nodes took for lost
/// while it was away: what a start must destroy.
pub(super) async fn unended(plane: &Platform) -> Result<Vec<Unended>, ActionError> {
    let rows = sqlx::query(
        "SELECT instance_id, host_interface, host_address, private_address, init_pid FROM instances
         WHERE state IN ('PENDING', 'RUNNING', 'STOPPING', 'LOST') AND (node = $1 OR node IS NULL)",
    )
    .bind(&plane.node.name)
    .fetch_all(&plane.store.pool)
    .await?;
    let unended = rows
        .iter()
        .map(|row| Ok(Unended { instance_id: row.try_get("instance_id")?, link: link_from(row)?, init_pid: row.try_get("init_pid")? }))
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(unended)
}

#[cfg(test)]
mod tests {
    use super::{NewInstance, due_for_rotation, insert_pending, serving_at};
    use crate::core::store::Store;

    /// Review finding: nodes on different hosts hand out the same private addresses, and the
    /// endpoint's lookup by address and the credential rotation read every node's instances.
    /// A call on one node's endpoint matched another node's instance (the caller was refused,
    /// or taken for that instance), and a node wrote a rotated credential into whatever process
    /// of its own host bore the other instance's init pid. Each node now reads its own.
    #[tokio::test]
    async fn a_node_reads_only_its_own_instances_by_address_and_for_rotation() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(None, dir.path()).await.expect("open");
        let address = std::net::Ipv4Addr::new(10, 254, 0, 2);
        for node in ["a", "b"] {
            sqlx::query(
                "INSERT INTO nodes (name, epoch, state, address, host, data_dir, vpc_cidr, started, heartbeat, lease_expires)
                 VALUES ($1, 1, 'ACTIVE', '', '', '', '', 0, 0, 0)",
            )
            .bind(node)
            .execute(&store.pool)
            .await
            .expect("node row");
        }
        for (id, node) in [("i-a", "a"), ("i-b", "b")] {
            let link = sandbox::network::Link::new(id, std::net::Ipv4Addr::new(10, 254, 0, 1), address);
            let new = NewInstance {
                instance_id: id,
                image: "base",
                instance_type: "stream.standard.small",
                link_index: 0,
                link: &link,
                user_id: Some(format!("user-{node}")),
                access_mode: Some("USER"),
                credential_hash: format!("hash-{node}"),
                credential_expires: 1,
                correlation_id: None,
                fleet: None,
                session_id: None,
                issuer: None,
                node,
                node_epoch: 1,
            };
            let mut conn = store.pool.acquire().await.expect("connection");
            insert_pending(&mut conn, new).await.expect("inserted");
        }
        sqlx::query("UPDATE instances SET state = 'RUNNING', init_pid = 7").execute(&store.pool).await.expect("running");
        for node in ["a", "b"] {
            let serving = serving_at(&store, node, &address.to_string()).await.expect("lookup").expect("an instance");
            assert_eq!(serving.instance_id, format!("i-{node}"), "node {node}'s endpoint matched another node's instance");
            let due: Vec<String> = due_for_rotation(&store, node, 10).await.expect("due").into_iter().map(|d| d.instance_id).collect();
            assert_eq!(due, [format!("i-{node}")], "node {node} would rotate another node's credential");
        }
        assert!(serving_at(&store, "c", &address.to_string()).await.expect("lookup").is_none());
        // A node taken for lost starts nothing (review finding: its instance's row, inserted
        // after the sweep, kept its session from ever going back to the queue).
        sqlx::query("UPDATE nodes SET state = 'LOST' WHERE name = 'a'").execute(&store.pool).await.expect("lost");
        let link = sandbox::network::Link::new("i-late", std::net::Ipv4Addr::new(10, 254, 0, 5), std::net::Ipv4Addr::new(10, 254, 0, 6));
        let late = NewInstance {
            instance_id: "i-late",
            image: "base",
            instance_type: "stream.standard.small",
            link_index: 1,
            link: &link,
            user_id: None,
            access_mode: None,
            credential_hash: "hash".to_owned(),
            credential_expires: 1,
            correlation_id: None,
            fleet: None,
            session_id: Some("s-1".to_owned()),
            issuer: None,
            node: "a",
            node_epoch: 1,
        };
        let mut conn = store.pool.acquire().await.expect("connection");
        let refused = insert_pending(&mut conn, late).await.expect_err("a lost node inserted an instance");
        assert_eq!(refused.status, 503, "{}", refused.message);
        let count =
            sqlx::query("SELECT COUNT(*) AS n FROM instances WHERE instance_id = 'i-late'").fetch_one(&store.pool).await.expect("count");
        assert_eq!(sqlx::Row::try_get::<i64, _>(&count, "n").expect("n"), 0);
    }
}
