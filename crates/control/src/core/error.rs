//! The one error type of the API: an AWS-style code, a message that says what to fix, and
//! whether the fault is the caller's (4xx) or ours (5xx).

use std::fmt;

/// An error as the caller sees it. Server faults carry a generic message; the detail goes to
/// the log under the request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError {
    pub code: &'static str,
    pub message: String,
    pub status: u16,
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ActionError {}

impl ActionError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ActionError {
        ActionError { code, message: message.into(), status }
    }

    pub fn validation(message: impl Into<String>) -> ActionError {
        ActionError::new(400, "ValidationException", message)
    }

    pub fn serialization(message: impl Into<String>) -> ActionError {
        ActionError::new(400, "SerializationException", message)
    }

    pub fn unknown_operation(message: impl Into<String>) -> ActionError {
        ActionError::new(400, "UnknownOperationException", message)
    }

    pub fn access_denied(message: impl Into<String>) -> ActionError {
        ActionError::new(403, "AccessDeniedException", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ActionError {
        ActionError::new(401, "UnrecognizedClientException", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> ActionError {
        ActionError::new(404, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ActionError {
        ActionError::new(409, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> ActionError {
        ActionError::new(413, "EntityTooLarge", message)
    }

    /// A fault on our side; `detail` is logged, never shown.
    pub fn internal(detail: impl fmt::Display) -> ActionError {
        tracing::error!(error = %detail, "internal failure");
        ActionError::new(
            500,
            "InternalFailure",
            "the request failed on the server; the operator can find the cause in the log under this request id",
        )
    }

    /// The refusal of anything while the trail writes on its reserve.
    pub(crate) fn trail_on_reserve() -> ActionError {
        ActionError::new(
            503,
            "ServiceUnavailable",
            "the audit trail's file system is full and the trail is writing on its reserve, so nothing is carried out until the operator frees space; this refusal is recorded",
        )
    }

    /// The refusal of anything while the trail cannot be written at all.
    pub(crate) fn trail_unwritable() -> ActionError {
        ActionError::new(
            503,
            "ServiceUnavailable",
            "the audit trail cannot be written, so no action can be acknowledged; the operator must free the trail's disk",
        )
    }

    pub fn is_client_error(&self) -> bool {
        self.status < 500
    }
}

impl From<sqlx::Error> for ActionError {
    fn from(err: sqlx::Error) -> ActionError {
        ActionError::internal(format_args!("metadata store: {err}"))
    }
}

impl From<object_store::Error> for ActionError {
    fn from(err: object_store::Error) -> ActionError {
        ActionError::internal(format_args!("object store: {err}"))
    }
}

impl From<model::InvalidName> for ActionError {
    fn from(err: model::InvalidName) -> ActionError {
        ActionError::validation(err.to_string())
    }
}
