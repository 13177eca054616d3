//! Object bodies, as immutable blobs on the `object_store` crate: a directory under the data
//! directory by default, any S3-compatible server at scale. Object names and metadata live in
//! the metadata store, which points at blobs; a write commits by swapping that pointer.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use model::spec::StorageBackend;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};

#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// This node's name, the end of every blob name it writes: several nodes share a bucket,
    /// and each reclaims only the orphans of its own writes (at its start no write of its own
    /// is in flight, while another node's may be).
    node: String,
    /// The directory the blobs are files under, on the embedded default.
    local_root: Option<std::path::PathBuf>,
}

const PREFIX: &str = "blobs";

impl Blobs {
    pub fn open(backend: &StorageBackend, data_dir: &Path, node: &str) -> Result<Blobs, object_store::Error> {
        let mut local_root = None;
        let store: Arc<dyn ObjectStore> = match backend {
            StorageBackend::Local => {
                let root = data_dir.join("objects");
                local_root = Some(root.clone());
                std::fs::create_dir_all(&root)
                    .map_err(|source| object_store::Error::Generic { store: "local", source: Box::new(source) })?;
                Arc::new(LocalFileSystem::new_with_prefix(&root)?)
            }
            StorageBackend::S3 { endpoint, bucket, region, allow_http } => Arc::new(
                AmazonS3Builder::from_env()
                    .with_endpoint(endpoint)
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_allow_http(*allow_http)
                    .with_virtual_hosted_style_request(false)
                    .build()?,
            ),
        };
        Ok(Blobs { store, node: node.to_owned(), local_root })
    }

    /// Stores `body` under a fresh name (`<uuid>-<node>`) and returns it. The name is never
    /// reused.
    pub async fn put(&self, body: Bytes) -> Result<String, object_store::Error> {
        let name = format!("{}-{}", uuid::Uuid::new_v4().simple(), self.node);
        self.store.put(&path(&name), PutPayload::from_bytes(body)).await?;
        Ok(name)
    }

    pub async fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Bytes, object_store::Error> {
        match range {
            Some(range) if range.is_empty() => Ok(Bytes::new()),
            Some(range) => self.store.get_range(&path(name), range).await,
            None => self.store.get(&path(name)).await?.bytes().await,
        }
    }

    /// The file that holds blob `name`, when blobs are local files (never for a name that is
    /// not a plain file name).
    pub fn local_file(&self, name: &str) -> Option<std::path::PathBuf> {
        let plain = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !name.starts_with('.');
        self.local_root.as_ref().filter(|_| plain).map(|root| root.join(relative_path(name)))
    }

    pub async fn delete(&self, name: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&path(name)).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Whether this node wrote the blob (names from before nodes have no `-<node>`).
    pub fn written_here(&self, name: &str) -> bool {
        name.strip_suffix(self.node.as_str()).is_some_and(|rest| rest.ends_with('-'))
    }

    /// Every blob name in the store.
    pub async fn list(&self) -> Result<Vec<String>, object_store::Error> {
        let prefix = StorePath::from(PREFIX);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        Ok(metas.into_iter().filter_map(|m| m.location.filename().map(str::to_owned)).collect())
    }
}

/// Blobs are spread over 256 directories by the first two hex digits of their name: one
/// directory of many files serializes file creation on its lock (measured: 5x slower writes).
fn path(name: &str) -> StorePath {
    StorePath::from(relative_path(name))
}

/// Where the blob `name` is under the store's root (`objects/` in the data directory).
pub(crate) fn relative_path(name: &str) -> String {
    format!("{PREFIX}/{}/{name}", name.get(..2).unwrap_or("00"))
}
