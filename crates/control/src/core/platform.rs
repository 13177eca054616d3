//! What every service shares: the spec, the stores, the trail, the authorizer, the key ring
//! and the change bus. It holds no service's own state: each service keeps that in a struct
//! of its own, built by `plane.rs` with the lower services it needs.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use audit::{Record, RecordResource, Trail};
use model::spec::Spec;
use policy::Authorizer;
use serde_json::Value;
use tokio::sync::Notify;

use crate::core::blobs::Blobs;
use crate::core::error::ActionError;
use crate::core::keyring::KeyRing;
use crate::core::metrics::Metrics;
use crate::core::store::{Store, millis_to_rfc3339, now_millis};

pub(crate) struct Platform {
    /// The spec the server started with: its platform settings (listeners, stores, the trail)
    /// hold for the whole run.
    pub spec: Spec,
    /// The spec as last deployed: the resources' settings (fleets' queues, datasets, notebook
    /// templates, the launcher), replaced by each successful deploy.
    pub current: RwLock<Arc<Spec>>,
    pub data_dir: PathBuf,
    /// Where image builds cache what they download once for every image (the notebook venv).
    pub image_cache: PathBuf,
    pub store: Store,
    pub blobs: Blobs,
    pub trail: Trail,
    /// The trail's signing key, for what is kept beside the trail and anchored in it (a
    /// recording's segments); its public key is the one the trail publishes.
    pub signer: audit::Signer,
    pub index: audit::Index,
    /// The deployed policies; a deploy swaps in the new set once the service roles are applied.
    pub authorizer: RwLock<Arc<Authorizer>>,
    pub metrics: Metrics,
    pub keys: KeyRing,
    /// The uid that owns the control socket (besides root, the only one that may use it).
    pub socket_owner: u32,
    /// Wakes the notification dispatcher when the outbox gains rows.
    pub outbox: Notify,
    /// Whose sessions changed, for pages that show a user's sessions live.
    pub changes: Changes,
    /// The time every service reads.
    pub clock: crate::core::clock::Clock,
    /// The key that signs streaming URLs and sign-in states (`streaming-url.key`), read once.
    pub url_key: std::sync::OnceLock<[u8; 32]>,
    /// `http://<address>` of the API listener once bound (the spec may ask for port 0).
    pub listening: std::sync::OnceLock<String>,
    /// This server as a node among those sharing the metadata store.
    pub node: crate::core::node::Node,
    /// Its TLS towards other nodes, and where its notebook relay listens once bound.
    pub node_tls: Arc<crate::core::node::NodeTls>,
    pub relay_address: std::sync::OnceLock<String>,
    /// Backups under way: while any is, released blobs stay (a backup's snapshot of the store
    /// may still point at them) and are deleted when the last one ends.
    pub backups: std::sync::atomic::AtomicUsize,
    /// Counts committed object writes and deletes, waking `storage:WaitForChanges`.
    pub object_changes: tokio::sync::watch::Sender<u64>,
    /// Set when the server begins to stop: long waits end, so that the drain does not wait.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl Platform {
    /// The spec as last deployed.
    pub fn current(&self) -> Arc<Spec> {
        self.current.read().expect("current spec lock").clone()
    }

    /// The base of the URLs handed to users: the spec's `server.public_url`, else the address
    /// the gateway listens on.
    pub fn public_base(&self) -> String {
        self.spec.public_url.clone().or_else(|| self.listening.get().cloned()).unwrap_or_else(|| self.listening_url(self.spec.api_listen))
    }

    /// The URL of the gateway's API listener at `address`: `https://` under TLS.
    pub fn listening_url(&self, address: std::net::SocketAddr) -> String {
        let scheme = if self.spec.tls == model::spec::ServerTls::Off { "http" } else { "https" };
        format!("{scheme}://{address}")
    }

    /// The key that signs what the platform hands out and must recognise later: streaming
    /// URLs, SAML request ids, OIDC states.
    pub(crate) fn url_key(&self) -> Result<[u8; 32], ActionError> {
        if let Some(key) = self.url_key.get() {
            return Ok(*key);
        }
        let key = crate::core::keyring::load_or_create_key(&self.data_dir.join("streaming-url.key"))?;
        Ok(*self.url_key.get_or_init(|| key))
    }

    /// HMAC-SHA256 of `claims` under [`Platform::url_key`].
    pub(crate) fn sign(&self, claims: &[u8]) -> Result<Vec<u8>, ActionError> {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.url_key()?).map_err(ActionError::internal)?;
        mac.update(claims);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// A record of something the platform itself did (not a caller's action).
    pub(crate) async fn service_event(&self, name: &str, parameters: Value) {
        let event = ServiceEvent { source: "audit", name, parameters, effect: Effect::Recorded, ..ServiceEvent::default() };
        let _ = self.record_service_event(event).await;
    }

    /// Writes a service event: the platform's own doing, attributed to `datasandbox` or to
    /// the platform component named by `principal`. A gated event's effect must wait for `Ok`
    /// (see [`Effect`]); an error is what to refuse with.
    pub(crate) async fn record_service_event(&self, event: ServiceEvent<'_>) -> Result<(), ActionError> {
        let name = event.name;
        let record = self.admitted(event).await?;
        self.trail.append(&record).await.map_err(|err| unwritten(name, &err))
    }

    /// The same for an event whose effect goes on while its record is written (a proxied
    /// read, whose answer then waits for [`Alongside::durable`]).
    pub(crate) async fn record_alongside(&self, event: ServiceEvent<'_>) -> Result<Alongside, ActionError> {
        let name = event.name;
        let record = self.admitted(event).await?;
        match self.trail.append_alongside(&record) {
            Ok(durable) => Ok(Alongside { durable, name: name.to_owned() }),
            Err(err) => Err(unwritten(name, &err)),
        }
    }

    /// A service event's record, unless the trail is on its reserve and the event is gated:
    /// then its refusal is recorded instead, and is the error.
    async fn admitted(&self, event: ServiceEvent<'_>) -> Result<Record, ActionError> {
        let spec = &self.spec;
        let mut record = Record {
            sequence_number: None,
            previous_record_hash: None,
            event_version: audit::EVENT_VERSION.into(),
            user_identity: crate::core::caller::service_identity(&spec.account_id, event.principal),
            event_time: millis_to_rfc3339(now_millis()),
            event_source: event.source.into(),
            event_name: event.name.into(),
            aws_region: spec.region.clone(),
            source_ip_address: event.source_ip.unwrap_or_else(|| event.principal.into()),
            user_agent: concat!("datasandbox/", env!("CARGO_PKG_VERSION")).into(),
            error_code: event.error.map(|e| e.code.as_str().to_owned()),
            error_message: event.error.map(|e| e.message.clone()),
            request_parameters: event.parameters,
            response_elements: Value::Null,
            request_id: audit::new_request_id(),
            event_id: uuid::Uuid::new_v4().to_string(),
            read_only: false,
            resources: event.resources,
            event_type: "AwsServiceEvent".into(),
            management_event: event.management_event,
            recipient_account_id: spec.account_id.clone(),
            correlation_id: event.correlation_id,
        };
        let gated = event.effect == Effect::Gated && event.error.is_none();
        if gated && self.trail.on_reserve() {
            // The refusal is recorded instead, from the reserve.
            let refused = ActionError::trail_on_reserve();
            record.error_code = Some(refused.code.as_str().to_owned());
            record.error_message = Some(refused.message.clone());
            if let Err(err) = self.trail.append(&record).await {
                tracing::error!(error = %err, event = event.name, "cannot audit a refused service event");
            }
            return Err(refused);
        }
        Ok(record)
    }
}

fn unwritten(event: &str, err: &audit::TrailError) -> ActionError {
    tracing::error!(error = %err, event, "cannot audit a service event");
    ActionError::trail_unwritable()
}

/// A service event's record handed to the trail (see [`Platform::record_alongside`]).
pub struct Alongside {
    durable: audit::Durable,
    name: String,
}

impl Alongside {
    /// Returns once the record is durable; an error is what to refuse the effect with.
    pub async fn durable(self) -> Result<(), ActionError> {
        self.durable.wait().await.map_err(|err| unwritten(&self.name, &err))
    }
}

/// What a service event's record stands for, which decides whether it may be written from
/// the trail's reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Something happens only once this record is durable (a proxied request, a clipboard
    /// transfer, a download, a connection): refused, and recorded as refused, while the trail
    /// writes on its reserve or cannot write at all.
    Gated,
    /// A refusal, an end, or something already done: recorded even from the trail's reserve.
    Recorded,
}

/// Something the platform did by itself, for the trail.
pub(crate) struct ServiceEvent<'a> {
    pub source: &'a str,
    pub name: &'a str,
    pub principal: &'a str,
    pub parameters: Value,
    pub error: Option<&'a ActionError>,
    pub resources: Vec<RecordResource>,
    pub management_event: bool,
    pub correlation_id: Option<String>,
    /// Where the event came from when a client caused it; else the principal (a service).
    pub source_ip: Option<String>,
    /// `Gated` unless said otherwise: an event that forgets to say is refused on the reserve.
    pub effect: Effect,
}

impl Default for ServiceEvent<'_> {
    fn default() -> Self {
        ServiceEvent {
            source: "audit",
            name: "",
            principal: "datasandbox",
            parameters: Value::Null,
            error: None,
            resources: Vec::new(),
            management_event: true,
            correlation_id: None,
            source_ip: None,
            effect: Effect::Gated,
        }
    }
}

/// The principal id (`UserRef::principal_id`: mode, identity provider and user id) of each
/// session that changes state (queued, active, ended) or connection. Nothing else is carried:
/// a page that hears of a change asks for what it may see.
///
/// Every change, here or heard from another node, also moves the sessions' epoch on: a check
/// cached under an older epoch (the notebook proxy's) is made again.
pub(crate) struct Changes {
    pages: tokio::sync::broadcast::Sender<String>,
    epoch: std::sync::atomic::AtomicU64,
}

impl Default for Changes {
    fn default() -> Changes {
        // A listener that falls this far behind only misses pings; it asks again on the next.
        Changes { pages: tokio::sync::broadcast::channel(256).0, epoch: Default::default() }
    }
}

/// What [`Changes`] carries when every user's sessions may have changed.
pub const EVERYONE_CHANGED: &str = "*";

impl Changes {
    pub(crate) fn user(&self, user: &model::UserRef) {
        self.principal(&user.principal_id());
    }

    /// The same, by principal id (`UserRef::principal_id`).
    pub(crate) fn principal(&self, principal_id: &str) {
        let _ = self.pages.send(principal_id.to_owned());
    }

    /// Some session changed (whose is not known yet): checks cached before now are stale.
    pub(crate) fn advance(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many session changes this node has seen: equal epochs, no change in between.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Tells every page to look again: after the store's change feed was cut, something may
    /// have been missed.
    pub(crate) fn everyone(&self) {
        self.advance();
        let _ = self.pages.send(EVERYONE_CHANGED.to_owned());
    }

    /// Whether anyone listens (a change whose user must be looked up is skipped otherwise).
    pub(crate) fn heard(&self) -> bool {
        self.pages.receiver_count() > 0
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.pages.subscribe()
    }
}
