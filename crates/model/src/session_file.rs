//! `session.json`, which the launcher writes into the user's home folder, and the one error
//! vocabulary the launcher and the session validator share.

use serde::{Deserialize, Serialize};

/// The largest `session.json` the validator reads.
pub const MAX_SESSION_FILE: usize = 16 * 1024;

pub const SESSION_FILE: &str = "session.json";
pub const URL_FILE: &str = "session_url.txt";
pub const ERROR_FILE: &str = "session_error.json";

/// What the launcher claims about its session. Every member is checked against the platform's
/// own records; none is trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SessionFile {
    pub user_name: String,
    pub session_id: String,
    pub stack_name: String,
    pub fleet_name: String,
    pub access_mode: String,
}

/// Why a session was not validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectReason {
    /// The file is not valid JSON of the right shape, or is too large.
    MalformedSessionFile,
    /// The file does not lie in the home folder of the user it names.
    NotOwnFolder,
    /// No session of that user, stack and fleet has that id.
    UnknownSession,
    /// The session exists but is not ACTIVE.
    SessionNotActive,
    /// The session's maximum duration has passed.
    SessionExpired,
    /// The file was not written by the instance that serves the session.
    WrittenByAnotherInstance,
    /// The user's notebook could not be made ready.
    NotebookUnavailable,
}

impl RejectReason {
    /// What the analyst reads.
    pub fn message(self) -> &'static str {
        match self {
            RejectReason::MalformedSessionFile => "the session file is not valid; restart the session",
            RejectReason::NotOwnFolder => "the session file is not in your own home folder",
            RejectReason::UnknownSession => "no such session for this user, stack and fleet",
            RejectReason::SessionNotActive => "the session is not active",
            RejectReason::SessionExpired => "the session has ended or expired",
            RejectReason::WrittenByAnotherInstance => "the session file was not written by this session's instance",
            RejectReason::NotebookUnavailable => "your notebook could not be started; contact the operator",
        }
    }

    pub fn code(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }
}

/// The content of `session_error.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionError {
    pub error: RejectReason,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_files_parse_strictly() {
        let good = r#"{"UserName":"a\"b","SessionId":"s","StackName":"st","FleetName":"f","AccessMode":"custom"}"#;
        let parsed: SessionFile = serde_json::from_str(good).expect("valid");
        assert_eq!(parsed.user_name, "a\"b");
        assert_eq!(serde_json::from_str::<SessionFile>(&serde_json::to_string(&parsed).expect("serializes")).expect("round trip"), parsed);
        for bad in [
            r#"{"UserName":"a","SessionId":"s","StackName":"st","FleetName":"f"}"#,
            r#"{"UserName":1,"SessionId":"s","StackName":"st","FleetName":"f","AccessMode":"custom"}"#,
            r#"{"UserName":"a","SessionId":"s","StackName":"st","FleetName":"f","AccessMode":"custom","Bucket":"x"}"#,
            "[]",
            "",
        ] {
            assert!(serde_json::from_str::<SessionFile>(bad).is_err(), "{bad}");
        }
        assert_eq!(RejectReason::NotOwnFolder.code(), "NOT_OWN_FOLDER");
    }
}
