//! A record the index's store refuses, row by row, stands in the index by a record of its own:
//! the same place in the chain, its time, service, action, ids and correlation id where those
//! are plain, and why its row was refused. Without one, a row the store cannot take (a cause
//! not foreseen: a NUL once was) failed its whole batch at every retry, and the node's index
//! took nothing after it until `audit reindex`, which failed on it again. The trail keeps the
//! record whole; the stand-in says where it is.

use serde_json::{Value, json};

/// The stand-in line for `node`'s record at `sequence` (`line`, as the trail holds it), refused
/// by the store for `reason`.
pub(super) fn stand_in(node: &str, sequence: u64, line: &[u8], reason: &str) -> Vec<u8> {
    let record: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
    // Only what cannot itself be the cause: short printable ASCII.
    let plain = |name: &str| record[name].as_str().filter(|text| is_plain(text)).map(str::to_owned);
    let flag = |name: &str| record[name].as_bool().unwrap_or(false);
    let reason = super::rows::as_column(reason);
    json!({
        "eventVersion": crate::EVENT_VERSION,
        "userIdentity": { "type": "Unknown", "principalId": "", "arn": "" },
        "eventTime": plain("eventTime").unwrap_or_default(),
        "eventSource": plain("eventSource").unwrap_or_default(),
        "eventName": plain("eventName").unwrap_or_default(),
        "sourceIPAddress": "",
        "userAgent": "",
        "errorCode": "RecordNotIndexed",
        "errorMessage": format!(
            "the audit index refused this record's row ({reason}); the trail holds it whole: node `{node}`, sequence number {sequence}"
        ),
        "requestParameters": { "Node": node, "SequenceNumber": sequence },
        "responseElements": null,
        "requestID": plain("requestID").unwrap_or_default(),
        "eventID": plain("eventID").unwrap_or_default(),
        "readOnly": flag("readOnly"),
        "resources": [],
        "eventType": plain("eventType").unwrap_or_default(),
        "managementEvent": flag("managementEvent"),
        "correlationId": plain("correlationId"),
    })
    .to_string()
    .into_bytes()
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
            "errorMessage": "whatever the caller sent",
        })
        .to_string();
        let record: Value = serde_json::from_slice(&stand_in("a", 7, line.as_bytes(), "refused\0 here")).expect("json");
        assert_eq!(record["eventName"], "PutObject");
        assert_eq!(record["eventTime"], "2026-12-07T01:00:00.000Z");
        assert_eq!(record["requestID"], "", "a NUL is not plain");
        assert_eq!(record["correlationId"], Value::Null, "nor a long string");
        assert_eq!(record["readOnly"], true);
        assert_eq!(record["requestParameters"], json!({ "Node": "a", "SequenceNumber": 7 }));
        let message = record["errorMessage"].as_str().expect("message");
        assert!(message.contains("refused\u{fffd} here") && message.contains("sequence number 7"), "{message}");
        // A line that is not JSON at all still has a stand-in.
        let record: Value = serde_json::from_slice(&stand_in("a", 8, b"\xff", "refused")).expect("json");
        assert_eq!(record["eventName"], "");
    }
}
