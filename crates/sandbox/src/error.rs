//! The crate's one error type. Every module reports through it, so it sits below them all.

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{step}: {message}")]
    Setup { step: &'static str, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub(crate) fn setup(step: &'static str, message: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup { step, message: message.to_string() }
}
