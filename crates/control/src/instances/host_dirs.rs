//! Host directories a streaming instance writes into: its display's socket and its print
//! folder, each bounded and owned by the instance's workspace user.

use std::path::PathBuf;

use crate::core::platform::Platform;

use super::datasets;

/// The host directory bound at `/run/display` in a streaming instance: its display's RFB
/// socket appears there, owned by the instance's workspace user.
pub(super) fn display_dir(plane: &Platform, id: &str, ids: sandbox::ids::IdRange) -> Result<PathBuf, sandbox::SandboxError> {
    let dir = datasets::instance_dir(plane, id).join("display");
    sandbox::bounded_dir(&dir, DISPLAY_DIR_BYTES, ids.workspace())?;
    Ok(dir)
}

/// What an instance may write into host directories: its display's socket (and nothing
/// else) and its printouts.
const DISPLAY_DIR_BYTES: u64 = 1 << 20;
const PRINT_DIR_BYTES: u64 = 256 << 20;

/// The host directory bound at `/run/print` in a streaming instance: the session's print
/// folder, where its printer puts each job's PDF. The gateway reads it, never follows links
/// in it, and hands a printout over only if the session allows printing to the local device.
pub(crate) fn print_dir(plane: &Platform, id: &str) -> PathBuf {
    datasets::instance_dir(plane, id).join("print")
}

/// The print folder, bounded, for the instance's workspace user only.
pub(super) fn make_print_dir(plane: &Platform, id: &str, ids: sandbox::ids::IdRange) -> Result<PathBuf, sandbox::SandboxError> {
    let dir = print_dir(plane, id);
    sandbox::bounded_dir(&dir, PRINT_DIR_BYTES, ids.workspace())?;
    Ok(dir)
}

/// Where a streaming instance's display listens, seen from the host.
pub(crate) fn display_socket(plane: &Platform, id: &str) -> PathBuf {
    datasets::instance_dir(plane, id).join("display").join("rfb.sock")
}
