//! The storage service's rows: buckets and objects as the metadata store keeps them, and the
//! errors of a lookup that finds nothing. Every storage file reads rows through here, so none
//! of them imports another to find a bucket.

use std::sync::Arc;

use model::BucketName;
use sqlx::{Any, AnyConnection, Row, Transaction};

use super::notification_configuration::NotificationConfiguration;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;
use crate::core::store::{Statements, now_millis};

pub(crate) struct BucketRow {
    pub home_folders: bool,
    pub notifications: NotificationConfiguration,
}

pub(crate) async fn find_bucket(plane: &Platform, name: &BucketName) -> Result<Option<BucketRow>, ActionError> {
    let memo = &plane.store.buckets;
    let (home_folders, config) = match memo.get(name.as_str()) {
        Ok(kept) => kept,
        Err(missed) => {
            let row = sqlx::query("SELECT home_folders, notification_configuration FROM buckets WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&plane.store.pool)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let read = (row.try_get::<i64, _>("home_folders")? != 0, Arc::from(row.try_get::<String, _>("notification_configuration")?));
            memo.keep(name.as_str(), missed, read.clone());
            read
        }
    };
    Ok(Some(BucketRow { home_folders, notifications: serde_json::from_str(&config).map_err(ActionError::internal)? }))
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
    pub blob: String,
    pub size: i64,
    pub etag: String,
    pub last_modified: i64,
}

/// Up to 500 of a bucket's objects, in key order, after `after` and from `prefix` on.
pub(super) async fn list_page(plane: &Platform, bucket: &BucketName, after: &str, prefix: &str) -> Result<Vec<ListedObject>, ActionError> {
    let rows = sqlx::query(
        "SELECT key, blob, size, etag, last_modified FROM objects WHERE bucket = $1 AND key > $2 AND key >= $3 ORDER BY key LIMIT 500",
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
                blob: r.try_get("blob")?,
                size: r.try_get("size")?,
                etag: r.try_get("etag")?,
                last_modified: r.try_get("last_modified")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(objects)
}

/// Creates a bucket with an empty notification configuration; false when the name is taken.
pub(super) async fn insert_bucket(plane: &Platform, name: &BucketName, home_folders: bool, created: i64) -> Result<bool, ActionError> {
    let empty = serde_json::to_string(&NotificationConfiguration::default()).map_err(ActionError::internal)?;
    let inserted = sqlx::query("INSERT INTO buckets (name, home_folders, created, notification_configuration) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
        .bind(name.as_str())
        .bind(i64::from(home_folders))
        .bind(created)
        .bind(empty)
        .execute(&plane.store.pool)
        .await;
    // Forgotten whatever the insert answers: an error may follow a write that took effect.
    plane.store.buckets.forget();
    Ok(inserted?.rows_affected() > 0)
}

/// How many objects a bucket holds, read in the transaction that may then delete it.
pub(super) async fn count_objects(conn: &mut AnyConnection, bucket: &BucketName) -> Result<i64, ActionError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM objects WHERE bucket = $1").bind(bucket.as_str()).fetch_one(&mut *conn).await?;
    Ok(row.try_get("n")?)
}

/// Deletes a bucket's row in the caller's transaction; the caller forgets the kept buckets
/// (`Store::buckets`) once it commits.
pub(super) async fn delete_bucket(conn: &mut AnyConnection, bucket: &BucketName) -> Result<(), ActionError> {
    sqlx::query("DELETE FROM buckets WHERE name = $1").bind(bucket.as_str()).execute(&mut *conn).await?;
    Ok(())
}

/// A bucket as a listing shows it.
pub(super) struct ListedBucket {
    pub name: String,
    pub created: i64,
}

pub(super) async fn list_buckets(plane: &Platform) -> Result<Vec<ListedBucket>, ActionError> {
    let rows = sqlx::query("SELECT name, created FROM buckets ORDER BY name").fetch_all(&plane.store.pool).await?;
    let buckets = rows
        .iter()
        .map(|r| Ok(ListedBucket { name: r.try_get("name")?, created: r.try_get("created")? }))
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(buckets)
}

pub(super) async fn update_notification_configuration(
    plane: &Platform,
    bucket: &BucketName,
    config: &NotificationConfiguration,
) -> Result<(), ActionError> {
    let updated = sqlx::query("UPDATE buckets SET notification_configuration = $1 WHERE name = $2")
        .bind(serde_json::to_string(config).map_err(ActionError::internal)?)
        .bind(bucket.as_str())
        .execute(&plane.store.pool)
        .await;
    plane.store.buckets.forget();
    updated?;
    Ok(())
}

/// The part of an object a write or delete needs, read inside its transaction.
pub(super) struct CurrentObject {
    pub blob: String,
    pub size: i64,
    pub etag: String,
}

pub(super) async fn find_current_object(
    statements: &mut dyn Statements,
    bucket: &BucketName,
    key: &str,
) -> Result<Option<CurrentObject>, ActionError> {
    let args = [bucket.as_str().into(), key.into()];
    let row = statements.fetch_optional("SELECT blob, size, etag FROM objects WHERE bucket = $1 AND key = $2", &args).await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(CurrentObject { blob: r.text(0)?, size: r.int(1)?, etag: r.text(2)? }))
}

/// An object's row as a write stores it.
pub(super) struct NewObject {
    pub bucket: BucketName,
    pub key: String,
    pub blob: String,
    pub size: i64,
    pub etag: String,
    pub content_type: String,
    pub last_modified: i64,
    pub writer: String,
    pub source_ip: String,
}

pub(super) async fn upsert_object(statements: &mut dyn Statements, object: &NewObject) -> Result<(), ActionError> {
    let args = [
        object.bucket.as_str().into(),
        (&object.key).into(),
        (&object.blob).into(),
        object.size.into(),
        (&object.etag).into(),
        (&object.content_type).into(),
        object.last_modified.into(),
        (&object.writer).into(),
        (&object.source_ip).into(),
    ];
    statements.execute(
        "INSERT INTO objects (bucket, key, blob, size, etag, content_type, last_modified, writer, source_ip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (bucket, key) DO UPDATE SET blob = excluded.blob, size = excluded.size, etag = excluded.etag, content_type = excluded.content_type,
         last_modified = excluded.last_modified, writer = excluded.writer, source_ip = excluded.source_ip",
        &args,
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_object(statements: &mut dyn Statements, bucket: &BucketName, key: &str) -> Result<(), ActionError> {
    statements.execute("DELETE FROM objects WHERE bucket = $1 AND key = $2", &[bucket.as_str().into(), key.into()]).await?;
    Ok(())
}

/// Lists a blob for deletion after the commit of the transaction that dropped its object.
pub(super) async fn insert_released_blob(statements: &mut dyn Statements, blob: &str) -> Result<(), ActionError> {
    statements.execute("INSERT INTO released_blobs (blob) VALUES ($1)", &[blob.into()]).await?;
    Ok(())
}

pub(super) async fn delete_released_blob(plane: &Platform, blob: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM released_blobs WHERE blob = $1").bind(blob).execute(&plane.store.pool).await?;
    Ok(())
}

pub(super) async fn released_blobs(plane: &Platform) -> Result<Vec<String>, ActionError> {
    let rows = sqlx::query("SELECT blob FROM released_blobs").fetch_all(&plane.store.pool).await?;
    Ok(rows.iter().map(|r| r.try_get("blob")).collect::<Result<_, _>>()?)
}

/// Every blob an object points at, so start-up can reclaim the others.
pub(super) async fn delete_unreferenced_small_blobs(plane: &Platform) -> Result<u64, ActionError> {
    let deleted = sqlx::query("DELETE FROM small_blobs WHERE name NOT IN (SELECT blob FROM objects)").execute(&plane.store.pool).await?;
    Ok(deleted.rows_affected())
}

pub(super) async fn referenced_blobs(plane: &Platform) -> Result<std::collections::HashSet<String>, ActionError> {
    let rows = sqlx::query("SELECT blob FROM objects").fetch_all(&plane.store.pool).await?;
    Ok(rows.iter().map(|r| r.try_get("blob")).collect::<Result<_, _>>()?)
}

/// One row of the notification outbox, as a write queues it. Storage owns the whole outbox (the
/// dispatcher in `functions.rs` reads and deletes through here too): the row is written in the
/// object's own transaction, and storage sits below functions in the layer table, so it cannot
/// call a functions repository.
pub(super) struct QueuedNotification<'a> {
    pub bucket: &'a BucketName,
    pub key: &'a str,
    pub configuration_id: &'a str,
    pub function: &'a str,
    pub event: String,
}

pub(super) async fn insert_notification(statements: &mut dyn Statements, notification: &QueuedNotification<'_>) -> Result<(), ActionError> {
    let args = [
        notification.bucket.as_str().into(),
        notification.key.into(),
        notification.configuration_id.into(),
        notification.function.into(),
        (&notification.event).into(),
        now_millis().into(),
    ];
    statements
        .execute(
            "INSERT INTO notifications (bucket, key, configuration_id, function, event, attempts, next_attempt) VALUES ($1, $2, $3, $4, $5, 0, $6)",
            &args,
        )
        .await?;
    Ok(())
}

/// One queued notification as the dispatcher reads it; `event` is the record's JSON text.
pub(crate) struct OutboxRow {
    pub seq: i64,
    pub bucket: String,
    pub key: String,
    pub function: String,
    pub event: String,
    pub attempts: i64,
    pub next_attempt: i64,
}

impl OutboxRow {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<OutboxRow, sqlx::Error> {
        Ok(OutboxRow {
            seq: row.try_get("seq")?,
            bucket: row.try_get("bucket")?,
            key: row.try_get("key")?,
            function: row.try_get("function")?,
            event: row.try_get("event")?,
            attempts: row.try_get("attempts")?,
            next_attempt: row.try_get("next_attempt")?,
        })
    }
}

/// The oldest 200 queued notifications, in the order they were queued.
pub(crate) async fn queued_notifications(plane: &Platform) -> Result<Vec<OutboxRow>, ActionError> {
    let rows = sqlx::query("SELECT seq, bucket, key, function, event, attempts, next_attempt FROM notifications ORDER BY seq LIMIT 200")
        .fetch_all(&plane.store.pool)
        .await?;
    Ok(rows.iter().map(OutboxRow::from_row).collect::<Result<_, sqlx::Error>>()?)
}

/// Drops a notification once delivered (or given up on).
pub(crate) async fn delete_notification(plane: &Platform, seq: i64) -> Result<(), ActionError> {
    sqlx::query("DELETE FROM notifications WHERE seq = $1").bind(seq).execute(&plane.store.pool).await?;
    Ok(())
}

/// Records a failed delivery and when to try again.
pub(crate) async fn reschedule_notification(
    plane: &Platform,
    seq: i64,
    attempts: i64,
    next_attempt: i64,
    last_error: &str,
) -> Result<(), ActionError> {
    sqlx::query("UPDATE notifications SET attempts = $1, next_attempt = $2, last_error = $3 WHERE seq = $4")
        .bind(attempts)
        .bind(next_attempt)
        .bind(last_error)
        .bind(seq)
        .execute(&plane.store.pool)
        .await?;
    Ok(())
}

/// A notification one node took to deliver: its row stays locked, by this transaction, until
/// it is delivered or rescheduled; other nodes pass it by.
pub(crate) struct Claimed {
    tx: Transaction<'static, Any>,
    pub row: OutboxRow,
}

/// On PostgreSQL, where several nodes deliver at once: takes the oldest due notification that
/// is the first of its key (`FOR UPDATE SKIP LOCKED`: a row another node holds is passed by,
/// and so are the later rows of its key, which wait behind it), so that keys are delivered in
/// parallel and each key in order.
pub(crate) async fn claim_notification(plane: &Platform, now: i64) -> Result<Option<Claimed>, ActionError> {
    let mut tx = plane.store.pool.begin().await?;
    let row = sqlx::query(
        "SELECT seq, bucket, key, function, event, attempts, next_attempt FROM notifications n
         WHERE next_attempt <= $1
           AND NOT EXISTS (SELECT 1 FROM notifications e WHERE e.bucket = n.bucket AND e.key = n.key AND e.seq < n.seq)
         ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Claimed { tx, row: OutboxRow::from_row(&row)? }))
}

impl Claimed {
    /// Delivered, or given up on: the row goes, and the lock with it.
    pub(crate) async fn delete(mut self) -> Result<(), ActionError> {
        sqlx::query("DELETE FROM notifications WHERE seq = $1").bind(self.row.seq).execute(&mut *self.tx).await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// A failed delivery: tried again at `next_attempt`.
    pub(crate) async fn reschedule(mut self, attempts: i64, next_attempt: i64, last_error: &str) -> Result<(), ActionError> {
        sqlx::query("UPDATE notifications SET attempts = $1, next_attempt = $2, last_error = $3 WHERE seq = $4")
            .bind(attempts)
            .bind(next_attempt)
            .bind(last_error)
            .bind(self.row.seq)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// When the soonest queued notification falls due, if any is queued.
pub(crate) async fn next_notification_due(plane: &Platform) -> Result<Option<i64>, ActionError> {
    let row = sqlx::query("SELECT MIN(next_attempt) AS due FROM notifications").fetch_one(&plane.store.pool).await?;
    Ok(row.try_get::<Option<i64>, _>("due")?)
}
