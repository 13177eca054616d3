//! What other services do with objects: read one as their caller, or reach a bucket of their
//! own (the airlock's, the recordings') that no policy lets anyone reach through storage's
//! actions, without authorization or a record of storage's own.

use bytes::Bytes;
use model::{BucketName, ObjectKey};

use super::notifications;
use super::objects::{Author, Metadata, Precondition, object_resource, write_object};
use super::repo::{find_bucket, find_object, list_page, no_such_bucket, no_such_key};
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;

/// For another service acting for its caller: reads an object the caller may read
/// (`storage:GetObject` authorized as the caller, recorded with the action).
pub(crate) async fn read_as_caller(ctx: &mut Ctx<'_>, bucket: &str, key: &str) -> Result<Bytes, ActionError> {
    let bucket_name = BucketName::new(bucket).map_err(|e| ActionError::validation(format!("Bucket `{bucket}`: {e}")))?;
    let key_name = ObjectKey::new(key).map_err(|e| ActionError::validation(format!("Key `{key}`: {e}")))?;
    let row = find_bucket(ctx.platform, &bucket_name).await?;
    ctx.authorize_also("storage:GetObject", object_resource(&bucket_name, row.as_ref(), key_name.as_str()))?;
    if row.is_none() {
        return Err(no_such_bucket(&bucket_name));
    }
    let object =
        find_object(ctx.platform, &bucket_name, key_name.as_str()).await?.ok_or_else(|| no_such_key(&bucket_name, key_name.as_str()))?;
    Ok(ctx.platform.blobs.get(&object.blob, None).await?)
}

/// For a service's own bucket, which no policy lets anyone reach: reads an object.
pub(crate) async fn read_internal(plane: &Platform, bucket: &str, key: &str) -> Result<Bytes, ActionError> {
    let bucket = BucketName::new(bucket).map_err(ActionError::internal)?;
    let object = find_object(plane, &bucket, key).await?.ok_or_else(|| no_such_key(&bucket, key))?;
    Ok(plane.blobs.get(&object.blob, None).await?)
}

/// For a service reading an object in pieces (the airlock's checks): the blob that holds it
/// and its size, without authorization or a record.
pub(crate) async fn blob_internal(plane: &Platform, bucket: &str, key: &str) -> Result<(String, u64), ActionError> {
    let bucket = BucketName::new(bucket).map_err(ActionError::internal)?;
    let object = find_object(plane, &bucket, key).await?.ok_or_else(|| no_such_key(&bucket, key))?;
    Ok((object.blob, object.size as u64))
}

/// For a service's own bucket: writes an object (made by the calling action, no notification).
pub(crate) async fn write_internal(ctx: &Ctx<'_>, bucket: &str, key: &str, body: Bytes) -> Result<(), ActionError> {
    let bucket = service_bucket(bucket)?;
    let row = find_bucket(ctx.platform, &bucket).await?;
    let row = row.ok_or_else(|| ActionError::internal(format!("the service bucket `{bucket}` is missing")))?;
    write_own(Author::of(ctx, &row), &bucket, key, body, Precondition::default()).await
}

/// For a service's own bucket, written outside any action (a session's recorder): writes an
/// object as `principal`, with no notification; `only_new` refuses (412) to replace one. The
/// service records what it did itself.
pub(crate) async fn write_as_service(
    plane: &Platform,
    principal: &str,
    bucket: &str,
    key: &str,
    body: Bytes,
    only_new: bool,
) -> Result<(), ActionError> {
    let bucket = service_bucket(bucket)?;
    find_bucket(plane, &bucket).await?.ok_or_else(|| no_such_bucket(&bucket))?;
    let notifier = notifications::Notifier::silent(plane);
    let author = Author { plane, principal: principal.to_owned(), source_ip: principal.to_owned(), notifier };
    write_own(author, &bucket, key, body, Precondition { if_match: None, if_none_match: only_new }).await
}

fn service_bucket(bucket: &str) -> Result<BucketName, ActionError> {
    BucketName::new(bucket).map_err(ActionError::internal)
}

/// Writes into a service bucket its caller found.
async fn write_own(author: Author<'_>, bucket: &BucketName, key: &str, body: Bytes, condition: Precondition) -> Result<(), ActionError> {
    let key = ObjectKey::new(key).map_err(|e| ActionError::validation(format!("Key `{key}`: {e}")))?;
    let metadata = Metadata { content_type: "binary/octet-stream", event: "ObjectCreated:Put", condition: &condition };
    write_object(author, bucket, &key, body, metadata).await.map(drop)
}

/// For a service reading the platform's own data (the airlock's lineage check): every key
/// under `prefix`, the blob that holds it and its size, without authorization or a record.
pub(crate) async fn keys_under(plane: &Platform, bucket: &str, prefix: &str) -> Result<Vec<(String, String, u64)>, ActionError> {
    let bucket = BucketName::new(bucket).map_err(ActionError::internal)?;
    let (mut keys, mut after) = (Vec::new(), String::new());
    loop {
        let page = list_page(plane, &bucket, &after, prefix).await?;
        let Some(last) = page.last() else { break };
        after = last.key.clone();
        keys.extend(page.iter().take_while(|o| o.key.starts_with(prefix)).map(|o| (o.key.clone(), o.blob.clone(), o.size as u64)));
        if page.len() < 500 || !after.starts_with(prefix) {
            break;
        }
    }
    Ok(keys)
}
