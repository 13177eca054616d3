//! The action pipeline: authenticate → authorize → execute → audit, for every call.
//!
//! The pipeline knows no service. What authenticates a caller and what carries out an action
//! are given to it as the traits [`Authenticate`] and [`Dispatch`], implemented above (by
//! `identity` and by the composition root) and connected once at start.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use audit::{Record, RecordResource};
use bytes::Bytes;
use futures::future::BoxFuture;
use model::arn;
use model::spec::Spec;
use policy::Resource;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::core::actions::{self, Action, ActionSpec};
use crate::core::caller::{Caller, Credentials, console_access, unproved_identity};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::{Platform, ServiceEvent};
use crate::core::redaction::{bound_error, hide_members, nul_refusal, parse_body, redact, summarize};
use crate::core::store::{millis_to_rfc3339, now_millis};

/// Turns the credentials a transport presents into a caller (`identity` implements it).
pub(crate) trait Authenticate: Send + Sync {
    /// Who `credentials` are, for a call of `action` (an ended session's cookie is good for
    /// its own status and nothing else).
    fn authenticate<'a>(&'a self, credentials: &'a Credentials, action: &'a str) -> BoxFuture<'a, Result<Caller, ActionError>>;

    /// Who credentials that failed to authenticate are recorded as: what they claimed, if
    /// anything (never a secret).
    fn claimed_identity(&self, credentials: &Credentials) -> audit::UserIdentity;
}

/// Carries out an authenticated call of one registered action (the composition root
/// implements it with one exhaustive `match`).
pub(crate) trait Dispatch: Send + Sync {
    fn dispatch<'a>(&'a self, ctx: &'a mut Ctx<'_>, action: Action, input: Value) -> BoxFuture<'a, Result<Value, ActionError>>;
}

/// One call as a transport hands it over.
pub struct Request {
    pub credentials: Credentials,
    pub source_ip: String,
    pub user_agent: String,
    pub action: String,
    /// The raw JSON body, or the error the transport met reading it (too large, cut off).
    pub body: Result<Bytes, ActionError>,
}

impl Request {
    /// A call a built-in function makes, under its own role, carrying the correlation id of
    /// what triggered it.
    pub(crate) fn from_function(function: &str, correlation_id: Option<String>, action: &str, input: &Value) -> Request {
        Request {
            credentials: Credentials::Function { name: function.to_owned(), correlation_id },
            source_ip: "functions.datasandbox".into(),
            user_agent: format!("datasandbox-function/{function}"),
            action: action.to_owned(),
            body: Ok(Bytes::from(input.to_string())),
        }
    }
}

/// The answer: the request id (also in the audit record) and the result.
pub struct Response {
    pub request_id: String,
    pub result: Result<Value, ActionError>,
}

/// The pipeline, cheap to clone: what services hold to act through it themselves (a
/// function's calls, a deploy's steps), so that those effects are authorized and audited
/// like any other.
#[derive(Clone)]
pub(crate) struct Pipeline {
    pub platform: Arc<Platform>,
    parts: Arc<OnceLock<Parts>>,
}

struct Parts {
    authenticate: Arc<dyn Authenticate>,
    dispatch: Arc<dyn Dispatch>,
}

/// What running a call produced, before it is recorded.
struct Outcome {
    caller: Option<Caller>,
    result: Result<Value, ActionError>,
    resources: Vec<RecordResource>,
    correlation_id: Option<String>,
    input: Value,
}

impl Pipeline {
    /// A pipeline not yet able to run calls: [`Pipeline::connect`] gives it its authenticator
    /// and dispatcher once the services that implement them are built (they hold the pipeline).
    pub(crate) fn new(platform: Arc<Platform>) -> Pipeline {
        Pipeline { platform, parts: Arc::new(OnceLock::new()) }
    }

    pub(crate) fn connect(&self, authenticate: Arc<dyn Authenticate>, dispatch: Arc<dyn Dispatch>) {
        if self.parts.set(Parts { authenticate, dispatch }).is_err() {
            tracing::error!("the pipeline was connected twice; the first connection stays");
        }
    }

    /// See [`Platform::record_service_event`].
    pub(crate) async fn record_service_event(&self, event: ServiceEvent<'_>) -> Result<(), ActionError> {
        self.platform.record_service_event(event).await
    }

    /// Runs one call through the pipeline. The audit record is durable before this returns.
    /// The call runs to its end even if its caller goes away (a client that disconnects): what
    /// it did is recorded all the same, never cut off between its effect and its record.
    pub(crate) async fn call(&self, request: Request) -> Response {
        let pipeline = self.clone();
        match tokio::spawn(async move { pipeline.complete(request).await }).await {
            Ok(response) => response,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => Response {
                request_id: String::new(),
                result: Err(ActionError::new(503, ErrorCode::ServiceUnavailable, "the server is stopping; retry shortly")),
            },
        }
    }

    async fn complete(&self, request: Request) -> Response {
        let started = Instant::now();
        let request_id = audit::new_request_id();
        let spec = actions::find(&request.action);
        let outcome = self.run(&request, spec, &request_id).await;
        // The reply and the record carry the same, bounded, message.
        let result = outcome.result.map_err(bound_error);
        let identity = match (outcome.caller, self.parts.get()) {
            (Some(caller), _) => caller.identity,
            (None, Some(parts)) => parts.authenticate.claimed_identity(&request.credentials),
            (None, None) => unproved_identity(&self.platform.spec.account_id, "Anonymous", "anonymous".into(), None),
        };
        let record = record(
            &self.platform.spec,
            &request,
            spec,
            identity,
            &request_id,
            outcome.input,
            &result,
            outcome.resources,
            outcome.correlation_id,
        );
        let result = match self.platform.trail.append(&record).await {
            Ok(()) => result,
            Err(err) => {
                tracing::error!(request_id, error = %err, "audit record not written");
                Err(ActionError::trail_unwritable())
            }
        };
        let label = spec.map_or("unknown", |s| s.name);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.code == ErrorCode::AccessDeniedException => "denied",
            Err(e) if e.is_client_error() => "client_error",
            Err(_) => "server_error",
        };
        self.platform.metrics.observe(label, outcome, started.elapsed().as_secs_f64());
        Response { request_id, result }
    }

    /// Authenticates and carries out a call; what it did is recorded by the caller.
    async fn run(&self, request: &Request, spec: Option<&'static ActionSpec>, request_id: &str) -> Outcome {
        let Some(parts) = self.parts.get() else {
            let result = Err(ActionError::internal("a call reached the pipeline before it was connected"));
            return Outcome { caller: None, result, resources: Vec::new(), correlation_id: None, input: Value::Null };
        };
        let caller = match parts.authenticate.authenticate(&request.credentials, &request.action).await {
            Err(err) => return Outcome { caller: None, result: Err(err), resources: Vec::new(), correlation_id: None, input: Value::Null },
            Ok(caller) => caller,
        };
        let input = parse_body(&request.body);
        let mut ctx = Ctx {
            platform: &self.platform,
            pipeline: self,
            caller: &caller,
            spec,
            source_ip: &request.source_ip,
            request_id: request_id.to_owned(),
            authorized: false,
            resources: Vec::new(),
            correlation_id: caller.correlation_id.clone(),
            recorded_input: None,
            dataset_mount: matches!(request.credentials, Credentials::DatasetMount { .. }),
        };
        let console = console_access(&request.credentials, &caller);
        let result = match (&input, spec) {
            _ if let Err(refused) = &console => Err(refused.clone()),
            // On the trail's reserve nothing is carried out; the refusal is what is recorded.
            _ if self.platform.trail.on_reserve() => Err(ActionError::trail_on_reserve()),
            (_, None) => Err(unknown_action(&request.action)),
            (Err(err), _) => Err(err.clone()),
            (Ok(input), _) if let Some(refused) = nul_refusal(input) => Err(refused),
            (Ok(input), Some(spec)) => {
                let result = parts.dispatch.dispatch(&mut ctx, spec.action, input.clone()).await;
                // Fail closed: a handler that forgot to authorize must not succeed.
                if result.is_ok() && !ctx.authorized {
                    Err(ActionError::internal(format_args!("{} returned without authorizing", spec.name)))
                } else {
                    result
                }
            }
        };
        let (correlation_id, resources) = (ctx.correlation_id, ctx.resources);
        // An input the handler parsed by type is recorded as it serializes (secrets hidden
        // by type); any other, as sent with the members named secret hidden.
        let input = match ctx.recorded_input {
            Some(typed) => typed,
            None => input.map(hide_members).unwrap_or(Value::Null),
        };
        Outcome { caller: Some(caller), result, resources, correlation_id, input }
    }
}

#[allow(clippy::too_many_arguments, reason = "one record gathers everything the pipeline learned")]
fn record(
    platform_spec: &Spec,
    request: &Request,
    spec: Option<&ActionSpec>,
    identity: audit::UserIdentity,
    request_id: &str,
    input: Value,
    result: &Result<Value, ActionError>,
    resources: Vec<RecordResource>,
    correlation_id: Option<String>,
) -> Record {
    let (event_source, event_name) = match request.action.split_once(':') {
        Some((service, action)) if spec.is_some() => (service.to_owned(), action.to_owned()),
        _ => ("unknown".to_owned(), request.action.chars().filter(|c| !c.is_control()).take(128).collect()),
    };
    let read_only = spec.is_some_and(|s| s.read_only);
    let response_elements = match result {
        Ok(value) if !read_only => redact(value.clone()),
        _ => Value::Null,
    };
    Record {
        sequence_number: None,
        previous_record_hash: None,
        event_version: audit::EVENT_VERSION.into(),
        user_identity: identity,
        event_time: millis_to_rfc3339(now_millis()),
        event_source,
        event_name,
        aws_region: platform_spec.region.clone(),
        source_ip_address: request.source_ip.clone(),
        user_agent: request.user_agent.chars().take(256).collect(),
        error_code: result.as_ref().err().map(|e| e.code.as_str().to_owned()),
        error_message: result.as_ref().err().map(|e| e.message.clone()),
        request_parameters: summarize(input),
        response_elements,
        request_id: request_id.to_owned(),
        event_id: uuid::Uuid::new_v4().to_string(),
        read_only,
        resources,
        event_type: if matches!(request.credentials, Credentials::Function { .. }) {
            "AwsServiceEvent".into()
        } else {
            "AwsApiCall".into()
        },
        management_event: spec.is_none_or(|s| s.management_event),
        recipient_account_id: platform_spec.account_id.clone(),
        correlation_id,
    }
}

fn unknown_action(name: &str) -> ActionError {
    let shown: String = name.chars().filter(|c| !c.is_control()).take(80).collect();
    match model::ActionName::parse(name) {
        Err(err) => ActionError::unknown_operation(err.to_string()),
        Ok(parsed) => {
            let same_service: Vec<&str> =
                actions::ACTIONS.iter().filter_map(|a| a.name.strip_prefix(parsed.service()).and_then(|r| r.strip_prefix(':'))).collect();
            if same_service.is_empty() {
                ActionError::unknown_operation(format!(
                    "action `{shown}` does not exist; service `{}` has no actions yet",
                    parsed.service()
                ))
            } else {
                ActionError::unknown_operation(format!(
                    "action `{shown}` does not exist; `{}` has {}",
                    parsed.service(),
                    same_service.join(", ")
                ))
            }
        }
    }
}

/// What a handler sees of its call.
pub(crate) struct Ctx<'a> {
    pub platform: &'a Arc<Platform>,
    pipeline: &'a Pipeline,
    pub caller: &'a Caller,
    spec: Option<&'static ActionSpec>,
    pub source_ip: &'a str,
    pub request_id: String,
    authorized: bool,
    resources: Vec<RecordResource>,
    correlation_id: Option<String>,
    /// The input as its record shows it, when the handler parsed it by type.
    recorded_input: Option<Value>,
    /// The call comes from an instance's dataset mount (the control plane itself).
    pub dataset_mount: bool,
}

impl Ctx<'_> {
    /// Parses the input into the action's typed request; failures are ValidationExceptions.
    pub fn parse<T: DeserializeOwned>(&self, input: Value) -> Result<T, ActionError> {
        serde_json::from_value(input).map_err(|err| ActionError::validation(format!("invalid request: {err}")))
    }

    /// Parses like [`Ctx::parse`], and records the input as the parsed value serializes:
    /// its [`Redacted`](crate::core::recorded::Redacted) fields are hidden whatever they are named.
    pub fn parse_recorded<T: DeserializeOwned + serde::Serialize>(&mut self, input: Value) -> Result<T, ActionError> {
        let parsed: T = self.parse(input)?;
        self.recorded_input = Some(serde_json::to_value(&parsed).map_err(ActionError::internal)?);
        Ok(parsed)
    }

    /// Adds to the input as its record shows it (parsed with [`Ctx::parse_recorded`]) what
    /// the handler found it stands for: the request and file a download link opens.
    pub fn record_found(&mut self, member: &str, value: Value) {
        if let Some(Value::Object(recorded)) = &mut self.recorded_input {
            recorded.insert(member.to_owned(), value);
        }
    }

    /// Authorizes this action on `resource`. Every handler calls this before any effect.
    pub fn authorize(&mut self, resource: Resource) -> Result<(), ActionError> {
        let name = self.spec.map_or("unknown", |s| s.name);
        self.check(name, resource)?;
        self.authorized = true;
        Ok(())
    }

    /// Authorizes a further action the call implies (reading a copy source, decrypting a
    /// SecureString); it does not replace [`Ctx::authorize`].
    pub fn authorize_also(&mut self, action: &str, resource: Resource) -> Result<(), ActionError> {
        self.check(action, resource)
    }

    /// Whether the policies would permit `action` on `resource`, deciding nothing and
    /// recording nothing (a catalog asks this of every stack).
    pub fn permitted(&self, action: &str, resource: &Resource) -> bool {
        let authorizer = self.platform.authorizer.read().expect("authorizer lock").clone();
        authorizer.authorize(&self.caller.principal, action, resource, self.source_ip).allowed
    }

    /// For actions every authenticated caller may take, such as asking who they are.
    pub fn authorize_always(&mut self) {
        self.authorized = true;
    }

    fn check(&mut self, action: &str, resource: Resource) -> Result<(), ActionError> {
        let (arn, kind) = resource_arn(&self.platform.spec, &resource);
        if let Some(arn) = &arn
            && !self.resources.iter().any(|r| &r.arn == arn)
        {
            self.resources.push(RecordResource { arn: arn.clone(), account_id: self.platform.spec.account_id.clone(), kind: kind.into() });
        }
        let authorizer = self.platform.authorizer.read().expect("authorizer lock").clone();
        let decision = authorizer.authorize(&self.caller.principal, action, &resource, self.source_ip);
        tracing::debug!(action, allowed = decision.allowed, reasons = ?decision.reasons, errors = ?decision.errors, "authorization");
        if decision.allowed {
            return Ok(());
        }
        let who = self.caller.identity.user_name.as_deref().unwrap_or(&self.caller.identity.principal_id);
        let on = arn.map(|a| format!(" on `{a}`")).unwrap_or_default();
        Err(ActionError::access_denied(format!("`{who}` is not allowed to perform `{action}`{on}")))
    }

    pub fn set_correlation_id(&mut self, id: String) {
        self.correlation_id = Some(id);
    }

    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The pipeline, for handlers that act through it themselves (as a built-in function, so
    /// that their effects are authorized and audited like any other).
    pub fn control(&self) -> Pipeline {
        self.pipeline.clone()
    }

    /// The writer recorded with objects: the caller's ARN.
    pub fn principal_arn(&self) -> &str {
        &self.caller.identity.arn
    }
}

/// The ARN a resource is recorded under, and its CloudFormation-style type.
fn resource_arn(spec: &Spec, resource: &Resource) -> (Option<String>, &'static str) {
    let (region, account) = (&spec.region, &spec.account_id);
    match resource {
        Resource::Service(_) => (None, ""),
        Resource::Bucket { name, .. } => (Some(arn::global("storage", name)), "DataSandbox::Storage::Bucket"),
        Resource::Object { bucket, key, .. } => (Some(arn::global("storage", &format!("{bucket}/{key}"))), "DataSandbox::Storage::Object"),
        Resource::Parameter { name } => (
            Some(arn::regional("parameters", region, account, &format!("parameter/{}", name.trim_start_matches('/')))),
            "DataSandbox::Parameters::Parameter",
        ),
        Resource::Key { id, .. } => (Some(arn::regional("keys", region, account, &format!("key/{id}"))), "DataSandbox::Keys::Key"),
        Resource::Instance { id } => {
            (Some(arn::regional("streaming", region, account, &format!("instance/{id}"))), "DataSandbox::Streaming::Instance")
        }
        Resource::Stack { name, .. } => {
            (Some(arn::regional("streaming", region, account, &format!("stack/{name}"))), "DataSandbox::Streaming::Stack")
        }
    }
}
