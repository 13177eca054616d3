//! The storage service's rows: buckets and objects as the metadata store keeps them, and the
//! errors of a lookup that finds nothing. Every storage file reads rows through here, so none
//! of them imports another to find a bucket.

use model::BucketName;
use sqlx::Row;

use super::notification_configuration::NotificationConfiguration;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;

pub(crate) struct BucketRow {
    pub home_folders: bool,
    pub notifications: NotificationConfiguration,
}

pub(crate) async fn find_bucket(plane: &Platform, name: &BucketName) -> Result<Option<BucketRow>, ActionError> {
    let row = sqlx::query("SELECT home_folders, notification_configuration FROM buckets WHERE name = $1")
        .bind(name.as_str())
        .fetch_optional(&plane.store.pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let config: String = row.try_get("notification_configuration")?;
    Ok(Some(BucketRow {
        home_folders: row.try_get::<i64, _>("home_folders")? != 0,
        notifications: serde_json::from_str(&config).map_err(ActionError::internal)?,
    }))
}

pub(super) fn no_such_bucket(name: &BucketName) -> ActionError {
    ActionError::not_found(ErrorCode::NoSuchBucket, format!("bucket `{name}` does not exist"))
}

pub(super) fn no_such_key(bucket: &BucketName, key: &str) -> ActionError {
    ActionError::not_found(ErrorCode::NoSuchKey, format!("object `{key}` does not exist in bucket `{bucket}`"))
}

pub(super) struct ObjectRow {
    pub blob: String,
    pub size: i64,
    pub etag: String,
    pub content_type: String,
    pub last_modified: i64,
    pub writer: String,
    pub source_ip: String,
}

pub(super) async fn find_object(plane: &Platform, bucket: &BucketName, key: &str) -> Result<Option<ObjectRow>, ActionError> {
    let row =
        sqlx::query("SELECT blob, size, etag, content_type, last_modified, writer, source_ip FROM objects WHERE bucket = $1 AND key = $2")
            .bind(bucket.as_str())
            .bind(key)
            .fetch_optional(&plane.store.pool)
            .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(ObjectRow {
        blob: r.try_get("blob")?,
        size: r.try_get("size")?,
        etag: r.try_get("etag")?,
        content_type: r.try_get("content_type")?,
        last_modified: r.try_get("last_modified")?,
        writer: r.try_get("writer")?,
        source_ip: r.try_get("source_ip")?,
    }))
}

/// An object as a listing shows it.
pub(super) struct ListedObject {
    pub key: String,
    pub size: i64,
    pub etag: String,
    pub last_modified: i64,
}

/// Up to 500 of a bucket's objects, in key order, after `after` and from `prefix` on.
pub(super) async fn list_page(plane: &Platform, bucket: &BucketName, after: &str, prefix: &str) -> Result<Vec<ListedObject>, ActionError> {
    let rows = sqlx::query(
        "SELECT key, size, etag, last_modified FROM objects WHERE bucket = $1 AND key > $2 AND key >= $3 ORDER BY key LIMIT 500",
    )
    .bind(bucket.as_str())
    .bind(after)
    .bind(prefix)
    .fetch_all(&plane.store.pool)
    .await?;
    let objects = rows
        .iter()
        .map(|r| {
            Ok(ListedObject {
                key: r.try_get("key")?,
                size: r.try_get("size")?,
                etag: r.try_get("etag")?,
                last_modified: r.try_get("last_modified")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(objects)
}
