//! Finding 10: credentials stay in their channel. A sign-in's bearer token does not reach
//! the home folder around the stack's file-transfer settings; an instance's credential runs no
//! identity self-service; a token alone cannot replace the account's TOTP device.

use serde_json::{Value, json};

use crate::support::server::Server;
use crate::support::users::{PASSWORD, portal_user, sign_in_from, token_of};

#[test]
fn f10_a_sign_in_token_does_not_reach_the_home_folder_around_the_stacks_settings() {
    let server = Server::start(&[]);
    let token = portal_user(&server, "alice");
    let signed = sign_in_from(&server, "127.0.0.1", &json!({ "UserName": "alice", "Password": PASSWORD })).1;
    let home = signed["HomeFolderPrefix"].as_str().expect("home").to_owned();
    // Something in alice's home folder, as her session's instance would have put it.
    let key = format!("{home}report.csv");
    server.ok("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": key, "Body": "c2VjcmV0LDEK" }));
    let attempts = [
        ("storage:GetObject", json!({ "Bucket": "datasandbox-home", "Key": key })),
        ("storage:ListObjectsV2", json!({ "Bucket": "datasandbox-home", "Prefix": home })),
        ("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": format!("{home}planted.py"), "Body": "eA==" })),
        ("storage:DeleteObject", json!({ "Bucket": "datasandbox-home", "Key": key })),
    ];
    for (action, input) in attempts {
        let called = server.call_as(&token, action, &input);
        assert_eq!(called.stderr["Code"], "AccessDeniedException", "{action} with alice's sign-in token: {called:?}");
    }
    let kept = server.ok("storage:GetObject", json!({ "Bucket": "datasandbox-home", "Key": key }));
    assert_eq!(kept["Body"], "c2VjcmV0LDEK");
}

#[test]
fn f10_an_instance_credential_runs_no_identity_self_service() {
    let server = Server::start(&[]);
    assert_eq!(server.cli(&["image", "build", "base"], &[]).exit, 0);
    server.ok("identity:CreateLocalUser", json!({ "UserName": "alice", "Password": PASSWORD }));
    // An instance serving the local user alice (as a USERPOOL session's instance does).
    let instance = server.ok("streaming:CreateInstance", json!({ "UserId": "alice", "AccessMode": "local" }));
    let id = instance["Instance"]["InstanceId"].as_str().expect("id").to_owned();
    let from_inside = |action: &str, input: &Value| -> (String, String) {
        let (service, name) = action.split_once(':').expect("service:Action");
        let script = format!(
            "E=$(tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^DS_ENDPOINT=//p'); curl -s -w '\\n%{{http_code}}' -H \"Authorization: Bearer $(cat /run/datasandbox/credential)\" --data-binary '{input}' $E/api/{service}/{name}"
        );
        let called = server.cli(&["instances", "exec", &id, "--", "/bin/bash", "-c", &script], &[]);
        let text = match &called.stdout {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let (body, status) =
            text.trim_end().rsplit_once('\n').map(|(b, s)| (b.to_owned(), s.to_owned())).unwrap_or((text.clone(), String::new()));
        (status, body)
    };
    // A 12-hour token, free of the link and the session, from the instance's credential.
    let (status, body) = from_inside("identity:SignIn", &json!({ "DurationSeconds": 43200 }));
    assert_eq!(status, "400", "the instance minted a sign-in token: {body}");
    assert!(!body.contains("dst_"), "{body}");
    // A TOTP device for alice, chosen by whatever runs in her workspace.
    let (status, body) = from_inside("identity:AssociateSoftwareToken", &json!({}));
    assert_eq!(status, "400", "the instance enrolled a TOTP device: {body}");
    // The portal's actions are the signed-in user's, not the workspace's.
    let (status, body) = from_inside("streaming:DescribeUserSessions", &json!({}));
    assert_eq!(status, "400", "the instance listed the user's sessions: {body}");
}

#[test]
fn f10_a_token_alone_cannot_choose_or_replace_the_totp_device() {
    let server = Server::start(&[]);
    server.ok("identity:CreateLocalUser", json!({ "UserName": "carol", "Password": PASSWORD }));
    // Whoever holds a token (taken from a browser, say) but not the password enrols nothing.
    let stolen = token_of(&server, "carol");
    let enrolled = server.call_as(&stolen, "identity:AssociateSoftwareToken", &json!({}));
    assert_eq!(enrolled.stderr["Code"], "ValidationException", "a token alone chose carol's second factor: {enrolled:?}");
    // Carol enrols her device with her password.
    let first = server.call_as(&stolen, "identity:AssociateSoftwareToken", &json!({ "Password": PASSWORD }));
    assert_eq!(first.exit, 0, "{first:?}");
    let secret = first.stdout["SecretCode"].as_str().expect("secret").to_owned();
    let code = |when: &str| {
        let out = std::process::Command::new("oathtool").args(["--totp", "-b", "-N", when, &secret]).output().expect("oathtool");
        String::from_utf8(out.stdout).expect("digits").trim().to_owned()
    };
    assert_eq!(server.call_as(&stolen, "identity:VerifySoftwareToken", &json!({ "UserCode": code("now") })).exit, 0);
    // Replacing it takes the password *and* a current code of the device enrolled now.
    let replaced = server.call_as(&stolen, "identity:AssociateSoftwareToken", &json!({ "Password": PASSWORD }));
    assert_eq!(replaced.stderr["Code"], "NotAuthorizedException", "replaced without a code: {replaced:?}");
    let replaced =
        server.call_as(&stolen, "identity:AssociateSoftwareToken", &json!({ "Password": PASSWORD, "TotpCode": code("now + 30 seconds") }));
    assert_eq!(replaced.exit, 0, "{replaced:?}");
    // Neither password nor code reaches the record.
    let trail = server.audit(&[("EventName", "AssociateSoftwareToken")]).iter().map(Value::to_string).collect::<String>();
    assert!(!trail.contains("correct horse"), "the password is in the trail");
}
