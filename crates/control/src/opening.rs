//! Opening what every service shares, before any service is built: the metadata store, the
//! object store, the key ring, the audit index and the trail, and the policies last deployed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use audit::Trail;
use model::spec::Spec;
use policy::Authorizer;
use tokio::sync::Notify;

use crate::core::actions;
use crate::core::blobs::Blobs;
use crate::core::keyring::KeyRing;
use crate::core::metrics::Metrics;
use crate::core::platform::Platform;
use crate::core::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] crate::core::store::StoreError),
    #[error("the spec's policies are invalid:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Policies(Vec<policy::PolicyError>),
    #[error(transparent)]
    Trail(#[from] audit::TrailError),
    #[error("{0}")]
    Setup(String),
}

/// Opens what every service shares: the metadata store, the object store, the key ring, the
/// audit index and the trail, and loads the policies last deployed.
pub(crate) async fn open_platform(spec: Spec, data_dir: &Path, socket_owner: u32, image_cache: &Path) -> Result<Platform, StartError> {
    // Instances' host ids must be no host user's: a pool overlapping a subordinate id
    // range refuses to start (naming the entry) rather than at the first instance.
    sandbox::ids::IdPool { base: spec.id_base, slots: spec.id_slots }.check_host().map_err(|e| StartError::Setup(e.to_string()))?;
    let store = Store::open(spec.metadata_url.as_deref(), data_dir).await?;
    // The resources serve as last deployed; a host never deployed runs on the given spec
    // until its first deploy.
    let current = crate::deploy::last_deployed(&store).await.map_err(StartError::Setup)?.unwrap_or_else(|| spec.clone());
    let policies: Vec<(String, String)> = current.policies.iter().map(|p| (p.name.clone(), p.text.clone())).collect();
    let authorizer = Authorizer::load(&policies, &actions::declarations()).map_err(StartError::Policies)?;
    let blobs = Blobs::open(&spec.storage, data_dir, spec.node_name(), store.clone()).map_err(|e| StartError::Setup(e.to_string()))?;
    let keys = KeyRing::open(data_dir).map_err(StartError::Setup)?;
    // Before any secret is opened: a node with another master key could open none.
    crate::cluster::check_master_key(&store, &keys, data_dir).await.map_err(StartError::Setup)?;
    let (trail, index, signer) = open_trail(&spec, data_dir, &store, &keys).await?;
    // A streaming URL made on one node is redeemed on any: the key that signs it is shared.
    let local_url_key =
        crate::core::keyring::load_or_create_key(&data_dir.join("streaming-url.key")).map_err(|e| StartError::Setup(e.message))?;
    let url_key = crate::cluster::shared_secret(&store, &keys, "streaming-url-key", local_url_key).await.map_err(StartError::Setup)?;
    let node = crate::core::node::Node::new(spec.node_name());
    let node_tls = crate::cluster::node_tls(&store, &keys, spec.node_name()).await.map_err(StartError::Setup)?;
    Ok(Platform {
        spec,
        current: std::sync::RwLock::new(Arc::new(current)),
        data_dir: data_dir.to_owned(),
        image_cache: image_cache.to_owned(),
        store,
        blobs,
        trail,
        signer,
        index,
        authorizer: std::sync::RwLock::new(Arc::new(authorizer)),
        metrics: Metrics::new(),
        keys,
        socket_owner,
        outbox: Notify::new(),
        changes: Default::default(),
        clock: crate::core::clock::Clock::system(),
        url_key: std::sync::OnceLock::from(url_key),
        listening: std::sync::OnceLock::new(),
        node,
        node_tls: Arc::new(node_tls),
        relay_address: std::sync::OnceLock::new(),
        backups: std::sync::atomic::AtomicUsize::new(0),
        object_changes: tokio::sync::watch::Sender::new(0),
        stopping: tokio::sync::watch::Sender::new(false),
    })
}

/// The trail, signed with the secret the key ring keeps, and its index, caught up from the
/// trail's files before the writer starts and following it after. In scale-out mode (a
/// PostgreSQL metadata store or S3 storage) the trail is this node's own chain, signed with
/// its own key, copied to the bucket's `trail/` prefix when storage is S3, and indexed in the
/// shared database when it is PostgreSQL, beside every other node's records.
async fn open_trail(
    spec: &Spec,
    data_dir: &Path,
    store: &Store,
    keys: &KeyRing,
) -> Result<(Trail, audit::Index, audit::Signer), StartError> {
    let setup = |e: String| StartError::Setup(e);
    let node = trail_node(spec);
    let secret = crate::keys::trail_signing_secret(store, keys, node.as_deref()).await.map_err(|e| setup(e.to_string()))?;
    let layout = audit::Layout {
        root: data_dir.join("trail"),
        account_id: spec.account_id.clone(),
        region: spec.region.clone(),
        bucket: format!("{}-trail", spec.environment_name),
        node: node.clone(),
    };
    let target = match spec.metadata_url.as_deref() {
        Some(url) if url.starts_with("postgres") => audit::IndexTarget::Database(url.to_owned()),
        _ => audit::IndexTarget::File(data_dir.join("audit-index.db")),
    };
    let index = audit::Index::open(&target, node.as_deref().unwrap_or("local")).await.map_err(|e| setup(e.to_string()))?;
    let caught_up = index.catch_up(&layout).await.map_err(|e| setup(e.to_string()))?;
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
        bucket: trail_bucket(&spec.storage).map_err(setup)?,
        upload_interval: Duration::from_secs(1),
        ..audit::TrailOptions::default()
    };
    if let Some(witness) = &spec.audit.witness {
        check_witness(witness, data_dir).map_err(StartError::Setup)?;
    }
    let trail = Trail::open(layout, audit::Signer::from_bytes(&secret), options, Some(index_tx))?;
    index.spawn_feeder(index_rx);
    Ok((trail, index, audit::Signer::from_bytes(&secret)))
}

/// The node whose chain this process writes, in scale-out mode; `None` for a single embedded
/// node, whose trail keeps the layout it always had.
pub(crate) fn trail_node(spec: &Spec) -> Option<String> {
    let postgres = spec.metadata_url.as_deref().is_some_and(|url| url.starts_with("postgres"));
    let s3 = matches!(spec.storage, model::spec::StorageBackend::S3 { .. });
    (postgres || s3).then(|| spec.node_name().to_owned())
}

/// The trail's objects: the `trail/` prefix of the deployment's bucket when storage is S3
/// (beside `blobs/`: one real bucket holds every DataSandbox bucket).
pub(crate) fn trail_bucket(storage: &model::spec::StorageBackend) -> Result<Option<audit::TrailBucket>, String> {
    match storage {
        model::spec::StorageBackend::Local => Ok(None),
        model::spec::StorageBackend::S3 { endpoint, bucket, region, allow_http } => {
            audit::TrailBucket::s3(endpoint, bucket, region, *allow_http).map(Some)
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
