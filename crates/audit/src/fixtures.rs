//! What the trail's tests write: records and layouts.

use std::path::Path;

use serde_json::json;

use crate::layout::Layout;
use crate::record::{EVENT_VERSION, Record, RecordResource, UserIdentity};

/// Node `node`'s `n`th PutObject record.
pub(crate) fn record(node: &str, n: usize) -> Record {
    Record {
        sequence_number: None,
        previous_record_hash: None,
        event_version: EVENT_VERSION.into(),
        user_identity: UserIdentity {
            kind: "User".into(),
            principal_id: "custom:ana".into(),
            arn: "arn:datasandbox:identity::000000000000:user/custom/ana".into(),
            account_id: "000000000000".into(),
            user_name: Some("ana".into()),
            session_context: None,
        },
        event_time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        event_source: "storage".into(),
        event_name: "PutObject".into(),
        aws_region: "local".into(),
        source_ip_address: "10.0.0.2".into(),
        user_agent: "test".into(),
        error_code: None,
        error_message: None,
        request_parameters: json!({ "Bucket": "home", "Key": format!("{node}/{n}.csv") }),
        response_elements: json!({}),
        request_id: format!("{node}-{n}"),
        event_id: format!("{node}-event-{n}"),
        read_only: false,
        resources: vec![RecordResource {
            arn: format!("arn:datasandbox:storage:::home/{node}/{n}.csv"),
            account_id: "000000000000".into(),
            kind: "DataSandbox::Storage::Object".into(),
        }],
        event_type: "AwsApiCall".into(),
        management_event: false,
        recipient_account_id: "000000000000".into(),
        correlation_id: Some(format!("corr-{node}")),
    }
}

/// Node `node`'s trail in `root`.
pub(crate) fn layout(root: &Path, node: &str) -> Layout {
    Layout {
        root: root.to_owned(),
        account_id: "000000000000".into(),
        region: "local".into(),
        bucket: "test-trail".into(),
        node: Some(node.to_owned()),
    }
}
