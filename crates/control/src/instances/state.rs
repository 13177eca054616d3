//! The instances service's state: the sandbox that makes instances, each running one's live
//! parts, and the gate that lets a clean stop refuse new launches and wait for those under way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Pipeline;

use super::datasets;

/// Starts serving the endpoint on a listener bound to one link's host address.
pub type EndpointServer = Box<dyn Fn(tokio::net::TcpListener) -> tokio::task::JoinHandle<()> + Send + Sync>;

/// How long a stopping instance may take to finish its work (the home folder's last upload).
pub(super) const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// The instances this host runs: the sandbox that makes them, and each one's live parts.
pub(crate) struct Instances {
    pub(super) pipeline: Pipeline,
    pub(super) sandbox: tokio::sync::OnceCell<Arc<sandbox::Sandbox>>,
    pub(super) live: Arc<Mutex<HashMap<String, Live>>>,
    pub(crate) endpoint: OnceLock<EndpointServer>,
    pub(super) datasets: OnceLock<tokio::sync::mpsc::UnboundedSender<datasets::Job>>,
    /// Serializes link allocation: launches run concurrently, and two must not take one index.
    pub(super) allocation: tokio::sync::Mutex<()>,
    /// Launches under way, and whether new ones are refused (the platform is stopping): a
    /// clean stop waits for the first and sets the second, so no instance starts after the
    /// stop has ended the others.
    pub(super) in_flight: std::sync::atomic::AtomicUsize,
    pub(super) closed: std::sync::atomic::AtomicBool,
}

/// A launch under way; dropping it ends it.
pub(super) struct InFlight<'a>(&'a Instances);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

pub(super) struct Live {
    pub(super) instance: sandbox::Instance,
    pub(super) listener: Option<tokio::task::JoinHandle<()>>,
    /// The current credential, kept to read datasets as the instance when it is assigned.
    pub(super) credential: String,
    /// Its dataset mount, when it shows datasets.
    pub(super) datasets: Option<Arc<super::dataset_mount::Mounted>>,
}

impl Instances {
    pub(super) fn begin_launch(&self) -> Result<InFlight<'_>, ActionError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.in_flight.fetch_add(1, SeqCst);
        let flight = InFlight(self);
        if self.closed.load(SeqCst) {
            return Err(ActionError::new(503, ErrorCode::ServiceUnavailable, "the platform is stopping; no instance starts now"));
        }
        Ok(flight)
    }

    /// Refuses new launches and waits (up to `within`) for those under way.
    pub(crate) async fn close(&self, within: std::time::Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        self.closed.store(true, SeqCst);
        let _ = tokio::time::timeout(within, async {
            while self.in_flight.load(SeqCst) > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    pub(super) async fn sandbox(&self) -> Result<Arc<sandbox::Sandbox>, ActionError> {
        let plane = &*self.pipeline.platform;
        let port = plane.spec.endpoint_port;
        self.sandbox
            .get_or_try_init(|| async move {
                let pool = sandbox::ids::IdPool { base: plane.spec.id_base, slots: plane.spec.id_slots };
                tokio::task::spawn_blocking(move || sandbox::Sandbox::new(port, pool))
                    .await
                    .map_err(ActionError::internal)?
                    .map(Arc::new)
                    .map_err(|e| {
                        ActionError::new(
                            503,
                            ErrorCode::ServiceUnavailable,
                            format!("instances need root, nftables and namespaces on this host: {e}"),
                        )
                    })
            })
            .await
            .cloned()
    }
}

impl Instances {
    pub(crate) fn new(pipeline: Pipeline) -> Instances {
        Instances {
            pipeline,
            sandbox: Default::default(),
            live: Default::default(),
            endpoint: OnceLock::new(),
            datasets: OnceLock::new(),
            allocation: Default::default(),
            in_flight: Default::default(),
            closed: Default::default(),
        }
    }

    /// Gives the control plane the function that serves the endpoint on a listener (the
    /// gateway's), before any instance is created.
    pub(crate) fn set_endpoint_server(&self, serve: EndpointServer) {
        let _ = self.endpoint.set(serve);
    }
}

/// Reserves host ids for an instance about to be launched (see `Launch::ids`).
pub(crate) async fn lease_ids(instances: &Instances) -> Result<sandbox::ids::IdLease, ActionError> {
    let sandbox = instances.sandbox().await?;
    sandbox.lease_ids().map_err(|e| ActionError::new(503, ErrorCode::InsufficientCapacity, e.to_string()))
}
