//! Fail closed: what the policies do not permit is denied before it has any effect, an action
//! that does not exist is refused, a caller who cannot be authenticated is refused, and every
//! one of these is recorded.

use control::Credentials;
use control::ErrorCode;
use serde_json::json;

use crate::support::{Plane, refused};

/// A user with a token the operator issued (the default policies let users reach only their
/// home folder) is denied a parameter write; the denial is recorded as theirs and nothing
/// was written.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_the_policies_do_not_permit_is_denied_and_recorded() {
    let plane = Plane::start().await;
    let issued = plane.operator_ok("identity:CreateSessionToken", &json!({ "UserId": "mallory" })).await;
    let token = issued["Token"].as_str().expect("token").to_owned();
    let input = json!({ "Name": "/app/flag", "Value": "v", "Type": "String" });
    let denied = plane.call_raw(Credentials::Bearer(token), "parameters:PutParameter", input.to_string().as_bytes()).await;
    let error = refused(&denied);
    assert_eq!((error.code, error.status), (ErrorCode::AccessDeniedException, 403), "{error}");
    let record = plane.record(&denied.request_id);
    assert_eq!(record["errorCode"], "AccessDeniedException");
    assert_eq!(record["errorMessage"], error.message.as_str());
    assert_eq!(record["userIdentity"]["userName"], "mallory", "{record}");
    assert_eq!(record["eventName"], "PutParameter");
    let after = plane.operator("parameters:GetParameter", &json!({ "Name": "/app/flag" })).await;
    assert_eq!(refused(&after).code, ErrorCode::ParameterNotFound, "the denied write happened");
    plane.stop().await;
}

/// A built-in function acting outside its own policy is denied (its policy names the objects
/// it may read and write, not keys), recorded as a service event, and creates nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_function_outside_its_policy_is_denied_and_recorded() {
    let plane = Plane::start().await;
    let keys_before = plane.operator_ok("keys:ListKeys", &json!({})).await;
    let function = Credentials::Function { name: "sha256-sidecar".into(), correlation_id: None };
    let denied = plane.call_raw(function, "keys:CreateKey", br#"{"Description":"not mine to make"}"#).await;
    assert_eq!(refused(&denied).code, ErrorCode::AccessDeniedException);
    let record = plane.record(&denied.request_id);
    assert_eq!(record["errorCode"], "AccessDeniedException");
    assert_eq!(record["eventType"], "AwsServiceEvent");
    let keys_after = plane.operator_ok("keys:ListKeys", &json!({})).await;
    assert_eq!(keys_after["Keys"], keys_before["Keys"], "the denied key exists");
    plane.stop().await;
}

/// An action that does not exist is refused, not routed anywhere, and recorded under
/// `unknown` with the name that was asked for; a name that is not `service:Action` is too.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_action_is_refused_and_recorded() {
    let plane = Plane::start().await;
    let asked = plane.operator("parameters:StealEverything", &json!({})).await;
    let error = refused(&asked);
    assert_eq!((error.code, error.status), (ErrorCode::UnknownOperationException, 400), "{error}");
    assert!(error.message.contains("PutParameter"), "the refusal names the service's actions: {error}");
    let record = plane.record(&asked.request_id);
    assert_eq!(record["eventSource"], "unknown");
    assert_eq!(record["eventName"], "parameters:StealEverything");
    assert_eq!(record["errorCode"], "UnknownOperationException");
    assert!(control::ACTIONS.iter().all(|a| a.name != "parameters:StealEverything"));

    let malformed = plane.operator("no-colon-here", &json!({})).await;
    assert_eq!(refused(&malformed).code, ErrorCode::UnknownOperationException);
    assert_eq!(plane.record(&malformed.request_id)["errorCode"], "UnknownOperationException");
    plane.stop().await;
}

/// Callers that cannot be authenticated (no credentials, another user on the control socket, a
/// forged token) are refused before anything runs, and recorded as anonymous.
#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_caller_is_refused_and_recorded() {
    let plane = Plane::start().await;
    let stranger = if plane.operator_uid == 4242 { 4243 } else { 4242 };
    let callers = [Credentials::Anonymous, Credentials::Peer { uid: stranger }, Credentials::Bearer("forged-token".into())];
    for credentials in callers {
        let shown = format!("{credentials:?}");
        let input = json!({ "Name": "/app/flag", "Value": "v", "Type": "String" });
        let response = plane.call_raw(credentials, "parameters:PutParameter", input.to_string().as_bytes()).await;
        let error = refused(&response);
        assert_eq!((error.code, error.status), (ErrorCode::UnrecognizedClientException, 401), "{shown}: {error}");
        let record = plane.record(&response.request_id);
        assert_eq!(record["errorCode"], "UnrecognizedClientException", "{shown}");
        assert_eq!(record["userIdentity"]["type"], "Anonymous", "{shown}: {record}");
        assert!(record["requestParameters"].is_null(), "{shown}: an unauthenticated input is recorded: {record}");
    }
    let after = plane.operator("parameters:GetParameter", &json!({ "Name": "/app/flag" })).await;
    assert_eq!(refused(&after).code, ErrorCode::ParameterNotFound);
    plane.stop().await;
}
