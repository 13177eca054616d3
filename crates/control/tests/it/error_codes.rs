//! What a malformed request is answered with, and that the answer is recorded: the body is
//! checked before any handler runs (JSON, an object), then each handler checks its input.

use bytes::Bytes;
use control::{ActionError, ErrorCode, Request};
use serde_json::json;

use crate::support::{Plane, refused};

/// A body that is not JSON is a `SerializationException`, recorded with no parameters.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_json_is_a_serialization_error() {
    let plane = Plane::start().await;
    for body in [&b"{\"Name\": "[..], b"not json at all", b"{\"Name\":\"/a\",}"] {
        let response = plane.call_raw(plane.operator_credentials(), "parameters:PutParameter", body).await;
        let error = refused(&response);
        assert_eq!((error.code, error.status), (ErrorCode::SerializationException, 400), "{body:?}: {error}");
        assert!(error.message.contains("not valid JSON"), "{error}");
        let record = plane.record(&response.request_id);
        assert_eq!(record["errorCode"], "SerializationException");
        assert_eq!(record["errorMessage"], error.message.as_str());
        assert!(record["requestParameters"].is_null(), "{record}");
    }
    plane.stop().await;
}

/// JSON that is not an object (an array, a string, a number, null) is a
/// `SerializationException` too: actions take objects.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_an_object_is_a_serialization_error() {
    let plane = Plane::start().await;
    for body in ["[1, 2]", "\"a string\"", "42", "null"] {
        let response = plane.call_raw(plane.operator_credentials(), "parameters:PutParameter", body.as_bytes()).await;
        let error = refused(&response);
        assert_eq!(error.code, ErrorCode::SerializationException, "{body}: {error}");
        assert!(error.message.contains("must be a JSON object"), "{body}: {error}");
        assert_eq!(plane.record(&response.request_id)["errorCode"], "SerializationException", "{body}");
    }
    plane.stop().await;
}

/// An object the action cannot take (a member missing, of the wrong type, unknown) is a
/// `ValidationException`; an empty body counts as `{}`.
#[tokio::test(flavor = "multi_thread")]
async fn an_input_the_action_cannot_take_is_a_validation_error() {
    let plane = Plane::start().await;
    let cases: [(&str, &[u8]); 4] = [
        ("empty body", b"  \n"),
        ("missing member", br#"{"Name":"/a"}"#),
        ("wrong type", br#"{"Name":"/a","Value":7,"Type":"String"}"#),
        ("unknown member", br#"{"Name":"/a","Value":"v","Type":"String","Colour":"red"}"#),
    ];
    for (what, body) in cases {
        let response = plane.call_raw(plane.operator_credentials(), "parameters:PutParameter", body).await;
        let error = refused(&response);
        assert_eq!((error.code, error.status), (ErrorCode::ValidationException, 400), "{what}: {error}");
        let record = plane.record(&response.request_id);
        assert_eq!(record["errorCode"], "ValidationException", "{what}");
        assert_eq!(record["errorMessage"], error.message.as_str(), "{what}");
    }
    let empty = plane.call_raw(plane.operator_credentials(), "parameters:PutParameter", b"").await;
    assert_eq!(plane.record(&empty.request_id)["requestParameters"], json!({}), "an empty body is recorded as `{{}}`");
    plane.stop().await;
}

/// What the transport met reading the body (too large, cut off) is the answer as it is, and
/// recorded like any other refusal.
#[tokio::test(flavor = "multi_thread")]
async fn a_transport_error_is_answered_and_recorded_as_given() {
    let plane = Plane::start().await;
    let request = Request {
        credentials: plane.operator_credentials(),
        source_ip: "192.0.2.7".into(),
        user_agent: "control-it".into(),
        action: "parameters:PutParameter".into(),
        body: Err::<Bytes, _>(ActionError::new(413, ErrorCode::EntityTooLarge, "the body is over the limit")),
    };
    let response = plane.control.call(request).await;
    let error = refused(&response);
    assert_eq!((error.code, error.status), (ErrorCode::EntityTooLarge, 413));
    let record = plane.record(&response.request_id);
    assert_eq!(record["errorCode"], "EntityTooLarge");
    assert_eq!(record["errorMessage"], "the body is over the limit");
    plane.stop().await;
}
