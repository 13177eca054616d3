//! A record whose row the index's store refuses stands in the index by a record of its own:
//! the same place in the chain, its time, service, action, ids and correlation id, who made it,
//! from where and on what (the fuller stand-in, unless the store refuses that too), and the
//! store's code. Without one, a row the store cannot take (a cause not foreseen: a NUL once
//! was) failed its whole batch at every retry, and the node's index took nothing after it until
//! `audit reindex`, which failed on it again. The trail keeps the record whole; the stand-in
//! says where it is.

use serde_json::{Map, Value, json};

/// A stand-in's error code.
pub(super) const CODE: &str = "RecordNotIndexed";

/// The stand-ins for `node`'s record at `sequence` (`line`, as the trail holds it), whose row
/// the store refused (`why`: its code), to be tried in turn: the first keeps who made the
/// record (its identity, or the user a service event names), from where, with which session
/// and on which resources, where those hold no control character; the second keeps only
/// short plain ASCII: the record's place, time, service, action, ids and correlation id. The
/// store's own message stays out of both (it may hold the value it refused, or where the
/// store is).
pub(super) fn stand_ins(node: &str, sequence: u64, line: &[u8], why: &str) -> [Vec<u8>; 2] {
    let record: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
    let plain = |value: &Value| value.as_str().filter(|text| is_plain(text)).map(str::to_owned);
    let field = |name: &str| plain(&record[name]).unwrap_or_default();
    let flag = |name: &str| record[name].as_bool().unwrap_or(false);
    let minimal = json!({
        "sequenceNumber": sequence,
        "eventVersion": crate::record::EVENT_VERSION,
        "userIdentity": { "type": "Unknown", "principalId": "", "arn": "", "accountId": "" },
        "eventTime": field("eventTime"),
        "eventSource": field("eventSource"),
        "eventName": field("eventName"),
        "awsRegion": field("awsRegion"),
        "sourceIPAddress": "",
        "userAgent": "",
        "errorCode": CODE,
        "errorMessage": format!(
            "the audit index refused this record's row ({why}); the trail holds it whole: node `{node}`, sequence number {sequence}"
        ),
        "requestParameters": { "Node": node, "SequenceNumber": sequence },
        "responseElements": null,
        "requestID": field("requestID"),
        "eventID": field("eventID"),
        "readOnly": flag("readOnly"),
        "resources": [],
        "eventType": field("eventType"),
        "managementEvent": flag("managementEvent"),
        "recipientAccountId": field("recipientAccountId"),
        "correlationId": plain(&record["correlationId"]),
    });
    [attributed(&record, minimal.clone()).to_string().into_bytes(), minimal.to_string().into_bytes()]
}

/// `minimal` with who made `record`, from where, with which session and on what.
fn attributed(record: &Value, mut stand_in: Value) -> Value {
    let text = |value: &Value| value.as_str().filter(|text| is_text(text)).map(str::to_owned);
    let identity = &record["userIdentity"];
    let who: Map<String, Value> = ["type", "principalId", "arn", "accountId", "userName"]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), text(&identity[name])?.into())))
        .collect();
    stand_in["userIdentity"].as_object_mut().expect("the minimal stand-in's identity is an object").extend(who);
    for name in ["sourceIPAddress", "userAgent"] {
        stand_in[name] = text(&record[name]).unwrap_or_default().into();
    }
    let (request, response) = (&record["requestParameters"], &record["responseElements"]);
    // The session as the index finds it (`rows::session_named`): the first of these present.
    let session = [(request, "SessionId"), (response, "SessionId"), (request, "SessionID"), (response, "SessionID")]
        .into_iter()
        .find_map(|(members, name)| members.get(name))
        .and_then(text);
    let parameters = stand_in["requestParameters"].as_object_mut().expect("the minimal stand-in's parameters are an object");
    parameters.extend(session.map(|session| ("SessionId".to_owned(), session.into())));
    // A service event (a notebook's request) names the user it is for among its parameters.
    parameters.extend(text(&request["UserId"]).map(|user| ("UserId".to_owned(), user.into())));
    let resources: Vec<Value> = record["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|resource| {
            let (arn, kind) = (text(&resource["ARN"])?, text(&resource["type"])?);
            Some(json!({ "ARN": arn, "accountId": text(&resource["accountId"]).unwrap_or_default(), "type": kind }))
        })
        .collect();
    stand_in["resources"] = resources.into();
    stand_in
}

/// Short printable ASCII: what no store refuses.
fn is_plain(text: &str) -> bool {
    text.len() <= 256 && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// Text without a control character: a user's name in any script, a federated identity's long
/// ARN (a record's strings are bounded already, and its row's columns cut: see `rows::as_column`).
fn is_text(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stand_in_keeps_only_plain_fields_and_says_where_the_record_is() {
        let line = json!({
            "eventTime": "2026-12-07T01:00:00.000Z", "eventSource": "storage", "eventName": "PutObject",
            "requestID": "r\u{0}1", "eventID": "e-1", "readOnly": true, "correlationId": "x".repeat(300),
            "errorMessage": "whatever the caller sent", "awsRegion": "local", "recipientAccountId": "000000000000",
            "userIdentity": { "type": "User", "principalId": "custom:josé", "arn": "arn:user/josé", "accountId": "000000000000", "userName": "josé" },
            "sourceIPAddress": "10.0.0.2", "userAgent": "caller\u{0}agent",
            "requestParameters": { "SessionId": null, "SessionID": "s-upper", "Key": "refused" },
            "responseElements": { "SessionId": "s-1" },
            "resources": [{ "ARN": "arn:storage:::home/josé/x", "accountId": "000000000000", "type": "Object" }, { "ARN": "a\u{0}b", "type": "Object" }],
        })
        .to_string();
        let [attributed, minimal] = stand_ins("a", 7, line.as_bytes(), "SQLSTATE 22021").map(|stand_in| {
            let record: Value = serde_json::from_slice(&stand_in).expect("json");
            serde_json::from_value::<crate::record::Record>(record.clone()).expect("a record");
            record
        });
        for record in [&attributed, &minimal] {
            assert_eq!(record["eventName"], "PutObject");
            assert_eq!(record["eventTime"], "2026-12-07T01:00:00.000Z");
            assert_eq!(record["requestID"], "", "a NUL is not plain");
            assert_eq!(record["correlationId"], Value::Null, "nor a long string");
            assert_eq!(record["readOnly"], true);
            assert_eq!(record["errorCode"], "RecordNotIndexed");
            let message = record["errorMessage"].as_str().expect("message");
            assert!(message.contains("(SQLSTATE 22021)") && message.contains("sequence number 7"), "{message}");
        }
        assert_eq!(attributed["userIdentity"]["userName"], "josé", "a name in any script is kept");
        assert_eq!(attributed["sourceIPAddress"], "10.0.0.2");
        assert_eq!(attributed["userAgent"], "", "a control character is not");
        // The first session member present decides, as the index reads a record's session: here
        // a `null` one, so none.
        assert_eq!(attributed["requestParameters"], json!({ "Node": "a", "SequenceNumber": 7 }));
        assert_eq!(attributed["resources"], json!([{ "ARN": "arn:storage:::home/josé/x", "accountId": "000000000000", "type": "Object" }]));
        assert_eq!(minimal["userIdentity"]["principalId"], "");
        assert_eq!(minimal["resources"], json!([]));
        // A notebook request's record: the session in its answer, the user among its parameters.
        let line = json!({ "requestParameters": { "UserId": "ana", "Path": "api/x" }, "responseElements": { "SessionId": "s-2" } });
        let [attributed, _] = stand_ins("a", 9, line.to_string().as_bytes(), "SQLite TooBig");
        let record: Value = serde_json::from_slice(&attributed).expect("json");
        assert_eq!(record["requestParameters"], json!({ "Node": "a", "SequenceNumber": 9, "SessionId": "s-2", "UserId": "ana" }));
        // A line that is not JSON at all still has stand-ins.
        let [attributed, _] = stand_ins("a", 8, b"\xff", "SQLite TooBig");
        let record: Value = serde_json::from_slice(&attributed).expect("json");
        assert_eq!(record["eventName"], "");
    }
}
