//! A bucket's notification configuration: S3's shape with built-in functions as targets, how
//! a configuration matches an event, how the spec's notifications merge into it, and the
//! checks a configuration passes before it is stored.

use model::spec::NotificationSpec;
use serde::{Deserialize, Serialize};

use crate::core::actions::BuiltinFunction;
use crate::core::error::ActionError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct NotificationConfiguration {
    #[serde(default)]
    pub lambda_function_configurations: Vec<FunctionConfiguration>,
}

impl NotificationConfiguration {
    /// The names of the functions these notifications invoke (an ARN's `function:<name>`).
    pub(crate) fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lambda_function_configurations
            .iter()
            .map(|c| c.lambda_function_arn.rsplit("function:").next().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct FunctionConfiguration {
    #[serde(default)]
    pub id: String,
    /// A built-in function's name, or an ARN ending in `function:<name>`.
    pub lambda_function_arn: String,
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct Filter {
    pub key: KeyFilter,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct KeyFilter {
    pub filter_rules: Vec<FilterRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(crate) struct FilterRule {
    pub name: String,
    pub value: String,
}

impl FunctionConfiguration {
    pub fn function_name(&self) -> &str {
        self.lambda_function_arn.rsplit_once("function:").map_or(self.lambda_function_arn.as_str(), |(_, name)| name)
    }

    fn rule(&self, name: &str) -> &str {
        self.filter
            .as_ref()
            .and_then(|f| f.key.filter_rules.iter().find(|r| r.name.eq_ignore_ascii_case(name)))
            .map_or("", |r| r.value.as_str())
    }

    pub(super) fn matches(&self, event: &str, key: &str) -> bool {
        let event_matches = self.events.iter().any(|e| match e.strip_suffix('*') {
            Some(family) => event.starts_with(family),
            None => e == event,
        });
        event_matches && key.starts_with(self.rule("prefix")) && key.ends_with(self.rule("suffix"))
    }

    fn from_spec(spec: &NotificationSpec) -> FunctionConfiguration {
        let mut rules = Vec::new();
        if !spec.prefix.is_empty() {
            rules.push(FilterRule { name: "prefix".into(), value: spec.prefix.clone() });
        }
        if !spec.suffix.is_empty() {
            rules.push(FilterRule { name: "suffix".into(), value: spec.suffix.clone() });
        }
        FunctionConfiguration {
            id: spec.id.clone(),
            lambda_function_arn: spec.function.clone(),
            events: spec.events.clone(),
            filter: (!rules.is_empty()).then_some(Filter { key: KeyFilter { filter_rules: rules } }),
        }
    }
}

impl NotificationConfiguration {
    /// This configuration with the spec's notifications added or replaced by `Id`; every
    /// other notification stays (the seed's sample wiped them on each update).
    pub fn merged_with(&self, specs: &[NotificationSpec]) -> NotificationConfiguration {
        let mut merged = self.clone();
        for spec in specs {
            let wanted = FunctionConfiguration::from_spec(spec);
            match merged.lambda_function_configurations.iter_mut().find(|c| c.id == spec.id) {
                Some(existing) => *existing = wanted,
                None => merged.lambda_function_configurations.push(wanted),
            }
        }
        merged
    }

    /// Checks every configuration and names each problem; fills in missing ids as S3 does.
    pub(super) fn validated(mut self) -> Result<NotificationConfiguration, ActionError> {
        let mut problems = Vec::new();
        for (index, config) in self.lambda_function_configurations.iter_mut().enumerate() {
            let at = format!("LambdaFunctionConfigurations[{index}]");
            if config.id.is_empty() {
                config.id = uuid::Uuid::new_v4().to_string();
            }
            if config.id.len() > 255 {
                problems.push(format!("{at}.Id is longer than 255 characters"));
            }
            if BuiltinFunction::from_name(config.function_name()).is_none() {
                problems.push(format!(
                    "{at}.LambdaFunctionArn: `{}` is not a function; functions are {}",
                    config.lambda_function_arn,
                    BuiltinFunction::names().join(", ")
                ));
            }
            if config.events.is_empty() {
                problems.push(format!("{at}.Events must name at least one event type"));
            }
            for event in &config.events {
                if !model::spec::is_event_type(event) {
                    problems.push(format!("{at}.Events: `{event}` is not an event type"));
                }
            }
            if let Some(filter) = &config.filter {
                for rule in &filter.key.filter_rules {
                    if !(rule.name.eq_ignore_ascii_case("prefix") || rule.name.eq_ignore_ascii_case("suffix")) {
                        problems.push(format!("{at}.Filter: rule name `{}` must be prefix or suffix", rule.name));
                    }
                }
                for name in ["prefix", "suffix"] {
                    if filter.key.filter_rules.iter().filter(|r| r.name.eq_ignore_ascii_case(name)).count() > 1 {
                        problems.push(format!("{at}.Filter has more than one {name} rule"));
                    }
                }
            }
        }
        let ids: Vec<&str> = self.lambda_function_configurations.iter().map(|c| c.id.as_str()).collect();
        for (index, id) in ids.iter().enumerate() {
            if ids[..index].contains(id) {
                problems.push(format!("Id `{id}` is used by more than one configuration"));
            }
        }
        if problems.is_empty() { Ok(self) } else { Err(ActionError::validation(problems.join("; "))) }
    }
}
