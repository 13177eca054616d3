//! The trail bucket in scale-out mode: every closed file of a node's trail, copied to objects
//! under one prefix of the deployment's bucket (`trail/AWSLogs/…`, the same keys as the
//! files' paths under the trail's root), so that the trail outlives the node and `audit
//! validate` can check every node's chain from the bucket alone.
//!
//! The node's directory stays the trail's first copy: a record is acknowledged once it is
//! fsync'd there, never waiting on the bucket, and nothing in it is deleted on the bucket's
//! account. The open log stays local; as in CloudTrail, the bucket receives a log file once
//! it is closed (rotated: `audit.rotate_interval_seconds`, or its size), sealed, with the
//! digests and signatures, the public key, and the checkpoint files as far as the sealed
//! files reach, so a checkpoint in the bucket never names a record the bucket lacks (the
//! writer checkpoints at each rotation, so every sealed record is signed there too). An
//! uploader thread copies what changed every `interval`; a failed upload is retried with
//! backoff (doubling up to a minute); at start it lists what the bucket holds and uploads
//! whatever a previous run left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as sync_mpsc;
use std::time::Duration;

use futures::TryStreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};

use crate::layout::{self, Kind, Layout};

/// The longest wait between two attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where a trail's objects go: a store (the deployment's bucket) and a key prefix in it.
#[derive(Clone)]
pub struct TrailBucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl std::fmt::Debug for TrailBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrailBucket({}, {})", self.store, self.prefix)
    }
}

impl TrailBucket {
    /// The trail under `prefix` (like `trail`) of `store`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> TrailBucket {
        TrailBucket { store, prefix: prefix.trim_matches('/').to_owned() }
    }

    /// The `trail/` prefix of an S3 bucket, with a client of its own (the uploader runs on a
    /// runtime of its own). Credentials come from the environment, as for the object store.
    pub fn s3(endpoint: &str, bucket: &str, region: &str, allow_http: bool) -> Result<TrailBucket, String> {
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_region(region)
            .with_allow_http(allow_http)
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(|e| format!("the trail bucket `{bucket}` at {endpoint}: {e}"))?;
        Ok(TrailBucket::new(Arc::new(store), "trail"))
    }

    fn object(&self, key: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{key}", self.prefix))
    }

    /// The trail key of an object (its key without the prefix).
    fn key_of(&self, object: &ObjectPath) -> Option<String> {
        object.as_ref().strip_prefix(&self.prefix).and_then(|k| k.strip_prefix('/')).map(str::to_owned)
    }

    /// Every object under `key_prefix` (a trail key), with its size.
    async fn list(&self, key_prefix: &str) -> Result<HashMap<String, u64>, object_store::Error> {
        let prefix = self.object(key_prefix);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        Ok(metas.into_iter().filter_map(|m| self.key_of(&m.location).map(|k| (k, m.size))).collect())
    }

    /// Copies every object of the trail into `dir`, at the paths its keys name, for
    /// validating it as a directory. Returns how many objects were copied.
    pub async fn download(&self, dir: &Path) -> Result<u64, String> {
        let objects = self.list("AWSLogs").await.map_err(|e| format!("cannot list the trail bucket ({self:?}): {e}"))?;
        let mut count = 0;
        for key in objects.keys() {
            if key.split('/').any(|part| part == ".." || part.is_empty()) {
                return Err(format!("the trail bucket holds an object with an unsafe key `{key}`"));
            }
            let bytes = self
                .store
                .get(&self.object(key))
                .await
                .map_err(|e| format!("cannot read `{key}` from the trail bucket: {e}"))?
                .bytes()
                .await
                .map_err(|e| format!("cannot read `{key}` from the trail bucket: {e}"))?;
            let path = dir.join(key);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("cannot create `{}`: {e}", parent.display()))?;
            }
            std::fs::write(&path, &bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
            count += 1;
        }
        Ok(count)
    }
}

enum Request {
    /// Upload everything now, trying again for up to the given time; answer with the outcome.
    Flush(Duration, sync_mpsc::Sender<Result<(), String>>),
}

/// The handle of the uploader thread; dropping it stops the thread after its current cycle.
pub(crate) struct Uploader {
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
}

impl Uploader {
    /// Starts the uploader thread (with a runtime of its own, so that uploads neither wait on
    /// nor hold up the server's tasks).
    pub(crate) fn start(layout: Layout, bucket: TrailBucket, interval: Duration) -> std::io::Result<Uploader> {
        let (requests, receiver) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("audit-uploader".into()).spawn(move || {
            let mut state = UploadState { layout, bucket, uploaded: HashMap::new(), listed: false, checkpoints_through: None };
            runtime.block_on(state.run(receiver, interval));
        })?;
        Ok(Uploader { requests })
    }

    /// Uploads everything the trail's directory holds now, trying again for up to `patience`.
    pub(crate) fn flush(&self, patience: Duration) -> Result<(), String> {
        let (done, wait) = sync_mpsc::channel();
        self.requests.send(Request::Flush(patience, done)).map_err(|_| "the trail uploader has stopped".to_owned())?;
        wait.recv().map_err(|_| "the trail uploader has stopped".to_owned())?
    }
}

struct UploadState {
    layout: Layout,
    bucket: TrailBucket,
    /// The size of each object the bucket is known to hold, by trail key.
    uploaded: HashMap<String, u64>,
    /// Whether the bucket's objects of this node have been listed (once, at start).
    listed: bool,
    /// The sealed logs' reach when the checkpoint files were last uploaded as far as it.
    checkpoints_through: Option<u64>,
}

impl UploadState {
    async fn run(&mut self, mut requests: tokio::sync::mpsc::UnboundedReceiver<Request>, interval: Duration) {
        let mut delay = Duration::ZERO;
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Flush(patience, done)) => {
                        let _ = done.send(self.flush(patience).await);
                    }
                    None => return,
                },
                () = tokio::time::sleep(delay) => {
                    delay = match self.cycle().await {
                        Ok(()) => interval,
                        Err(err) => {
                            let next = (delay * 2).clamp(interval.max(Duration::from_millis(100)), MAX_BACKOFF);
                            tracing::warn!(error = %err, retry_in_ms = next.as_millis() as u64, "cannot upload the audit trail to its bucket; trying again");
                            next
                        }
                    };
                }
            }
        }
    }

    async fn flush(&mut self, patience: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.cycle().await {
                Ok(()) => return Ok(()),
                Err(err) if tokio::time::Instant::now() + delay > deadline => return Err(err),
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One pass: uploads every closed file whose object is missing or of another size, in an
    /// order that keeps the bucket consistent at every moment (what a file names is there
    /// first): sealed logs, digest signatures, digests, public keys, then checkpoints.
    async fn cycle(&mut self) -> Result<(), String> {
        if !self.listed {
            for directory in self.layout.node_directories() {
                let key = self.layout.object_key(&directory);
                let objects = self.bucket.list(&key).await.map_err(|e| format!("listing `{key}`: {e}"))?;
                self.uploaded.extend(objects);
            }
            self.listed = true;
        }
        let io = |e: std::io::Error| format!("reading the trail's files: {e}");
        let logs = self.layout.files(Kind::Log, &[".json.gz", ".partial", ".jsonl"]).map_err(io)?;
        // Every record before the oldest log not sealed yet is in a sealed file listed here. A
        // log counts as sealed only if its sealed file is in this listing: one sealed since is
        // not uploaded in this pass, so no checkpoint over it may go up in this pass either.
        let listed: std::collections::HashSet<&Path> = logs.iter().map(PathBuf::as_path).collect();
        let sealed_through = logs
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && !listed.contains(layout::sealed_name(p).as_path()))
            .filter_map(|p| first_sequence(p))
            .min()
            .map_or(u64::MAX, |first| first.saturating_sub(1));
        let mut digests = self.layout.files(Kind::Digest, &[".json.gz", ".json.gz.sig"]).map_err(io)?;
        // A digest's signature before the digest, as the sealer writes them.
        digests.sort_by_key(|p| !p.to_string_lossy().ends_with(".sig"));
        let mut keys: Vec<PathBuf> = std::fs::read_dir(self.layout.public_keys()).map_err(io)?.flatten().map(|e| e.path()).collect();
        keys.sort();
        let closed = logs.iter().filter(|p| p.extension().is_none_or(|e| e != "jsonl"));
        for path in closed.chain(&digests).chain(&keys) {
            if let Some((key, bytes)) = self.changed(path).await? {
                self.put(key, bytes).await?;
            }
        }
        // Checkpoints up to a record are all written before the log after it is opened, so
        // what may go up changes only when the sealed logs reach further (or all are sealed).
        if self.checkpoints_through == Some(sealed_through) && sealed_through != u64::MAX {
            return Ok(());
        }
        for path in self.layout.files(Kind::Checkpoint, &[".jsonl"]).map_err(io)? {
            if let Some((key, mut bytes)) = self.changed(&path).await? {
                bytes.truncate(signed_prefix(&bytes, sealed_through));
                if !bytes.is_empty() && self.uploaded.get(&key) != Some(&(bytes.len() as u64)) {
                    self.put(key, bytes).await?;
                }
            }
        }
        self.checkpoints_through = Some(sealed_through);
        Ok(())
    }

    /// The trail key and content of `path` if the bucket does not hold it as it is now.
    async fn changed(&self, path: &Path) -> Result<Option<(String, Vec<u8>)>, String> {
        let key = self.layout.object_key(path);
        let length = match tokio::fs::metadata(path).await {
            Ok(metadata) => metadata.len(),
            // Sealed and removed since it was listed: its sealed file goes up instead.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(format!("`{}`: {err}", path.display())),
        };
        if self.uploaded.get(&key) == Some(&length) {
            return Ok(None);
        }
        match tokio::fs::read(path).await {
            Ok(bytes) => Ok(Some((key, bytes))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(format!("`{}`: {err}", path.display())),
        }
    }

    async fn put(&mut self, key: String, bytes: Vec<u8>) -> Result<(), String> {
        let length = bytes.len() as u64;
        self.bucket.store.put(&self.bucket.object(&key), PutPayload::from(bytes)).await.map_err(|e| format!("uploading `{key}`: {e}"))?;
        self.uploaded.insert(key, length);
        Ok(())
    }
}

/// The first sequence number of a log file, from its name (`…_<first sequence>.jsonl`).
fn first_sequence(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.trim_end_matches(".jsonl").rsplit('_').next()?.parse().ok()
}

/// How many bytes of a checkpoint file are whole lines signing records up to `through`.
fn signed_prefix(content: &[u8], through: u64) -> usize {
    let mut end = 0;
    for line in content.split_inclusive(|b| *b == b'\n') {
        let whole = line.ends_with(b"\n");
        match serde_json::from_slice::<crate::files::Checkpoint>(line) {
            Ok(checkpoint) if whole && checkpoint.sequence_number <= through => end += line.len(),
            _ => break,
        }
    }
    end
}
