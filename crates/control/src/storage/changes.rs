//! `storage:WaitForChanges`, DataSandbox's own: a long poll on the objects under a prefix, so
//! that an instance's home-folder sync and its launcher learn of a change when it happens
//! instead of listing the prefix again and again (each listing an audited read: an idle
//! session used to write a record every 600 ms).
//!
//! The answer's `Token` stands for what is under the prefix (the SHA-256 of every key and
//! ETag there): a call that gives the token it last got waits, up to `WaitSeconds` (at most
//! 60), until the objects are no longer what the token says, and says whether they changed.
//! A call without one answers at once. It reveals what a listing of the prefix would (that
//! something changed), so it is authorized as `storage:ListObjectsV2` on the prefix.
//!
//! Every committed write or delete on this node wakes the waiters (a watch counter); on a
//! shared store another node's writes are seen within [`SHARED_STORE_RECHECK`]. The wait ends
//! early when the caller's credential expires, and when the server stops: then, unless the
//! prefix changed, with a refusal (503) rather than an answer, so that callers wait before
//! asking again; a stopping server refuses a new wait too (a call without a token, which
//! waits for nothing, is still answered). Each wait costs a listing of its prefix at every
//! wake: one caller (a principal from one address) may hold [`WAITS_PER_CALLER`] at once, the
//! server [`WAITS`] (an instance's sync and launcher need two); more are refused, not queued.

use std::time::Duration;

use model::BucketName;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::repo::{find_bucket, list_page, no_such_bucket};
use crate::core::error::ActionError;
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;
use crate::core::store::now_millis;

/// The longest wait a call may ask for: an idle session writes one record a minute.
const MAX_WAIT_SECONDS: u64 = 60;
/// How often a waiter on a store other nodes write to looks again.
const SHARED_STORE_RECHECK: Duration = Duration::from_secs(2);
/// The waits one caller (by principal) may hold at once, and the server in all.
const WAITS_PER_CALLER: usize = 4;
const WAITS: usize = 4096;

/// The waits under way, by caller.
static WAITING: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
    std::sync::LazyLock::new(Default::default);

/// A wait counted against its caller while it lasts.
struct Waiting(String);

impl Waiting {
    fn begin(caller: &str) -> Result<Waiting, ActionError> {
        let mut waiting = WAITING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = waiting.values().sum();
        let mine = waiting.get(caller).copied().unwrap_or(0);
        if mine >= WAITS_PER_CALLER || total >= WAITS {
            return Err(ActionError::new(
                429,
                crate::core::error::ErrorCode::LimitExceededException,
                format!("too many waits at once (at most {WAITS_PER_CALLER} a caller): wait for one to end"),
            ));
        }
        *waiting.entry(caller.to_owned()).or_default() += 1;
        Ok(Waiting(caller.to_owned()))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiting = WAITING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = waiting.get_mut(&self.0) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.0);
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct WaitInput {
    bucket: BucketName,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    wait_seconds: Option<i64>,
}

pub(super) async fn wait_for_changes(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: WaitInput = ctx.parse(input)?;
    if input.prefix.len() > 1024 {
        return Err(ActionError::validation("`Prefix` is longer than 1024 bytes"));
    }
    let wait = crate::core::codec::bounded("WaitSeconds", input.wait_seconds, 50, 1..=MAX_WAIT_SECONDS as i64)?;
    let row = find_bucket(ctx.platform, &input.bucket).await?;
    ctx.authorize_also("storage:ListObjectsV2", super::objects::object_resource(&input.bucket, row.as_ref(), &input.prefix))?;
    ctx.authorize_always();
    if row.is_none() {
        return Err(no_such_bucket(&input.bucket));
    }
    let plane = ctx.platform;
    let mut changes = plane.object_changes.subscribe();
    let mut stopping = plane.stopping.subscribe();
    if input.token.is_some() && *stopping.borrow() {
        return Err(stopping_now());
    }
    let mut token = digest(plane, &input.bucket, &input.prefix).await?;
    let Some(given) = input.token else { return Ok(json!({ "Token": token, "Changed": false })) };
    let _waiting = Waiting::begin(&format!("{} from {}", ctx.caller.identity.arn, ctx.source_ip))?;
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    if let Some(expires) = ctx.caller.expires {
        let left = u64::try_from(expires - now_millis()).unwrap_or(0);
        deadline = deadline.min(tokio::time::Instant::now() + Duration::from_millis(left));
    }
    let recheck = if plane.store.is_sqlite() { Duration::from_secs(MAX_WAIT_SECONDS) } else { SHARED_STORE_RECHECK };
    while token == given && !*stopping.borrow() {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = stopping.changed() => {}
            () = tokio::time::sleep(recheck.min(deadline - now)) => {}
        }
        token = digest(plane, &input.bucket, &input.prefix).await?;
    }
    let changed = token != given;
    if !changed && *stopping.borrow() {
        return Err(stopping_now());
    }
    Ok(json!({ "Token": token, "Changed": changed }))
}

/// A wait the server cut short, or would, because it is stopping: a refusal, so that the
/// caller waits before it asks again (an unchanged answer was asked again at once, by every
/// session, until the server had stopped).
fn stopping_now() -> ActionError {
    ActionError::new(503, crate::core::error::ErrorCode::ServiceUnavailable, "the server is stopping: ask again in a few seconds")
}

/// What is under the prefix, as a token: the SHA-256 of every key and ETag, in key order.
async fn digest(plane: &Platform, bucket: &BucketName, prefix: &str) -> Result<String, ActionError> {
    let mut hasher = Sha256::new();
    let mut after = String::new();
    loop {
        let page = list_page(plane, bucket, &after, prefix).await?;
        let mut ended = page.is_empty();
        for object in page {
            if !object.key.starts_with(prefix) {
                ended = true;
                break;
            }
            hasher.update(object.key.as_bytes());
            hasher.update([0]);
            hasher.update(object.etag.as_bytes());
            hasher.update([0]);
            after = object.key;
        }
        if ended {
            return Ok(hex::encode(&hasher.finalize()[..16]));
        }
    }
}
