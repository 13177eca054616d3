//! `storage:` — buckets and objects with S3's member names, AppStream's home-folder layout and
//! bucket notifications.

use serde_json::Value;

use crate::core::actions::StorageAction;
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;

mod blobs;
mod buckets;
mod changes;
mod datasets;
mod internal;
mod notification_configuration;
mod notifications;
mod objects;
mod repo;

pub(crate) use blobs::{reclaim_blobs, release_listed_blobs};
pub(crate) use buckets::ensure_service_bucket;
pub(crate) use internal::{blob_internal, keys_under, read_as_caller, read_internal, write_as_service, write_internal};
pub(crate) use repo::{
    OutboxRow, claim_notification, delete_notification, find_bucket, next_notification_due, queued_notifications, reschedule_notification,
};

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, action: StorageAction, input: Value) -> Result<Value, ActionError> {
    match action {
        StorageAction::CreateBucket => buckets::create_bucket(ctx, input).await,
        StorageAction::DeleteBucket => buckets::delete_bucket(ctx, input).await,
        StorageAction::ListBuckets => buckets::list_buckets(ctx, input).await,
        StorageAction::PutObject => objects::put_object(ctx, input).await,
        StorageAction::GetObject => objects::get_object(ctx, input, true).await,
        StorageAction::HeadObject => objects::get_object(ctx, input, false).await,
        StorageAction::ListObjectsV2 => objects::list_objects(ctx, input).await,
        StorageAction::WaitForChanges => changes::wait_for_changes(ctx, input).await,
        StorageAction::DatasetFileOpened => datasets::file_opened(ctx, input).await,
        StorageAction::DatasetFileClosed => datasets::file_closed(ctx, input).await,
        StorageAction::DatasetWriteRefused => datasets::write_refused(ctx, input).await,
        StorageAction::DeleteObject => objects::delete_object(ctx, input).await,
        StorageAction::CopyObject => objects::copy_object(ctx, input).await,
        StorageAction::PutBucketNotificationConfiguration => notifications::put(ctx, input).await,
        StorageAction::GetBucketNotificationConfiguration => notifications::get(ctx, input).await,
    }
}
