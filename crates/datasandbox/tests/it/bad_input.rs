//! Bad input gets a specific error, changes nothing, and is audited where a request was made.

use serde_json::{Value, json};

use crate::support::http;
use crate::support::server::Server;
use crate::support::server::{BIN, b64};

/// Everything a bad request could have changed.
fn snapshot(server: &Server) -> Value {
    json!({
        "buckets": server.ok("storage:ListBuckets", json!({}))["Buckets"].as_array().map(|b| b.iter().map(|x| x["Name"].clone()).collect::<Vec<_>>()),
        "objects": server.ok("storage:ListObjectsV2", json!({ "Bucket": "datasandbox-home" }))["Contents"],
        "parameters": server.ok("parameters:GetParametersByPath", json!({ "Path": "/", "Recursive": true }))["Parameters"],
        "keys": server.ok("keys:ListKeys", json!({}))["Keys"],
    })
}

#[test]
fn bad_requests_get_specific_errors_change_nothing_and_are_audited() {
    let server = Server::start(&["storage.max_object_size=1024"]);
    server.ok("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": "kept.txt", "Body": b64(b"kept") }));
    server.ok("parameters:PutParameter", json!({ "Name": "/kept", "Value": "v", "Type": "String" }));
    let before = snapshot(&server);

    let put = |key: Value| json!({ "Bucket": "datasandbox-home", "Key": key, "Body": b64(b"x") }).to_string();
    let long_key = "k".repeat(1025);
    let cases: Vec<(&str, &str, String, u16, &str, &str)> = vec![
        // what, action, raw body, status, code, a phrase the message must contain
        (
            "malformed JSON",
            "parameters:PutParameter",
            r#"{"Name": "/x", "Value": "#.into(),
            400,
            "SerializationException",
            "not valid JSON",
        ),
        ("body not an object", "parameters:PutParameter", "[1, 2]".into(), 400, "SerializationException", "must be a JSON object"),
        ("unknown action", "storage:PutObjectt", "{}".into(), 400, "UnknownOperationException", "`storage` has CreateBucket"),
        ("unknown service", "vault:Open", "{}".into(), 400, "UnknownOperationException", "unknown service `vault`"),
        (
            "object over the size limit",
            "storage:PutObject",
            json!({ "Bucket": "datasandbox-home", "Key": "big", "Body": b64(&[7u8; 2000]) }).to_string(),
            413,
            "EntityTooLarge",
            "at most 1024",
        ),
        (
            "body over the request limit",
            "storage:PutObject",
            json!({ "Bucket": "datasandbox-home", "Key": "huge", "Body": "A".repeat(200_000) }).to_string(),
            413,
            "EntityTooLarge",
            "exceeds",
        ),
        ("dot-dot key", "storage:PutObject", put(json!("a/../b")), 400, "ValidationException", "`..` path segment"),
        ("absolute key", "storage:PutObject", put(json!("/etc/passwd")), 400, "ValidationException", "must not start with `/`"),
        ("empty key", "storage:PutObject", put(json!("")), 400, "ValidationException", "is empty"),
        ("key too long", "storage:PutObject", put(json!(long_key)), 400, "ValidationException", "1025 bytes"),
        ("NUL in key", "storage:PutObject", put(json!("a\u{0}b")), 400, "ValidationException", "NUL"),
        (
            "bucket with capitals",
            "storage:CreateBucket",
            json!({ "Bucket": "Bad_Bucket" }).to_string(),
            400,
            "ValidationException",
            "lower-case",
        ),
        ("bucket too short", "storage:CreateBucket", json!({ "Bucket": "ab" }).to_string(), 400, "ValidationException", "3..=63"),
        (
            "bucket like an IP",
            "storage:CreateBucket",
            json!({ "Bucket": "192.168.1.1" }).to_string(),
            400,
            "ValidationException",
            "IP address",
        ),
        (
            "missing member",
            "storage:PutObject",
            json!({ "Bucket": "datasandbox-home", "Body": "" }).to_string(),
            400,
            "ValidationException",
            "missing field `Key`",
        ),
        (
            "mistyped member",
            "parameters:PutParameter",
            json!({ "Name": "/x", "Value": 5, "Type": "String" }).to_string(),
            400,
            "ValidationException",
            "invalid type",
        ),
        (
            "unknown member",
            "storage:GetObject",
            json!({ "Buckett": "datasandbox-home", "Key": "kept.txt" }).to_string(),
            400,
            "ValidationException",
            "unknown field `Buckett`",
        ),
        (
            "body not base64",
            "storage:PutObject",
            json!({ "Bucket": "datasandbox-home", "Key": "b64", "Body": "***" }).to_string(),
            400,
            "ValidationException",
            "not valid base64",
        ),
        (
            "unsatisfiable range",
            "storage:GetObject",
            json!({ "Bucket": "datasandbox-home", "Key": "kept.txt", "Range": "bytes=100-" }).to_string(),
            416,
            "InvalidRange",
            "not satisfiable",
        ),
        (
            "create-only write of an existing key",
            "storage:PutObject",
            json!({ "Bucket": "datasandbox-home", "Key": "kept.txt", "Body": b64(b"new"), "IfNoneMatch": "*" }).to_string(),
            412,
            "PreconditionFailed",
            "pre-conditions",
        ),
        (
            "write conditional on a stale ETag",
            "storage:PutObject",
            json!({ "Bucket": "datasandbox-home", "Key": "kept.txt", "Body": b64(b"new"), "IfMatch": "\"0123\"" }).to_string(),
            412,
            "PreconditionFailed",
            "pre-conditions",
        ),
        (
            "IfNoneMatch other than *",
            "storage:PutObject",
            json!({ "Bucket": "datasandbox-home", "Key": "kept.txt", "Body": b64(b"new"), "IfNoneMatch": "\"abc\"" }).to_string(),
            400,
            "ValidationException",
            "accepts only `*`",
        ),
        (
            "MaxKeys out of range",
            "storage:ListObjectsV2",
            json!({ "Bucket": "datasandbox-home", "MaxKeys": 5000 }).to_string(),
            400,
            "ValidationException",
            "outside 0..=1000",
        ),
        (
            "parameter type",
            "parameters:PutParameter",
            json!({ "Name": "/y", "Value": "v", "Type": "Integer" }).to_string(),
            400,
            "ValidationException",
            "not String, StringList or SecureString",
        ),
        (
            "reserved parameter name",
            "parameters:PutParameter",
            json!({ "Name": "/aws/x", "Value": "v", "Type": "String" }).to_string(),
            400,
            "ValidationException",
            "reserved",
        ),
        (
            "deletion window",
            "keys:ScheduleKeyDeletion",
            json!({ "KeyId": "alias/none", "PendingWindowInDays": 31 }).to_string(),
            400,
            "ValidationException",
            "outside 7..=30",
        ),
        (
            "missing bucket",
            "storage:PutObject",
            json!({ "Bucket": "no-such-bucket", "Key": "k", "Body": "" }).to_string(),
            404,
            "NoSuchBucket",
            "does not exist",
        ),
    ];
    for (what, action, body, status, code, phrase) in &cases {
        // A fresh connection each time: the server may close one whose body it refused to read.
        let mut connection = http::unix(&server.socket()).expect("connect");
        let (service, name) = action.split_once(':').expect("service:Action");
        let reply = connection
            .request("POST", &format!("/api/{service}/{name}"), &[("content-type", "application/json")], body.as_bytes())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let error = reply.json();
        assert_eq!((reply.status, error["Code"].as_str()), (*status, Some(*code)), "{what}: {error}");
        let message = error["Message"].as_str().expect("message");
        assert!(message.contains(phrase), "{what}: `{message}` does not say `{phrase}`");
        let record = server.audit_record(error["RequestId"].as_str().expect("request id"));
        assert_eq!(record["errorCode"], *code, "{what}");
    }
    assert_eq!(snapshot(&server), before, "a rejected request changed state");

    // Through the CLI: a client error exits 1 with the error document on stderr.
    let called = server.call("storage:GetObject", &json!({ "Bucket": "datasandbox-home" }));
    assert_eq!(called.exit, 1);
    assert_eq!(called.stderr["Code"], "ValidationException");
    assert!(called.stderr["RequestId"].is_string());
}

#[test]
fn cli_without_a_server_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output =
        std::process::Command::new(BIN).arg("--data-dir").arg(dir.path()).args(["call", "storage:ListBuckets"]).output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&output.stderr).expect("JSON error");
    assert_eq!(error["Code"], "ConnectionError");
    assert!(error["Message"].as_str().expect("message").contains("is `datasandbox up` running"));
}

#[test]
fn bad_specs_are_rejected_before_anything_is_written() {
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        (
            "bad Cedar policy",
            "[[policies]]\nname = \"broken\"\ntext = '''\npermit (principal, action, resource)\nwhen { resource.owner == };'''\n",
            &[],
            &["policy `broken`", "line 2"],
        ),
        (
            "policy naming an unknown entity type",
            "[[policies]]\nname = \"typo\"\ntext = 'permit (principal is DataSandbox::Usr, action, resource);'\n",
            &[],
            &["policy `typo`", "Usr"],
        ),
        (
            "out-of-range value",
            "[fleets.analysts]\ndisconnect_timeout = 345600\n",
            &[],
            &["fleets.analysts.disconnect_timeout: 345600 is outside 60..=36000"],
        ),
        ("unknown key", "fleet_typ = \"ALWAYS_ON\"\n", &[], &["fleet_typ: unknown key; did you mean `fleet_type`?"]),
        ("bad override", "", &["fleet_type=SOMETIMES"], &["fleet_type: `SOMETIMES` is not one of ALWAYS_ON, ON_DEMAND"]),
        (
            "two problems at once",
            "vpc_cidr = \"8.8.8.0/24\"\n[storage]\nmax_object_size = 0\n",
            &[],
            &["vpc_cidr: `8.8.8.0/24` is not a private", "storage.max_object_size: 0 is outside"],
        ),
    ];
    for (what, spec, overrides, phrases) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec_path = dir.path().join("spec.toml");
        std::fs::write(&spec_path, spec).expect("write spec");
        let data_dir = dir.path().join("data");
        let mut command = std::process::Command::new(BIN);
        command.arg("--data-dir").arg(&data_dir).arg("up").arg("--spec").arg(&spec_path);
        for o in *overrides {
            command.args(["-c", o]);
        }
        let output = command.output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{what}: {stderr}");
        for phrase in *phrases {
            assert!(stderr.contains(phrase), "{what}: stderr does not say `{phrase}`:\n{stderr}");
        }
        assert!(!data_dir.exists(), "{what}: an invalid spec created the data directory");
    }
}
