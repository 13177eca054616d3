//! Records are bounded: whatever a caller sends, one record stays under
//! [`MAX_RECORD_BYTES`]. Every string is cut to [`MAX_STRING_BYTES`] and every member name to
//! [`MAX_MEMBER_NAME_BYTES`], each cut saying how long the text was; parameters or response
//! elements that still do not fit are replaced by a summary of their member names. The trail
//! applies this to every record it writes, so no caller can forget it.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::record::Record;

/// The largest record line, chain prefix included.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// The longest string kept whole in a record.
pub const MAX_STRING_BYTES: usize = 2048;
/// The longest member name kept whole in a record.
pub const MAX_MEMBER_NAME_BYTES: usize = 128;
/// Room left for the chain prefix the writer adds.
const PREFIX_ROOM: usize = 160;
/// Request parameters or response elements larger than this are summarized.
const MAX_SECTION_BYTES: usize = 16 * 1024;
/// At most this many resources are listed.
const MAX_RESOURCES: usize = 32;

/// `text` if it is at most `max` bytes, else its first `max` bytes (whole characters) and a
/// note of how long it was.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… [cut: {} bytes, only the first {end} kept]", &text[..end], text.len()))
}

/// The record's line as the trail writes it (without the chain prefix), bounded.
pub(crate) fn bounded_line(record: &Record) -> Vec<u8> {
    let line = serde_json::to_vec(record).expect("a record always serializes");
    // No string of a line this short can be longer than the cap.
    if line.len() <= MAX_STRING_BYTES {
        return line;
    }
    let mut value = serde_json::to_value(record).expect("a record always serializes");
    bound_strings(&mut value);
    let mut line = serde_json::to_vec(&value).expect("a value serializes");
    if line.len() + PREFIX_ROOM > MAX_RECORD_BYTES {
        for section in ["requestParameters", "responseElements"] {
            let size = value[section].to_string().len();
            if size > MAX_SECTION_BYTES {
                value[section] = summary(&value[section], size);
            }
        }
        if let Some(resources) = value["resources"].as_array_mut() {
            resources.truncate(MAX_RESOURCES);
        }
        line = serde_json::to_vec(&value).expect("a value serializes");
    }
    if line.len() + PREFIX_ROOM > MAX_RECORD_BYTES {
        // Nothing a caller controls is left that large; this only guards the bound itself.
        for section in ["requestParameters", "responseElements", "userIdentity"] {
            if value[section].is_object() {
                value[section] = serde_json::json!({ "truncated": true });
            }
        }
        line = serde_json::to_vec(&value).expect("a value serializes");
    }
    line
}

/// The summary that stands for parameters too large to record: their size and member names.
pub fn summary(value: &Value, size: usize) -> Value {
    let members: Vec<String> =
        value.as_object().map(|m| m.keys().take(32).map(|k| cut(k, MAX_MEMBER_NAME_BYTES).into_owned()).collect()).unwrap_or_default();
    serde_json::json!({ "truncated": true, "size": size, "members": members })
}

fn bound_strings(value: &mut Value) {
    match value {
        Value::String(text) if text.len() > MAX_STRING_BYTES => *text = cut(text, MAX_STRING_BYTES).into_owned(),
        Value::Array(items) => items.iter_mut().for_each(bound_strings),
        Value::Object(map) if map.keys().any(|k| k.len() > MAX_MEMBER_NAME_BYTES) => {
            let old = std::mem::take(map);
            let mut new = Map::with_capacity(old.len());
            for (key, mut member) in old {
                bound_strings(&mut member);
                new.insert(cut(&key, MAX_MEMBER_NAME_BYTES).into_owned(), member);
            }
            *map = new;
        }
        Value::Object(map) => map.values_mut().for_each(bound_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(parameters: Value, message: String) -> Record {
        let identity = crate::record::UserIdentity {
            kind: "User".into(),
            principal_id: "p".into(),
            arn: String::new(),
            account_id: "0".into(),
            user_name: None,
            session_context: None,
        };
        Record {
            sequence_number: None,
            previous_record_hash: None,
            event_version: crate::record::EVENT_VERSION.into(),
            user_identity: identity,
            event_time: "2026-12-04T00:00:00.000Z".into(),
            event_source: "parameters".into(),
            event_name: "PutParameter".into(),
            aws_region: "local".into(),
            source_ip_address: "127.0.0.1".into(),
            user_agent: "test".into(),
            error_code: Some("ValidationException".into()),
            error_message: Some(message),
            request_parameters: parameters,
            response_elements: Value::Null,
            request_id: "r".into(),
            event_id: "e".into(),
            read_only: false,
            resources: Vec::new(),
            event_type: "AwsApiCall".into(),
            management_event: true,
            recipient_account_id: "0".into(),
            correlation_id: None,
        }
    }

    #[test]
    fn attack_f06_no_record_outgrows_its_bound() {
        let huge = "A".repeat(2 * 1024 * 1024);
        let many: Vec<Value> = (0..5000).map(|n| Value::String(format!("item-{n}-{}", "x".repeat(40)))).collect();
        let cases = [
            serde_json::json!({ huge.clone(): 1 }),
            serde_json::json!({ "Name": huge.clone() }),
            serde_json::json!({ "Nested": [{ "Deeper": { huge.clone(): huge.clone() } }] }),
            serde_json::json!({ "Many": many }),
        ];
        for parameters in cases {
            let line = bounded_line(&record(parameters, huge.clone()));
            assert!(line.len() + PREFIX_ROOM <= MAX_RECORD_BYTES, "a record of {} bytes", line.len());
            let value: Value = serde_json::from_slice(&line).expect("still JSON");
            assert!(value["errorMessage"].as_str().is_some_and(|m| m.contains("[cut: 2097152 bytes")), "{}", value["errorMessage"]);
        }
        // A small record is written as it is.
        let small = record(serde_json::json!({ "Name": "/p" }), "bad".into());
        assert_eq!(bounded_line(&small), serde_json::to_vec(&small).expect("serializes"));
    }

    #[test]
    fn cut_keeps_whole_characters_and_says_what_it_cut() {
        assert_eq!(cut("short", 10), "short");
        let cut_text = cut("ééé", 3);
        assert_eq!(cut_text, "é… [cut: 6 bytes, only the first 2 kept]");
    }
}
