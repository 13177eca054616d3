//! The record: CloudTrail's fields and names, plus `correlationId`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const EVENT_VERSION: &str = "1.09";

/// A new record's request ID: a UUID, as CloudTrail's are, of version 7, whose first 48 bits are
/// the time in milliseconds, made in order within this process. The index keeps a B-tree of
/// request IDs (`events_by_request`): a random one (version 4) put each record on a random leaf
/// of it, one page more written (and checkpointed) per record, which under a stream of notebook
/// reads was half of what indexing them cost; IDs in time order are appended at its end. A
/// request ID is no secret (it is in every reply), and this one says when it was made, as the
/// record does; within a millisecond, part of it counts.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Set by the trail writer: this record's place in the trail's hash chain. It is written
    /// first in every line, so validation reads it without parsing the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    /// Set by the trail writer: lower-hex SHA-256 of the previous record's line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_record_hash: Option<String>,
    pub event_version: String,
    pub user_identity: UserIdentity,
    pub event_time: String,
    pub event_source: String,
    pub event_name: String,
    pub aws_region: String,
    #[serde(rename = "sourceIPAddress")]
    pub source_ip_address: String,
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    pub request_parameters: Value,
    pub response_elements: Value,
    #[serde(rename = "requestID")]
    pub request_id: String,
    #[serde(rename = "eventID")]
    pub event_id: String,
    pub read_only: bool,
    pub resources: Vec<RecordResource>,
    pub event_type: String,
    pub management_event: bool,
    pub recipient_account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdentity {
    /// `Operator`, `User`, `AssumedRole` (functions), `Instance` or `Anonymous`.
    #[serde(rename = "type")]
    pub kind: String,
    pub principal_id: String,
    pub arn: String,
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_context: Option<SessionContext>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionContext {
    pub attributes: SessionContextAttributes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_issuer: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionContextAttributes {
    pub creation_date: String,
    /// CloudTrail writes this as the string "true" or "false".
    pub mfa_authenticated: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordResource {
    #[serde(rename = "ARN")]
    pub arn: String,
    #[serde(rename = "accountId")]
    pub account_id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl Record {
    pub fn is_error(&self) -> bool {
        self.error_code.is_some()
    }
}

#[cfg(test)]
mod tests {
    /// The index compares request IDs as text: in that order, each new one comes last.
    #[test]
    fn request_ids_come_in_order_so_that_the_index_appends_them() {
        let ids: Vec<String> = (0..2000).map(|_| super::new_request_id()).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "request IDs out of order");
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 7, "{id}");
            assert_eq!(id, &parsed.hyphenated().to_string(), "CloudTrail's form: lower-case, hyphenated");
        }
    }
}
