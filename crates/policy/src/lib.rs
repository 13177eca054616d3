//! Authorization. This is the only crate that knows Cedar: the rest of the system speaks in
//! [`Principal`]s, [`Resource`]s and action names, and gets a [`Decision`] back.
//!
//! The Cedar schema is built from the action registry, so the actions policies may name are
//! exactly those the control plane has; the spec's policies are validated against it in strict
//! mode, each error reported with its line and column. Resources are the service, buckets,
//! objects, parameters, keys, instances and stacks; a stack is seen as streamed by a given
//! user, so that a federated role can require `resource.user == principal` (AppStream's
//! `userId = saml:sub` condition on the seed's `saml-stack` role).
//!
//! Any evaluation error is a deny; the decision carries the policy ids that allowed it, or
//! the errors, for the audit record.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Authorizer as CedarAuthorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet,
    Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;

/// The kinds of resource an action can apply to; each is a Cedar entity type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// The service itself, for actions with no narrower resource (ListBuckets, CreateKey…).
    Service,
    Bucket,
    Object,
    Parameter,
    Key,
    Instance,
    Stack,
}

impl ResourceKind {
    fn entity_type(self) -> &'static str {
        match self {
            ResourceKind::Service => "Service",
            ResourceKind::Bucket => "Bucket",
            ResourceKind::Object => "Object",
            ResourceKind::Parameter => "Parameter",
            ResourceKind::Key => "Key",
            ResourceKind::Instance => "Instance",
            ResourceKind::Stack => "Stack",
        }
    }
}

/// An action as the authorizer needs to know it: its full name and its resource kind.
#[derive(Debug, Clone)]
pub struct ActionDecl {
    pub name: String,
    pub resource: ResourceKind,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The local operator on the control socket, known by its Unix uid.
    Operator { uid: u32 },
    /// A person (access mode, identity provider, user id), reached through `channel`. In Cedar
    /// the entity is `User::"<user id>"` with the attributes `access_mode`, `issuer` (empty
    /// unless federated), `home` (the `<mode>/<sha256>` id of their home folder), `mfa` and
    /// `channel`.
    User { user: model::UserRef, channel: Channel, mfa: bool, roles: Vec<String> },
    /// A built-in function, acting under its own role.
    Function { name: String },
    /// A sandbox instance with no user assigned.
    Instance { id: String, roles: Vec<String> },
}

/// The credential a user's call came with: what a policy may trust it for. A bearer token
/// taken off a portal or `identity:SignIn` must not reach what the stack's settings gate
/// (home-folder files), and a session's or instance's credential must not mint new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The sign-in itself: a local user's password (and code), a SAML response, an OIDC callback.
    SignIn,
    /// A sign-in's bearer token (`identity:SignIn`, the portal's or console's cookie, a SAML
    /// or OIDC sign-in's token) on the HTTP API: the user's own, on a device the platform
    /// knows nothing about.
    Bearer,
    /// A token an operator issued to an application for a user (`identity:CreateSessionToken`).
    IssuedToken,
    /// The credential of the instance serving the user's session, on its endpoint.
    Instance,
    /// A streaming session's cookie: the session page and its My Files, which apply the
    /// stack's file-transfer settings themselves.
    Session,
    /// A program inside a pixel session's instance known only by its link (the kiosk browser).
    Link,
    /// The token of a streaming URL being opened.
    StreamingUrl,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::SignIn => "sign-in",
            Channel::Bearer => "bearer",
            Channel::IssuedToken => "issued-token",
            Channel::Instance => "instance",
            Channel::Session => "session",
            Channel::Link => "link",
            Channel::StreamingUrl => "streaming-url",
        }
    }
}

/// What is acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Service(String),
    Bucket {
        name: String,
        home_folders: bool,
    },
    /// An object or a listing prefix; `home` is set when the key lies inside a home folder;
    /// `notifies` names the functions its bucket's notifications invoke (a function's role can
    /// then be limited to the buckets that call it).
    Object {
        bucket: String,
        bucket_home_folders: bool,
        key: String,
        home: Option<String>,
        notifies: Vec<String>,
    },
    Parameter {
        name: String,
    },
    /// A key, with its aliases (`alias/…`) so that a policy can name a key made at deploy time.
    Key {
        id: String,
        aliases: Vec<String>,
    },
    Instance {
        id: String,
    },
    /// A streaming stack, as streamed by `user` (AppStream's `appstream:userId` condition).
    Stack {
        name: String,
        user: String,
    },
}

/// The outcome of one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub reasons: Vec<String>,
    /// Evaluation errors; any of them makes the decision a deny.
    pub errors: Vec<String>,
}

/// A policy or schema problem, located in the named policy's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy `{policy}`: {message}")]
pub struct PolicyError {
    pub policy: String,
    pub message: String,
}

/// The loaded, validated policies and the schema they were validated against.
pub struct Authorizer {
    schema: Schema,
    policies: PolicySet,
    /// For each action, the policies whose scope admits it: no others can apply to a request
    /// for it (no action groups are declared, so `action in [...]` is a list to look in), and
    /// Cedar evaluates every policy it is given, scope first.
    by_action: HashMap<String, PolicySet>,
    cedar: CedarAuthorizer,
}

const NAMESPACE: &str = "DataSandbox";

impl Authorizer {
    /// Builds the schema from the actions and validates every policy against it (strict mode).
    pub fn load(policies: &[(String, String)], actions: &[ActionDecl]) -> Result<Authorizer, Vec<PolicyError>> {
        let schema_text = schema_text(actions);
        let (schema, _warnings) = Schema::from_cedarschema_str(&schema_text)
            .map_err(|err| vec![PolicyError { policy: "<schema>".into(), message: format!("internal schema is invalid: {err}") }])?;
        let mut set = PolicySet::new();
        let mut errors = Vec::new();
        for (name, text) in policies {
            match PolicySet::from_str(text) {
                Err(err) => errors.push(PolicyError { policy: name.clone(), message: describe(&err, text) }),
                Ok(parsed) => {
                    let count = parsed.policies().count();
                    if count == 0 {
                        errors.push(PolicyError { policy: name.clone(), message: "contains no policy".into() });
                    }
                    for (index, policy) in parsed.policies().enumerate() {
                        let id = if count == 1 { name.clone() } else { format!("{name}#{index}") };
                        let policy = policy.new_id(PolicyId::new(&id));
                        if let Err(err) = set.add(policy) {
                            errors.push(PolicyError { policy: name.clone(), message: err.to_string() });
                        }
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        for error in result.validation_errors() {
            let id = error.policy_id().to_string();
            let base = id.split('#').next().unwrap_or(&id).to_owned();
            let text = policies.iter().find(|(n, _)| *n == base).map(|(_, t)| t.as_str()).unwrap_or("");
            errors.push(PolicyError { policy: base, message: describe(error, text) });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Slicing by the listed actions holds only while no action is in a group (`action in
        // Group` would admit the group's members): with groups, Cedar is given every policy.
        let by_action = if schema.action_groups().next().is_none() {
            let sliced =
                actions.iter().map(|decl| Ok((decl.name.clone(), admitting(&set, &decl.name)?))).collect::<Result<_, PolicyError>>();
            sliced.map_err(|err| vec![err])?
        } else {
            HashMap::new()
        };
        Ok(Authorizer { schema, policies: set, by_action, cedar: CedarAuthorizer::new() })
    }

    /// Decides one request. Anything that goes wrong building it is a deny with the reason.
    pub fn authorize(&self, principal: &Principal, action: &str, resource: &Resource, source_ip: &str) -> Decision {
        match self.try_authorize(principal, action, resource, source_ip) {
            Ok(decision) => decision,
            Err(error) => Decision { allowed: false, reasons: Vec::new(), errors: vec![error] },
        }
    }

    fn try_authorize(&self, principal: &Principal, action: &str, resource: &Resource, source_ip: &str) -> Result<Decision, String> {
        let request_entities = RequestEntities::of(principal, resource)?;
        let action_uid = uid("Action", action)?;
        // Built as Cedar's own values, not parsed from JSON (which cost as much as the rest of
        // the decision), and not checked against the schema each time: their shapes are
        // fixed here, and a unit test checks them against the schema. No action groups are
        // declared, so no action entities are needed.
        let entities = Entities::from_entities(request_entities.entities, None).map_err(|e| e.to_string())?;
        let context = Context::from_pairs([("source_ip".to_owned(), RestrictedExpression::new_string(source_ip.to_owned()))])
            .map_err(|e| e.to_string())?;
        let request = Request::new(request_entities.principal, action_uid, request_entities.resource, context, Some(&self.schema))
            .map_err(|e| e.to_string())?;
        let policies = self.by_action.get(action).unwrap_or(&self.policies);
        let response = self.cedar.is_authorized(&request, policies, &entities);
        // Cedar gives both as sets: sorted, a record says the same for the same decision.
        let mut errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
        let mut reasons: Vec<String> = response.diagnostics().reason().map(|id| id.to_string()).collect();
        errors.sort();
        reasons.sort();
        Ok(Decision { allowed: response.decision() == cedar_policy::Decision::Allow && errors.is_empty(), reasons, errors })
    }
}

/// The policies of `set` whose action scope admits `action`.
fn admitting(set: &PolicySet, action: &str) -> Result<PolicySet, PolicyError> {
    let internal = |message: String| PolicyError { policy: "<slice>".into(), message };
    let action = uid("Action", action).map_err(internal)?;
    let mut admitting = PolicySet::new();
    for policy in set.policies() {
        let admits = match policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(only) => only == action,
            ActionConstraint::In(listed) => listed.contains(&action),
        };
        if admits {
            admitting.add(policy.clone()).map_err(|err| internal(err.to_string()))?;
        }
    }
    Ok(admitting)
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    // Cedar parses a type's name: the kinds the requests use are parsed once (a parse per uid
    // was a tenth of each decision); any other is parsed when asked for.
    static KINDS: std::sync::LazyLock<HashMap<&'static str, EntityTypeName>> = std::sync::LazyLock::new(|| {
        ["Action", "Bucket", "Function", "Instance", "Key", "Object", "Operator", "Parameter", "Role", "Service", "Stack", "User"]
            .into_iter()
            .filter_map(|kind| Some((kind, type_name(kind).ok()?)))
            .collect()
    });
    let kind = match KINDS.get(kind) {
        Some(known) => known.clone(),
        None => type_name(kind)?,
    };
    Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
}

fn type_name(kind: &str) -> Result<EntityTypeName, String> {
    EntityTypeName::from_str(&format!("{NAMESPACE}::{kind}")).map_err(|e| e.to_string())
}

/// A request's principal and resource, and the entities that describe them.
struct RequestEntities {
    principal: EntityUid,
    resource: EntityUid,
    entities: Vec<Entity>,
}

type Attrs = HashMap<String, RestrictedExpression>;

fn text(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_owned())
}

fn texts(values: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(values.iter().map(|value| text(value)))
}

impl RequestEntities {
    fn of(principal: &Principal, resource: &Resource) -> Result<RequestEntities, String> {
        let mut entities = Vec::new();
        let principal = principal_entity(principal, &mut entities)?;
        let resource = resource_entity(resource, &mut entities)?;
        // A principal that is its own resource (an instance acting on itself) gives the same
        // entity twice, which Cedar refuses: a deny, as it always was.
        Ok(RequestEntities { principal, resource, entities })
    }
}

fn entity(uid: &EntityUid, attrs: Attrs, parents: HashSet<EntityUid>) -> Result<Entity, String> {
    Entity::new(uid.clone(), attrs, parents).map_err(|e| e.to_string())
}

fn principal_entity(principal: &Principal, entities: &mut Vec<Entity>) -> Result<EntityUid, String> {
    let role_parents = |roles: &[String], entities: &mut Vec<Entity>| -> Result<HashSet<EntityUid>, String> {
        roles
            .iter()
            .map(|role| {
                let role = uid("Role", role)?;
                entities.push(Entity::new_no_attrs(role.clone(), HashSet::new()));
                Ok(role)
            })
            .collect()
    };
    let (uid, attrs, parents) = match principal {
        Principal::Operator { uid: id } => (uid("Operator", &id.to_string())?, Attrs::new(), HashSet::new()),
        Principal::User { user, channel, mfa, roles } => (
            uid("User", user.user().as_str())?,
            Attrs::from([
                ("access_mode".to_owned(), text(user.mode().as_str())),
                ("issuer".to_owned(), text(user.issuer_str().unwrap_or_default())),
                ("home".to_owned(), text(&user.home().id())),
                ("mfa".to_owned(), RestrictedExpression::new_bool(*mfa)),
                ("channel".to_owned(), text(channel.as_str())),
            ]),
            role_parents(roles, entities)?,
        ),
        Principal::Function { name } => (uid("Function", name)?, Attrs::new(), HashSet::new()),
        Principal::Instance { id, roles } => (uid("Instance", id)?, Attrs::new(), role_parents(roles, entities)?),
    };
    entities.push(entity(&uid, attrs, parents)?);
    Ok(uid)
}

fn resource_entity(resource: &Resource, entities: &mut Vec<Entity>) -> Result<EntityUid, String> {
    let (uid, attrs, parents) = match resource {
        Resource::Service(name) => (uid("Service", name)?, Attrs::new(), HashSet::new()),
        Resource::Bucket { name, home_folders } => (
            uid("Bucket", name)?,
            Attrs::from([("home_folders".to_owned(), RestrictedExpression::new_bool(*home_folders))]),
            HashSet::new(),
        ),
        Resource::Object { bucket, bucket_home_folders, key, home, notifies } => {
            let bucket_uid = uid("Bucket", bucket)?;
            let bucket_attrs = Attrs::from([("home_folders".to_owned(), RestrictedExpression::new_bool(*bucket_home_folders))]);
            entities.push(entity(&bucket_uid, bucket_attrs, HashSet::new())?);
            let mut attrs = Attrs::from([("key".to_owned(), text(key)), ("notifies".to_owned(), texts(notifies))]);
            if let Some(home) = home {
                attrs.insert("home".to_owned(), text(home));
            }
            (uid("Object", &format!("{bucket}/{key}"))?, attrs, HashSet::from([bucket_uid]))
        }
        Resource::Parameter { name } => (uid("Parameter", name)?, Attrs::from([("name".to_owned(), text(name))]), HashSet::new()),
        Resource::Key { id, aliases } => (uid("Key", id)?, Attrs::from([("aliases".to_owned(), texts(aliases))]), HashSet::new()),
        Resource::Instance { id } => (uid("Instance", id)?, Attrs::new(), HashSet::new()),
        Resource::Stack { name, user } => (
            uid("Stack", name)?,
            Attrs::from([("name".to_owned(), text(name)), ("user".to_owned(), RestrictedExpression::new_entity_uid(uid("User", user)?))]),
            HashSet::new(),
        ),
    };
    entities.push(entity(&uid, attrs, parents)?);
    Ok(uid)
}

/// The Cedar schema: fixed entity types plus one action per registered operation.
pub fn schema_text(actions: &[ActionDecl]) -> String {
    let mut text = String::from(
        "namespace DataSandbox {
  entity Role;
  entity Operator;
  entity User in [Role] { access_mode: String, issuer: String, home: String, mfa: Bool, channel: String };
  entity Function in [Role];
  entity Instance in [Role];
  entity Service;
  entity Bucket { home_folders: Bool };
  entity Object in [Bucket] { key: String, home?: String, notifies: Set<String> };
  entity Parameter { name: String };
  entity Key { aliases: Set<String> };
  entity Stack { name: String, user: User };
  type RequestContext = { source_ip: String };
",
    );
    for action in actions {
        let _ = writeln!(
            text,
            "  action \"{}\" appliesTo {{ principal: [Operator, User, Function, Instance], resource: [{}], context: RequestContext }};",
            action.name,
            action.resource.entity_type()
        );
    }
    text.push_str("}\n");
    text
}

/// Cedar's message plus the line and column of each labelled span in `text`.
fn describe(diagnostic: &(dyn Diagnostic + 'static), text: &str) -> String {
    let mut message = diagnostic.to_string();
    // Cedar's top-level error often wraps the specific ones; their messages say what is wrong.
    let related: Vec<String> = diagnostic.related().into_iter().flatten().map(|d| d.to_string()).collect();
    if !related.is_empty() {
        message = related.join("; ");
    }
    if let Some(help) = diagnostic.help() {
        let _ = write!(message, " ({help})");
    }
    let positions: HashSet<(usize, usize)> = diagnostic
        .labels()
        .into_iter()
        .flatten()
        .chain(diagnostic.related().into_iter().flatten().flat_map(|d| d.labels().into_iter().flatten()))
        .map(|label| line_column(text, label.offset()))
        .collect();
    let mut positions: Vec<_> = positions.into_iter().collect();
    positions.sort_unstable();
    if let Some((line, column)) = positions.first() {
        let _ = write!(message, " at line {line}, column {column}");
    }
    message
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
