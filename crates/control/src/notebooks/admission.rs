//! Admission of notebook volumes: a volume is admitted only if every volume could fill up and
//! the file system would still keep room for the platform.

use std::os::unix::fs::MetadataExt as _;

use super::repo;
use super::state::notebook_dir;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;

pub(super) const GIB: u64 = 1 << 30;

/// Kept free beside the notebook volumes, for the platform (the trail above all).
const VOLUME_RESERVE: u64 = GIB;

/// Volumes are sparse disk images: each may still claim the space it has not used yet. A new
/// volume (or a volume's growth) of `more` bytes is admitted only if every volume could fill
/// up and the file system would still keep [`VOLUME_RESERVE`] — otherwise one notebook user
/// filling their volume could fill the disk the trail is written to.
pub(super) async fn admit_volume(plane: &Platform, more: u64) -> Result<(), ActionError> {
    let rows = repo::volume_sizes(plane).await?;
    let mut unclaimed = 0u64;
    for (name, size) in rows {
        let used = std::fs::metadata(notebook_dir(plane, &name).join("volume.img")).map_or(0, |m| m.blocks() * 512);
        unclaimed += (size as u64 * GIB).saturating_sub(used);
    }
    let dir = plane.data_dir.join("notebooks");
    let probe = if dir.exists() { dir } else { plane.data_dir.clone() };
    let free = sandbox::free_bytes(&probe).map_err(ActionError::internal)?;
    if unclaimed + more + VOLUME_RESERVE > free {
        return Err(ActionError::new(
            400,
            ErrorCode::ResourceLimitExceeded,
            format!(
                "the notebook volumes would claim {} GiB more than the {} GiB free where they live (keeping {} GiB for the platform); \
                 choose a smaller VolumeSizeInGB, delete a notebook, or free space",
                (unclaimed + more + VOLUME_RESERVE - free).div_ceil(GIB),
                free / GIB,
                VOLUME_RESERVE / GIB
            ),
        ));
    }
    Ok(())
}
