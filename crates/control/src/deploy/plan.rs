//! What a deploy would change: the spec checked and turned into resources, compared with what
//! the last deploy left, property by property. `deploy:Diff` shows this plan; `deploy:Deploy`
//! carries it out.

use model::spec::Spec;
use policy::Authorizer;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest as _;

use super::repo;
use super::template::{self, Kind, Resource, STACKS};
use crate::core::error::ActionError;
use crate::core::platform::Platform;
use crate::core::recorded::{Override, Redacted};

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct SpecInput {
    /// The spec's TOML text (its hash is in the answer).
    pub spec: Redacted<String>,
    /// `-c key=value`: recorded by key, never by value (secrets are given this way).
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// Names the deployment's events so a client can follow them while it runs.
    #[serde(default)]
    pub client_request_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Change {
    Create,
    Update { changed: Vec<String> },
    Replace { changed: Vec<String>, immutable: Vec<String> },
    Delete,
}

pub(super) struct Planned {
    pub old: Option<Resource>,
    pub new: Option<Resource>,
    pub change: Change,
}

impl Planned {
    pub fn resource(&self) -> &Resource {
        self.new.as_ref().or(self.old.as_ref()).expect("a planned change has a resource")
    }

    pub fn json(&self) -> Value {
        let r = self.resource();
        let (action, changed, immutable) = match &self.change {
            Change::Create => ("Create", Vec::new(), Vec::new()),
            Change::Update { changed } => ("Update", changed.clone(), Vec::new()),
            Change::Replace { changed, immutable } => ("Replace", changed.clone(), immutable.clone()),
            Change::Delete => ("Delete", Vec::new(), Vec::new()),
        };
        let mut details = Vec::new();
        for field in &changed {
            let before = self.old.as_ref().map_or(Value::Null, |o| o.properties[field].clone());
            let after = self.new.as_ref().map_or(Value::Null, |n| n.properties[field].clone());
            let mut leaves = Vec::new();
            leaf_changes(field.clone(), &before, &after, &mut leaves);
            for (name, before, after) in leaves {
                details.push(json!({ "Name": name, "Before": before, "After": after, "RequiresReplacement": immutable.contains(field) }));
            }
        }
        let mut change = json!({ "Stack": r.stack, "LogicalResourceId": r.logical_id, "ResourceType": r.kind.type_name(), "Action": action, "Details": details });
        // A policy's text is what decides; the change names it by hash whatever the action.
        if r.kind == Kind::Policy
            && let Some(text) = r.properties["Statement"].as_str()
        {
            change["StatementSha256"] = json!(hex::encode(sha2::Sha256::digest(text.as_bytes())));
        }
        change
    }
}

/// The smallest differing parts of a property: members of objects, and elements of lists of
/// settings named by `Action` or `Id` (a stack's user settings, a bucket's notifications).
fn leaf_changes(path: String, before: &Value, after: &Value, out: &mut Vec<(String, Value, Value)>) {
    if before == after {
        return;
    }
    let keyed = |list: &Vec<Value>| -> Option<Vec<(String, Value)>> {
        list.iter().map(|item| ["Action", "Id"].iter().find_map(|k| item[*k].as_str()).map(|key| (key.to_owned(), item.clone()))).collect()
    };
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let (x, y) = (a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                leaf_changes(format!("{path}.{key}"), x, y, out);
            }
        }
        (Value::Array(a), Value::Array(b)) => match (keyed(a), keyed(b)) {
            (Some(a), Some(b)) => {
                let keys: std::collections::BTreeSet<&String> = a.iter().chain(b.iter()).map(|(k, _)| k).collect();
                for key in keys {
                    let find = |list: &[(String, Value)]| list.iter().find(|(k, _)| k == key).map_or(Value::Null, |(_, v)| v.clone());
                    leaf_changes(format!("{path}.{key}"), &find(&a), &find(&b), out);
                }
            }
            _ => out.push((path, before.clone(), after.clone())),
        },
        _ => out.push((path, before.clone(), after.clone())),
    }
}

/// The resources as the last deploy left them, in the order they were deployed.
pub(super) async fn deployed(plane: &Platform) -> Result<Vec<Resource>, ActionError> {
    let mut out = Vec::new();
    for row in repo::deployed_resources(&plane.store).await? {
        let Some(stack) = STACKS.iter().find(|(s, _)| *s == row.stack).map(|(s, _)| *s) else { continue };
        let Some(kind) = Kind::parse(&row.kind) else { continue };
        let properties = serde_json::from_str(&row.properties).map_err(ActionError::internal)?;
        out.push((row.logical_id, stack, kind, properties));
    }
    let mut resources: Vec<Resource> =
        out.into_iter().map(|(logical_id, stack, kind, properties)| Resource { stack, logical_id, kind, properties }).collect();
    resources.sort_by_key(|r| (r.stack_index(), kind_order(r.kind)));
    Ok(resources)
}

/// Within a stack, the order resources are made in (the reverse is the order they go in).
fn kind_order(kind: Kind) -> usize {
    [
        Kind::Network,
        Kind::Bucket,
        Kind::Dataset,
        Kind::Parameter,
        Kind::Policy,
        Kind::Fleet,
        Kind::Stack,
        Kind::FleetAssociation,
        Kind::BucketNotifications,
        Kind::FleetRunning,
        Kind::Key,
        Kind::NotebookInstance,
        Kind::SamlProvider,
    ]
    .iter()
    .position(|k| *k == kind)
    .unwrap_or(usize::MAX)
}

/// The changes that bring `old` to `new`: creates, updates and replaces in `new`'s order,
/// then deletions, newest first.
pub(super) fn plan(old: &[Resource], new: &[Resource]) -> Vec<Planned> {
    let mut planned = Vec::new();
    for r in new {
        match old.iter().find(|o| o.logical_id == r.logical_id) {
            None => planned.push(Planned { old: None, new: Some(r.clone()), change: Change::Create }),
            Some(o) => {
                let mut fields: Vec<String> = Vec::new();
                for source in [&o.properties, &r.properties] {
                    for key in source.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                        if o.properties[&key] != r.properties[&key] && !fields.contains(&key) {
                            fields.push(key);
                        }
                    }
                }
                if fields.is_empty() {
                    continue;
                }
                let immutable: Vec<String> = fields.iter().filter(|f| r.kind.immutable().contains(&f.as_str())).cloned().collect();
                let change =
                    if immutable.is_empty() { Change::Update { changed: fields } } else { Change::Replace { changed: fields, immutable } };
                planned.push(Planned { old: Some(o.clone()), new: Some(r.clone()), change });
            }
        }
    }
    for o in old.iter().rev() {
        if !new.iter().any(|r| r.logical_id == o.logical_id) {
            planned.push(Planned { old: Some(o.clone()), new: None, change: Change::Delete });
        }
    }
    planned
}

/// Parses and checks a spec: every problem at once, and nothing is touched when there is one.
pub(super) async fn desired(input: &SpecInput) -> Result<(Spec, Vec<Resource>), ActionError> {
    let overrides: Vec<String> = input.overrides.iter().map(|o| o.0.clone()).collect();
    let spec = Spec::parse(&input.spec.0, &overrides).map_err(|err| ActionError::validation(err.to_string()))?;
    let idp_metadata = match &spec.idp_metadata {
        Some(source) => Some(template::load_idp_metadata(source).await),
        None => None,
    };
    let policies: Vec<(String, String)> = spec.policies.iter().map(|p| (p.name.clone(), p.text.clone())).collect();
    if let Err(errors) = Authorizer::load(&policies, &crate::core::actions::declarations()) {
        let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        return Err(ActionError::validation(format!("the spec's policies are invalid:\n{}", lines.join("\n"))));
    }
    let resources = template::resources(&spec, idp_metadata)
        .map_err(|problems| ActionError::validation(model::spec::SpecError { problems }.to_string()))?;
    Ok((spec, resources))
}

/// Platform settings a deploy cannot change while the server runs.
pub(super) fn restart_required(running: &Spec, next: &Spec) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let checks: [(&'static str, bool); 8] = [
        ("environment_name", running.environment_name != next.environment_name),
        ("account_id", running.account_id != next.account_id),
        ("region", running.region != next.region),
        (
            "server",
            running.api_listen != next.api_listen
                || running.public_url != next.public_url
                || running.notebook_listen != next.notebook_listen
                || running.notebook_url != next.notebook_url,
        ),
        ("metadata.url", running.metadata_url != next.metadata_url),
        ("storage", running.storage != next.storage || running.max_object_size != next.max_object_size),
        ("audit", running.audit != next.audit),
        (
            "sandbox",
            running.endpoint_port != next.endpoint_port
                || running.credential_lifetime_seconds != next.credential_lifetime_seconds
                || (running.id_base, running.id_slots) != (next.id_base, next.id_slots),
        ),
    ];
    for (field, differs) in checks {
        if differs {
            fields.push(field);
        }
    }
    fields
}
