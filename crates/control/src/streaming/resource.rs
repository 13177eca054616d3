//! What the fleet and stack actions share: their name rule, their ARNs, their not-found error
//! and the two inputs that name resources (one by name, or a page of them).

use serde::Deserialize;

use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::Platform;

/// `Name`: the one member of the fleet and stack actions that act on one resource by name.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct NameInput {
    pub name: String,
}

/// `DescribeFleets` and `DescribeStacks`: some names, or all; one page.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct DescribeInput {
    #[serde(default)]
    pub names: Option<Vec<String>>,
    #[serde(default)]
    pub next_token: Option<String>,
}

/// AWS's rule for fleet and stack names.
pub(super) fn check_name(member: &str, name: &str) -> Result<(), ActionError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && name.len() <= 100 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(ActionError::validation(format!(
            "{member} `{name}` must be 1..=100 letters, digits, `_`, `.` or `-`, starting with a letter or digit"
        )))
    }
}

pub(super) fn arn(plane: &Platform, kind: &str, name: &str) -> String {
    model::arn::regional("streaming", &plane.spec.region, &plane.spec.account_id, &format!("{kind}/{name}"))
}

pub(super) fn not_found(kind: &str, name: &str) -> ActionError {
    ActionError::not_found(ErrorCode::ResourceNotFoundException, format!("{kind} `{name}` does not exist"))
}
