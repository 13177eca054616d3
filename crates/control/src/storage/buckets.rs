//! Buckets: their creation, deletion (only when empty) and listing.

use super::repo::{self, find_bucket, no_such_bucket};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::store::{millis_to_rfc3339, now_millis};
use model::BucketName;
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct BucketInput {
    bucket: BucketName,
    /// DataSandbox's extension: a bucket of AppStream-style home folders.
    #[serde(default)]
    home_folders: bool,
}

pub(super) async fn create_bucket(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: BucketInput = ctx.parse(input)?;
    ctx.authorize(Resource::Bucket { name: input.bucket.to_string(), home_folders: input.home_folders })?;
    if !repo::insert_bucket(ctx.platform, &input.bucket, input.home_folders, now_millis()).await? {
        return Err(ActionError::conflict(ErrorCode::BucketAlreadyOwnedByYou, format!("bucket `{}` already exists", input.bucket)));
    }
    Ok(json!({ "Location": format!("/{}", input.bucket) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct BucketOnly {
    bucket: BucketName,
}

pub(super) async fn delete_bucket(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: BucketOnly = ctx.parse(input)?;
    let row = find_bucket(ctx.platform, &input.bucket).await?;
    ctx.authorize(Resource::Bucket { name: input.bucket.to_string(), home_folders: row.as_ref().is_some_and(|r| r.home_folders) })?;
    if row.is_none() {
        return Err(no_such_bucket(&input.bucket));
    }
    let mut tx = ctx.platform.store.write().await?;
    let count = repo::count_objects(&mut tx, &input.bucket).await?;
    if count > 0 {
        return Err(ActionError::conflict(
            ErrorCode::BucketNotEmpty,
            format!("bucket `{}` holds {count} objects; delete them first", input.bucket),
        ));
    }
    repo::delete_bucket(&mut tx, &input.bucket).await?;
    // Forgotten whatever the commit answers: an error may follow a commit that took effect.
    let committed = tx.commit().await;
    ctx.platform.store.buckets.forget();
    committed?;
    Ok(json!({}))
}

pub(super) async fn list_buckets(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    ctx.authorize(Resource::Service("storage".into()))?;
    let buckets: Vec<Value> = repo::list_buckets(ctx.platform)
        .await?
        .into_iter()
        .map(|bucket| json!({ "Name": bucket.name, "CreationDate": millis_to_rfc3339(bucket.created) }))
        .collect();
    Ok(json!({ "Buckets": buckets, "Owner": { "ID": ctx.platform.spec.account_id } }))
}

/// Makes a service's own bucket (the airlock's) if it does not exist yet.
pub(crate) async fn ensure_service_bucket(plane: &crate::core::platform::Platform, name: &str) -> Result<(), ActionError> {
    let name = BucketName::new(name).map_err(ActionError::internal)?;
    repo::insert_bucket(plane, &name, false, crate::core::store::now_millis()).await.map(drop)
}
