//! Action names: `service:Action`, the one name shared by the API route, the Cedar action, the
//! audit record's `eventSource`/`eventName` and the metrics label.

use std::fmt;

use crate::ids::InvalidName;

/// The services of the control plane, as they appear before the colon of an action name.
pub const SERVICES: &[&str] =
    &["parameters", "storage", "keys", "streaming", "notebooks", "audit", "deploy", "identity", "cluster", "airlock"];

/// A syntactically valid action name; whether the action exists is the pipeline's business.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActionName {
    service: String,
    action: String,
}

impl ActionName {
    pub fn parse(value: &str) -> Result<ActionName, InvalidName> {
        let invalid = |reason: &str| InvalidName { what: "action", value: value.chars().take(80).collect(), reason: reason.to_owned() };
        let Some((service, action)) = value.split_once(':') else {
            return Err(invalid("must have the form `service:Action`"));
        };
        ActionName::from_parts(service, action)
    }

    pub fn from_parts(service: &str, action: &str) -> Result<ActionName, InvalidName> {
        let invalid =
            |reason: String| InvalidName { what: "action", value: format!("{service}:{action}").chars().take(80).collect(), reason };
        if !SERVICES.contains(&service) {
            return Err(invalid(format!("names unknown service `{service}`; services are {}", SERVICES.join(", "))));
        }
        let pascal = action.len() <= 64
            && action.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && action.chars().all(|c| c.is_ascii_alphanumeric());
        if !pascal {
            return Err(invalid("must name a PascalCase action".to_owned()));
        }
        Ok(ActionName { service: service.to_owned(), action: action.to_owned() })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn action(&self) -> &str {
        &self.action
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.action)
    }
}
