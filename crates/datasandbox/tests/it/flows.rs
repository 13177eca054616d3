//! The foundation's flows with `datasandbox up` running.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::files::walk;
use crate::support::http;
use crate::support::server::Server;
use crate::support::server::{b64, eventually, unb64};

const HOME: &str = "datasandbox-home";

fn home_prefix(user: &str) -> String {
    format!("user/custom/{}/", hex::encode(Sha256::digest(user.as_bytes())))
}

#[test]
fn health_metrics_and_openapi_are_served() {
    let server = Server::start(&[]);
    let mut connection = http::tcp(&server.api).expect("connect");
    let health = connection.request("GET", "/healthz", &[], b"").expect("healthz");
    assert_eq!((health.status, health.json()), (200, json!({ "status": "ok" })));
    server.ok("storage:ListBuckets", json!({}));
    // Metrics are the operator's: on the control socket.
    let metrics = http::unix(&server.socket()).expect("connect").request("GET", "/metrics", &[], b"").expect("metrics");
    let text = String::from_utf8(metrics.body).expect("utf-8");
    assert!(text.contains(r#"datasandbox_actions_total{action="storage:ListBuckets",outcome="ok"} 1"#), "{text}");
    let openapi = connection.request("GET", "/openapi.json", &[], b"").expect("openapi").json();
    assert!(openapi["paths"]["/api/storage/PutObject"]["post"].is_object());
    assert!(openapi["paths"]["/api/parameters/GetParameter"]["post"].is_object());
}

#[test]
fn ctrl_c_stops_cleanly_and_removes_the_socket() {
    let mut server = Server::start(&[]);
    assert!(server.socket().exists());
    let status = server.stop();
    assert!(status.success(), "exit status {status}");
    assert!(!server.socket().exists(), "the control socket outlived the server");
}

#[test]
fn parameters_round_trip_with_secure_strings_and_history() {
    let server = Server::start(&[]);
    server.ok("parameters:PutParameter", json!({ "Name": "/datasandbox/bucket", "Value": "datasandbox-home", "Type": "String" }));
    let got = server.ok("parameters:GetParameter", json!({ "Name": "/datasandbox/bucket" }));
    assert_eq!(got["Parameter"]["Value"], "datasandbox-home");
    assert_eq!(got["Parameter"]["Version"], 1);

    let again = server.call("parameters:PutParameter", &json!({ "Name": "/datasandbox/bucket", "Value": "x", "Type": "String" }));
    assert_eq!((again.exit, again.stderr["Code"].as_str()), (1, Some("ParameterAlreadyExists")));
    server.ok("parameters:PutParameter", json!({ "Name": "/datasandbox/bucket", "Value": "other", "Overwrite": true }));
    let history = server.ok("parameters:GetParameterHistory", json!({ "Name": "/datasandbox/bucket" }));
    let values: Vec<&str> = history["Parameters"].as_array().expect("list").iter().map(|p| p["Value"].as_str().expect("value")).collect();
    assert_eq!(values, ["datasandbox-home", "other"]);
    let old = server.ok("parameters:GetParameter", json!({ "Name": "/datasandbox/bucket:1" }));
    assert_eq!(old["Parameter"]["Value"], "datasandbox-home");

    let secret = "correct horse battery staple";
    server.ok("parameters:PutParameter", json!({ "Name": "/datasandbox/db-password", "Value": secret, "Type": "SecureString" }));
    let hidden = server.ok("parameters:GetParameter", json!({ "Name": "/datasandbox/db-password" }));
    assert_ne!(hidden["Parameter"]["Value"], secret, "a SecureString came back decrypted without WithDecryption");
    let shown = server.ok("parameters:GetParameter", json!({ "Name": "/datasandbox/db-password", "WithDecryption": true }));
    assert_eq!(shown["Parameter"]["Value"], secret);

    let by_path = server.ok("parameters:GetParametersByPath", json!({ "Path": "/datasandbox", "WithDecryption": true, "MaxResults": 1 }));
    assert_eq!(by_path["Parameters"].as_array().map(Vec::len), Some(1));
    let next = server.ok(
        "parameters:GetParametersByPath",
        json!({ "Path": "/datasandbox", "MaxResults": 1, "NextToken": by_path["NextToken"], "WithDecryption": true }),
    );
    assert_eq!(next["Parameters"][0]["Name"], "/datasandbox/db-password");
    assert!(next.get("NextToken").is_none());

    // A user may not read parameters, nor decrypt them: least privilege by default.
    let token = server.token_for("alice");
    let denied = server.call_as(&token, "parameters:GetParameter", &json!({ "Name": "/datasandbox/db-password", "WithDecryption": true }));
    assert_eq!((denied.exit, denied.stderr["Code"].as_str()), (1, Some("AccessDeniedException")));

    server.ok("parameters:DeleteParameter", json!({ "Name": "/datasandbox/bucket" }));
    let gone = server.call("parameters:GetParameter", &json!({ "Name": "/datasandbox/bucket" }));
    assert_eq!((gone.exit, gone.stderr["Code"].as_str()), (1, Some("ParameterNotFound")));

    // Secrets never reach the trail, in any file.
    for file in walk(&server.data_dir().join("trail")) {
        let text = std::fs::read_to_string(&file).expect("read trail");
        assert!(!text.contains(secret), "the plaintext of a SecureString is in {}", file.display());
        assert!(!text.contains(&token), "a bearer token is in {}", file.display());
    }
}

#[test]
fn every_action_gets_one_audit_record_including_denied_and_failed() {
    let server = Server::start(&[]);
    let ok = server.call("storage:ListBuckets", &json!({}));
    assert_eq!(ok.exit, 0);
    let failed = server.call("storage:GetObject", &json!({ "Bucket": HOME, "Key": "missing" }));
    assert_eq!(failed.stderr["Code"], "NoSuchKey");
    let token = server.token_for("mallory");
    let denied = server.call_as(&token, "storage:ListBuckets", &json!({}));
    assert_eq!(denied.stderr["Code"], "AccessDeniedException");

    let records = server.audit(&[("EventSource", "storage")]);
    let names: Vec<(&str, Option<&str>)> =
        records.iter().map(|r| (r["eventName"].as_str().expect("name"), r["errorCode"].as_str())).collect();
    // The start-up deploy created the home bucket (storage stack), then the reports bucket
    // and the home bucket's session.json notification (streaming stack); then our three
    // calls, newest first.
    assert_eq!(
        names,
        [
            ("ListBuckets", Some("AccessDeniedException")),
            ("GetObject", Some("NoSuchKey")),
            ("ListBuckets", None),
            ("CreateBucket", None),
            ("PutBucketNotificationConfiguration", None),
            ("CreateBucket", None)
        ]
    );
    let denied_record = server.audit_record(denied.stderr["RequestId"].as_str().expect("request id"));
    assert_eq!(denied_record["userIdentity"]["userName"], "mallory");
    assert_eq!(denied_record["userIdentity"]["type"], "User");
    assert!(denied_record["correlationId"].is_string(), "a user's actions carry the correlation id minted with their token");
    let failed_record = server.audit_record(failed.stderr["RequestId"].as_str().expect("request id"));
    assert_eq!(failed_record["userIdentity"]["type"], "Operator");
    assert_eq!(failed_record["managementEvent"], false, "object reads are data events");
    assert_eq!(failed_record["readOnly"], true);
    assert_eq!(failed_record["resources"][0]["ARN"], format!("arn:datasandbox:storage:::{HOME}/missing"));
}

#[test]
fn objects_put_get_range_list_copy_delete() {
    let server = Server::start(&[]);
    objects_flow(&server);
    // Deleted objects leave no blob behind.
    assert_eq!(walk(&server.data_dir().join("objects")).len(), 0);
}

/// The same flow against a real S3-compatible server (moto), as the spec's `s3` backend.
#[test]
fn objects_on_the_s3_backend() {
    let moto = crate::support::s3::Moto::start();
    let endpoint = format!("storage.s3.endpoint=http://127.0.0.1:{}", moto.port);
    let server = Server::start_with_env(
        &["storage.backend=s3", &endpoint, "storage.s3.bucket=datasandbox-blobs", "storage.s3.allow_http=true"],
        &[("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")],
    );
    objects_flow(&server);
    assert_eq!(walk(&server.data_dir().join("objects")).len(), 0, "the s3 backend wrote blobs locally");
    // The bodies went to the S3 server, and were deleted there with their objects.
    assert_eq!(moto.object_count_under("datasandbox-blobs", "blobs/"), 0);
    // A small body is kept in the metadata store, a larger one (over 32 KiB) in the S3 server.
    server.ok("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": "kept.txt", "Body": b64(b"kept") }));
    assert_eq!(moto.object_count_under("datasandbox-blobs", "blobs/"), 0);
    server.ok("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": "large.bin", "Body": b64(&[7; 40 * 1024]) }));
    assert_eq!(moto.object_count_under("datasandbox-blobs", "blobs/"), 1);
}

fn objects_flow(server: &Server) {
    server.ok("storage:CreateBucket", json!({ "Bucket": "datasets" }));
    let body = b"id,value\n1,42\n2,43\n";
    let put = server
        .ok("storage:PutObject", json!({ "Bucket": "datasets", "Key": "census/2026.csv", "Body": b64(body), "ContentType": "text/csv" }));
    let got = server.ok("storage:GetObject", json!({ "Bucket": "datasets", "Key": "census/2026.csv" }));
    assert_eq!(unb64(got["Body"].as_str().expect("body")), body);
    assert_eq!(got["ETag"], put["ETag"]);
    assert_eq!(got["ContentType"], "text/csv");
    assert_eq!(got["Metadata"]["datasandbox-writer"], "arn:datasandbox:identity::000000000000:operator/root");
    assert_eq!(got["Metadata"]["datasandbox-source-ip"], "control.sock");
    let part = server.ok("storage:GetObject", json!({ "Bucket": "datasets", "Key": "census/2026.csv", "Range": "bytes=9-12" }));
    assert_eq!(unb64(part["Body"].as_str().expect("body")), b"1,42");
    assert_eq!(part["ContentRange"], format!("bytes 9-12/{}", body.len()));
    let head = server.ok("storage:HeadObject", json!({ "Bucket": "datasets", "Key": "census/2026.csv" }));
    assert!(head.get("Body").is_none());
    assert_eq!(head["ContentLength"], body.len());

    for key in ["census/2025.csv", "census/raw/a", "census/raw/b", "other/x"] {
        server.ok("storage:PutObject", json!({ "Bucket": "datasets", "Key": key, "Body": b64(key.as_bytes()) }));
    }
    let listed = server.ok("storage:ListObjectsV2", json!({ "Bucket": "datasets", "Prefix": "census/", "Delimiter": "/" }));
    let keys: Vec<&str> = listed["Contents"].as_array().expect("contents").iter().map(|c| c["Key"].as_str().expect("key")).collect();
    assert_eq!(keys, ["census/2025.csv", "census/2026.csv"]);
    assert_eq!(listed["CommonPrefixes"], json!([{ "Prefix": "census/raw/" }]));

    // Pagination visits every key once.
    let mut seen = Vec::new();
    let mut token = Value::Null;
    loop {
        let mut input = json!({ "Bucket": "datasets", "MaxKeys": 2 });
        if !token.is_null() {
            input["ContinuationToken"] = token.clone();
        }
        let page = server.ok("storage:ListObjectsV2", input);
        seen.extend(page["Contents"].as_array().expect("contents").iter().map(|c| c["Key"].as_str().expect("key").to_owned()));
        if page["IsTruncated"] != true {
            break;
        }
        token = page["NextContinuationToken"].clone();
    }
    assert_eq!(seen, ["census/2025.csv", "census/2026.csv", "census/raw/a", "census/raw/b", "other/x"]);

    server.ok("storage:CopyObject", json!({ "Bucket": "datasets", "Key": "copy.csv", "CopySource": "datasets/census/2026.csv" }));
    let copy = server.ok("storage:GetObject", json!({ "Bucket": "datasets", "Key": "copy.csv" }));
    assert_eq!(unb64(copy["Body"].as_str().expect("body")), body);

    let not_empty = server.call("storage:DeleteBucket", &json!({ "Bucket": "datasets" }));
    assert_eq!(not_empty.stderr["Code"], "BucketNotEmpty");
    for key in seen.iter().map(String::as_str).chain(["copy.csv"]) {
        server.ok("storage:DeleteObject", json!({ "Bucket": "datasets", "Key": key }));
    }
    server.ok("storage:DeleteBucket", json!({ "Bucket": "datasets" }));
    let gone = server.call("storage:ListObjectsV2", &json!({ "Bucket": "datasets" }));
    assert_eq!(gone.stderr["Code"], "NoSuchBucket");
}

#[test]
fn storage_cp_copies_files_both_ways() {
    let server = Server::start(&[]);
    let source = server.data_dir().join("upload.bin");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&source, &content).expect("write");
    let up = server.cli(&["storage", "cp", source.to_str().expect("utf-8"), "ds://datasandbox-home/shared/upload.bin"], &[]);
    assert_eq!(up.exit, 0, "{:?}", up.stderr);
    let target = server.data_dir().join("download.bin");
    let down = server.cli(&["storage", "cp", "ds://datasandbox-home/shared/upload.bin", target.to_str().expect("utf-8")], &[]);
    assert_eq!(down.exit, 0, "{:?}", down.stderr);
    assert_eq!(std::fs::read(&target).expect("read"), content);
}

#[test]
fn users_reach_only_their_own_home_folder() {
    let server = Server::start(&[]);
    let alice = server.token_for("alice");
    let bob = server.token_for("bob");
    let alice_key = format!("{}notes.txt", home_prefix("alice"));
    let bob_key = format!("{}secret.txt", home_prefix("bob"));

    let own = server.call_as(&alice, "storage:PutObject", &json!({ "Bucket": HOME, "Key": alice_key, "Body": b64(b"mine") }));
    assert_eq!(own.exit, 0, "{:?}", own.stderr);
    let bobs = server.call_as(&bob, "storage:PutObject", &json!({ "Bucket": HOME, "Key": bob_key, "Body": b64(b"bob's") }));
    assert_eq!(bobs.exit, 0, "{:?}", bobs.stderr);
    let listed = server.call_as(&alice, "storage:ListObjectsV2", &json!({ "Bucket": HOME, "Prefix": home_prefix("alice") }));
    assert_eq!(listed.stdout["KeyCount"], 1);

    let attacks = [
        ("storage:GetObject", json!({ "Bucket": HOME, "Key": bob_key })),
        ("storage:HeadObject", json!({ "Bucket": HOME, "Key": bob_key })),
        ("storage:PutObject", json!({ "Bucket": HOME, "Key": format!("{}planted.txt", home_prefix("bob")), "Body": b64(b"x") })),
        ("storage:DeleteObject", json!({ "Bucket": HOME, "Key": bob_key })),
        ("storage:ListObjectsV2", json!({ "Bucket": HOME, "Prefix": home_prefix("bob") })),
        ("storage:ListObjectsV2", json!({ "Bucket": HOME })),
        ("storage:ListObjectsV2", json!({ "Bucket": HOME, "Prefix": "user/custom/" })),
        (
            "storage:CopyObject",
            json!({ "Bucket": HOME, "Key": format!("{}stolen.txt", home_prefix("alice")), "CopySource": format!("{HOME}/{bob_key}") }),
        ),
        (
            "storage:PutObject",
            json!({ "Bucket": HOME, "Key": format!("user/federated/{}/x", &home_prefix("alice")[12..76]), "Body": b64(b"x") }),
        ),
    ];
    for (action, input) in attacks {
        let called = server.call_as(&alice, action, &input);
        assert_eq!((called.exit, called.stderr["Code"].as_str()), (1, Some("AccessDeniedException")), "{action} {input}");
        let record = server.audit_record(called.stderr["RequestId"].as_str().expect("request id"));
        assert_eq!(record["errorCode"], "AccessDeniedException");
        assert_eq!(record["userIdentity"]["userName"], "alice");
    }
    // Bob's object is untouched, and nothing was planted; the operator on the socket sees all.
    let bob_object = server.ok("storage:GetObject", json!({ "Bucket": HOME, "Key": bob_key }));
    assert_eq!(unb64(bob_object["Body"].as_str().expect("body")), b"bob's");
    let everything = server.ok("storage:ListObjectsV2", json!({ "Bucket": HOME }));
    assert_eq!(everything["KeyCount"], 2);
}

#[test]
fn unauthenticated_and_forged_tokens_are_rejected_and_audited() {
    let server = Server::start(&[]);
    let mut connection = http::tcp(&server.api).expect("connect");
    let anonymous = connection.call("storage:ListBuckets", &json!({}), None).expect("call");
    assert_eq!((anonymous.status, anonymous.json()["Code"].as_str()), (401, Some("UnrecognizedClientException")));
    let forged = connection
        .call("storage:ListBuckets", &json!({}), Some("dst_0000000000000000000000000000000000000000000000000000000000000000"))
        .expect("call");
    assert_eq!(forged.status, 401);
    let record = server.audit_record(forged.json()["RequestId"].as_str().expect("request id"));
    assert_eq!(record["userIdentity"]["type"], "Anonymous");
    assert_eq!(record["errorCode"], "UnrecognizedClientException");
}

#[test]
fn notifications_fire_functions_in_order_and_survive_spec_updates() {
    let spec = r#"
[[buckets]]
name = "intake"
[[buckets.notifications]]
id = "checksums"
events = ["ObjectCreated:*"]
suffix = ".csv"
function = "sha256-sidecar"
"#;
    let mut server = Server::start_with_spec(spec, &[]);
    // An operator adds a second notification by API; the spec's stays.
    let current = server.ok("storage:GetBucketNotificationConfiguration", json!({ "Bucket": "intake" }));
    let mut configs = current["LambdaFunctionConfigurations"].as_array().expect("configs").clone();
    assert_eq!(configs.len(), 1);
    configs.push(json!({ "Id": "operator-added", "LambdaFunctionArn": "sha256-sidecar", "Events": ["ObjectCreated:Put"], "Filter": { "Key": { "FilterRules": [{ "Name": "suffix", "Value": ".tsv" }] } } }));
    server.ok(
        "storage:PutBucketNotificationConfiguration",
        json!({ "Bucket": "intake", "NotificationConfiguration": { "LambdaFunctionConfigurations": configs } }),
    );

    let body = b"a,b\n1,2\n";
    server.ok("storage:PutObject", json!({ "Bucket": "intake", "Key": "drop/data.csv", "Body": b64(body) }));
    let sidecar = eventually(10, "the sha256 sidecar", || {
        let called = server.call("storage:GetObject", &json!({ "Bucket": "intake", "Key": "drop/data.csv.sha256" }));
        (called.exit == 0).then_some(called.stdout)
    });
    let expected = format!("{}  data.csv\n", hex::encode(Sha256::digest(body)));
    assert_eq!(String::from_utf8(unb64(sidecar["Body"].as_str().expect("body"))).expect("utf-8"), expected);
    assert_eq!(
        sidecar["Metadata"]["datasandbox-writer"],
        "arn:datasandbox:identity::000000000000:assumed-role/function-sha256-sidecar/sha256-sidecar"
    );

    // The delivery is audited, and the function's own actions are audited under its role.
    let invokes = server.audit(&[("EventSource", "functions")]);
    assert_eq!(invokes.len(), 1, "{invokes:#?}");
    assert_eq!(invokes[0]["requestParameters"]["TriggeringRequestId"], put_request_id(&server, "drop/data.csv"));
    assert!(invokes[0].get("errorCode").is_none());
    let function_puts = server.audit(&[("Username", "function/sha256-sidecar"), ("EventName", "PutObject")]);
    assert_eq!(function_puts.len(), 1);
    assert_eq!(function_puts[0]["userIdentity"]["type"], "AssumedRole");
    assert_eq!(function_puts[0]["eventType"], "AwsServiceEvent");

    // A file the filter does not match fires nothing.
    server.ok("storage:PutObject", json!({ "Bucket": "intake", "Key": "drop/readme.txt", "Body": b64(b"x") }));

    // Restart with the spec's notification changed: it is updated, the operator's one stays.
    std::fs::write(server.data_dir().join("datasandbox.toml"), spec.replace("suffix = \".csv\"", "suffix = \".parquet\""))
        .expect("rewrite spec");
    server.crash_and_restart(&[]);
    let after = server.ok("storage:GetBucketNotificationConfiguration", json!({ "Bucket": "intake" }));
    let ids: Vec<(&str, &str)> = after["LambdaFunctionConfigurations"]
        .as_array()
        .expect("configs")
        .iter()
        .map(|c| (c["Id"].as_str().expect("id"), c["Filter"]["Key"]["FilterRules"][0]["Value"].as_str().expect("suffix")))
        .collect();
    assert_eq!(ids, [("checksums", ".parquet"), ("operator-added", ".tsv")]);
    let txt_sidecar = server.call("storage:HeadObject", &json!({ "Bucket": "intake", "Key": "drop/readme.txt.sha256" }));
    assert_eq!(txt_sidecar.stderr["Code"], "NoSuchKey");
}

fn put_request_id(server: &Server, key: &str) -> Value {
    let records = server.audit(&[("EventName", "PutObject"), ("ResourceName", key)]);
    records.last().expect("a PutObject record")["requestID"].clone()
}

#[test]
fn keys_encrypt_decrypt_rotate_and_schedule_deletion() {
    let server = Server::start(&[]);
    let key = server.ok("keys:CreateKey", json!({ "Description": "notebook volumes" }));
    let key_id = key["KeyMetadata"]["KeyId"].as_str().expect("key id").to_owned();
    server.ok("keys:CreateAlias", json!({ "AliasName": "alias/analysis-kms", "TargetKeyId": key_id }));
    let sealed = server.ok(
        "keys:Encrypt",
        json!({ "KeyId": "alias/analysis-kms", "Plaintext": b64(b"volume key"), "EncryptionContext": { "volume": "v1" } }),
    );
    server.ok("keys:RotateKeyOnDemand", json!({ "KeyId": key_id }));
    let opened = server.ok("keys:Decrypt", json!({ "CiphertextBlob": sealed["CiphertextBlob"], "EncryptionContext": { "volume": "v1" } }));
    assert_eq!(unb64(opened["Plaintext"].as_str().expect("plaintext")), b"volume key", "material from before a rotation still decrypts");
    let wrong_context =
        server.call("keys:Decrypt", &json!({ "CiphertextBlob": sealed["CiphertextBlob"], "EncryptionContext": { "volume": "v2" } }));
    assert_eq!(wrong_context.stderr["Code"], "InvalidCiphertextException");
    let data_key = server.ok("keys:GenerateDataKey", json!({ "KeyId": key_id, "KeySpec": "AES_256" }));
    assert_eq!(unb64(data_key["Plaintext"].as_str().expect("plaintext")).len(), 32);
    server.ok("keys:EnableKeyRotation", json!({ "KeyId": key_id }));
    let status = server.ok("keys:GetKeyRotationStatus", json!({ "KeyId": key_id }));
    assert_eq!((status["KeyRotationEnabled"].as_bool(), status["RotationPeriodInDays"].as_i64()), (Some(true), Some(365)));

    let too_soon = server.call("keys:ScheduleKeyDeletion", &json!({ "KeyId": key_id, "PendingWindowInDays": 6 }));
    assert_eq!(too_soon.stderr["Code"], "ValidationException");
    let scheduled = server.ok("keys:ScheduleKeyDeletion", json!({ "KeyId": key_id, "PendingWindowInDays": 7 }));
    assert_eq!(scheduled["KeyState"], "PendingDeletion");
    let refused =
        server.call("keys:Decrypt", &json!({ "CiphertextBlob": sealed["CiphertextBlob"], "EncryptionContext": { "volume": "v1" } }));
    assert_eq!(refused.stderr["Code"], "KMSInvalidStateException");
    server.ok("keys:CancelKeyDeletion", json!({ "KeyId": key_id }));
    server.ok("keys:EnableKey", json!({ "KeyId": key_id }));
    server.ok("keys:Decrypt", json!({ "CiphertextBlob": sealed["CiphertextBlob"], "EncryptionContext": { "volume": "v1" } }));

    // The master key is private to the server's user.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.data_dir().join("master.key")).expect("master key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}
