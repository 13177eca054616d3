//! The environment spec, `datasandbox.toml`: the seed's deployment parameters (its `cdk.json`
//! context) and the resources built from them.
//!
//! Parsing goes raw TOML → `-c key=value` overrides → a validating walk that reports every
//! problem at once, each with its path and the allowed range or values → [`Spec`].

mod defaults;
mod problem;
mod read;
mod resources;
mod validated;
mod walk;

pub use defaults::default_spec_text;
pub use problem::{Problem, SpecError};
pub use read::{is_node_name, provider_url_allowed};
pub use validated::{
    AirlockSpec, AuditSpec, BucketSpec, ClusterSpec, DatasetSpec, FleetSpec, FleetType, ImageSpec, InstanceType, Ipv4Cidr, LauncherSpec,
    NotebookSpec, NotificationSpec, OidcSpec, PolicySpec, ReadAudit, RecordingSpec, ServerTls, Spec, StackSpec, StorageBackend, StreamView,
    USER_SETTING_ACTIONS, USER_SETTINGS_OFF_UNLESS_ENABLED, UserSetting, is_event_type,
};

use walk::{Problems, Table};

impl Spec {
    /// Parses spec text, applies `key=value` overrides and validates the result.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Spec, SpecError> {
        let mut root: toml::Table = text.parse().map_err(|err: toml::de::Error| SpecError {
            problems: vec![Problem { path: "datasandbox.toml".into(), message: err.message().to_owned() + &location(text, err.span()) }],
        })?;
        let mut problems = Vec::new();
        for item in overrides {
            if let Err(problem) = apply_override(&mut root, item) {
                problems.push(problem);
            }
        }
        nul_problems_in(&root, "", &mut problems);
        let problems = Problems::new(problems);
        let spec = read::read_spec(&Table::root(&root, &problems));
        let problems = problems.into_inner();
        if problems.is_empty() { Ok(spec) } else { Err(SpecError { problems }) }
    }
}

/// A NUL character in any key or string (`"\u0000"` in TOML): no name, path or text of the
/// platform's holds one, and the metadata store's PostgreSQL cannot, so a deploy would fail
/// halfway through instead.
fn nul_problems(value: &toml::Value, path: &str, problems: &mut Vec<Problem>) {
    match value {
        toml::Value::String(text) if text.contains('\0') => {
            problems.push(Problem { path: path.to_owned(), message: "holds a NUL character (\\u0000), which no setting may".into() });
        }
        toml::Value::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                nul_problems(item, &format!("{path}[{n}]"), problems);
            }
        }
        toml::Value::Table(table) => nul_problems_in(table, path, problems),
        _ => {}
    }
}

fn nul_problems_in(table: &toml::Table, path: &str, problems: &mut Vec<Problem>) {
    for (key, item) in table {
        let path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        if key.contains('\0') {
            problems.push(Problem { path: path.replace('\0', "\\u0000"), message: "a key holds a NUL character (\\u0000)".into() });
        } else {
            nul_problems(item, &path, problems);
        }
    }
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!(" (line {line})")
}

/// `-c a.b=value`: the value is read as TOML when it parses as one (numbers, booleans, arrays),
/// otherwise as a plain string, like `cdk -c`.
fn apply_override(root: &mut toml::Table, item: &str) -> Result<(), Problem> {
    let (path, raw) = item
        .split_once('=')
        .ok_or_else(|| Problem { path: item.to_owned(), message: "an override must have the form key=value".into() })?;
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(Problem {
            path: path.to_owned(),
            message: "an override key must be a dotted path like storage.max_object_size".into(),
        });
    }
    let (last, parents) = segments.split_last().expect("split of a non-empty path has a last segment");
    let mut table = root;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = table.entry(segment.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| Problem {
            path: segments[..=depth].join("."),
            message: "is not a table, so it cannot hold the overridden key".into(),
        })?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests;
