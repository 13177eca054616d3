//! The airlock's tables, typed: `airlock_requests`, `airlock_files` (the current manifest),
//! `airlock_checks` and `airlock_votes` (by submission), `airlock_links` (download links, by
//! the hash of their token).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::state::{Decision, Direction, RequestState};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::store::Store;

pub(super) struct RequestRow {
    pub request_id: String,
    pub direction: Direction,
    pub workspace: String,
    /// The researcher's principal id (`UserRef::principal_id`) and name as shown.
    pub creator: String,
    pub creator_name: String,
    pub justification: String,
    pub state: RequestState,
    pub submission: i64,
    pub policy_version: Option<String>,
    pub created: i64,
    pub updated: i64,
    pub released: Option<i64>,
    pub expires: Option<i64>,
    pub correlation_id: Option<String>,
    pub release_record: Option<String>,
}

fn unknown(what: &str, text: &str) -> ActionError {
    ActionError::internal(format_args!("unknown {what} `{text}` in the airlock's tables"))
}

impl RequestRow {
    fn from_row(row: &AnyRow) -> Result<RequestRow, ActionError> {
        let state: String = row.try_get("state")?;
        let direction: String = row.try_get("direction")?;
        Ok(RequestRow {
            request_id: row.try_get("request_id")?,
            direction: Direction::parse(&direction).ok_or_else(|| unknown("direction", &direction))?,
            workspace: row.try_get("workspace")?,
            creator: row.try_get("creator")?,
            creator_name: row.try_get("creator_name")?,
            justification: row.try_get("justification")?,
            state: RequestState::parse(&state).ok_or_else(|| unknown("state", &state))?,
            submission: row.try_get("submission")?,
            policy_version: row.try_get("policy_version")?,
            created: row.try_get("created")?,
            updated: row.try_get("updated")?,
            released: row.try_get("released")?,
            expires: row.try_get("expires")?,
            correlation_id: row.try_get("correlation_id")?,
            release_record: row.try_get("release_record")?,
        })
    }
}

pub(super) struct NewRequest<'a> {
    pub request_id: &'a str,
    pub direction: Direction,
    pub workspace: &'a str,
    pub creator: &'a str,
    pub creator_name: &'a str,
    pub justification: &'a str,
    pub now: i64,
    pub correlation_id: Option<&'a str>,
}

pub(super) async fn insert(store: &Store, new: &NewRequest<'_>) -> Result<(), ActionError> {
    sqlx::query(
        "INSERT INTO airlock_requests (request_id, direction, workspace, creator, creator_name, justification, state, submission, created, updated, correlation_id)
         VALUES ($1, $2, $3, $4, $5, $6, 'draft', 0, $7, $7, $8)",
    )
    .bind(new.request_id)
    .bind(new.direction.as_str())
    .bind(new.workspace)
    .bind(new.creator)
    .bind(new.creator_name)
    .bind(new.justification)
    .bind(new.now)
    .bind(new.correlation_id)
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub(super) async fn find(store: &Store, request_id: &str) -> Result<RequestRow, ActionError> {
    let row = sqlx::query("SELECT * FROM airlock_requests WHERE request_id = $1").bind(request_id).fetch_optional(&store.pool).await?;
    let row = row.ok_or_else(|| {
        ActionError::not_found(ErrorCode::ResourceNotFoundException, format!("airlock request `{request_id}` does not exist"))
    })?;
    RequestRow::from_row(&row)
}

/// The requests `creator` made, or every request (for reviewers and auditors), newest first.
pub(super) async fn list(store: &Store, creator: Option<&str>) -> Result<Vec<RequestRow>, ActionError> {
    let rows = match creator {
        Some(creator) => {
            sqlx::query("SELECT * FROM airlock_requests WHERE creator = $1 ORDER BY created DESC")
                .bind(creator)
                .fetch_all(&store.pool)
                .await?
        }
        None => sqlx::query("SELECT * FROM airlock_requests ORDER BY created DESC").fetch_all(&store.pool).await?,
    };
    rows.iter().map(RequestRow::from_row).collect()
}

/// Moves a request from `from` to `to` if it is still in `from` (the caller checked that the
/// move is allowed); false if another call moved it first.
pub(super) async fn transition(
    store: &Store,
    request_id: &str,
    from: RequestState,
    to: RequestState,
    now: i64,
) -> Result<bool, ActionError> {
    debug_assert!(from.may_become(to));
    let done = sqlx::query("UPDATE airlock_requests SET state = $1, updated = $2 WHERE request_id = $3 AND state = $4")
        .bind(to.as_str())
        .bind(now)
        .bind(request_id)
        .bind(from.as_str())
        .execute(&store.pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Submission: a new submission number and the policy version its checks ran under, from
/// `from` only.
pub(super) async fn submit(
    store: &Store,
    request_id: &str,
    from: RequestState,
    policy_version: &str,
    now: i64,
) -> Result<Option<i64>, ActionError> {
    let row = sqlx::query(
        "UPDATE airlock_requests SET state = 'submitted', submission = submission + 1, policy_version = $1, updated = $2
         WHERE request_id = $3 AND state = $4 RETURNING submission",
    )
    .bind(policy_version)
    .bind(now)
    .bind(request_id)
    .bind(from.as_str())
    .fetch_optional(&store.pool)
    .await?;
    Ok(row.map(|r| r.try_get::<i64, _>("submission")).transpose()?)
}

/// Release: approved → released, with its signed record and when it expires.
pub(super) async fn release(store: &Store, request_id: &str, record: &str, now: i64, expires: i64) -> Result<bool, ActionError> {
    let done = sqlx::query(
        "UPDATE airlock_requests SET state = 'released', release_record = $1, released = $2, expires = $3, updated = $2
         WHERE request_id = $4 AND state = 'approved'",
    )
    .bind(record)
    .bind(now)
    .bind(expires)
    .bind(request_id)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) struct FileRow {
    pub path: String,
    pub size: i64,
    pub sha256: String,
    /// The copy's key in the airlock bucket.
    pub object_key: String,
}

pub(super) async fn files(store: &Store, request_id: &str) -> Result<Vec<FileRow>, ActionError> {
    let rows = sqlx::query("SELECT path, size, sha256, object_key FROM airlock_files WHERE request_id = $1 ORDER BY path")
        .bind(request_id)
        .fetch_all(&store.pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(FileRow {
                path: r.try_get("path")?,
                size: r.try_get("size")?,
                sha256: r.try_get("sha256")?,
                object_key: r.try_get("object_key")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

/// Adds or replaces a file of a request that is still editable; false if it no longer is. The
/// request's row is updated first, which holds it (PostgreSQL's row lock, SQLite's one
/// writer) until the file is in: a submission waits, then sees the file, or this sees it
/// submitted.
pub(super) async fn put_file(store: &Store, request_id: &str, file: &FileRow, now: i64) -> Result<bool, ActionError> {
    let mut tx = store.pool.begin().await?;
    let held = sqlx::query("UPDATE airlock_requests SET updated = $1 WHERE request_id = $2 AND state IN ('draft', 'changes_requested')")
        .bind(now)
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
    if held.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM airlock_files WHERE request_id = $1 AND path = $2")
        .bind(request_id)
        .bind(&file.path)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO airlock_files (request_id, path, size, sha256, object_key, added) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(request_id)
        .bind(&file.path)
        .bind(file.size)
        .bind(&file.sha256)
        .bind(&file.object_key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Counts `bytes` against what `creator` added in the last 24 hours (of `hour_ms` each), unless
/// that would pass `limit`: then nothing is counted and the answer is what they had added.
pub(super) async fn count_upload(
    store: &Store,
    creator: &str,
    bytes: i64,
    now: i64,
    hour_ms: i64,
    limit: i64,
) -> Result<Result<(), i64>, ActionError> {
    let hour = now / hour_ms.max(1);
    let mut tx = store.pool.begin().await?;
    // Written first: the creator's row holds their additions one at a time, whatever hour
    // each falls in (PostgreSQL's row lock; SQLite has one writer), or each of many at once
    // would miss the others'.
    sqlx::query("INSERT INTO airlock_upload_budgets (creator) VALUES ($1) ON CONFLICT (creator) DO UPDATE SET creator = excluded.creator")
        .bind(creator)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO airlock_uploads (creator, hour, bytes) VALUES ($1, $2, $3)
         ON CONFLICT (creator, hour) DO UPDATE SET bytes = airlock_uploads.bytes + excluded.bytes",
    )
    .bind(creator)
    .bind(hour)
    .bind(bytes)
    .execute(&mut *tx)
    .await?;
    // The 24 whole hours before this one count, with this one.
    sqlx::query("DELETE FROM airlock_uploads WHERE creator = $1 AND hour < $2").bind(creator).bind(hour - 24).execute(&mut *tx).await?;
    let total: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM airlock_uploads WHERE creator = $1")
        .bind(creator)
        .fetch_one(&mut *tx)
        .await?;
    if total > limit {
        tx.rollback().await?;
        return Ok(Err(total - bytes));
    }
    tx.commit().await?;
    Ok(Ok(()))
}

/// Removes a file of a request that is still editable; false if there was none to remove.
pub(super) async fn remove_file(store: &Store, request_id: &str, path: &str) -> Result<bool, ActionError> {
    let done = sqlx::query(
        "DELETE FROM airlock_files WHERE request_id = $1 AND path = $2
         AND EXISTS (SELECT 1 FROM airlock_requests WHERE request_id = $1 AND state IN ('draft', 'changes_requested'))",
    )
    .bind(request_id)
    .bind(path)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) struct CheckRow {
    pub path: String,
    pub rule: String,
    pub outcome: String,
    pub detail: String,
}

/// A check's text as the store keeps it: each NUL character as U+FFFD. The text comes from
/// the files checked (a JSON table's column names, an archive member's name), and PostgreSQL's
/// text cannot hold a NUL: the insert failed, and left the request scanning for good.
fn stored(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

pub(super) async fn insert_check(
    store: &Store,
    request_id: &str,
    submission: i64,
    check: &CheckRow,
    policy_version: &str,
) -> Result<(), ActionError> {
    sqlx::query(
        "INSERT INTO airlock_checks (request_id, submission, path, rule, outcome, detail, policy_version) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(request_id)
    .bind(submission)
    .bind(stored(&check.path))
    .bind(&check.rule)
    .bind(&check.outcome)
    .bind(stored(&check.detail))
    .bind(policy_version)
    .execute(&store.pool)
    .await?;
    Ok(())
}

pub(super) async fn checks(store: &Store, request_id: &str, submission: i64) -> Result<Vec<CheckRow>, ActionError> {
    let rows =
        sqlx::query("SELECT path, rule, outcome, detail FROM airlock_checks WHERE request_id = $1 AND submission = $2 ORDER BY path, rule")
            .bind(request_id)
            .bind(submission)
            .fetch_all(&store.pool)
            .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(CheckRow {
                path: r.try_get("path")?,
                rule: r.try_get("rule")?,
                outcome: r.try_get("outcome")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

/// Paths of earlier released files of `workspace` with this hash (for the difference check).
pub(super) async fn released_with_hash(store: &Store, workspace: &str, request_id: &str, sha256: &str) -> Result<Vec<String>, ActionError> {
    let rows = sqlx::query(
        "SELECT r.request_id || '/' || f.path AS released FROM airlock_files f JOIN airlock_requests r ON r.request_id = f.request_id
         WHERE r.workspace = $1 AND r.request_id <> $2 AND f.sha256 = $3 AND r.state IN ('released', 'revoked', 'expired')",
    )
    .bind(workspace)
    .bind(request_id)
    .bind(sha256)
    .fetch_all(&store.pool)
    .await?;
    Ok(rows.iter().filter_map(|r| r.try_get("released").ok()).collect())
}

/// Every file released earlier from `workspace` (by other requests): its name for people
/// (`<request>/<path>`) and where its copy is.
pub(super) async fn released_files(store: &Store, workspace: &str, request_id: &str) -> Result<Vec<(String, String)>, ActionError> {
    let rows = sqlx::query(
        "SELECT r.request_id || '/' || f.path AS released, f.object_key FROM airlock_files f JOIN airlock_requests r ON r.request_id = f.request_id
         WHERE r.workspace = $1 AND r.request_id <> $2 AND r.state IN ('released', 'revoked', 'expired') ORDER BY r.created DESC",
    )
    .bind(workspace)
    .bind(request_id)
    .fetch_all(&store.pool)
    .await?;
    Ok(rows.iter().filter_map(|r| Some((r.try_get("released").ok()?, r.try_get("object_key").ok()?))).collect())
}

/// The workspace (stack) of the session a running instance serves, if it serves one. (The
/// instances' and sessions' tables, read: the airlock sits below both services.)
pub(super) async fn workspace_of_instance(store: &Store, instance_id: &str) -> Result<Option<String>, ActionError> {
    let row = sqlx::query(
        "SELECT s.stack FROM instances i JOIN sessions s ON s.session_id = i.session_id
         WHERE i.instance_id = $1 AND i.state IN ('RUNNING', 'STOPPING')",
    )
    .bind(instance_id)
    .fetch_optional(&store.pool)
    .await?;
    Ok(row.map(|row| row.try_get("stack")).transpose()?)
}

pub(super) struct VoteRow {
    pub reviewer: String,
    pub reviewer_name: String,
    pub decision: Decision,
    pub comment: Option<String>,
    pub cast: i64,
}

/// Casts a vote on the current submission of a request in review; false if this reviewer
/// already voted on it or the request left review meanwhile.
pub(super) async fn insert_vote(store: &Store, request_id: &str, submission: i64, vote: &VoteRow) -> Result<bool, ActionError> {
    let done = sqlx::query(
        "INSERT INTO airlock_votes (request_id, submission, reviewer, reviewer_name, decision, comment, cast_at)
         SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS
           (SELECT 1 FROM airlock_requests WHERE request_id = $1 AND submission = $2 AND state = 'in_review')
         ON CONFLICT (request_id, submission, reviewer) DO NOTHING",
    )
    .bind(request_id)
    .bind(submission)
    .bind(&vote.reviewer)
    .bind(&vote.reviewer_name)
    .bind(vote.decision.as_str())
    .bind(&vote.comment)
    .bind(vote.cast)
    .execute(&store.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn votes(store: &Store, request_id: &str, submission: i64) -> Result<Vec<VoteRow>, ActionError> {
    let rows = sqlx::query(
        "SELECT reviewer, reviewer_name, decision, comment, cast_at FROM airlock_votes WHERE request_id = $1 AND submission = $2 ORDER BY cast_at",
    )
    .bind(request_id)
    .bind(submission)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let decision: String = r.try_get("decision")?;
            Ok(VoteRow {
                reviewer: r.try_get("reviewer")?,
                reviewer_name: r.try_get("reviewer_name")?,
                decision: Decision::parse(&decision).ok_or_else(|| unknown("decision", &decision))?,
                comment: r.try_get("comment")?,
                cast: r.try_get("cast_at")?,
            })
        })
        .collect()
}

pub(super) struct LinkRow {
    pub request_id: String,
    pub path: String,
    pub user_id: String,
    pub expires: i64,
}

pub(super) async fn insert_link(store: &Store, token_hash: &str, link: &LinkRow, now: i64) -> Result<(), ActionError> {
    sqlx::query("INSERT INTO airlock_links (token_hash, request_id, path, user_id, expires, created) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(token_hash)
        .bind(&link.request_id)
        .bind(&link.path)
        .bind(&link.user_id)
        .bind(link.expires)
        .bind(now)
        .execute(&store.pool)
        .await?;
    Ok(())
}

pub(super) async fn find_link(store: &Store, token_hash: &str) -> Result<Option<LinkRow>, ActionError> {
    let row = sqlx::query("SELECT request_id, path, user_id, expires FROM airlock_links WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(&store.pool)
        .await?;
    Ok(row
        .map(|r| {
            Ok::<_, sqlx::Error>(LinkRow {
                request_id: r.try_get("request_id")?,
                path: r.try_get("path")?,
                user_id: r.try_get("user_id")?,
                expires: r.try_get("expires")?,
            })
        })
        .transpose()?)
}

/// Ends every download link of a request (at revocation or expiry); how many there were.
pub(super) async fn delete_links(store: &Store, request_id: &str) -> Result<u64, ActionError> {
    Ok(sqlx::query("DELETE FROM airlock_links WHERE request_id = $1").bind(request_id).execute(&store.pool).await?.rows_affected())
}
