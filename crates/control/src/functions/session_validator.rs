//! The session validator: the seed's Lambda, with every gap of the original closed.
//!
//! Triggered by `ObjectCreated` for `session.json` on the home-folder bucket, it runs under its
//! own role (policy `function-session-validator`) and accepts only if all hold:
//! - the key is `user/<mode>/<sha256>/session.json` for the claimed mode;
//! - the session, found by its id among that user's sessions of that stack and fleet (never
//!   "the first one"), is the one whose user owns that folder (mode, identity provider and
//!   user id: the folder's hash covers the provider for a federated user), is ACTIVE and
//!   before its maximum expiration;
//! - the object was written by the instance serving that session, from its address.
//!
//! The user's notebook is named for the whole identity (`UserRef::notebook_name`) and owned by
//! it, so that a local `bob`, a custom `bob` and each provider's `bob` have notebooks of their
//! own. The answer goes beside the object — its folder comes from the key, never from the JSON:
//! `session_url.txt` with a single-use notebook URL bound to the session, or
//! `session_error.json` with a typed reason (also on the record). A bad file is a rejection,
//! never a crash, and a redelivered event gets the same answer.

use model::session_file::{ERROR_FILE, MAX_SESSION_FILE, RejectReason, SESSION_FILE, SessionError, SessionFile, URL_FILE};
use serde_json::{Value, json};

use crate::core::actions::BuiltinFunction;
use crate::core::codec::{decode_base64, encode_base64};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::{Pipeline, Request};
use crate::core::platform::ServiceEvent;

/// How often, 200 ms apart, a session still PENDING is asked about before it is refused.
const PENDING_ASKS: u32 = 25;

struct Validator<'a> {
    control: &'a Pipeline,
    correlation_id: Option<String>,
}

impl Validator<'_> {
    async fn call(&self, action: &str, input: Value) -> Result<Value, ActionError> {
        self.control
            .call(Request::from_function(BuiltinFunction::SessionValidator.name(), self.correlation_id.clone(), action, &input))
            .await
            .result
    }
}

/// `user/<mode>/<sha256>/` of a key `…/session.json`, if the key has that shape.
fn home_folder_of(key: &str) -> Option<(&str, &str, &str)> {
    let folder = key.strip_suffix(SESSION_FILE)?;
    let mut parts = folder.strip_prefix("user/")?.strip_suffix('/')?.split('/');
    let (mode, hash) = (parts.next()?, parts.next()?);
    let hex = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (parts.next().is_none() && hex && model::AccessMode::parse(mode).is_some()).then_some((folder, mode, hash))
}

pub(super) async fn run(control: &Pipeline, event: &Value) -> Result<(), ActionError> {
    let bucket = event["s3"]["bucket"]["name"].as_str().unwrap_or_default();
    let key = event["s3"]["object"]["key"].as_str().unwrap_or_default();
    if !event["eventName"].as_str().is_some_and(|e| e.starts_with("ObjectCreated")) || !key.ends_with(SESSION_FILE) {
        return Ok(());
    }
    let validator = Validator { control, correlation_id: event["correlationId"].as_str().map(str::to_owned) };
    // Without a home-folder key there is nowhere to answer: the record is the answer.
    let Some((folder, mode, _)) = home_folder_of(key) else {
        record(&validator, bucket, key, None, Some(RejectReason::NotOwnFolder)).await;
        return Ok(());
    };
    let outcome = judge(&validator, event, bucket, key, folder, mode).await;
    match outcome {
        Ok(Judged::Accepted { session_id, url }) => {
            let body = encode_base64(format!("{url}\n").as_bytes());
            validator
                .call(
                    "storage:PutObject",
                    json!({ "Bucket": bucket, "Key": format!("{folder}{URL_FILE}"), "Body": body, "ContentType": "text/plain" }),
                )
                .await?;
            record(&validator, bucket, key, Some(&session_id), None).await;
            Ok(())
        }
        Ok(Judged::Rejected(reason)) => {
            let answer = SessionError { error: reason, message: reason.message().to_owned() };
            let body = encode_base64(&serde_json::to_vec(&answer).map_err(ActionError::internal)?);
            let put = json!({ "Bucket": bucket, "Key": format!("{folder}{ERROR_FILE}"), "Body": body, "ContentType": "application/json" });
            validator.call("storage:PutObject", put).await?;
            record(&validator, bucket, key, None, Some(reason)).await;
            Ok(())
        }
        // The platform failed (not the file): the dispatcher retries.
        Err(err) => Err(err),
    }
}

enum Judged {
    Accepted { session_id: String, url: String },
    Rejected(RejectReason),
}

async fn judge(validator: &Validator<'_>, event: &Value, bucket: &str, key: &str, folder: &str, mode: &str) -> Result<Judged, ActionError> {
    use Judged::Rejected;
    let object = match validator.call("storage:GetObject", json!({ "Bucket": bucket, "Key": key })).await {
        Ok(object) => object,
        // Gone already (deleted, or replaced and notified again): nothing to answer.
        Err(err) if err.code == ErrorCode::NoSuchKey => return Ok(Rejected(RejectReason::MalformedSessionFile)),
        Err(err) => return Err(err),
    };
    let body = decode_base64("Body", object["Body"].as_str().unwrap_or_default()).unwrap_or_default();
    if body.len() > MAX_SESSION_FILE {
        return Ok(Rejected(RejectReason::MalformedSessionFile));
    }
    let Ok(claim) = serde_json::from_slice::<SessionFile>(&body) else { return Ok(Rejected(RejectReason::MalformedSessionFile)) };
    // The folder must be in the claimed mode (and, once the session is found, its user's own).
    if claim.access_mode != mode {
        return Ok(Rejected(RejectReason::NotOwnFolder));
    }
    let authentication = match mode {
        "custom" => "API",
        "federated" => "SAML",
        _ => "USERPOOL",
    };
    // The one session by id, in whatever state it is: an ended session is told apart from
    // one that never was.
    let input = json!({
        "StackName": claim.stack_name, "FleetName": claim.fleet_name, "UserId": claim.user_name,
        "AuthenticationType": authentication, "SessionId": claim.session_id,
    });
    let Some(session) = settled_session(validator, input).await? else { return Ok(Rejected(RejectReason::UnknownSession)) };
    // Whose the session is: mode, identity provider and id, and the folder is theirs.
    let owner = model::UserRef::from_parts(
        crate::streaming::sessions::access_mode(session["AuthenticationType"].as_str().unwrap_or_default()),
        session["Issuer"].as_str(),
        session["UserId"].as_str().unwrap_or_default(),
    );
    let Ok(owner) = owner else { return Ok(Rejected(RejectReason::UnknownSession)) };
    if owner.home().prefix() != folder {
        return Ok(Rejected(RejectReason::NotOwnFolder));
    }
    if session["State"] == "EXPIRED" {
        return Ok(Rejected(RejectReason::SessionExpired));
    }
    if session["State"] != "ACTIVE" {
        return Ok(Rejected(RejectReason::SessionNotActive));
    }
    let expires = session["MaxExpirationTime"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    if expires.is_none_or(|t| t.timestamp_millis() <= crate::core::store::now_millis()) {
        return Ok(Rejected(RejectReason::SessionExpired));
    }
    // The writer: the instance serving this session, from its own address.
    let instance = session["InstanceId"].as_str().unwrap_or_default();
    let writer = event["userIdentity"]["principalId"].as_str().unwrap_or_default();
    let source = event["requestParameters"]["sourceIPAddress"].as_str().unwrap_or_default();
    let address = session["NetworkAccessConfiguration"]["EniPrivateIpAddress"].as_str().unwrap_or_default();
    if instance.is_empty() || !writer.ends_with(&format!(":instance/{instance}")) || source != address {
        return Ok(Rejected(RejectReason::WrittenByAnotherInstance));
    }
    let remaining = expires.map_or(1800, |t| (t.timestamp_millis() - crate::core::store::now_millis()) / 1000);
    match notebook_url(validator, &owner, &claim.session_id, remaining).await {
        Ok(url) => Ok(Judged::Accepted { session_id: claim.session_id, url }),
        Err(err) => {
            tracing::error!(session = claim.session_id, error = %err, "no notebook for the session");
            Ok(Rejected(RejectReason::NotebookUnavailable))
        }
    }
}

/// The session `input` describes, once it is no longer PENDING (or after `PENDING_ASKS`
/// asks); `None` if there is no such session. A session is handed its instance before it is
/// marked ACTIVE, so the instance's launcher may write before that.
async fn settled_session(validator: &Validator<'_>, input: Value) -> Result<Option<Value>, ActionError> {
    let mut asked = 0;
    loop {
        let session = match validator.call("streaming:DescribeSessions", input.clone()).await {
            Ok(page) => match page["Sessions"].as_array().and_then(|all| all.first()) {
                Some(found) => found.clone(),
                None => return Ok(None),
            },
            Err(err) if err.status == 400 || err.status == 404 => return Ok(None),
            Err(err) => return Err(err),
        };
        asked += 1;
        if session["State"] != "PENDING" || asked >= PENDING_ASKS {
            return Ok(Some(session));
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The user's notebook, made and started on first use, and a URL to it for this session.
async fn notebook_url(
    validator: &Validator<'_>,
    user: &model::UserRef,
    session_id: &str,
    remaining_seconds: i64,
) -> Result<String, ActionError> {
    let name = user.notebook_name();
    let presign = || async {
        let input = json!({
            "NotebookInstanceName": name,
            "SessionExpirationDurationInSeconds": remaining_seconds.clamp(1800, 43_200),
            "StreamingSessionId": session_id,
        });
        let presigned = validator.call("notebooks:CreatePresignedNotebookInstanceUrl", input).await?;
        Ok::<_, ActionError>(presigned["AuthorizedUrl"].as_str().unwrap_or_default().to_owned())
    };
    // Usually the notebook is running already: one call, one record.
    match presign().await {
        Ok(url) => return Ok(url),
        Err(err) if err.status == 400 || err.status == 404 => {}
        Err(err) => return Err(err),
    }
    let plane = &validator.control.platform;
    let described = validator.call("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": name })).await;
    let ready = described.as_ref().is_ok_and(|n| n["NotebookInstanceStatus"] == "InService");
    match described {
        Err(err) if err.status == 404 => {
            let spec = plane.current();
            // The spec's notebook without an owner is the template of the per-user notebooks.
            let template = spec.notebooks.iter().find(|n| n.owner.is_none());
            let instance_type = template.map_or_else(|| spec.instance_type.clone(), |n| n.instance_type.clone());
            let volume = template.map_or(20, |n| n.volume_size_gb);
            let input = json!({
                "NotebookInstanceName": name, "InstanceType": instance_type, "VolumeSizeInGB": volume,
                "Owner": user.user(), "OwnerAccessMode": user.mode(), "OwnerIssuer": user.issuer_str(),
            });
            validator.call("notebooks:CreateNotebookInstance", input).await?;
        }
        Err(err) => return Err(err),
        Ok(notebook) if notebook["NotebookInstanceStatus"] == "Stopped" || notebook["NotebookInstanceStatus"] == "Failed" => {
            validator.call("notebooks:StartNotebookInstance", json!({ "NotebookInstanceName": name })).await?;
        }
        Ok(_) => {}
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    // Made or started just now: wait until Jupyter answers.
    if !ready {
        loop {
            let notebook = validator.call("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": name })).await?;
            match notebook["NotebookInstanceStatus"].as_str() {
                Some("InService") => break,
                Some("Failed") => {
                    return Err(ActionError::new(
                        503,
                        ErrorCode::ServiceUnavailable,
                        format!("notebook `{name}` failed: {}", notebook["FailureReason"]),
                    ));
                }
                _ if tokio::time::Instant::now() > deadline => {
                    return Err(ActionError::new(503, ErrorCode::ServiceUnavailable, format!("notebook `{name}` did not start in 90 s")));
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }
    presign().await
}

/// The validator's verdict on the record, with the reason when it rejected.
async fn record(validator: &Validator<'_>, bucket: &str, key: &str, session: Option<&str>, reason: Option<RejectReason>) {
    let error = reason.map(|r| ActionError::new(403, ErrorCode::SessionRejected, format!("{}: {}", r.code(), r.message())));
    let event = ServiceEvent {
        source: "functions",
        name: if reason.is_some() { "SessionRejected" } else { "SessionValidated" },
        principal: "session-validator.datasandbox",
        parameters: json!({ "Bucket": bucket, "Key": key, "SessionId": session, "Reason": reason.map(RejectReason::code) }),
        error: error.as_ref(),
        correlation_id: validator.correlation_id.clone(),
        // A verdict already acted on through the pipeline.
        effect: crate::core::platform::Effect::Recorded,
        ..ServiceEvent::default()
    };
    let _ = validator.control.record_service_event(event).await;
}
