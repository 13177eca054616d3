//! The composition root: builds the platform and every service, connects the pipeline to the
//! authenticator and the one dispatcher, starts and stops the background work, and is the
//! facade the transports hold. Only `lib.rs` names it (to re-export the facade).
//!
//! The platform it opens keeps two specs: `spec`, the one the process started with (listeners,
//! stores, trail: fixed for the run), and `current`, the last deployed one (fleets' queues,
//! datasets, instance types, notebook templates), read from the store at start and swapped
//! only by a complete deploy.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use model::spec::Spec;
use policy::Authorizer;
use serde_json::{Value, json};

use crate::core::actions::{self, Action};
use crate::core::caller::Credentials;
use crate::core::error::ActionError;
use crate::core::pipeline::{Ctx, Dispatch, Pipeline, Request, Response};
use crate::core::platform::ServiceEvent;
use crate::deploy::Deploy;
use crate::identity::Identity;
use crate::instances::{EndpointServer, Instances};
use crate::notebooks::{NotebookTarget, Notebooks};
use crate::opening::{StartError, open_platform};
use crate::recordings::{Recording, Recordings};
use crate::streaming::SessionConnection;
use crate::streaming::Streaming;
use crate::streaming::files::FileClient;
use crate::streaming::stream::StreamTarget;

/// The running control plane; cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    pipeline: Pipeline,
    services: Arc<Services>,
}

/// The services that keep state of their own; the stateless ones (`keys`, `parameters`,
/// `storage`, `audit_log`) need only the platform their calls carry.
struct Services {
    identity: Arc<Identity>,
    instances: Arc<Instances>,
    streaming: Arc<Streaming>,
    notebooks: Arc<Notebooks>,
    recordings: Arc<Recordings>,
    deploy: Deploy,
}

/// The one dispatcher: an exhaustive `match` on the registry's closed enum, so every
/// registered action has exactly one handler and there is no catch-all.
impl Dispatch for Services {
    fn dispatch<'a>(&'a self, ctx: &'a mut Ctx<'_>, action: Action, input: Value) -> BoxFuture<'a, Result<Value, ActionError>> {
        match action {
            Action::Parameters(action) => Box::pin(crate::parameters::dispatch(ctx, action, input)),
            Action::Storage(action) => Box::pin(crate::storage::dispatch(ctx, action, input)),
            Action::Keys(action) => Box::pin(crate::keys::dispatch(ctx, action, input)),
            Action::Audit(action) => Box::pin(crate::audit_log::dispatch(ctx, action, input)),
            Action::Cluster(action) => Box::pin(crate::cluster::dispatch(ctx, action, input)),
            Action::Airlock(action) => Box::pin(crate::airlock::dispatch(ctx, action, input)),
            Action::Identity(action) => Box::pin(self.identity.dispatch(ctx, action, input)),
            Action::Streaming(action) => Box::pin(self.streaming.dispatch(ctx, action, input)),
            Action::Notebooks(action) => Box::pin(self.notebooks.dispatch(ctx, action, input)),
            Action::Deploy(action) => Box::pin(self.deploy.dispatch(ctx, action, input)),
        }
    }
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
        let platform = Arc::new(open_platform(spec, data_dir, socket_owner, image_cache).await?);
        let pipeline = Pipeline::new(platform.clone());
        let instances = Arc::new(Instances::new(pipeline.clone()));
        let streaming = Arc::new(Streaming::new(pipeline.clone(), instances.clone()));
        let notebooks = Arc::new(Notebooks::new(pipeline.clone(), instances.clone()));
        let identity = Arc::new(Identity::new(platform.clone(), streaming.clone(), instances.clone()));
        let deploy = Deploy::new(pipeline.clone(), streaming.clone());
        let recordings = Arc::new(Recordings::new(pipeline.clone()));
        let services = Arc::new(Services { identity: identity.clone(), instances, streaming, notebooks, recordings, deploy });
        pipeline.connect(identity, services.clone());
        let control = ControlPlane { pipeline, services };
        // The lease first: what a previous run of this node left is its own to reclaim only
        // once no other process serves under its name.
        let epoch = crate::cluster::join(&control.pipeline.platform).await.map_err(StartError::Setup)?;
        control.pipeline.platform.metrics.node_epoch.set(epoch);
        control.pipeline.platform.metrics.node_lease_held.set(1);
        control.recover().await?;
        control.start_heartbeat();
        crate::functions::start_dispatcher(control.pipeline.clone());
        crate::audit_log::start_daily_reports(control.pipeline.clone());
        control.services.instances.start_background_tasks();
        crate::streaming::engine::start(control.services.streaming.clone());
        crate::streaming::listen_for_changes(control.services.streaming.clone());
        control.services.notebooks.start_reconciler();
        Ok(control)
    }

    /// At start: the trail says what is in force, and what a previous run left (instances,
    /// sessions, blobs, mounted notebook volumes) is ended or reclaimed.
    async fn recover(&self) -> Result<(), StartError> {
        let platform = &self.pipeline.platform;
        // The policies in force from now on, by hash, so every decision's policies are in the trail.
        let policies = crate::deploy::policy_digests(&platform.current());
        platform.service_event("StartLogging", json!({ "Trail": platform.trail.layout().bucket, "Policies": policies })).await;
        let reaped = self.services.instances.reconcile().await.map_err(|e| StartError::Setup(e.to_string()))?;
        if !reaped.is_empty() {
            tracing::warn!(instances = ?reaped, "destroyed instances a previous run left behind");
            platform.service_event("ReconcileInstances", json!({ "Destroyed": reaped })).await;
        }
        let stale = crate::streaming::end_all_sessions(&self.services.streaming, "PLATFORM_RESTARTED").await;
        if !stale.is_empty() {
            tracing::warn!(sessions = ?stale, "ended the sessions a previous run left open");
        }
        crate::storage::reclaim_blobs(platform).await.map_err(|e| StartError::Setup(e.to_string()))?;
        crate::airlock::prepare(platform).await.map_err(|e| StartError::Setup(e.to_string()))?;
        self.services.recordings.recover().await.map_err(|e| StartError::Setup(format!("recording spool: {}", e.message)))?;
        self.services.notebooks.adopt().await;
        self.services.notebooks.stop_all().await;
        Ok(())
    }

    /// Renews this node's lease every heartbeat and takes other nodes whose leases ran out for
    /// lost. A node that finds its own lease gone ends its instances (other nodes have ended
    /// their sessions) and joins again under a new epoch.
    fn start_heartbeat(&self) {
        let control = self.clone();
        tokio::spawn(async move {
            let platform = control.pipeline.platform.clone();
            let mut renewed_since = crate::core::store::now_millis();
            loop {
                tokio::time::sleep(crate::cluster::heartbeat_interval(&platform)).await;
                if platform.node.is_leaving() {
                    return;
                }
                match crate::cluster::heartbeat(&platform).await {
                    crate::cluster::Beat::Renewed => {
                        if crate::cluster::may_sweep(&platform, renewed_since)
                            && let Err(err) = crate::cluster::sweep(&platform).await
                        {
                            tracing::warn!(error = %err, "looking for lost nodes");
                        }
                        if let Err(err) = crate::streaming::end_sessions_on_lost_nodes(&control.services.streaming).await {
                            tracing::warn!(error = %err, "ending the sessions of lost nodes");
                        }
                        if let Err(err) = crate::streaming::end_sessions_of_deleted_users(&control.services.streaming).await {
                            tracing::warn!(error = %err, "ending the sessions of deleted users");
                        }
                    }
                    crate::cluster::Beat::Unreachable => renewed_since = crate::core::store::now_millis(),
                    crate::cluster::Beat::Lost => {
                        platform.metrics.node_lease_held.set(0);
                        control.rejoin().await;
                        renewed_since = crate::core::store::now_millis();
                    }
                }
            }
        });
    }

    /// After this node lost its lease: its instances end (their rows are other nodes' to judge
    /// now, so nothing of them is written under the old epoch), then it joins again.
    async fn rejoin(&self) {
        let platform = &self.pipeline.platform;
        let ended = self.services.instances.terminate_all().await;
        tracing::warn!(instances = ?ended, "ended this node's instances after it lost its lease");
        // Its notebooks' servers went with its instances; the sweep failed their rows.
        self.services.notebooks.stop_all().await;
        loop {
            match crate::cluster::join(platform).await {
                Ok(epoch) => {
                    platform.metrics.node_epoch.set(epoch);
                    platform.metrics.node_lease_held.set(1);
                    let reaped = self.services.instances.reconcile().await.unwrap_or_default();
                    platform
                        .service_event("NodeRejoined", json!({ "Node": platform.node.name, "Epoch": epoch, "Destroyed": reaped }))
                        .await;
                    return;
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot join the cluster again; retrying");
                    tokio::time::sleep(crate::cluster::heartbeat_interval(platform)).await;
                }
            }
        }
    }

    pub fn spec(&self) -> &Spec {
        &self.pipeline.platform.spec
    }

    /// The spec as last deployed.
    pub fn current(&self) -> Arc<Spec> {
        self.pipeline.platform.current()
    }

    pub fn data_dir(&self) -> &Path {
        &self.pipeline.platform.data_dir
    }

    pub fn render_metrics(&self) -> String {
        self.pipeline.platform.metrics.render()
    }

    /// Runs one call through the pipeline. The audit record is durable before this returns.
    pub async fn call(&self, request: Request) -> Response {
        self.pipeline.call(request).await
    }

    /// Deploys `spec_text` as the local operator (`datasandbox up`): the same action the
    /// `deploy` command takes through the socket.
    pub async fn deploy_spec(&self, spec_text: &str, overrides: &[String]) -> Response {
        let input = json!({ "Spec": spec_text, "Overrides": overrides });
        self.call(Request {
            credentials: Credentials::Peer { uid: self.pipeline.platform.socket_owner },
            source_ip: "control.sock".into(),
            user_agent: "datasandbox/up".into(),
            action: "deploy:Deploy".into(),
            body: Ok(bytes::Bytes::from(input.to_string())),
        })
        .await
    }

    /// Records the end of auditing and seals the trail with a final checkpoint and digest.
    /// Builds every image the deployed spec declares that is not built yet (`up` does, before
    /// it is ready, so that the first session waits for none), saying each step.
    pub async fn prepare_images(&self) -> Result<(), ActionError> {
        let spec = self.pipeline.platform.current();
        for image in &spec.images {
            crate::instances::ensure_image(&self.pipeline.platform, &spec, &image.name).await?;
        }
        Ok(())
    }

    /// The server begins to stop: long polls end now, so that the listeners drain quickly.
    pub fn begin_stopping(&self) {
        self.pipeline.platform.stopping.send_replace(true);
    }

    pub async fn shutdown(&self) {
        let Services { instances, streaming, notebooks, .. } = &*self.services;
        // Instances are ephemeral: a clean stop ends them (a crash leaves them to reconciliation).
        // Launches in flight finish before the instances are ended.
        streaming.stop(Duration::from_secs(10)).await;
        // Notebooks and operator launches too: none may start once the others are ended.
        instances.close(Duration::from_secs(10)).await;
        let ended = instances.terminate_all().await;
        if !ended.is_empty() {
            tracing::info!(instances = ?ended, "terminated the running instances");
        }
        crate::streaming::end_all_sessions(streaming, "PLATFORM_STOPPED").await;
        notebooks.stop_all().await;
        let platform = &self.pipeline.platform;
        crate::cluster::leave(platform).await;
        platform.service_event("StopLogging", json!({ "Trail": platform.trail.layout().bucket })).await;
        let trail = platform.trail.clone();
        if let Err(err) = tokio::task::spawn_blocking(move || trail.close()).await.unwrap_or(Err(audit::TrailError::Stopped)) {
            tracing::error!(error = %err, "closing the audit trail");
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
        let _ = self.pipeline.platform.record_service_event(event).await;
    }

    /// This service provider's SAML metadata, served at `/saml/metadata`.
    pub fn saml_metadata(&self) -> String {
        self.services.identity.saml_metadata()
    }

    /// Where a browser starts an SP-initiated SAML sign-in, and the request id for the
    /// gateway to bind to the browser. A refusal is recorded (`identity:SignInStartRefused`).
    pub async fn saml_login_url(&self, relay_state: &str, source_ip: &str) -> Result<(String, String), ActionError> {
        self.services.identity.saml_login_url(relay_state, source_ip).await
    }

    /// Where a browser starts an OpenID Connect sign-in, and the state to bind to that
    /// browser. A refusal is recorded (`identity:SignInStartRefused`).
    pub async fn oidc_login_url(&self, relay_state: &str, source_ip: &str) -> Result<(String, String), ActionError> {
        self.services.identity.oidc_login_url(relay_state, source_ip).await
    }

    /// Which federated sign-ins are set up: (SAML, OpenID Connect).
    pub fn federation_providers(&self) -> (bool, bool) {
        self.services.identity.federation_providers()
    }

    /// Whether a sign-in's token still holds (not signed out, its user not deleted, not
    /// expired): asked by the portal's long-lived change stream, which is not an action of its
    /// user's and is not recorded.
    pub async fn sign_in_holds(&self, token: &str) -> bool {
        self.services.identity.token_holds(token).await
    }

    /// The principal ids of sessions' users as they change; a page filters for its caller's
    /// `PrincipalId`.
    pub fn session_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.pipeline.platform.changes.subscribe()
    }

    /// Tells the control plane where the gateway listens, for the URLs it hands out.
    /// `datasandbox backup` while serving (see `backup`): recorded, with progress on `progress`.
    pub async fn backup(
        &self,
        to: &Path,
        keys: crate::backup::Keys,
        uid: Option<u32>,
        progress: crate::backup::Progress<'_>,
    ) -> Result<crate::backup::Written, String> {
        crate::backup::live(&self.pipeline.platform, to, keys, uid, progress).await
    }

    pub async fn set_listening_address(&self, address: std::net::SocketAddr) {
        self.services.streaming.set_listening_address(address);
        // Other nodes send browsers here: publish the address now, not at the next heartbeat.
        if crate::cluster::heartbeat(&self.pipeline.platform).await != crate::cluster::Beat::Renewed {
            tracing::warn!("cannot publish this node's address yet; the next heartbeat will");
        }
    }

    /// Gives the control plane the function that serves the endpoint on a listener (the
    /// gateway's), before any instance is created.
    pub fn set_endpoint_server(&self, serve: EndpointServer) {
        self.services.instances.set_endpoint_server(serve);
    }

    /// Opens a session's live connection, by its cookie.
    pub async fn connect_session(&self, cookie: &str, client_ip: &str) -> Result<SessionConnection, ActionError> {
        self.services.streaming.connect_session(cookie, client_ip).await
    }

    /// The session's current status, for its page.
    pub async fn session_status(&self, session_id: &str) -> Result<Value, ActionError> {
        self.services.streaming.session_status(session_id).await
    }

    /// Opens the stream of `session_id` for the browser holding its cookie.
    pub async fn connect_stream(&self, cookie: &str, session_id: &str, client_ip: &str) -> Result<StreamTarget, ActionError> {
        self.services.streaming.connect_stream(cookie, session_id, client_ip).await
    }

    /// The recording of a session whose stack records it, for the gateway's recorder; `None`
    /// when a recorder on this node already holds it.
    pub async fn open_recording(&self, session_id: &str) -> Result<Option<Recording>, ActionError> {
        self.services.recordings.open(session_id).await
    }

    /// Whether a recorder on this node is recording `session_id` now (a segment begun).
    pub fn recording_live(&self, session_id: &str) -> bool {
        self.services.recordings.live(session_id)
    }

    /// A recorded session whose recording cannot go on: on the record, and ended, so that it
    /// never streams unrecorded.
    pub async fn recording_failed(&self, session_id: &str, why: &str) {
        tracing::error!(session = session_id, error = why, "the session's recording failed; ending the session");
        let event = ServiceEvent {
            source: "streaming",
            name: "RecordingFailed",
            principal: "gateway.datasandbox",
            parameters: json!({ "SessionId": session_id, "Reason": why }),
            effect: crate::core::platform::Effect::Recorded,
            ..ServiceEvent::default()
        };
        if let Err(err) = self.pipeline.record_service_event(event).await {
            tracing::error!(session = session_id, error = %err.message, "cannot record the recording's failure");
        }
        if let Err(err) = crate::streaming::sessions::end_session(&self.services.streaming, session_id, "RECORDING_FAILED").await {
            tracing::error!(session = session_id, error = %err.message, "cannot end the session whose recording failed");
        }
    }

    /// Records a clipboard text that crosses, or was stopped (never its content); a transfer
    /// whose record cannot be written must not cross.
    pub async fn record_clipboard(
        &self,
        target: &StreamTarget,
        direction: &str,
        bytes: u64,
        blocked: Option<&str>,
    ) -> Result<(), ActionError> {
        self.services.streaming.record_clipboard(target, direction, bytes, blocked).await
    }

    /// The home folder's files (name, size, time) and what the session's stack allows.
    pub async fn session_files(&self, client: &FileClient<'_>) -> Result<Value, ActionError> {
        self.services.streaming.session_files(client).await
    }

    pub async fn download_printout(&self, client: &FileClient<'_>, name: &str) -> Result<bytes::Bytes, ActionError> {
        self.services.streaming.download_printout(client, name).await
    }

    pub async fn upload_session_file(&self, client: &FileClient<'_>, name: &str, body: bytes::Bytes) -> Result<Value, ActionError> {
        self.services.streaming.upload_session_file(client, name, body).await
    }

    /// My Files' "Request export": an airlock request for one home-folder file, submitted.
    pub async fn request_session_export(&self, client: &FileClient<'_>, name: &str, justification: &str) -> Result<Value, ActionError> {
        self.services.streaming.request_export(client, name, justification).await
    }

    pub async fn download_session_file(&self, client: &FileClient<'_>, name: &str) -> Result<bytes::Bytes, ActionError> {
        self.services.streaming.download_session_file(client, name).await
    }

    /// Where a notebook request goes, if its cookie still grants access.
    pub async fn notebook_target(&self, name: &str, cookie: &str, source_ip: &str) -> Result<NotebookTarget, ActionError> {
        self.services.notebooks.notebook_target(name, cookie, source_ip).await
    }

    /// One audit record per proxied notebook request; a request is forwarded only once its
    /// record is durable, or, a read, answered only once it is.
    pub async fn record_notebook_access(
        &self,
        target: &NotebookTarget,
        name: &str,
        method: &str,
        path: &str,
        how: crate::notebooks::NotebookRecord<'_>,
    ) -> Result<(), ActionError> {
        self.services.notebooks.record_notebook_access(target, name, method, path, how).await
    }

    /// The record of a read of Jupyter's own, handed to the trail while Jupyter answers: the
    /// answer goes to the browser only once [`crate::core::platform::Alongside::durable`] returns.
    pub async fn record_notebook_read(
        &self,
        target: &NotebookTarget,
        name: &str,
        method: &str,
        path: &str,
    ) -> Result<crate::core::platform::Alongside, ActionError> {
        self.services.notebooks.record_notebook_read(target, name, method, path).await
    }

    /// The executed-code audit of one kernel WebSocket (`protocol`: the subprotocol Jupyter
    /// chose, if any).
    pub fn kernel_audit(
        &self,
        target: &NotebookTarget,
        name: &str,
        kernel_id: &str,
        protocol: Option<&str>,
    ) -> crate::notebooks::KernelAudit {
        crate::notebooks::KernelAudit::new(self.pipeline.clone(), target.clone(), name, kernel_id, protocol)
    }

    /// The audit of one Jupyter terminal's WebSocket: each line typed recorded.
    pub fn terminal_audit(&self, target: &NotebookTarget, name: &str, terminal: &str) -> crate::notebooks::KernelAudit {
        crate::notebooks::KernelAudit::terminal(self.pipeline.clone(), target.clone(), name, terminal)
    }

    /// A notebook running on this node, for a request another node relays here.
    pub fn local_notebook(&self, name: &str) -> Option<crate::notebooks::Upstream> {
        self.services.notebooks.local_upstream(name)
    }

    /// This node's TLS towards the other nodes (the notebook relay).
    pub fn node_tls(&self) -> Arc<crate::core::node::NodeTls> {
        self.pipeline.platform.node_tls.clone()
    }

    /// Whether other nodes may share this node's store (PostgreSQL): then it runs a relay.
    pub fn shares_store(&self) -> bool {
        !self.pipeline.platform.store.is_sqlite()
    }

    /// Tells the control plane where the notebook relay listens, for other nodes to reach it.
    pub async fn set_relay_address(&self, address: String) {
        let _ = self.pipeline.platform.relay_address.set(address);
        if crate::cluster::heartbeat(&self.pipeline.platform).await != crate::cluster::Beat::Renewed {
            tracing::warn!("cannot publish this node's relay address yet; the next heartbeat will");
        }
    }
}
