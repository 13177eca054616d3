//! The dataset mount's actions (DataSandbox's own): what a process in an instance did with a
//! dataset's files, one record each, with the process behind it.
//!
//! - `DatasetFileOpened`: a file opened for reading. It is decided as `storage:GetObject` on the
//!   object for the instance's user, at each open, so a policy changed mid-session applies to
//!   the next open. The answer (not recorded) names the blob the mount reads.
//! - `DatasetFileClosed`: at the last close, the bytes read and the ranges (or "sparse"); for
//!   a dataset read through passthrough (`read_audit = "opens"`), only that it was open.
//! - `DatasetWriteRefused`: a change tried (write, create, unlink, chmod, …): always refused.
//!
//! Only an instance's dataset mount calls them (`Credentials::DatasetMount`, which only the
//! control plane makes): from anywhere else they are refused, so no program inside an
//! instance can write records in its user's name or learn a blob's name.

use model::{BucketName, ObjectKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::objects::object_resource;
use super::repo::{find_bucket, find_object, no_such_bucket, no_such_key};
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;

/// The process behind an event, as the mount resolved it when it happened.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Process {
    #[serde(default)]
    executable: Option<String>,
    #[serde(default)]
    pid: Option<i64>,
    host_pid: i64,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct OpenedInput {
    dataset: String,
    bucket: BucketName,
    key: ObjectKey,
    instance_id: String,
    #[serde(default)]
    session_id: Option<String>,
    process: Process,
}

fn only_the_mount(ctx: &Ctx<'_>) -> Result<(), ActionError> {
    if ctx.dataset_mount {
        Ok(())
    } else {
        Err(ActionError::access_denied("only an instance's dataset mount records what happens to its files"))
    }
}

pub(super) async fn file_opened(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    only_the_mount(ctx)?;
    let input: OpenedInput = ctx.parse_recorded(input)?;
    let row = find_bucket(ctx.platform, &input.bucket).await?;
    ctx.authorize_also("storage:GetObject", object_resource(&input.bucket, row.as_ref(), input.key.as_str()))?;
    ctx.authorize_always();
    if row.is_none() {
        return Err(no_such_bucket(&input.bucket));
    }
    let object = find_object(ctx.platform, &input.bucket, input.key.as_str())
        .await?
        .ok_or_else(|| no_such_key(&input.bucket, input.key.as_str()))?;
    // Which content was opened: the object may change between the listing and the open.
    ctx.record_found("ETag", json!(object.etag));
    ctx.record_found("Size", json!(object.size));
    Ok(json!({ "Blob": object.blob, "Size": object.size, "ETag": object.etag }))
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ClosedInput {
    dataset: String,
    bucket: BucketName,
    key: ObjectKey,
    instance_id: String,
    #[serde(default)]
    session_id: Option<String>,
    /// The request id of the open's record.
    opened_by: String,
    /// `ranges`: every read was counted; `open`: the reads went to the body in the kernel
    /// (the dataset's `read_audit = "opens"`), and only the open is known.
    granularity: String,
    /// Processes other than the opener that read through the open file.
    #[serde(default)]
    read_by: Vec<Process>,
    #[serde(default)]
    bytes_read: Option<u64>,
    ranges: Vec<(u64, u64)>,
    sparse: bool,
}

pub(super) async fn file_closed(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    only_the_mount(ctx)?;
    let input: ClosedInput = ctx.parse_recorded(input)?;
    if input.ranges.len() > 64 || input.ranges.iter().any(|(start, end)| start >= end) {
        return Err(ActionError::validation("`Ranges` holds at most 64 non-empty ranges"));
    }
    if !matches!(input.granularity.as_str(), "ranges" | "open") || input.read_by.len() > 8 {
        return Err(ActionError::validation("`Granularity` is `ranges` or `open`; `ReadBy` names at most 8 processes"));
    }
    ctx.authorize_always();
    Ok(json!({}))
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RefusedInput {
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    key: Option<String>,
    operation: String,
    instance_id: String,
    #[serde(default)]
    session_id: Option<String>,
    process: Process,
}

pub(super) async fn write_refused(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    only_the_mount(ctx)?;
    let input: RefusedInput = ctx.parse_recorded(input)?;
    ctx.authorize_always();
    Err(ActionError::access_denied(format!("datasets are read-only: `{}` refused", input.operation.chars().take(32).collect::<String>())))
}
