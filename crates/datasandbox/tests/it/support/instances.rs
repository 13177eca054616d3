//! Instances created through the control plane and scripts run inside them (`instances exec`),
//! for the instance tests and the attack rows that attack from inside an instance.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::server::{Server, eventually};

pub(crate) fn server_with_image() -> Server {
    let server = Server::start(&[]);
    let built = server.cli(&["image", "build", "base"], &[]);
    assert_eq!(built.exit, 0, "{:?}", built.stderr);
    server
}

pub(crate) fn create(server: &Server, user: &str) -> Value {
    let out = server.ok("streaming:CreateInstance", json!({ "UserId": user }));
    out["Instance"].clone()
}

/// Runs a shell script inside the instance through `instances exec`.
pub(crate) fn sh(server: &Server, instance: &Value, script: &str) -> (i32, String) {
    let id = instance["InstanceId"].as_str().expect("id");
    let called = server.cli(&["instances", "exec", id, "--", "/bin/bash", "-c", script], &[]);
    let text = match &called.stdout {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (called.exit, text)
}

/// A curl call to the endpoint from inside, with the instance's credential; prints the body
/// and then the HTTP status.
pub(crate) fn endpoint_call(action: &str, input: &Value, with_credential: bool) -> String {
    let (service, name) = action.split_once(':').expect("service:Action");
    let auth = if with_credential { "-H \"Authorization: Bearer $(cat /run/datasandbox/credential)\"" } else { "" };
    format!(
        "E=$(tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^DS_ENDPOINT=//p'); curl -s -w '\\n%{{http_code}}' {auth} --data-binary '{}' $E/api/{service}/{name}",
        input
    )
}

/// A spec with one dataset, `trials` (bucket `research`, prefix `trials/`), granted to `hana`.
pub(crate) const DATASET_SPEC: &str = r#"[[buckets]]
name = "datasandbox-home"
home_folders = true

[[buckets]]
name = "research"

[datasets.trials]
bucket = "research"
prefix = "trials/"

[[policies]]
name = "operator-admin"
text = 'permit (principal is DataSandbox::Operator, action, resource);'

[[policies]]
name = "trials-readers"
text = """
permit (
  principal == DataSandbox::User::"hana",
  action in [DataSandbox::Action::"storage:GetObject", DataSandbox::Action::"storage:ListObjectsV2"],
  resource in DataSandbox::Bucket::"research"
);"""
"#;

/// Checks from inside a session's instance that it works in the home folder of access `mode`
/// whose hash is of `hashed` (the user id; for a federated user, the issuer, a newline and the
/// user id): the session says so (`DS_USER_ACCESS_MODE`), and a file written into the synced
/// folder lands under `user/<mode>/<sha256(hashed)>/`.
pub(crate) fn works_in_home_folder(server: &crate::support::server::Server, instance: &str, mode: &str, hashed: &str) {
    let script =
        "sed -n 's/^DS_USER_ACCESS_MODE=//p' /run/datasandbox/session.env; echo hello > /home/user/MyFiles/HomeFolder/written-inside.txt";
    let env = server.cli(&["instances", "exec", instance, "--", "/bin/sh", "-c", script], &[]);
    assert_eq!(env.stdout.as_str().map(str::trim), Some(mode), "{env:?}");
    let prefix = format!("user/{mode}/{}/", hex::encode(Sha256::digest(hashed.as_bytes())));
    eventually(10, "the file in the user's home folder", || {
        let listed = server.ok("storage:ListObjectsV2", json!({ "Bucket": "datasandbox-home", "Prefix": prefix }));
        listed["Contents"].as_array()?.iter().any(|o| o["Key"].as_str().is_some_and(|k| k.ends_with("written-inside.txt"))).then_some(())
    });
}
