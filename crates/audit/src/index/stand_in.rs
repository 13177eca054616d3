//! A record whose row the index's store refuses stands in the index by a record of its own:
//! the same place in the chain, its time, service, action and ids, who made it, from where and
//! on what, where those are plain, and the store's code. Without one, a row the store cannot
//! take (a cause not foreseen: a NUL once was) failed its whole batch at every retry, and the
//! node's index took nothing after it until `audit reindex`, which failed on it again. The
//! trail keeps the record whole; the stand-in says where it is.

use serde_json::{Map, Value, json};

/// The stand-ins for `node`'s record at `sequence` (`line`, as the trail holds it), whose row
/// the store refused (`why`: its code), to be tried in turn: the first keeps who made the
/// record, from where, and on which resources, where those are plain; the second only the
/// record's place, time, service, action and ids. The store's own message stays out of them
/// (it may hold the value it refused, or where the store is).
pub(super) fn stand_ins(node: &str, sequence: u64, line: &[u8], why: &str) -> [Vec<u8>; 2] {
    let record: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
    let plain = |value: &Value| value.as_str().filter(|text| is_plain(text)).map(str::to_owned);
    let field = |name: &str| plain(&record[name]).unwrap_or_default();
    let flag = |name: &str| record[name].as_bool().unwrap_or(false);
    let minimal = json!({
        "sequenceNumber": sequence,
        "eventVersion": crate::EVENT_VERSION,
        "userIdentity": { "type": "Unknown", "principalId": "", "arn": "", "accountId": "" },
        "eventTime": field("eventTime"),
        "eventSource": field("eventSource"),
        "eventName": field("eventName"),
        "awsRegion": field("awsRegion"),
        "sourceIPAddress": "",
        "userAgent": "",
        "errorCode": "RecordNotIndexed",
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
    let mut attributed = minimal.clone();
    let identity = &record["userIdentity"];
    let mut who = Map::new();
    for name in ["type", "principalId", "arn", "accountId", "userName"] {
        if let Some(text) = plain(&identity[name]) {
            who.insert(name.into(), text.into());
        }
    }
    attributed["userIdentity"] = json!({ "type": "Unknown", "principalId": "", "arn": "", "accountId": "" });
    attributed["userIdentity"].as_object_mut().expect("an object").extend(who);
    attributed["sourceIPAddress"] = field("sourceIPAddress").into();
    attributed["userAgent"] = field("userAgent").into();
    let session = ["SessionId", "SessionID"].into_iter().find_map(|name| plain(&record["requestParameters"][name]));
    if let Some(session) = session {
        attributed["requestParameters"]["SessionId"] = session.into();
    }
    let resources: Vec<Value> = record["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|resource| {
            let (arn, kind) = (plain(&resource["ARN"])?, plain(&resource["type"])?);
            Some(json!({ "ARN": arn, "accountId": plain(&resource["accountId"]).unwrap_or_default(), "type": kind }))
        })
        .collect();
    attributed["resources"] = resources.into();
    [attributed.to_string().into_bytes(), minimal.to_string().into_bytes()]
}

fn is_plain(text: &str) -> bool {
    text.len() <= 256 && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
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
            "userIdentity": { "type": "User", "principalId": "custom:ana", "arn": "arn:user/ana", "accountId": "000000000000", "userName": "ana" },
            "sourceIPAddress": "10.0.0.2", "userAgent": "caller\u{0}agent",
            "requestParameters": { "SessionId": "s-1", "Key": "refused" },
            "resources": [{ "ARN": "arn:storage:::home/ana/x", "accountId": "000000000000", "type": "Object" }, { "ARN": "a\u{0}b", "type": "Object" }],
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
        assert_eq!(attributed["userIdentity"]["userName"], "ana");
        assert_eq!(attributed["sourceIPAddress"], "10.0.0.2");
        assert_eq!(attributed["userAgent"], "");
        assert_eq!(attributed["requestParameters"], json!({ "Node": "a", "SequenceNumber": 7, "SessionId": "s-1" }));
        assert_eq!(attributed["resources"], json!([{ "ARN": "arn:storage:::home/ana/x", "accountId": "000000000000", "type": "Object" }]));
        assert_eq!(minimal["userIdentity"]["principalId"], "");
        assert_eq!(minimal["resources"], json!([]));
        // A line that is not JSON at all still has stand-ins.
        let [attributed, _] = stand_ins("a", 8, b"\xff", "SQLite TooBig");
        let record: Value = serde_json::from_slice(&attributed).expect("json");
        assert_eq!(record["eventName"], "");
    }
}
