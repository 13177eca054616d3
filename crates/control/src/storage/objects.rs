//! Objects: conditional writes, ranged reads, listings with delimiters and continuation
//! tokens, deletes and copies. A write swaps the object's blob and queues its notifications in
//! one transaction.

use std::ops::Range;

use super::blobs::release_blob;
use super::notifications;
use super::repo::{self, BucketRow, NewObject, find_bucket, find_object, list_page, no_such_bucket, no_such_key};
use crate::core::blobs::{Blobs, INLINE_MAX, is_inline};
use crate::core::codec::{decode_base64, decode_token, encode_base64, encode_token};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::{Statements, millis_to_rfc3339, now_millis};
use bytes::Bytes;
use model::{BucketName, HomeOwner, ObjectKey};
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The resource an object (or listing prefix) is authorized as. For a bucket that does not
/// exist it is authorized as an ordinary bucket, so a denied caller learns nothing of it.
pub(super) fn object_resource(bucket: &BucketName, row: Option<&BucketRow>, key: &str) -> Resource {
    let home_folders = row.is_some_and(|r| r.home_folders);
    Resource::Object {
        bucket: bucket.to_string(),
        bucket_home_folders: home_folders,
        key: key.to_owned(),
        home: if home_folders { HomeOwner::of_key(key).map(|h| h.id()) } else { None },
        notifies: row.map(|r| r.notifications.function_names()).unwrap_or_default(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PutObjectInput {
    bucket: BucketName,
    key: ObjectKey,
    #[serde(default)]
    body: String,
    #[serde(default)]
    content_type: Option<String>,
    /// Write only if the object's current ETag is this one (S3's conditional write).
    #[serde(default)]
    if_match: Option<String>,
    /// `*`: write only if no object has this key.
    #[serde(default)]
    if_none_match: Option<String>,
}

/// A conditional write's condition, checked in the transaction that swaps the object.
#[derive(Clone, Default)]
pub(crate) struct Precondition {
    pub if_match: Option<String>,
    pub if_none_match: bool,
}

impl Precondition {
    fn holds(&self, current: Option<&str>) -> bool {
        let unquoted = |etag: &str| etag.trim_matches('"').to_owned();
        match (&self.if_match, current) {
            (Some(_), None) => return false,
            (Some(wanted), Some(current)) if unquoted(wanted) != unquoted(current) => return false,
            _ => {}
        }
        !(self.if_none_match && current.is_some())
    }
}

pub(super) async fn put_object(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: PutObjectInput = ctx.parse(input)?;
    let row = find_bucket(ctx.platform, &input.bucket).await?;
    ctx.authorize(object_resource(&input.bucket, row.as_ref(), input.key.as_str()))?;
    let row = row.ok_or_else(|| no_such_bucket(&input.bucket))?;
    let body = decode_base64("Body", &input.body)?;
    let limit = ctx.platform.spec.max_object_size;
    if body.len() as u64 > limit {
        return Err(ActionError::too_large(format!(
            "the object is {} bytes; this environment accepts at most {limit} (storage.max_object_size)",
            body.len()
        )));
    }
    let content_type = input.content_type.unwrap_or_else(|| "binary/octet-stream".into());
    if content_type.len() > 256 || content_type.chars().any(char::is_control) {
        return Err(ActionError::validation("`ContentType` must be at most 256 printable characters"));
    }
    let if_none_match = match input.if_none_match.as_deref() {
        None => false,
        Some("*") => true,
        Some(other) => return Err(ActionError::validation(format!("`IfNoneMatch` accepts only `*`, not `{other}`"))),
    };
    let condition = Precondition { if_match: input.if_match, if_none_match };
    let written = write_object(
        Author::of(ctx, &row),
        &input.bucket,
        &input.key,
        Bytes::from(body),
        Metadata { content_type: &content_type, event: "ObjectCreated:Put", condition: &condition },
    )
    .await?;
    Ok(json!({ "ETag": written.etag, "ChecksumSHA256": written.checksum }))
}

pub(crate) struct Written {
    pub etag: String,
    pub checksum: String,
    pub last_modified: i64,
}

/// Who writes an object: the caller of an action, or a service writing its own bucket.
pub(super) struct Author<'a> {
    pub plane: &'a Platform,
    pub principal: String,
    pub source_ip: String,
    pub notifier: notifications::Notifier,
}

impl<'a> Author<'a> {
    pub(super) fn of(ctx: &Ctx<'a>, row: &BucketRow) -> Author<'a> {
        Author {
            plane: ctx.platform,
            principal: ctx.principal_arn().to_owned(),
            source_ip: ctx.source_ip.to_owned(),
            notifier: notifications::Notifier::new(ctx, &row.notifications),
        }
    }
}

/// What is written with an object's body besides its key.
pub(super) struct Metadata<'a> {
    pub content_type: &'a str,
    /// The notification event the write raises.
    pub event: &'a str,
    pub condition: &'a Precondition,
}

/// Stores the body as a new blob, then swaps the object's pointer and queues its
/// notifications in one transaction; the replaced blob is released after the commit.
pub(super) async fn write_object(
    author: Author<'_>,
    bucket: &BucketName,
    key: &ObjectKey,
    body: Bytes,
    metadata: Metadata<'_>,
) -> Result<Written, ActionError> {
    let Metadata { content_type, event, condition } = metadata;
    let Author { plane, principal, source_ip, notifier } = author;
    let digest = Sha256::digest(&body);
    let etag = format!("\"{}\"", &hex::encode(digest)[..32]);
    let checksum = encode_base64(&digest);
    let size = body.len() as i64;
    // A small body is written with its object, a larger one first as a blob of its own.
    let (blob, inline) =
        if body.len() <= INLINE_MAX { (plane.blobs.inline_name(), Some(body)) } else { (plane.blobs.put(body).await?, None) };
    let now = now_millis();
    let object = NewObject {
        bucket: bucket.clone(),
        key: key.as_str().to_owned(),
        blob: blob.clone(),
        size,
        etag: etag.clone(),
        content_type: content_type.to_owned(),
        last_modified: now,
        writer: principal,
        source_ip,
    };
    let swap = Swap { object, inline, condition: condition.clone(), event: event.to_owned() };
    let swapped = plane.store.transact(Box::new(move |statements| Box::pin(swap.run(statements, notifier)))).await;
    let (old, queued) = match swapped? {
        Some(swapped) => swapped,
        None => {
            // Refused, so never committed and named by no snapshot: gone now, backup or not. (A
            // write that failed otherwise may have committed all the same, its answer lost: its
            // blob stays, and is reclaimed at start-up if no object names it.)
            if !is_inline(&blob)
                && let Err(err) = plane.blobs.delete(&blob).await
            {
                tracing::warn!(blob, error = %err, "cannot delete the blob of a refused write; it is reclaimed at start-up");
            }
            return Err(precondition_failed());
        }
    };
    committed(plane, old, queued).await;
    Ok(Written { etag, checksum, last_modified: now })
}

/// An object's swap, in its write's transaction.
struct Swap {
    object: NewObject,
    /// The body, when it is small enough to be kept with the object (named `object.blob`).
    inline: Option<Bytes>,
    condition: Precondition,
    event: String,
}

impl Swap {
    /// Points the object at its new blob and queues its notifications; returns the replaced
    /// blob to release after the commit, and whether a notification was queued. `None`, with
    /// nothing written, if the condition does not hold.
    async fn run(
        self,
        statements: &mut dyn Statements,
        notifier: notifications::Notifier,
    ) -> Result<Option<(Option<String>, bool)>, ActionError> {
        let Swap { object, inline, condition, event } = self;
        let current = repo::find_current_object(statements, &object.bucket, &object.key).await?;
        if !condition.holds(current.as_ref().map(|current| current.etag.as_str())) {
            return Ok(None);
        }
        if let Some(body) = &inline {
            Blobs::put_inline(statements, &object.blob, body).await?;
        }
        repo::upsert_object(statements, &object).await?;
        let old = match current {
            Some(current) => let_go(statements, current.blob).await?,
            None => None,
        };
        let event = notifications::Event {
            name: &event,
            bucket: &object.bucket,
            key: &object.key,
            size: object.size,
            etag: &object.etag,
            time: object.last_modified,
        };
        let queued = notifier.enqueue(statements, &event).await?;
        Ok(Some((old, queued)))
    }
}

/// After an object's write or delete has committed: listings and watchers learn of it, the
/// blob it released is deleted, and the outbox wakes for the notifications it queued.
async fn committed(plane: &Platform, released: Option<String>, queued: bool) {
    plane.object_changes.send_modify(|generation| *generation += 1);
    if let Some(blob) = released {
        release_blob(plane, &blob).await;
    }
    if queued {
        plane.outbox.notify_one();
    }
}

fn precondition_failed() -> ActionError {
    ActionError::new(412, ErrorCode::PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
}

/// Lets go of a replaced or deleted object's blob, inside the transaction that drops the
/// object: a small body goes with it; a blob of its own is listed, to be deleted after the
/// commit (returned).
async fn let_go(statements: &mut dyn Statements, blob: String) -> Result<Option<String>, ActionError> {
    if is_inline(&blob) {
        Blobs::drop_inline(statements, &blob).await?;
        return Ok(None);
    }
    repo::insert_released_blob(statements, &blob).await?;
    Ok(Some(blob))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct GetObjectInput {
    bucket: BucketName,
    key: ObjectKey,
    #[serde(default)]
    range: Option<String>,
}

pub(super) async fn get_object(ctx: &mut Ctx<'_>, input: Value, with_body: bool) -> Result<Value, ActionError> {
    let input: GetObjectInput = ctx.parse(input)?;
    let row = find_bucket(ctx.platform, &input.bucket).await?;
    ctx.authorize(object_resource(&input.bucket, row.as_ref(), input.key.as_str()))?;
    if row.is_none() {
        return Err(no_such_bucket(&input.bucket));
    }
    let object = find_object(ctx.platform, &input.bucket, input.key.as_str())
        .await?
        .ok_or_else(|| no_such_key(&input.bucket, input.key.as_str()))?;
    let size = object.size as u64;
    let range = input.range.as_deref().map(|r| parse_range(r, size)).transpose()?;
    let mut out = json!({
        "ContentLength": range.as_ref().map_or(size, |r| r.end - r.start),
        "ContentType": object.content_type,
        "ETag": object.etag,
        "LastModified": millis_to_rfc3339(object.last_modified),
        "AcceptRanges": "bytes",
        "Metadata": { "datasandbox-writer": object.writer, "datasandbox-source-ip": object.source_ip },
    });
    if let Some(range) = &range {
        out["ContentRange"] = json!(format!("bytes {}-{}/{size}", range.start, range.end.saturating_sub(1)));
    }
    if with_body {
        let body = ctx.platform.blobs.get(&object.blob, range).await?;
        out["Body"] = json!(encode_base64(&body));
    }
    Ok(out)
}

/// HTTP byte ranges as S3 takes them: `bytes=a-b`, `bytes=a-`, `bytes=-n`.
fn parse_range(text: &str, size: u64) -> Result<Range<u64>, ActionError> {
    let invalid = || {
        ActionError::new(
            416,
            ErrorCode::InvalidRange,
            format!("range `{text}` is not satisfiable for an object of {size} bytes; use bytes=first-last, bytes=first- or bytes=-suffix"),
        )
    };
    let spec = text.strip_prefix("bytes=").ok_or_else(invalid)?;
    let (first, last) = spec.split_once('-').ok_or_else(invalid)?;
    let number = |s: &str| s.parse::<u64>().map_err(|_| invalid());
    let range = match (first.is_empty(), last.is_empty()) {
        (true, false) => {
            let suffix = number(last)?;
            if suffix == 0 {
                return Err(invalid());
            }
            size.saturating_sub(suffix)..size
        }
        (false, true) => number(first)?..size,
        (false, false) => {
            let (first, last) = (number(first)?, number(last)?);
            if last < first {
                return Err(invalid());
            }
            first..(last + 1).min(size)
        }
        (true, true) => return Err(invalid()),
    };
    if range.start >= size {
        return Err(invalid());
    }
    Ok(range)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ListInput {
    bucket: BucketName,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    delimiter: Option<String>,
    #[serde(default)]
    max_keys: Option<i64>,
    #[serde(default)]
    continuation_token: Option<String>,
    #[serde(default)]
    start_after: Option<String>,
}

pub(super) async fn list_objects(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ListInput = ctx.parse(input)?;
    let max_keys = crate::core::codec::bounded("MaxKeys", input.max_keys, 1000, 0..=1000)?;
    if input.prefix.len() > 1024 {
        return Err(ActionError::validation("`Prefix` is longer than 1024 bytes"));
    }
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    let row = find_bucket(ctx.platform, &input.bucket).await?;
    ctx.authorize(object_resource(&input.bucket, row.as_ref(), &input.prefix))?;
    if row.is_none() {
        return Err(no_such_bucket(&input.bucket));
    }
    let token = decode_token(input.continuation_token.as_deref())?;
    let Listing { contents, common, truncated, last_returned } =
        scan(ctx.platform, &input, delimiter.as_deref(), token.as_deref(), max_keys).await?;
    let key_count = contents.len() + common.len();
    let mut out = json!({
        "Name": input.bucket,
        "Prefix": input.prefix,
        "MaxKeys": max_keys,
        "KeyCount": key_count,
        "IsTruncated": truncated,
        "Contents": contents,
        "CommonPrefixes": common.iter().map(|p| json!({ "Prefix": p })).collect::<Vec<_>>(),
    });
    if let Some(d) = delimiter {
        out["Delimiter"] = json!(d);
    }
    if let Some(token) = input.continuation_token {
        out["ContinuationToken"] = json!(token);
    }
    if truncated {
        out["NextContinuationToken"] = json!(encode_token(&last_returned));
    }
    Ok(out)
}

/// One page of a listing: objects, and the common prefixes that stand for the keys under them.
struct Listing {
    contents: Vec<Value>,
    common: Vec<String>,
    truncated: bool,
    /// The last key or common prefix returned, where the next page continues.
    last_returned: String,
}

/// Walks the bucket's keys after the continuation point (or `StartAfter`) in pages of 500,
/// folding keys under the delimiter into common prefixes, until `max_keys` entries are found.
async fn scan(
    plane: &Platform,
    input: &ListInput,
    delimiter: Option<&str>,
    token: Option<&str>,
    max_keys: i64,
) -> Result<Listing, ActionError> {
    let mut cursor = token.map(str::to_owned).or(input.start_after.clone()).unwrap_or_default();
    let mut contents = Vec::new();
    let mut common: Vec<String> = Vec::new();
    let mut truncated = false;
    let mut last_returned = String::new();
    'scan: loop {
        let rows = list_page(plane, &input.bucket, &cursor, &input.prefix).await?;
        if rows.is_empty() {
            break;
        }
        for object in rows {
            let key = object.key;
            cursor.clone_from(&key);
            let Some(rest) = key.strip_prefix(&input.prefix) else { break 'scan };
            let entry = match delimiter {
                Some(d) => rest.find(d).map(|at| format!("{}{}", input.prefix, &rest[..at + d.len()])),
                None => None,
            };
            if let Some(prefix) = &entry
                && (common.last() == Some(prefix) || token == Some(prefix.as_str()))
            {
                continue;
            }
            if (contents.len() + common.len()) as i64 >= max_keys {
                truncated = true;
                break 'scan;
            }
            match entry {
                Some(prefix) => {
                    last_returned.clone_from(&prefix);
                    common.push(prefix);
                }
                None => {
                    last_returned.clone_from(&key);
                    contents.push(json!({
                        "Key": key,
                        "Size": object.size,
                        "ETag": object.etag,
                        "LastModified": millis_to_rfc3339(object.last_modified),
                        "StorageClass": "STANDARD",
                    }));
                }
            }
        }
    }
    Ok(Listing { contents, common, truncated, last_returned })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ObjectInput {
    bucket: BucketName,
    key: ObjectKey,
}

pub(super) async fn delete_object(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: ObjectInput = ctx.parse(input)?;
    let row = find_bucket(ctx.platform, &input.bucket).await?;
    ctx.authorize(object_resource(&input.bucket, row.as_ref(), input.key.as_str()))?;
    let row = row.ok_or_else(|| no_such_bucket(&input.bucket))?;
    let plane = ctx.platform;
    let (bucket, key) = (input.bucket.clone(), input.key.as_str().to_owned());
    let notifier = notifications::Notifier::new(ctx, &row.notifications);
    let deleted = plane
        .store
        .transact(Box::new(move |statements| {
            Box::pin(async move {
                // As in S3, deleting a missing key succeeds and changes nothing.
                let Some(repo::CurrentObject { blob, size, etag }) = repo::find_current_object(statements, &bucket, &key).await? else {
                    return Ok(None);
                };
                repo::delete_object(statements, &bucket, &key).await?;
                let released = let_go(statements, blob).await?;
                let event = notifications::Event {
                    name: "ObjectRemoved:Delete",
                    bucket: &bucket,
                    key: &key,
                    size,
                    etag: &etag,
                    time: now_millis(),
                };
                let queued = notifier.enqueue(statements, &event).await?;
                Ok::<_, ActionError>(Some((released, queued)))
            })
        }))
        .await?;
    let Some((released, queued)) = deleted else { return Ok(json!({})) };
    committed(plane, released, queued).await;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CopyObjectInput {
    bucket: BucketName,
    key: ObjectKey,
    copy_source: String,
}

pub(super) async fn copy_object(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: CopyObjectInput = ctx.parse(input)?;
    let source = input.copy_source.trim_start_matches('/');
    let (source_bucket, source_key) = source
        .split_once('/')
        .ok_or_else(|| ActionError::validation(format!("CopySource `{}` must have the form bucket/key", input.copy_source)))?;
    let source_bucket = BucketName::new(source_bucket)?;
    let source_key = ObjectKey::new(source_key)?;
    let row = find_bucket(ctx.platform, &input.bucket).await?;
    ctx.authorize(object_resource(&input.bucket, row.as_ref(), input.key.as_str()))?;
    let source_row = find_bucket(ctx.platform, &source_bucket).await?;
    ctx.authorize_also("storage:GetObject", object_resource(&source_bucket, source_row.as_ref(), source_key.as_str()))?;
    let row = row.ok_or_else(|| no_such_bucket(&input.bucket))?;
    if source_row.is_none() {
        return Err(no_such_bucket(&source_bucket));
    }
    let object = find_object(ctx.platform, &source_bucket, source_key.as_str())
        .await?
        .ok_or_else(|| no_such_key(&source_bucket, source_key.as_str()))?;
    let body = ctx.platform.blobs.get(&object.blob, None).await?;
    let written = write_object(
        Author::of(ctx, &row),
        &input.bucket,
        &input.key,
        body,
        Metadata { content_type: &object.content_type, event: "ObjectCreated:Copy", condition: &Precondition::default() },
    )
    .await?;
    Ok(
        json!({ "CopyObjectResult": { "ETag": written.etag, "LastModified": millis_to_rfc3339(written.last_modified), "ChecksumSHA256": written.checksum } }),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).expect("valid"), 0..10);
        assert_eq!(parse_range("bytes=90-", 100).expect("valid"), 90..100);
        assert_eq!(parse_range("bytes=-5", 100).expect("valid"), 95..100);
        assert_eq!(parse_range("bytes=95-200", 100).expect("valid"), 95..100);
        for bad in ["bytes=100-", "bytes=5-1", "bytes=-0", "bytes=-", "items=0-1", "bytes=a-b"] {
            assert_eq!(parse_range(bad, 100).expect_err(bad).status, 416, "{bad}");
        }
    }
}
