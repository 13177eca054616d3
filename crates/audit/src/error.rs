//! The trail's one error type. It sits below every other module of the crate, so that the
//! writer, the sealer and the index can all report through it without importing each other.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("audit trail at `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the audit trail writer has stopped")]
    Stopped,
    #[error("audit trail file `{path}` is damaged: {message}; run `datasandbox audit validate` for details")]
    Damaged { path: PathBuf, message: String },
}

/// Wraps an IO error with the file it happened on, for `map_err`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrailError + '_ {
    move |source| TrailError::Io { path: path.to_owned(), source }
}
