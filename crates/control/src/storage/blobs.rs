//! Released blobs: a replaced or deleted object's blob is listed in the same transaction that
//! drops the object, deleted after the commit, and retried at start-up; blobs no object points
//! at (a crash between writing a blob and committing its object) are reclaimed then too.

use super::repo;
use crate::core::error::ActionError;
use crate::core::platform::Platform;

pub(super) async fn release_blob(plane: &Platform, blob: &str) {
    if plane.backups.load(std::sync::atomic::Ordering::Acquire) > 0 {
        // Listed still: deleted when the backup ends (`release_listed_blobs`).
        return;
    }
    match plane.blobs.delete(blob).await {
        Ok(()) => {
            if let Err(err) = repo::delete_released_blob(plane, blob).await {
                tracing::warn!(blob, error = %err, "released blob deleted but still listed; it is retried at start-up");
            }
        }
        Err(err) => tracing::warn!(blob, error = %err, "cannot delete a released blob; it is retried at start-up"),
    }
}

/// Deletes the blobs released while they could not be (a backup was under way).
pub(crate) async fn release_listed_blobs(plane: &Platform) -> Result<(), ActionError> {
    for blob in repo::released_blobs(plane).await? {
        release_blob(plane, &blob).await;
    }
    Ok(())
}

/// At start-up, before serving: delete released blobs and blobs no object points at (left by
/// a crash between writing a blob and committing its object).
pub(crate) async fn reclaim_blobs(plane: &Platform) -> Result<(), ActionError> {
    release_listed_blobs(plane).await?;
    let referenced = repo::referenced_blobs(plane).await?;
    let mut reclaimed = 0;
    // On a shared store another node may have uploaded a blob whose pointer it has not
    // committed yet: only this node's own orphans are reclaimed there. SQLite serves one node.
    let alone = plane.store.is_sqlite();
    for blob in plane.blobs.list().await? {
        if !referenced.contains(&blob) && (alone || plane.blobs.written_here(&blob)) {
            plane.blobs.delete(&blob).await?;
            reclaimed += 1;
        }
    }
    if reclaimed > 0 {
        tracing::info!(reclaimed, "deleted blobs of writes that never committed");
    }
    // A small body commits with its object and goes with it; one left over (by a node of an
    // older version, which drops objects without them) is deleted here.
    let orphans = repo::delete_unreferenced_small_blobs(plane).await?;
    if orphans > 0 {
        tracing::info!(orphans, "deleted small bodies no object names");
    }
    Ok(())
}
