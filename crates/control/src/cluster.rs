//! `cluster:` — the nodes that share one metadata store. Each server is a node: it joins by
//! taking a lease on its row in `nodes` under a new epoch, renews the lease every
//! `cluster.heartbeat_ms`, and takes for lost any other node whose lease ran out (after
//! `cluster.lease_ms` unrenewed). PostgreSQL is the only coordinator: no node talks to another
//! to agree on anything.
//!
//! - **Joining** is one conditional upsert: it takes the name only if no live lease holds it,
//!   or if the holder was this same node (same host and data directory: a restart after a
//!   crash, whose lease has not run out yet). SQLite serves one node; a second live node is
//!   refused with what to do instead.
//! - **A lost node** is marked once (a conditional update: of several nodes sweeping at once,
//!   one wins) with a `NodeLost` record; its instances become `LOST`, which ends their
//!   sessions (the streaming engine) and frees their capacity. A node comes back by joining
//!   under a new epoch, and first destroys what its rows still call alive.
//! - **A node that finds its lease gone** (stopped, or cut off, past its lease) writes nothing
//!   under its old epoch (see `core::node`): it ends its instances and joins again.
//! - **The master key** every secret in the store is wrapped with must be the same on every
//!   node: the first node leaves a value only that key opens, and a node whose key does not
//!   open it refuses to start and says which file to copy.

mod repo;
mod secrets;
mod tls;

pub(crate) use secrets::{check_master_key, shared_secret};
pub(crate) use tls::node_tls;

use std::time::Duration;

use serde_json::{Value, json};

use self::repo::{Gone, NodeRow};
use crate::core::actions::ClusterAction;
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{millis_to_rfc3339, now_millis};

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, action: ClusterAction, input: Value) -> Result<Value, ActionError> {
    match action {
        ClusterAction::DescribeNodes => describe_nodes(ctx, input).await,
    }
}

async fn describe_nodes(ctx: &mut Ctx<'_>, _input: Value) -> Result<Value, ActionError> {
    ctx.authorize(policy::Resource::Service("cluster".into()))?;
    let now = now_millis();
    let nodes = repo::list(&ctx.platform.store).await?;
    let nodes: Vec<Value> = nodes.iter().map(|n| node_json(n, now)).collect();
    Ok(json!({ "Nodes": nodes }))
}

fn node_json(node: &NodeRow, now: i64) -> Value {
    json!({
        "Name": node.name,
        "State": node.state,
        "Epoch": node.epoch,
        "Address": node.address,
        "RelayAddress": node.relay_address,
        "Host": node.host,
        "VpcCidr": node.vpc_cidr,
        "StartTime": millis_to_rfc3339(node.started),
        "LastHeartbeat": millis_to_rfc3339(node.heartbeat),
        "LeaseExpires": millis_to_rfc3339(node.lease_expires),
        "LeaseSecondsLeft": ((node.lease_expires - now).max(0) as f64 / 1000.0),
        "LostTime": node.lost_at.map(millis_to_rfc3339),
        "RunningInstances": node.instances,
        "InstanceCapacity": node.id_slots,
    })
}

/// Takes this node's lease under a new epoch, or says why it cannot.
pub(crate) async fn join(platform: &Platform) -> Result<i64, String> {
    let spec = &platform.spec;
    let now = now_millis();
    let me = &platform.node.name;
    let host = host_name();
    let data_dir = platform.data_dir.display().to_string();
    let store_error = |e: ActionError| format!("cannot join the cluster: {}", e.message);
    if platform.store.is_sqlite()
        && let Some(other) = repo::live_other_node(&platform.store, me, now).await.map_err(store_error)?
    {
        return Err(format!(
            "the metadata store is SQLite, which serves one node, and node `{}` (on {}, data directory {}) holds it until {}; stop it, or run several nodes on PostgreSQL (`[metadata] url = \"postgres://…\"`)",
            other.name,
            other.host,
            other.data_dir,
            millis_to_rfc3339(other.lease_expires)
        ));
    }
    let claim = repo::Claim {
        name: me,
        host: &host,
        data_dir: &data_dir,
        address: &platform.public_base(),
        vpc_cidr: &spec.vpc_cidr.to_string(),
        id_slots: i64::from(spec.id_slots),
        now,
        lease_expires: now + spec.cluster.lease_ms as i64,
    };
    match repo::claim(&platform.store, &claim).await.map_err(store_error)? {
        Some(epoch) => {
            platform.node.set_epoch(epoch);
            tracing::info!(node = %me, epoch, "joined the cluster");
            if !platform.store.is_sqlite() && spec.public_url.is_none() {
                tracing::warn!(
                    node = %me,
                    "server.public_url is not set: other nodes send this node's sessions to the address it listens on, which browsers elsewhere may not reach; set server.public_url (and server.notebook_url)"
                );
            }
            Ok(epoch)
        }
        None => {
            let holder = repo::get(&platform.store, me).await.map_err(store_error)?;
            let (host, dir, until) = holder.map(|h| (h.host, h.data_dir, millis_to_rfc3339(h.lease_expires))).unwrap_or_default();
            Err(format!(
                "node `{me}` is already serving (on {host}, data directory {dir}; its lease runs until {until}); give this node another name with `--node`, or stop that one"
            ))
        }
    }
}

/// What one heartbeat found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// The lease is renewed.
    Renewed,
    /// The lease is gone: other nodes took this one for lost, and its epoch fences nothing.
    Lost,
    /// The store did not answer; the lease may still hold.
    Unreachable,
}

/// Renews this node's lease, publishing its address and how many instances it runs.
pub(crate) async fn heartbeat(platform: &Platform) -> Beat {
    let now = now_millis();
    let node = &platform.node;
    let renewal = repo::Renewal {
        name: &node.name,
        epoch: node.epoch(),
        address: &platform.public_base(),
        relay_address: platform.relay_address.get().map(String::as_str),
        now,
        lease_expires: now + platform.spec.cluster.lease_ms as i64,
    };
    match repo::renew(&platform.store, &renewal).await {
        Ok(true) => Beat::Renewed,
        Ok(false) => {
            tracing::error!(
                node = %node.name,
                epoch = node.epoch(),
                "the fenced lease renewal touched 0 rows: other nodes took this node for lost; it ends its instances and joins again"
            );
            Beat::Lost
        }
        Err(err) => {
            tracing::warn!(node = %node.name, error = %err, "cannot renew the lease; the metadata store did not answer");
            Beat::Unreachable
        }
    }
}

/// Marks every other node whose lease ran out as lost, with one `NodeLost` record each and
/// its instances `LOST`; marks again what every lost node still holds alive (`Gone`); and
/// gives back the queued sessions any node gone holds. Returns the names of the nodes it
/// marked.
pub(crate) async fn sweep(platform: &Platform) -> Result<Vec<String>, ActionError> {
    let now = now_millis();
    let lost = repo::mark_lost(&platform.store, &platform.node.name, now).await?;
    for node in &lost {
        let instances = repo::mark_instances_lost(&platform.store, Gone::Node(&node.name)).await?;
        let notebooks = repo::mark_notebooks_lost(&platform.store, Gone::Node(&node.name)).await?;
        tracing::warn!(node = %node.name, instances, notebooks, "a node's lease ran out: it is lost, and its instances with it");
        platform
            .service_event(
                "NodeLost",
                json!({
                    "Node": node.name,
                    "Epoch": node.epoch,
                    "LeaseExpired": millis_to_rfc3339(node.lease_expires),
                    "SweptBy": platform.node.name,
                    "InstancesLost": instances,
                    "NotebooksFailed": notebooks,
                }),
            )
            .await;
        platform.metrics.nodes_lost.inc();
    }
    // What a lost node's late fenced writes left alive (`Gone`), before its sessions go back.
    let instances = repo::mark_instances_lost(&platform.store, Gone::EveryLost).await?;
    let notebooks = repo::mark_notebooks_lost(&platform.store, Gone::EveryLost).await?;
    if instances + notebooks > 0 {
        tracing::warn!(instances, notebooks, "a lost node's write committed after the sweep that took it for lost: marked lost as well");
    }
    let released = repo::release_sessions_of_gone_nodes(&platform.store).await?;
    if released > 0 {
        tracing::warn!(sessions = released, "queued sessions held by nodes no longer holding their lease went back to the queue");
    }
    Ok(lost.into_iter().map(|n| n.name).collect())
}

/// Whether `node` holds a live lease.
pub(crate) async fn is_live(platform: &Platform, node: &str) -> Result<bool, ActionError> {
    let row = repo::get(&platform.store, node).await?;
    Ok(row.is_some_and(|n| n.state == repo::ACTIVE && n.lease_expires >= now_millis()))
}

/// Where `node`'s notebook relay listens, if that node is live and has one.
pub(crate) async fn relay_of(platform: &Platform, node: &str) -> Result<Option<String>, ActionError> {
    repo::live_relay(&platform.store, node, now_millis()).await
}

/// Leaves the cluster at a clean stop: the lease ends at once, and no node takes this one for
/// lost.
pub(crate) async fn leave(platform: &Platform) {
    platform.node.leave();
    // Queued sessions this node took and started nothing for go back to the queue, for the
    // other nodes (a stopped node is never swept as lost, which would give them back).
    if let Err(err) = repo::release_sessions(&platform.store, &platform.node.name).await {
        tracing::warn!(error = %err, "cannot give this node's queued sessions back to the queue");
    }
    if let Err(err) = repo::leave(&platform.store, &platform.node.name, platform.node.epoch(), now_millis()).await {
        tracing::warn!(error = %err, "cannot mark this node stopped");
    }
}

/// Whether no other node holds a live lease: then this node is the only one to serve what
/// no node has taken yet (sessions waiting in a queue).
pub(crate) async fn alone(platform: &Platform) -> bool {
    matches!(repo::live_other_node(&platform.store, &platform.node.name, now_millis()).await, Ok(None))
}

/// This node's share of a fleet's `desired` always-on instances: the live nodes, by name, take
/// one instance each in turn while they have room, so every node computes the same split from
/// the same table, and a lost node's share falls to the others at the next sweep.
pub(crate) async fn share_of(platform: &Platform, desired: i64) -> Result<i64, ActionError> {
    let nodes = repo::live_nodes(&platform.store, now_millis()).await?;
    Ok(split(desired, &nodes.iter().map(|n| (n.name.as_str(), n.capacity)).collect::<Vec<_>>(), &platform.node.name))
}

/// Round-robin of `desired` over `(node, capacity)` in the order given, capped by capacity.
fn split(desired: i64, nodes: &[(&str, i64)], me: &str) -> i64 {
    let mut shares = vec![0; nodes.len()];
    let mut left = desired;
    while left > 0 {
        let before = left;
        for (share, (_, capacity)) in shares.iter_mut().zip(nodes) {
            if left > 0 && *share < *capacity {
                *share += 1;
                left -= 1;
            }
        }
        if left == before {
            break;
        }
    }
    nodes.iter().position(|(name, _)| *name == me).map_or(0, |i| shares[i])
}

/// The live node with the most free room (capacity less running instances, as last published
/// by its heartbeat; ties by name): where a new on-demand instance should start.
pub(crate) async fn preferred_node(platform: &Platform) -> Result<Option<String>, ActionError> {
    let nodes = repo::live_nodes(&platform.store, now_millis()).await?;
    Ok(nodes.into_iter().max_by(|a, b| (a.capacity - a.running).cmp(&(b.capacity - b.running)).then(b.name.cmp(&a.name))).map(|n| n.name))
}

/// How long a node waits between heartbeats.
pub(crate) fn heartbeat_interval(platform: &Platform) -> Duration {
    Duration::from_millis(platform.spec.cluster.heartbeat_ms)
}

/// Whether this node has held its lease long enough to judge others: after its own outage
/// every lease looks run out, and a node must not take the others for lost before they had a
/// lease's time to renew.
pub(crate) fn may_sweep(platform: &Platform, renewed_since: i64) -> bool {
    now_millis() - renewed_since >= platform.spec.cluster.lease_ms as i64
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn always_on_instances_are_split_in_turn_and_capped_by_capacity() {
        let two = [("a", 10), ("b", 10)];
        assert_eq!((split(3, &two, "a"), split(3, &two, "b")), (2, 1));
        let small = [("a", 1), ("b", 10)];
        assert_eq!((split(4, &small, "a"), split(4, &small, "b")), (1, 3));
        assert_eq!(split(25, &small, "b"), 10, "no node takes more than it can run");
        assert_eq!(split(2, &two, "c"), 0, "a node that is not live takes none");
    }
}
