//! A request cannot write an unbounded record: over-long member names are refused, over-long
//! error messages are cut the same in the reply and the record, and large parameters are
//! summarized by their size and member names.

use control::ErrorCode;
use serde_json::{Value, json};

use crate::support::{HIDDEN, Plane, refused};

/// The trail's bound on member names; the pipeline refuses longer ones.
const MAX_MEMBER_NAME_BYTES: usize = 128;
/// The trail's bound on one string in a record.
const MAX_STRING_BYTES: usize = 2048;

/// A member name over the bound, at the top or nested, is refused as a `ValidationException`
/// and the name is not copied into the record; one at the bound is accepted as a name.
#[tokio::test(flavor = "multi_thread")]
async fn an_overlong_member_name_is_refused() {
    let plane = Plane::start().await;
    let long = "M".repeat(MAX_MEMBER_NAME_BYTES + 1);
    let bodies = [
        json!({ long.clone(): 1, "Name": "/a", "Value": "v", "Type": "String" }),
        json!({ "Name": "/a", "Value": "v", "Type": "String", "Tags": [{ "Key": "k", "Nested": { long.clone(): 1 } }] }),
    ];
    for body in bodies {
        let response = plane.operator("parameters:PutParameter", &body).await;
        let error = refused(&response);
        assert_eq!(error.code, ErrorCode::ValidationException, "{error}");
        assert!(error.message.contains(&format!("at most {MAX_MEMBER_NAME_BYTES} bytes")), "{error}");
        let record = plane.record(&response.request_id);
        assert!(record["requestParameters"].is_null(), "{record}");
        assert!(!record.to_string().contains(&long), "the long name is in the record");
    }
    // At the bound the name passes the pipeline and reaches the handler, which does not know it.
    let at_bound = "M".repeat(MAX_MEMBER_NAME_BYTES);
    let response =
        plane.operator("parameters:PutParameter", &json!({ at_bound.clone(): 1, "Name": "/a", "Value": "v", "Type": "String" })).await;
    let error = refused(&response);
    assert!(error.message.contains("unknown field"), "{error}");
    plane.stop().await;
}

/// An error message over the bound (here one that quotes a 10,000-byte alias name back) is
/// cut, saying so, and the record carries exactly the message the caller got.
#[tokio::test(flavor = "multi_thread")]
async fn an_overlong_error_message_is_cut_alike_in_reply_and_record() {
    let plane = Plane::start().await;
    let alias = format!("alias/{}", "n!".repeat(5_000));
    let response = plane.operator("keys:CreateAlias", &json!({ "AliasName": alias, "TargetKeyId": "any" })).await;
    let error = refused(&response);
    assert_eq!(error.code, ErrorCode::ValidationException);
    let tail = &error.message[error.message.len().saturating_sub(300)..];
    assert!(error.message.len() <= MAX_STRING_BYTES, "the reply's message is {} bytes", error.message.len());
    assert!(error.message.contains("[cut: "), "the reply does not say it was cut: {tail}");
    let record = plane.record(&response.request_id);
    assert_eq!(record["errorMessage"], error.message.as_str(), "the record and the reply differ");
    assert_eq!(record["errorCode"], error.code.as_str());
    plane.stop().await;
}

/// Parameters larger than the record's section bound are recorded as a summary (their size
/// and member names), secrets hidden first, whatever the call's outcome.
#[tokio::test(flavor = "multi_thread")]
async fn large_parameters_are_summarized() {
    let plane = Plane::start().await;
    let description = "d".repeat(20_000);
    let input = json!({ "Name": "/big", "Value": "v", "Type": "String", "Description": description });
    let response = plane.operator("parameters:PutParameter", &input).await;
    assert_eq!(refused(&response).code, ErrorCode::ValidationException, "Description is over AWS's 1024 characters");
    let record = plane.record(&response.request_id);
    let summary = &record["requestParameters"];
    assert_eq!(summary["truncated"], true, "{summary}");
    let size = json!({ "Name": "/big", "Value": HIDDEN, "Type": "String", "Description": description }).to_string().len();
    assert_eq!(summary["size"], size, "the summary's size is of the redacted parameters");
    let mut members: Vec<&str> = summary["members"].as_array().expect("members").iter().filter_map(Value::as_str).collect();
    members.sort_unstable();
    assert_eq!(members, ["Description", "Name", "Type", "Value"]);
    assert!(!record.to_string().contains(&description[..100]), "the large member was copied");
    // Below the bound the parameters are recorded whole.
    let small =
        plane.operator("parameters:PutParameter", &json!({ "Name": "/small", "Value": "v", "Type": "String", "Description": "d" })).await;
    assert_eq!(plane.record(&small.request_id)["requestParameters"]["Description"], "d");
    plane.stop().await;
}
