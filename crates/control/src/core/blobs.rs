//! Object bodies, as immutable blobs on the `object_store` crate: a directory under the data
//! directory by default, any S3-compatible server at scale. Object names and metadata live in
//! the metadata store, which points at blobs; a write commits by swapping that pointer.
//!
//! A small body (at most `INLINE_MAX`) is a blob too, but kept in the metadata store itself
//! (`small_blobs`), written and dropped in the very transaction that swaps its object: a file
//! per small object cost more than the rest of its write (creating it walks ext4's inode
//! table). Its name says where it is (`inline-…`).

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
use sqlx::Row;

use super::store::{Statements, Store};

#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// This node's name, the end of every blob name it writes: several nodes share a bucket,
    /// and each reclaims only the orphans of its own writes (at its start no write of its own
    /// is in flight, while another node's may be).
    node: String,
    /// The directory the blobs are files under, on the embedded default.
    local_root: Option<std::path::PathBuf>,
    /// Where the small bodies are.
    metadata: Store,
}

const PREFIX: &str = "blobs";
/// The largest body kept in the metadata store rather than as a blob of its own.
pub const INLINE_MAX: usize = 32 * 1024;
/// How the names of bodies kept in the metadata store begin.
const INLINE: &str = "inline-";

impl Blobs {
    pub fn open(backend: &StorageBackend, data_dir: &Path, node: &str, metadata: Store) -> Result<Blobs, object_store::Error> {
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
        Ok(Blobs { store, node: node.to_owned(), local_root, metadata })
    }

    /// Stores `body` under a fresh name (`<uuid>-<node>`) and returns it. The name is never
    /// reused.
    pub async fn put(&self, body: Bytes) -> Result<String, object_store::Error> {
        let name = format!("{}-{}", uuid::Uuid::new_v4().simple(), self.node);
        self.store.put(&path(&name), PutPayload::from_bytes(body)).await?;
        Ok(name)
    }

    /// A fresh name for a small body, which the caller writes with `put_inline` in the
    /// transaction that commits its object. The name starts with the time (a version 7 UUID,
    /// 74 bits of it random): each new row of `small_blobs` goes at the right edge of its name's
    /// B-tree, into the page the last one went to, rather than into a page anywhere in it (a
    /// random name dirtied a page of its own at every commit, and every checkpoint wrote them
    /// all back).
    pub fn inline_name(&self) -> String {
        format!("{INLINE}{}-{}", uuid::Uuid::now_v7().simple(), self.node)
    }

    /// Writes a small body under a name from `inline_name`, inside the caller's transaction.
    pub async fn put_inline(statements: &mut dyn Statements, name: &str, body: &[u8]) -> Result<(), sqlx::Error> {
        statements.execute("INSERT INTO small_blobs (name, body) VALUES ($1, $2)", &[name.into(), body.into()]).await.map(drop)
    }

    /// Drops a small body inside the caller's transaction (which drops the object that names
    /// it); a backup's snapshot of the store has it still.
    pub async fn drop_inline(statements: &mut dyn Statements, name: &str) -> Result<(), sqlx::Error> {
        statements.execute("DELETE FROM small_blobs WHERE name = $1", &[name.into()]).await.map(drop)
    }

    pub async fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Bytes, object_store::Error> {
        if is_inline(name) {
            return self.get_inline(name, range).await;
        }
        match range {
            Some(range) if range.is_empty() => Ok(Bytes::new()),
            Some(range) => self.store.get_range(&path(name), range).await,
            None => self.store.get(&path(name)).await?.bytes().await,
        }
    }

    async fn get_inline(&self, name: &str, range: Option<Range<u64>>) -> Result<Bytes, object_store::Error> {
        let failed = |source: sqlx::Error| object_store::Error::Generic { store: "metadata", source: Box::new(source) };
        let row = sqlx::query("SELECT body FROM small_blobs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.metadata.pool)
            .await
            .map_err(failed)?;
        let Some(row) = row else {
            let source = format!("no small body `{name}` in the metadata store").into();
            return Err(object_store::Error::NotFound { path: name.to_owned(), source });
        };
        let body = Bytes::from(row.try_get::<Vec<u8>, _>("body").map_err(failed)?);
        let Some(range) = range else { return Ok(body) };
        let end = usize::try_from(range.end).unwrap_or(usize::MAX).min(body.len());
        let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(end);
        Ok(body.slice(start..end))
    }

    /// The file that holds blob `name`, when blobs are local files (never for a name that is
    /// not a plain file name, nor for a body in the metadata store).
    pub fn local_file(&self, name: &str) -> Option<std::path::PathBuf> {
        let plain = !name.is_empty()
            && !is_inline(name)
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !name.starts_with('.');
        self.local_root.as_ref().filter(|_| plain).map(|root| root.join(relative_path(name)))
    }

    /// Deletes a blob of its own (a small body goes only with its object, in the same
    /// transaction: `drop_inline`).
    pub async fn delete(&self, name: &str) -> Result<(), object_store::Error> {
        if is_inline(name) {
            return Ok(());
        }
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

/// Whether blob `name` is a small body kept in the metadata store.
pub fn is_inline(name: &str) -> bool {
    name.starts_with(INLINE)
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
