//! The action pipeline: authenticate → authorize → execute → audit, for every call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit::{Record, RecordResource, Trail};
use bytes::Bytes;
use model::spec::Spec;
use policy::{Authorizer, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Notify;

use crate::actions::{self, ActionSpec};
use crate::blobs::Blobs;
use crate::error::ActionError;
use crate::identity::{self, Caller, Credentials};
use crate::metrics::Metrics;
use crate::services::keys::KeyRing;
use crate::store::{Store, millis_to_rfc3339, now_millis};

/// Members whose values are secrets or data; they never reach an audit record.
const HIDDEN_MEMBERS: &[&str] = &[
    "Body",
    "Value",
    "Spec",
    // A deploy's spec overrides, when its input does not parse (parsed, `Override` hides their values by type).
    "Overrides",
    "Plaintext",
    "CiphertextBlob",
    "Token",
    "SecretString",
    "Cookie",
    "StreamingURL",
    "AuthorizedUrl",
    "NotebookUrl",
    "Password",
    "UserCode",
    "TotpCode",
    "SecretCode",
    "OtpauthUri",
];
pub(crate) const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// One call as a transport hands it over.
pub struct Request {
    pub credentials: Credentials,
    pub source_ip: String,
    pub user_agent: String,
    pub action: String,
    /// The raw JSON body, or the error the transport met reading it (too large, cut off).
    pub body: Result<Bytes, ActionError>,
}

impl Request {
    /// A call a built-in function makes, under its own role, carrying the correlation id of
    /// what triggered it.
    pub(crate) fn from_function(function: &str, correlation_id: Option<String>, action: &str, input: &Value) -> Request {
        Request {
            credentials: Credentials::Function { name: function.to_owned(), correlation_id },
            source_ip: "functions.datasandbox".into(),
            user_agent: format!("datasandbox-function/{function}"),
            action: action.to_owned(),
            body: Ok(Bytes::from(input.to_string())),
        }
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

/// The answer: the request id (also in the audit record) and the result.
pub struct Response {
    pub request_id: String,
    pub result: Result<Value, ActionError>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the spec's policies are invalid:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Policies(Vec<policy::PolicyError>),
    #[error(transparent)]
    Trail(#[from] audit::TrailError),
    #[error("{0}")]
    Setup(String),
}

pub(crate) struct Plane {
    /// The spec the server started with: its platform settings (listeners, stores, the trail)
    /// hold for the whole run.
    pub spec: Spec,
    /// The spec as last deployed: the resources' settings (fleets' queues, datasets, notebook
    /// templates, the launcher), replaced by each successful deploy.
    pub current: std::sync::RwLock<Arc<Spec>>,
    /// One deploy or destroy at a time.
    pub deploying: tokio::sync::Mutex<()>,
    pub deploy_steps: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<crate::services::deploy::Step>>,
    pub data_dir: PathBuf,
    /// Where image builds cache what they download once for every image (the notebook venv).
    pub image_cache: PathBuf,
    pub store: Store,
    pub blobs: Blobs,
    pub trail: Trail,
    pub index: audit::Index,
    /// The deployed policies; a deploy swaps in the new set once the service roles are applied.
    pub authorizer: std::sync::RwLock<Arc<Authorizer>>,
    pub metrics: Metrics,
    pub keys: KeyRing,
    pub instances: crate::instances::Instances,
    pub streaming: crate::services::streaming::Streaming,
    pub notebooks: crate::services::notebooks::Notebooks,
    /// Recent failed sign-ins of local users, by address.
    pub identity_throttle: crate::identity::local::Throttle,
    /// Wakes the notification dispatcher when the outbox gains rows.
    pub outbox: Notify,
    pub socket_owner: u32,
}

impl Plane {
    /// The spec as last deployed.
    pub fn current(&self) -> Arc<Spec> {
        self.current.read().expect("current spec lock").clone()
    }
}

/// The running control plane; cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    pub(crate) plane: Arc<Plane>,
}

/// Checks the spec's policies against the schema without starting anything.
pub fn check_policies(spec: &Spec) -> Result<(), StartError> {
    let policies: Vec<(String, String)> = spec.policies.iter().map(|p| (p.name.clone(), p.text.clone())).collect();
    Authorizer::load(&policies, &actions::declarations()).map(|_| ()).map_err(StartError::Policies)
}

impl ControlPlane {
    /// Opens the metadata store, the object store, the key ring and the trail; loads the
    /// policies; creates the spec's buckets and notifications; starts background work.
    /// `image_cache` is where image builds keep what they download once for every image.
    pub async fn start(spec: Spec, data_dir: &Path, socket_owner: u32, image_cache: &Path) -> Result<ControlPlane, StartError> {
        // Instances' host ids must be no host user's: a pool overlapping a subordinate id
        // range refuses to start (naming the entry) rather than at the first instance.
        sandbox::ids::IdPool { base: spec.id_base, slots: spec.id_slots }.check_host().map_err(|e| StartError::Setup(e.to_string()))?;
        let store = Store::open(spec.metadata_url.as_deref(), data_dir).await?;
        // The resources serve as last deployed; a host never deployed runs on the given spec
        // until its first deploy.
        let current = crate::services::deploy::last_deployed(&store).await?.unwrap_or_else(|| spec.clone());
        let policies: Vec<(String, String)> = current.policies.iter().map(|p| (p.name.clone(), p.text.clone())).collect();
        let authorizer = Authorizer::load(&policies, &actions::declarations()).map_err(StartError::Policies)?;
        let blobs = Blobs::open(&spec.storage, data_dir).map_err(|e| StartError::Setup(e.to_string()))?;
        let keys = KeyRing::open(data_dir).map_err(StartError::Setup)?;
        let secret = crate::services::keys::trail_signing_secret(&store, &keys).await.map_err(|e| StartError::Setup(e.to_string()))?;
        let layout = audit::Layout {
            root: data_dir.join("trail"),
            account_id: spec.account_id.clone(),
            region: spec.region.clone(),
            bucket: format!("{}-trail", spec.environment_name),
        };
        // The index catches up from the files before the writer starts, then follows it.
        let index = audit::Index::open(&data_dir.join("audit-index.db")).await.map_err(|e| StartError::Setup(e.to_string()))?;
        let caught_up = index.catch_up(&layout).await.map_err(|e| StartError::Setup(e.to_string()))?;
        if caught_up > 0 {
            tracing::info!(records = caught_up, "indexed audit records the index did not hold");
        }
        let (index_tx, index_rx) = tokio::sync::mpsc::unbounded_channel();
        let options = audit::TrailOptions {
            max_batch_delay: Duration::from_millis(spec.audit.max_batch_delay_ms),
            checkpoint_records: spec.audit.checkpoint_records,
            checkpoint_interval: Duration::from_millis(spec.audit.checkpoint_interval_ms),
            rotate_bytes: spec.audit.rotate_bytes,
            rotate_interval: Duration::from_secs(spec.audit.rotate_interval_seconds),
            digest_interval: Duration::from_secs(spec.audit.digest_interval_seconds),
            reserve_bytes: spec.audit.reserve_bytes,
            witness: spec.audit.witness.clone(),
        };
        if let Some(witness) = &spec.audit.witness {
            check_witness(witness, data_dir).map_err(StartError::Setup)?;
        }
        let trail = Trail::open(layout, audit::Signer::from_bytes(&secret), options, Some(index_tx))?;
        index.spawn_feeder(index_rx);
        let plane = Arc::new(Plane {
            spec,
            current: std::sync::RwLock::new(Arc::new(current)),
            deploying: tokio::sync::Mutex::new(()),
            deploy_steps: std::sync::OnceLock::new(),
            data_dir: data_dir.to_owned(),
            image_cache: image_cache.to_owned(),
            store,
            blobs,
            trail,
            index,
            authorizer: std::sync::RwLock::new(Arc::new(authorizer)),
            metrics: Metrics::new(),
            keys,
            instances: Default::default(),
            streaming: Default::default(),
            notebooks: Default::default(),
            identity_throttle: Default::default(),
            outbox: Notify::new(),
            socket_owner,
        });
        let control = ControlPlane { plane };
        let _ = control.plane.deploy_steps.set(crate::services::deploy::start_step_runner(control.clone()));
        // The policies in force from now on, by hash, so every decision's policies are in the trail.
        let policies = crate::services::deploy::policy_digests(&control.plane.current());
        control
            .service_event("StartLogging", serde_json::json!({ "Trail": control.plane.trail.layout().bucket, "Policies": policies }))
            .await;
        let reaped = crate::instances::reconcile(&control.plane).await.map_err(|e| StartError::Setup(e.to_string()))?;
        if !reaped.is_empty() {
            tracing::warn!(instances = ?reaped, "destroyed instances a previous run left behind");
            control.service_event("ReconcileInstances", serde_json::json!({ "Destroyed": reaped })).await;
        }
        let stale = crate::services::streaming::end_all_sessions(&control, "PLATFORM_RESTARTED").await;
        if !stale.is_empty() {
            tracing::warn!(sessions = ?stale, "ended the sessions a previous run left open");
        }
        crate::services::storage::reclaim_blobs(&control.plane).await.map_err(|e| StartError::Setup(e.to_string()))?;
        crate::services::notebooks::stop_all(&control.plane).await;
        crate::functions::start_dispatcher(control.clone());
        crate::services::audit_log::start_daily_reports(control.clone());
        crate::instances::start_background_tasks(control.clone());
        crate::services::streaming::engine::start(control.clone());
        Ok(control)
    }

    pub fn spec(&self) -> &Spec {
        &self.plane.spec
    }

    /// The spec as last deployed.
    pub fn current(&self) -> Arc<Spec> {
        self.plane.current()
    }

    pub fn data_dir(&self) -> &Path {
        &self.plane.data_dir
    }

    pub fn trail(&self) -> &Trail {
        &self.plane.trail
    }

    /// Records the end of auditing and seals the trail with a final checkpoint and digest.
    pub async fn shutdown(&self) {
        // Instances are ephemeral: a clean stop ends them (a crash leaves them to reconciliation).
        self.plane.streaming.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        // Launches in flight finish before the instances are ended.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while self.plane.streaming.launching.lock().expect("launching lock").values().any(|n| *n > 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        // Notebooks and operator launches too: none may start once the others are ended.
        self.plane.instances.close(Duration::from_secs(10)).await;
        let ended = crate::instances::terminate_all(&self.plane).await;
        if !ended.is_empty() {
            tracing::info!(instances = ?ended, "terminated the running instances");
        }
        crate::services::streaming::end_all_sessions(self, "PLATFORM_STOPPED").await;
        crate::services::notebooks::stop_all(&self.plane).await;
        self.service_event("StopLogging", serde_json::json!({ "Trail": self.plane.trail.layout().bucket })).await;
        let trail = self.plane.trail.clone();
        if let Err(err) = tokio::task::spawn_blocking(move || trail.close()).await.unwrap_or(Err(audit::TrailError::Stopped)) {
            tracing::error!(error = %err, "closing the audit trail");
        }
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
        record_service_event(&self.plane, event).await
    }

    /// This service provider's SAML metadata, served at `/saml/metadata`.
    pub fn saml_metadata(&self) -> String {
        crate::identity::saml::sp_metadata(&self.plane)
    }

    /// Where a browser starts an SP-initiated SAML sign-in: the IdP's redirect-binding URL
    /// with a fresh AuthnRequest carrying `relay_state`.
    /// A refusal is recorded (`identity:SignInStartRefused`) with the browser's address.
    /// The request id comes with it, for the gateway to bind to the browser.
    pub async fn saml_login_url(&self, relay_state: &str, source_ip: &str) -> Result<(String, String), ActionError> {
        let started = crate::identity::saml::login_url(&self.plane, relay_state);
        self.sign_in_start(&started, "SAML", relay_state, source_ip).await;
        started
    }

    async fn sign_in_start<T>(&self, started: &Result<T, ActionError>, protocol: &str, relay_state: &str, source_ip: &str) {
        if let Err(err) = started {
            let parameters = serde_json::json!({ "Protocol": protocol, "RelayState": relay_state });
            let event = ServiceEvent {
                source: "identity",
                name: "SignInStartRefused",
                principal: "gateway.datasandbox",
                parameters,
                error: Some(err),
                source_ip: Some(source_ip.to_owned()),
                ..ServiceEvent::default()
            };
            let _ = self.record_service_event(event).await;
        }
    }

    /// A browser's request the gateway refused before it became any action (a foreign
    /// `Origin`, a sign-in that is not JSON): recorded as `gateway:<name>` with the browser's
    /// address, like any other refusal. Every string in it is short (see finding 6).
    pub async fn record_refused_request(&self, name: &str, error: &ActionError, parameters: Value, source_ip: &str) {
        let event = ServiceEvent {
            source: "gateway",
            name,
            principal: "gateway.datasandbox",
            parameters,
            error: Some(error),
            source_ip: Some(source_ip.to_owned()),
            ..ServiceEvent::default()
        };
        let _ = self.record_service_event(event).await;
    }

    /// Which federated sign-ins are set up: (SAML, OpenID Connect).
    pub fn federation_providers(&self) -> (bool, bool) {
        let name = self.plane.current.read().expect("spec lock").idp_name.clone();
        let saml = self.plane.data_dir.join("identity-providers").join(format!("{name}.xml")).exists();
        (saml, self.plane.spec.oidc.is_some())
    }

    /// Where a browser starts an OpenID Connect sign-in, and the state to bind to that browser.
    /// A refusal is recorded (`identity:SignInStartRefused`) with the browser's address.
    pub async fn oidc_login_url(&self, relay_state: &str, source_ip: &str) -> Result<(String, String), ActionError> {
        let started = crate::identity::oidc::login_url(&self.plane, relay_state).await;
        self.sign_in_start(&started, "OIDC", relay_state, source_ip).await;
        started
    }

    pub fn render_metrics(&self) -> String {
        self.plane.metrics.render()
    }

    /// Runs one call through the pipeline. The audit record is durable before this returns.
    pub async fn call(&self, request: Request) -> Response {
        let started = Instant::now();
        let request_id = uuid::Uuid::new_v4().to_string();
        let plane = &self.plane;
        let spec = actions::find(&request.action);
        let (caller, result, resources, correlation_id, input) =
            match identity::authenticate(plane, &request.credentials, &request.action).await {
                Err(err) => (None, Err(err), Vec::new(), None, Value::Null),
                Ok(caller) => {
                    let input = parse_body(&request.body);
                    let mut ctx = Ctx {
                        plane,
                        caller: &caller,
                        spec,
                        source_ip: &request.source_ip,
                        request_id: request_id.clone(),
                        authorized: false,
                        resources: Vec::new(),
                        correlation_id: caller.correlation_id.clone(),
                        recorded_input: None,
                    };
                    let console = identity::console_access(&request.credentials, &caller);
                    let result = match (&input, spec) {
                        _ if let Err(refused) = &console => Err(refused.clone()),
                        // On the trail's reserve nothing is carried out; the refusal is what is recorded.
                        _ if plane.trail.on_reserve() => Err(trail_on_reserve()),
                        (_, None) => Err(unknown_action(&request.action)),
                        (Err(err), _) => Err(err.clone()),
                        (Ok(input), Some(spec)) => {
                            let result = crate::services::dispatch(&mut ctx, spec.name, input.clone()).await;
                            // Fail closed: a handler that forgot to authorize must not succeed.
                            if result.is_ok() && !ctx.authorized {
                                Err(ActionError::internal(format_args!("{} returned without authorizing", spec.name)))
                            } else {
                                result
                            }
                        }
                    };
                    let (correlation_id, resources) = (ctx.correlation_id, ctx.resources);
                    // An input the handler parsed by type is recorded as it serializes (secrets hidden
                    // by type); any other, as sent with the members named secret hidden.
                    let recorded = match ctx.recorded_input {
                        Some(typed) => typed,
                        None => input.map(hide_members).unwrap_or(Value::Null),
                    };
                    (Some(caller), result, resources, correlation_id, recorded)
                }
            };
        // The reply and the record carry the same, bounded, message.
        let result = result.map_err(bound_error);
        let record = self.record(&request, spec, caller.as_ref(), &request_id, input, &result, resources, correlation_id);
        let result = match plane.trail.append(&record).await {
            Ok(()) => result,
            Err(err) => {
                tracing::error!(request_id, error = %err, "audit record not written");
                Err(trail_unwritable())
            }
        };
        let label = spec.map_or("unknown", |s| s.name);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.code == "AccessDeniedException" => "denied",
            Err(e) if e.is_client_error() => "client_error",
            Err(_) => "server_error",
        };
        plane.metrics.observe(label, outcome, started.elapsed().as_secs_f64());
        Response { request_id, result }
    }

    #[allow(clippy::too_many_arguments, reason = "one record gathers everything the pipeline learned")]
    fn record(
        &self,
        request: &Request,
        spec: Option<&ActionSpec>,
        caller: Option<&Caller>,
        request_id: &str,
        input: Value,
        result: &Result<Value, ActionError>,
        resources: Vec<RecordResource>,
        correlation_id: Option<String>,
    ) -> Record {
        let plane = &*self.plane;
        let (event_source, event_name) = match request.action.split_once(':') {
            Some((service, action)) if spec.is_some() => (service.to_owned(), action.to_owned()),
            _ => ("unknown".to_owned(), request.action.chars().filter(|c| !c.is_control()).take(128).collect()),
        };
        let identity = caller.map(|c| c.identity.clone()).unwrap_or_else(|| match &request.credentials {
            // A failed sign-in is recorded with the name that was tried (never the password).
            Credentials::LocalUser { user_name, .. } => {
                let tried: String = user_name.chars().filter(|c| !c.is_control()).take(64).collect();
                audit::UserIdentity {
                    kind: "User".into(),
                    principal_id: format!("local:{tried}"),
                    arn: String::new(),
                    account_id: plane.spec.account_id.clone(),
                    user_name: Some(tried),
                    session_context: None,
                }
            }
            // A refused SAML response is recorded with the subject it claimed (unverified).
            Credentials::SamlResponse { response, .. } => {
                let claimed = crate::identity::saml::claimed_subject(response);
                audit::UserIdentity {
                    kind: "SAMLUser".into(),
                    principal_id: format!("federated:{}", claimed.as_deref().unwrap_or("unknown")),
                    arn: String::new(),
                    account_id: plane.spec.account_id.clone(),
                    user_name: claimed,
                    session_context: None,
                }
            }
            _ => audit::UserIdentity {
                kind: "Anonymous".into(),
                principal_id: "anonymous".into(),
                arn: String::new(),
                account_id: plane.spec.account_id.clone(),
                user_name: None,
                session_context: None,
            },
        });
        let read_only = spec.is_some_and(|s| s.read_only);
        let response_elements = match result {
            Ok(value) if !read_only => redact(value.clone()),
            _ => Value::Null,
        };
        Record {
            sequence_number: None,
            previous_record_hash: None,
            event_version: audit::EVENT_VERSION.into(),
            user_identity: identity,
            event_time: millis_to_rfc3339(now_millis()),
            event_source,
            event_name,
            aws_region: plane.spec.region.clone(),
            source_ip_address: request.source_ip.clone(),
            user_agent: request.user_agent.chars().take(256).collect(),
            error_code: result.as_ref().err().map(|e| e.code.to_owned()),
            error_message: result.as_ref().err().map(|e| e.message.clone()),
            request_parameters: summarize(input),
            response_elements,
            request_id: request_id.to_owned(),
            event_id: uuid::Uuid::new_v4().to_string(),
            read_only,
            resources,
            event_type: if matches!(request.credentials, Credentials::Function { .. }) {
                "AwsServiceEvent".into()
            } else {
                "AwsApiCall".into()
            },
            management_event: spec.is_none_or(|s| s.management_event),
            recipient_account_id: plane.spec.account_id.clone(),
            correlation_id,
        }
    }
}

/// See [`ControlPlane::record_service_event`]; for code that holds only the plane.
pub(crate) async fn record_service_event(plane: &Plane, event: ServiceEvent<'_>) -> Result<(), ActionError> {
    let spec = &plane.spec;
    let mut record = Record {
        sequence_number: None,
        previous_record_hash: None,
        event_version: audit::EVENT_VERSION.into(),
        user_identity: audit::UserIdentity {
            kind: "AWSService".into(),
            principal_id: event.principal.into(),
            arn: String::new(),
            account_id: spec.account_id.clone(),
            user_name: None,
            session_context: None,
        },
        event_time: millis_to_rfc3339(now_millis()),
        event_source: event.source.into(),
        event_name: event.name.into(),
        aws_region: spec.region.clone(),
        source_ip_address: event.source_ip.unwrap_or_else(|| event.principal.into()),
        user_agent: concat!("datasandbox/", env!("CARGO_PKG_VERSION")).into(),
        error_code: event.error.map(|e| e.code.to_owned()),
        error_message: event.error.map(|e| e.message.clone()),
        request_parameters: event.parameters,
        response_elements: Value::Null,
        request_id: uuid::Uuid::new_v4().to_string(),
        event_id: uuid::Uuid::new_v4().to_string(),
        read_only: false,
        resources: event.resources,
        event_type: "AwsServiceEvent".into(),
        management_event: event.management_event,
        recipient_account_id: spec.account_id.clone(),
        correlation_id: event.correlation_id,
    };
    let gated = event.effect == Effect::Gated && event.error.is_none();
    if gated && plane.trail.on_reserve() {
        // The refusal is recorded instead, from the reserve.
        let refused = trail_on_reserve();
        record.error_code = Some(refused.code.to_owned());
        record.error_message = Some(refused.message.clone());
        if let Err(err) = plane.trail.append(&record).await {
            tracing::error!(error = %err, event = event.name, "cannot audit a refused service event");
        }
        return Err(refused);
    }
    match plane.trail.append(&record).await {
        Ok(()) => Ok(()),
        Err(err) => {
            tracing::error!(error = %err, event = event.name, "cannot audit a service event");
            Err(trail_unwritable())
        }
    }
}

/// The witness must be a directory of its own on another file system than the trail: what
/// removes or fills the trail must not reach it.
fn check_witness(witness: &Path, data_dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(witness)
        .map_err(|e| format!("audit.witness: cannot create `{}`: {e}", witness.display()))?;
    let device = |path: &Path| std::fs::metadata(path).map(|m| m.dev()).map_err(|e| format!("`{}`: {e}", path.display()));
    if device(witness)? == device(data_dir)? {
        return Err(format!(
            "audit.witness: `{}` is on the same file system as the data directory `{}`; a witness must be on another one (a different disk, a network mount), or what deletes or fills the trail reaches it too",
            witness.display(),
            data_dir.display()
        ));
    }
    Ok(())
}

/// The refusal of anything while the trail writes on its reserve.
fn trail_on_reserve() -> ActionError {
    ActionError::new(
        503,
        "ServiceUnavailable",
        "the audit trail's file system is full and the trail is writing on its reserve, so nothing is carried out until the operator frees space; this refusal is recorded",
    )
}

/// The refusal of anything while the trail cannot be written at all.
fn trail_unwritable() -> ActionError {
    ActionError::new(
        503,
        "ServiceUnavailable",
        "the audit trail cannot be written, so no action can be acknowledged; the operator must free the trail's disk",
    )
}

fn unknown_action(name: &str) -> ActionError {
    let shown: String = name.chars().filter(|c| !c.is_control()).take(80).collect();
    match model::ActionName::parse(name) {
        Err(err) => ActionError::unknown_operation(err.to_string()),
        Ok(parsed) => {
            let same_service: Vec<&str> =
                actions::ACTIONS.iter().filter_map(|a| a.name.strip_prefix(parsed.service()).and_then(|r| r.strip_prefix(':'))).collect();
            if same_service.is_empty() {
                ActionError::unknown_operation(format!(
                    "action `{shown}` does not exist; service `{}` has no actions yet",
                    parsed.service()
                ))
            } else {
                ActionError::unknown_operation(format!(
                    "action `{shown}` does not exist; `{}` has {}",
                    parsed.service(),
                    same_service.join(", ")
                ))
            }
        }
    }
}

/// The longest error message a reply or record carries; longer ones are cut, saying so
/// (with room for that note, so the trail's own bound never cuts it again: the record and
/// the reply say the same).
const MAX_ERROR_MESSAGE_BYTES: usize = audit::bound::MAX_STRING_BYTES - 128;
/// The longest member name a request may use (AWS's longest are far shorter): the trail's own
/// bound, so that no two names a handler told apart become one in the record.
const MAX_MEMBER_NAME_BYTES: usize = audit::bound::MAX_MEMBER_NAME_BYTES;

fn bound_error(mut error: ActionError) -> ActionError {
    if error.message.len() > MAX_ERROR_MESSAGE_BYTES {
        error.message = audit::bound::cut(&error.message, MAX_ERROR_MESSAGE_BYTES).into_owned();
    }
    error
}

/// The first member name, at any depth, longer than [`MAX_MEMBER_NAME_BYTES`].
fn overlong_member(value: &Value) -> Option<&str> {
    match value {
        Value::Object(map) => map
            .iter()
            .find_map(|(key, member)| if key.len() > MAX_MEMBER_NAME_BYTES { Some(key.as_str()) } else { overlong_member(member) }),
        Value::Array(items) => items.iter().find_map(overlong_member),
        _ => None,
    }
}

fn parse_body(body: &Result<Bytes, ActionError>) -> Result<Value, ActionError> {
    let bytes = body.as_ref().map_err(Clone::clone)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|err| ActionError::serialization(format!("the request body is not valid JSON: {err}")))?;
    if !value.is_object() {
        return Err(ActionError::serialization("the request body must be a JSON object"));
    }
    if let Some(name) = overlong_member(&value) {
        return Err(ActionError::validation(format!(
            "member names are at most {MAX_MEMBER_NAME_BYTES} bytes; the request has one of {} bytes (`{}`)",
            name.len(),
            audit::bound::cut(&name.chars().filter(|c| !c.is_control()).take(64).collect::<String>(), 64)
        )));
    }
    Ok(value)
}

/// Request parameters larger than this are summarized in the record, not copied.
const MAX_RECORDED_PARAMETERS: usize = 16 * 1024;

fn redact(value: Value) -> Value {
    summarize(hide_members(value))
}

/// Parameters too large to copy into a record, summarized.
fn summarize(value: Value) -> Value {
    let size = value.to_string().len();
    if size > MAX_RECORDED_PARAMETERS {
        return audit::bound::summary(&value, size);
    }
    value
}

/// The members named in [`HIDDEN_MEMBERS`] hidden, at any depth.
fn hide_members(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, member) in map.iter_mut() {
                    if HIDDEN_MEMBERS.contains(&key.as_str()) && !member.is_null() {
                        *member = Value::String(HIDDEN.into());
                    } else {
                        walk(member);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

/// What a handler sees of its call.
pub(crate) struct Ctx<'a> {
    pub plane: &'a Arc<Plane>,
    pub caller: &'a Caller,
    spec: Option<&'static ActionSpec>,
    pub source_ip: &'a str,
    pub request_id: String,
    authorized: bool,
    resources: Vec<RecordResource>,
    correlation_id: Option<String>,
    /// The input as its record shows it, when the handler parsed it by type.
    recorded_input: Option<Value>,
}

impl Ctx<'_> {
    /// Parses the input into the action's typed request; failures are ValidationExceptions.
    pub fn parse<T: DeserializeOwned>(&self, input: Value) -> Result<T, ActionError> {
        serde_json::from_value(input).map_err(|err| ActionError::validation(format!("invalid request: {err}")))
    }

    /// Parses like [`Ctx::parse`], and records the input as the parsed value serializes:
    /// its [`Redacted`](crate::recorded::Redacted) fields are hidden whatever they are named.
    pub fn parse_recorded<T: DeserializeOwned + serde::Serialize>(&mut self, input: Value) -> Result<T, ActionError> {
        let parsed: T = self.parse(input)?;
        self.recorded_input = Some(serde_json::to_value(&parsed).map_err(ActionError::internal)?);
        Ok(parsed)
    }

    /// Authorizes this action on `resource`. Every handler calls this before any effect.
    pub fn authorize(&mut self, resource: Resource) -> Result<(), ActionError> {
        let name = self.spec.map_or("unknown", |s| s.name);
        self.check(name, resource)?;
        self.authorized = true;
        Ok(())
    }

    /// Authorizes a further action the call implies (reading a copy source, decrypting a
    /// SecureString); it does not replace [`Ctx::authorize`].
    pub fn authorize_also(&mut self, action: &str, resource: Resource) -> Result<(), ActionError> {
        self.check(action, resource)
    }

    /// Whether the policies would permit `action` on `resource`, deciding nothing and
    /// recording nothing (a catalog asks this of every stack).
    pub fn permitted(&self, action: &str, resource: &Resource) -> bool {
        let authorizer = self.plane.authorizer.read().expect("authorizer lock").clone();
        authorizer.authorize(&self.caller.principal, action, resource, self.source_ip).allowed
    }

    /// For actions every authenticated caller may take, such as asking who they are.
    pub fn authorize_always(&mut self) {
        self.authorized = true;
    }

    fn check(&mut self, action: &str, resource: Resource) -> Result<(), ActionError> {
        let (arn, kind) = resource_arn(&self.plane.spec, &resource);
        if let Some(arn) = &arn
            && !self.resources.iter().any(|r| &r.arn == arn)
        {
            self.resources.push(RecordResource { arn: arn.clone(), account_id: self.plane.spec.account_id.clone(), kind: kind.into() });
        }
        let authorizer = self.plane.authorizer.read().expect("authorizer lock").clone();
        let decision = authorizer.authorize(&self.caller.principal, action, &resource, self.source_ip);
        tracing::debug!(action, allowed = decision.allowed, reasons = ?decision.reasons, errors = ?decision.errors, "authorization");
        if decision.allowed {
            return Ok(());
        }
        let who = self.caller.identity.user_name.as_deref().unwrap_or(&self.caller.identity.principal_id);
        let on = arn.map(|a| format!(" on `{a}`")).unwrap_or_default();
        Err(ActionError::access_denied(format!("`{who}` is not allowed to perform `{action}`{on}")))
    }

    pub fn set_correlation_id(&mut self, id: String) {
        self.correlation_id = Some(id);
    }

    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The control plane, for handlers that act through the pipeline themselves (as a built-in
    /// function, so that their effects are authorized and audited like any other).
    pub fn control(&self) -> ControlPlane {
        ControlPlane { plane: self.plane.clone() }
    }

    /// The writer recorded with objects: the caller's ARN.
    pub fn principal_arn(&self) -> &str {
        &self.caller.identity.arn
    }
}

fn resource_arn(spec: &Spec, resource: &Resource) -> (Option<String>, &'static str) {
    let (region, account) = (&spec.region, &spec.account_id);
    match resource {
        Resource::Service(_) => (None, ""),
        Resource::Bucket { name, .. } => (Some(format!("arn:datasandbox:storage:::{name}")), "DataSandbox::Storage::Bucket"),
        Resource::Object { bucket, key, .. } => (Some(format!("arn:datasandbox:storage:::{bucket}/{key}")), "DataSandbox::Storage::Object"),
        Resource::Parameter { name } => (
            Some(format!("arn:datasandbox:parameters:{region}:{account}:parameter/{}", name.trim_start_matches('/'))),
            "DataSandbox::Parameters::Parameter",
        ),
        Resource::Key { id, .. } => (Some(format!("arn:datasandbox:keys:{region}:{account}:key/{id}")), "DataSandbox::Keys::Key"),
        Resource::Instance { id } => {
            (Some(format!("arn:datasandbox:streaming:{region}:{account}:instance/{id}")), "DataSandbox::Streaming::Instance")
        }
        Resource::Stack { name, .. } => {
            (Some(format!("arn:datasandbox:streaming:{region}:{account}:stack/{name}")), "DataSandbox::Streaming::Stack")
        }
    }
}
