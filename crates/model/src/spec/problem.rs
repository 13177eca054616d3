//! What a spec can be wrong about: one problem at a path, and all of them at once.

use std::fmt;

/// One problem found in a spec, at a dotted path such as `fleets.analysts.disconnect_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Every problem found in one pass; nothing is deployed when there is any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(f, "the spec has {count} problem{}:", if count == 1 { "" } else { "s" })?;
        for problem in &self.problems {
            write!(f, "\n  {}: {}", problem.path, problem.message)?;
        }
        Ok(())
    }
}
