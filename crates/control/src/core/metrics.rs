//! Prometheus metrics, labelled by action name and outcome.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    action: String,
}

pub struct Metrics {
    registry: Registry,
    actions: Family<ActionLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    pub notifications_delivered: Counter,
    pub notifications_failed: Counter,
    /// Nodes this node took for lost (their leases ran out).
    pub nodes_lost: Counter,
    /// This node's lease: 1 while it holds one, 0 once it found it lost.
    pub node_lease_held: prometheus_client::metrics::gauge::Gauge,
    /// The epoch of this node's lease.
    pub node_epoch: prometheus_client::metrics::gauge::Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("datasandbox");
        let actions = Family::<ActionLabels, Counter>::default();
        let durations: Family<DurationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 18)));
        let notifications_delivered = Counter::default();
        let notifications_failed = Counter::default();
        registry.register("actions", "Actions handled, by action and outcome", actions.clone());
        registry.register("action_duration_seconds", "Time from request to audited response", durations.clone());
        registry.register("notifications_delivered", "Bucket notifications delivered to functions", notifications_delivered.clone());
        registry.register("notifications_failed", "Bucket notification delivery attempts that failed", notifications_failed.clone());
        let nodes_lost = Counter::default();
        let node_lease_held = prometheus_client::metrics::gauge::Gauge::default();
        let node_epoch = prometheus_client::metrics::gauge::Gauge::default();
        registry.register("nodes_lost", "Other nodes this node took for lost when their leases ran out", nodes_lost.clone());
        registry.register("node_lease_held", "1 while this node holds its lease in the metadata store", node_lease_held.clone());
        registry.register("node_epoch", "The epoch of this node's lease", node_epoch.clone());
        Metrics { registry, actions, durations, notifications_delivered, notifications_failed, nodes_lost, node_lease_held, node_epoch }
    }

    pub fn observe(&self, action: &str, outcome: &str, seconds: f64) {
        self.actions.get_or_create(&ActionLabels { action: action.to_owned(), outcome: outcome.to_owned() }).inc();
        self.durations.get_or_create(&DurationLabels { action: action.to_owned() }).observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
