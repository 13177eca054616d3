//! Buckets: their creation, deletion (only when empty) and listing.

use model::BucketName;
use policy::Resource;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::notification_configuration::NotificationConfiguration;
use super::repo::{find_bucket, no_such_bucket};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::store::{millis_to_rfc3339, now_millis};

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
    let empty = serde_json::to_string(&NotificationConfiguration::default()).expect("serializes");
    let inserted = sqlx::query("INSERT INTO buckets (name, home_folders, created, notification_configuration) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING")
        .bind(input.bucket.as_str())
        .bind(i64::from(input.home_folders))
        .bind(now_millis())
        .bind(empty)
        .execute(&ctx.platform.store.pool)
        .await?;
    if inserted.rows_affected() == 0 {
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
    let count: i64 = sqlx::query("SELECT COUNT(*) AS n FROM objects WHERE bucket = $1")
        .bind(input.bucket.as_str())
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
    if count > 0 {
        return Err(ActionError::conflict(
            ErrorCode::BucketNotEmpty,
            format!("bucket `{}` holds {count} objects; delete them first", input.bucket),
        ));
    }
    sqlx::query("DELETE FROM buckets WHERE name = $1").bind(input.bucket.as_str()).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(json!({}))
}

pub(super) async fn list_buckets(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let _: crate::core::caller::Empty = ctx.parse(input)?;
    ctx.authorize(Resource::Service("storage".into()))?;
    let rows = sqlx::query("SELECT name, created FROM buckets ORDER BY name").fetch_all(&ctx.platform.store.pool).await?;
    let buckets = rows
        .iter()
        .map(|r| Ok(json!({ "Name": r.try_get::<String, _>("name")?, "CreationDate": millis_to_rfc3339(r.try_get("created")?) })))
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(json!({ "Buckets": buckets, "Owner": { "ID": ctx.platform.spec.account_id } }))
}
