//! Secrets and data never reach a record: members named secret are hidden whatever the call's
//! outcome, and inputs parsed by type are recorded as their types serialize.

use control::ErrorCode;
use serde_json::json;

use crate::support::{HIDDEN, Plane, refused};

/// A parameter's value is recorded hidden, succeeded or refused, and appears nowhere in the
/// trail, neither in the open file nor in the files sealed at shutdown.
#[tokio::test(flavor = "multi_thread")]
async fn a_parameter_value_never_reaches_the_record() {
    let plane = Plane::start().await;
    let secret = "correct-horse-7f3a9c-parameter-value";
    let put =
        plane.operator("parameters:PutParameter", &json!({ "Name": "/app/db-password", "Value": secret, "Type": "SecureString" })).await;
    assert!(put.result.is_ok(), "{:?}", put.result);
    let record = plane.record(&put.request_id);
    assert_eq!(record["eventName"], "PutParameter");
    assert_eq!(record["requestParameters"]["Name"], "/app/db-password");
    assert_eq!(record["requestParameters"]["Value"], HIDDEN);
    // Read back with decryption: the caller gets the value; a read-only action records no answer.
    let got = plane.operator("parameters:GetParameter", &json!({ "Name": "/app/db-password", "WithDecryption": true })).await;
    assert_eq!(got.result.as_ref().expect("get")["Parameter"]["Value"], secret);
    assert!(plane.record(&got.request_id)["responseElements"].is_null());
    // A refused call hides it too.
    let bad = plane.operator("parameters:PutParameter", &json!({ "Name": "/app/other", "Value": secret, "Type": "Bogus" })).await;
    assert_eq!(refused(&bad).code, ErrorCode::ValidationException);
    assert_eq!(plane.record(&bad.request_id)["requestParameters"]["Value"], HIDDEN);
    assert!(!plane.whole_trail().contains(secret), "the value is in the open trail file");
    plane.stop().await;
    assert!(!plane.whole_trail().contains(secret), "the value is in the sealed trail");
}

/// `keys:Encrypt`: the plaintext is hidden in the request and the ciphertext in the answer.
#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_plaintext_never_reaches_the_record() {
    let plane = Plane::start().await;
    let key = plane.operator_ok("keys:CreateKey", &json!({ "Description": "test key" })).await;
    let key_id = key["KeyMetadata"]["KeyId"].as_str().expect("key id").to_owned();
    // base64 of "attack at dawn, bring the 9f2c ledger".
    let plaintext = "YXR0YWNrIGF0IGRhd24sIGJyaW5nIHRoZSA5ZjJjIGxlZGdlcg==";
    let encrypted = plane.operator("keys:Encrypt", &json!({ "KeyId": key_id, "Plaintext": plaintext })).await;
    let answer = encrypted.result.as_ref().expect("encrypt").clone();
    let blob = answer["CiphertextBlob"].as_str().expect("ciphertext");
    let record = plane.record(&encrypted.request_id);
    assert_eq!(record["requestParameters"]["Plaintext"], HIDDEN);
    assert_eq!(record["requestParameters"]["KeyId"], key_id.as_str());
    assert_eq!(record["responseElements"]["CiphertextBlob"], HIDDEN);
    let trail = plane.whole_trail();
    assert!(!trail.contains(plaintext) && !trail.contains("attack at dawn"), "the plaintext is in the trail");
    assert!(!trail.contains(blob), "the ciphertext is in the trail");
    plane.stop().await;
}

/// An input parsed by type is recorded as its type serializes: a deploy's overrides by key
/// only (not hidden whole by the member's name), its spec hidden, even when the spec is
/// refused after parsing.
#[tokio::test(flavor = "multi_thread")]
async fn a_typed_input_is_recorded_as_its_type_serializes() {
    let plane = Plane::start().await;
    let deployed = plane
        .operator(
            "deploy:Deploy",
            &json!({ "Spec": "this is [not a spec, token = \"spec-secret-51d0\"", "Overrides": ["oidc.client_secret=override-secret-9b1e"] }),
        )
        .await;
    refused(&deployed);
    let recorded = &plane.record(&deployed.request_id)["requestParameters"];
    assert_eq!(recorded["Spec"], HIDDEN);
    assert_eq!(recorded["Overrides"], json!([format!("oidc.client_secret={HIDDEN}")]), "{recorded}");
    let trail = plane.whole_trail();
    assert!(!trail.contains("override-secret-9b1e") && !trail.contains("spec-secret-51d0"), "a secret is in the trail");
    // An input that does not parse falls back to hiding by member name, whole.
    let unparsed = plane.operator("deploy:Deploy", &json!({ "Spec": 7, "Overrides": ["a=b-secret-3c"] })).await;
    assert_eq!(refused(&unparsed).code, ErrorCode::ValidationException);
    let recorded = &plane.record(&unparsed.request_id)["requestParameters"];
    assert_eq!(recorded, &json!({ "Spec": HIDDEN, "Overrides": HIDDEN }));
    assert!(!plane.whole_trail().contains("b-secret-3c"));
    plane.stop().await;
}
