//! The auditor's actions on recordings. Only the `auditor` role may call them (the default
//! policies forbid everyone else, admins and the operator included), and playing or exporting
//! a segment needs a justification: the call's record holds who, why and which segment.

use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row as _;

use super::format;
use super::stored::{RECORDINGS_BUCKET, key_context};
use crate::core::codec::{decode_base64, encode_base64};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Ctx;
use crate::core::store::millis_to_rfc3339;
use policy::{Principal, Resource};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SessionInput {
    session_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct SegmentInput {
    session_id: String,
    segment: u64,
    justification: String,
    /// PlayRecordingSegment only: the first chunk to return (a page's `NextChunk`).
    #[serde(default)]
    from_chunk: usize,
}

/// A page of PlayRecordingSegment stops after the chunk that brings it to this much display data.
const PAGE_BYTES: usize = 4 << 20;

/// Segments read at once on this node: each may hold up to 64 MiB while it is read.
static READING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

fn check_justification(text: &str) -> Result<(), ActionError> {
    let length = text.trim().chars().count();
    let words = text.split_whitespace().filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2).count();
    if !(10..=1000).contains(&length) || words < 3 || text.chars().any(char::is_control) {
        return Err(ActionError::validation(
            "Justification must say why, in words (three or more, 10 to 1000 characters, no control characters): it is kept in the trail with this viewing",
        ));
    }
    Ok(())
}

/// Authorizes the call, then holds it to the `auditor` role whatever the policies say (a spec
/// written before recordings existed permits admins everything).
fn authorize_auditor(ctx: &mut Ctx<'_>) -> Result<(), ActionError> {
    ctx.authorize(Resource::Service("streaming".into()))?;
    match &ctx.caller.principal {
        Principal::User { roles, .. } if roles.iter().any(|r| r == "auditor") => Ok(()),
        _ => Err(ActionError::new(403, ErrorCode::AccessDeniedException, "session recordings are for the auditor role only")),
    }
}

/// `streaming:DescribeRecordings`: a session's stored segments, oldest first.
pub(crate) async fn describe(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: SessionInput = ctx.parse(input)?;
    authorize_auditor(ctx)?;
    let rows = sqlx::query("SELECT * FROM recording_segments WHERE session_id = $1 ORDER BY segment")
        .bind(&input.session_id)
        .fetch_all(&ctx.platform.store.pool)
        .await?;
    let segments = rows
        .iter()
        .map(|row| {
            Ok(json!({
                "Segment": row.try_get::<i64, _>("segment")?,
                "Node": row.try_get::<String, _>("node")?,
                "StartTime": millis_to_rfc3339(row.try_get("started")?),
                "EndTime": millis_to_rfc3339(row.try_get("ended")?),
                "Bytes": row.try_get::<i64, _>("size")?,
                "Sha256": row.try_get::<String, _>("sha256")?,
                "Complete": row.try_get::<i64, _>("complete")? == 1,
                "EndsRecording": row.try_get::<i64, _>("last")? == 1,
            }))
        })
        .collect::<Result<Vec<Value>, sqlx::Error>>()?;
    Ok(json!({ "SessionId": input.session_id, "Segments": segments }))
}

/// The stored bytes of one segment, once the caller may have them, with a turn at reading
/// (held until the answer is built); to be played (`checked`), only if they are what was
/// sealed (the hash its row keeps).
async fn stored(
    ctx: &mut Ctx<'_>,
    input: &SegmentInput,
    checked: bool,
) -> Result<(Vec<u8>, tokio::sync::SemaphorePermit<'static>), ActionError> {
    check_justification(&input.justification)?;
    authorize_auditor(ctx)?;
    let row = sqlx::query("SELECT object_key, sha256 FROM recording_segments WHERE session_id = $1 AND segment = $2")
        .bind(&input.session_id)
        .bind(input.segment as i64)
        .fetch_optional(&ctx.platform.store.pool)
        .await?;
    let (key, sha) = row
        .map(|row| Ok::<_, sqlx::Error>((row.try_get::<String, _>("object_key")?, row.try_get::<String, _>("sha256")?)))
        .transpose()?
        .ok_or_else(|| {
            ActionError::new(
                404,
                ErrorCode::ResourceNotFoundException,
                format!("session `{}` has no stored recording segment {}", input.session_id, input.segment),
            )
        })?;
    let reading = READING.acquire().await.map_err(ActionError::internal)?;
    let bytes = crate::storage::read_internal(ctx.platform, RECORDINGS_BUCKET, &key).await?.to_vec();
    if checked && hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)) != sha {
        return Err(damaged(input, "its stored bytes differ from the hash recorded when it was sealed"));
    }
    Ok((bytes, reading))
}

/// `streaming:ExportRecordingSegment`: a segment's stored bytes as they are (encrypted), for
/// `recordings verify` and for keeping elsewhere.
pub(crate) async fn export(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: SegmentInput = ctx.parse(input)?;
    let (bytes, _reading) = stored(ctx, &input, false).await?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    // Export copies the segment as stored, damage and all: `recordings verify` names it.
    Ok(json!({ "SessionId": input.session_id, "Segment": input.segment, "Sha256": sha, "Body": encode_base64(&bytes) }))
}

/// `streaming:PlayRecordingSegment`: what the display sent in one segment, decrypted, with
/// each piece's time from the segment's start, for the console's player, a page of about
/// 4 MiB at a time (`NextChunk` names the next). A segment whose stored bytes fail their
/// checks is refused, not played.
pub(crate) async fn play(ctx: &mut Ctx<'_>, input: Value) -> Result<Value, ActionError> {
    let input: SegmentInput = ctx.parse(input)?;
    let (bytes, _reading) = stored(ctx, &input, true).await?;
    let parsed = format::parse(&bytes).map_err(|e| damaged(&input, &e))?;
    if let Some(problem) = &parsed.problem {
        return Err(damaged(&input, problem));
    }
    let wrapped = decode_base64("WrappedKey", &parsed.header.wrapped_key)?;
    let context = key_context(&input.session_id, input.segment);
    let (_, data_key) = crate::keys::decrypt_blob(ctx.platform, &wrapped, &context).await?;
    let data_key: [u8; 32] = data_key.try_into().map_err(|_| ActionError::internal("a segment's data key is not 32 bytes"))?;
    let (mut records, mut size, mut next) = (Vec::new(), 0, None);
    for chunk in parsed.chunks.iter().skip(input.from_chunk) {
        if size >= PAGE_BYTES {
            next = Some(chunk.seq);
            break;
        }
        for (at, kind, payload) in format::open_chunk(&data_key, &parsed, &bytes, chunk).map_err(|e| damaged(&input, &e))? {
            if kind == format::DISPLAY {
                size += payload.len();
                records.push(json!({ "AtMs": at, "Data": encode_base64(&payload) }));
            }
        }
    }
    let complete = parsed.trailer.as_ref().is_some_and(|t| t.complete);
    let duration = parsed.trailer.as_ref().map_or(0, |t| t.ended_unix_ms - parsed.header.t0_unix_ms);
    Ok(json!({
        "SessionId": input.session_id,
        "Segment": input.segment,
        "StartTime": millis_to_rfc3339(parsed.header.t0_unix_ms),
        "DurationMs": duration,
        "Complete": complete,
        "Records": records,
        "NextChunk": next,
    }))
}

fn damaged(input: &SegmentInput, problem: &str) -> ActionError {
    ActionError::new(
        500,
        ErrorCode::RecordingDamaged,
        format!(
            "recording segment {} of session `{}` fails its checks ({problem}); run `datasandbox recordings verify` on an export",
            input.segment, input.session_id
        ),
    )
}
