//! `airlock:` — files leave a workspace (EXPORT) or enter it (IMPORT) only as a request that
//! automated checks and other people pass, and each release is a signed record.
//!
//! - **A request** belongs to the user who created it (its researcher) and to a workspace (a
//!   stack). Its files are copied, as they are when added, into the airlock bucket, which no
//!   policy lets anyone reach (not instances, not admins): only these actions read it.
//! - **States** move only along the edges of [`state::RequestState::may_become`], each by a
//!   conditional update; anything else is a 409 that changes nothing.
//! - **Submission** freezes the manifest (path, size, SHA-256) under a new submission number;
//!   votes count only for the submission they were cast on, so a change resets them. The
//!   checks (`checks.rs`) run at once: a failed one blocks the request.
//! - **Review** needs `airlock.<direction>_reviewers` distinct reviewers, none of them the
//!   researcher whatever roles they hold; votes stay hidden until the request is decided;
//!   any "changes requested" sends it back, any rejection ends it, and both need a comment.
//! - **Release** writes a release record signed with the platform's airlock key and recorded
//!   in the trail by its hash (`release.rs`); only the researcher may then make download links,
//!   each for themself, expiring, every use recorded; a revocation ends them at once.

use std::sync::Arc;

use serde_json::Value;

use crate::core::actions::AirlockAction;
use crate::core::error::ActionError;
use crate::core::feed::{self, Heard};
use crate::core::pipeline::Ctx;
use crate::core::platform::Platform;

mod callers;
mod checks;
mod finding;
mod json_rows;
mod lineage;
mod png;
mod release;
mod repo;
mod requests;
mod review;
mod scan;
mod sniff;
mod source;
mod state;
mod table;

pub use release::verify_record;

use state::AIRLOCK_BUCKET;

/// At start: the airlock's bucket exists, the release key's public half is where `airlock
/// verify` reads it, and other nodes' request changes reach this node's pages.
pub(crate) async fn prepare(plane: &Arc<Platform>) -> Result<(), ActionError> {
    crate::storage::ensure_service_bucket(plane, AIRLOCK_BUCKET).await?;
    release::publish_key(plane).await?;
    listen(plane.clone());
    Ok(())
}

/// Passes other nodes' request changes to the pages of each request's researcher here (who
/// look again: they hear who, never what); after the feed was cut, to every page.
fn listen(plane: Arc<Platform>) {
    let mut heard = feed::subscribe(plane.spec.metadata_url.as_deref(), state::CHANGES_CHANNEL);
    tokio::spawn(async move {
        while let Some(change) = heard.recv().await {
            match change {
                Heard::Id(id) => {
                    if plane.changes.heard()
                        && let Ok(request) = repo::find(&plane.store, &id).await
                    {
                        plane.changes.principal(&request.creator);
                    }
                }
                Heard::Missed => plane.changes.everyone(),
            }
        }
    });
}

pub(crate) async fn dispatch(ctx: &mut Ctx<'_>, action: AirlockAction, input: Value) -> Result<Value, ActionError> {
    use AirlockAction as A;
    match action {
        A::CreateRequest => requests::create(ctx, input).await,
        A::AddFile => requests::add_file(ctx, input).await,
        A::RemoveFile => requests::remove_file(ctx, input).await,
        A::SubmitRequest => requests::submit(ctx, input).await,
        A::WithdrawRequest => requests::withdraw(ctx, input).await,
        A::DescribeRequests => requests::describe_own(ctx, input).await,
        A::DescribeReviewQueue => review::queue(ctx, input).await,
        A::CastVote => review::cast_vote(ctx, input).await,
        A::ReleaseRequest => release::release(ctx, input).await,
        A::RevokeRequest => release::revoke(ctx, input).await,
        A::GetReleaseRecord => release::get_record(ctx, input).await,
        A::CreateDownloadUrl => release::create_download_url(ctx, input).await,
        A::DownloadFile => release::download(ctx, input).await,
        A::PreviewFile => review::preview(ctx, input).await,
        A::GetImports => release::imports(ctx, input).await,
    }
}
