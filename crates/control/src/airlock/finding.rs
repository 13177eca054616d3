//! What a check says of a file: its rule, its outcome and why.

use serde::Serialize;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(super) enum Outcome {
    Pass,
    Flag,
    Fail,
    /// A failure the researcher asked the reviewers to pass, with a reason they read.
    Overridden,
}

impl Outcome {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Flag => "FLAG",
            Outcome::Fail => "FAIL",
            Outcome::Overridden => "OVERRIDDEN",
        }
    }
}

/// One check's result on one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Finding {
    pub rule: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}
