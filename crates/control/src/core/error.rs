//! The one error type of the API: an AWS-style code, a message that says what to fix, and
//! whether the fault is the caller's (4xx) or ours (5xx).

use std::fmt;

/// Declares the closed set of error codes a caller can see, each spelled as its variant.
macro_rules! error_codes {
    ($($code:ident,)*) => {
        /// Every error code the API answers with: AWS's where the seed's services have one,
        /// else a name of ours in the same style. A code is matched as a value, never as text.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(clippy::enum_variant_names, reason = "the codes are AWS's, `…Exception` included")]
        pub enum ErrorCode { $($code,)* }

        impl ErrorCode {
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$code => stringify!($code),)* }
            }
        }
    };
}

error_codes! {
    AccessDeniedException,
    AlreadyExistsException,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    ClipboardBlocked,
    CodeMismatchException,
    ConcurrentModificationException,
    ConflictException,
    ConsoleAccessDenied,
    CrossOriginRequestRefused,
    DeploymentFailed,
    DestroyIncomplete,
    EntityTooLarge,
    ExpiredNotebookURL,
    ExpiredStreamingURL,
    ExpiredTokenException,
    FileTransferDisabled,
    FleetDidNotStop,
    IncorrectKeyException,
    InsufficientCapacity,
    InternalFailure,
    InvalidCiphertextException,
    InvalidKeyUsageException,
    InvalidNotebookURL,
    InvalidParameterCombinationException,
    InvalidRange,
    InvalidSAMLResponse,
    InvalidStreamingURLSignature,
    KMSInvalidStateException,
    LimitExceededException,
    MalformedStreamingURL,
    NoDisplay,
    NoHomeFolder,
    NoSuchBucket,
    NoSuchKey,
    NotAuthorizedException,
    NotFoundException,
    NotebookDidNotStop,
    NotebookOwnedByAnotherUser,
    NotebookURLAlreadyUsed,
    NotebookURLBoundToAnotherSession,
    NotebookURLBoundToInstance,
    OIDCAudienceMismatch,
    OIDCExpired,
    OIDCInvalidCallback,
    OIDCInvalidState,
    OIDCInvalidToken,
    OIDCIssuerMismatch,
    OIDCNoUser,
    OIDCNonceMismatch,
    OIDCNotConfigured,
    OIDCNotYetValid,
    OIDCProviderError,
    OIDCProviderUnavailable,
    OIDCReplay,
    OIDCSignatureInvalid,
    OIDCStateMismatch,
    OIDCTokenRejected,
    OperationNotPermittedException,
    ParameterAlreadyExists,
    ParameterNotFound,
    PreconditionFailed,
    RecordingDamaged,
    ReplacementBlocked,
    ResourceAlreadyExistsException,
    ResourceInUse,
    ResourceInUseException,
    ResourceLimitExceeded,
    ResourceNotFound,
    ResourceNotFoundException,
    SAMLAudienceMismatch,
    SAMLDestinationMismatch,
    SAMLExpired,
    SAMLNoRole,
    SAMLNotConfigured,
    SAMLNotYetValid,
    SAMLRecipientMismatch,
    SAMLReplay,
    SAMLRequestNotFromThisBrowser,
    SAMLSignatureInvalid,
    SAMLSignatureWrapping,
    SAMLStatusNotSuccess,
    SAMLUnknownIssuer,
    SAMLUnknownRequest,
    SAMLUnsigned,
    SAMLWeakSignature,
    SerializationException,
    ServiceUnavailable,
    SessionEnded,
    SessionNotActive,
    SessionPredatesIdentity,
    SessionRejected,
    StreamingURLAlreadyUsed,
    StreamingURLMismatch,
    TooManyRequestsException,
    UnknownOperationException,
    UnrecognizedClientException,
    UnsupportedMediaTypeException,
    UserNotFoundException,
    UsernameExistsException,
    ValidationException,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An error as the caller sees it. Server faults carry a generic message; the detail goes to
/// the log under the request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError {
    pub code: ErrorCode,
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
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> ActionError {
        ActionError { code, message: message.into(), status }
    }

    pub fn validation(message: impl Into<String>) -> ActionError {
        ActionError::new(400, ErrorCode::ValidationException, message)
    }

    pub fn serialization(message: impl Into<String>) -> ActionError {
        ActionError::new(400, ErrorCode::SerializationException, message)
    }

    pub fn unknown_operation(message: impl Into<String>) -> ActionError {
        ActionError::new(400, ErrorCode::UnknownOperationException, message)
    }

    pub fn access_denied(message: impl Into<String>) -> ActionError {
        ActionError::new(403, ErrorCode::AccessDeniedException, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ActionError {
        ActionError::new(401, ErrorCode::UnrecognizedClientException, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> ActionError {
        ActionError::new(404, code, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> ActionError {
        ActionError::new(409, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> ActionError {
        ActionError::new(413, ErrorCode::EntityTooLarge, message)
    }

    /// A fault on our side; `detail` is logged, never shown.
    pub fn internal(detail: impl fmt::Display) -> ActionError {
        tracing::error!(error = %detail, "internal failure");
        ActionError::new(
            500,
            ErrorCode::InternalFailure,
            "the request failed on the server; the operator can find the cause in the log under this request id",
        )
    }

    /// The refusal of anything while the trail writes on its reserve.
    pub(crate) fn trail_on_reserve() -> ActionError {
        ActionError::new(
            503,
            ErrorCode::ServiceUnavailable,
            "the audit trail's file system is full and the trail is writing on its reserve, so nothing is carried out until the operator frees space; this refusal is recorded",
        )
    }

    /// The refusal of anything while the trail cannot be written at all.
    pub(crate) fn trail_unwritable() -> ActionError {
        ActionError::new(
            503,
            ErrorCode::ServiceUnavailable,
            "the audit trail cannot be written, so no action can be acknowledged; the operator must free the trail's disk",
        )
    }

    pub fn is_client_error(&self) -> bool {
        self.status < 500
    }
}

impl From<sqlx::Error> for ActionError {
    /// A store that cannot be reached (restarting, cut off, every connection busy) is a
    /// temporary refusal the caller may retry; anything else is a fault of ours.
    fn from(err: sqlx::Error) -> ActionError {
        match err {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                tracing::warn!(error = %err, "the metadata store cannot be reached");
                ActionError::new(503, ErrorCode::ServiceUnavailable, "the metadata store cannot be reached; retry shortly")
            }
            sqlx::Error::Database(ref db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) => {
                // PostgreSQL shutting down (57P01-03) or the connection failing (08xxx).
                tracing::warn!(error = %err, "the metadata store is restarting");
                ActionError::new(503, ErrorCode::ServiceUnavailable, "the metadata store is restarting; retry shortly")
            }
            err => ActionError::internal(format_args!("metadata store: {err}")),
        }
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
