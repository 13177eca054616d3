//! Local users, their sign-ins (from an address of the test's choosing) and their portal
//! sessions, for the identity rows of the attack table (findings 4, 10, 16, 17).

use serde_json::{Value, json};

use crate::support::server::Server;

pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// `identity:SignIn` over HTTP from `address` (a loopback address of the test's choosing, so
/// that a test can be two different callers); the status and the JSON answer.
pub(crate) fn sign_in_from(server: &Server, address: &str, body: &Value) -> (u16, Value) {
    sign_in_forwarded(server, address, None, body)
}

/// `identity:SignIn` from `address`, as a proxy would send it: with `X-Forwarded-For`.
pub(crate) fn sign_in_forwarded(server: &Server, address: &str, forwarded_for: Option<&str>, body: &Value) -> (u16, Value) {
    let port = server.api.rsplit(':').next().expect("a port");
    let forwarded = forwarded_for.map(|f| format!("x-forwarded-for: {f}"));
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--interface", address, "-H", "content-type: application/json", "--data-binary"])
        .arg(body.to_string())
        .args(forwarded.iter().flat_map(|header| ["-H", header.as_str()]))
        .arg(format!("http://127.0.0.1:{port}/api/identity/SignIn"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (answer, status) = text.rsplit_once('\n').expect("curl printed the status");
    (status.trim().parse().expect("a status"), serde_json::from_str(answer).unwrap_or(Value::String(answer.to_owned())))
}

/// A local user's sign-in token (`identity:SignIn`).
pub(crate) fn token_of(server: &Server, user: &str) -> String {
    let (status, answer) = sign_in_from(server, "127.0.0.1", &json!({ "UserName": user, "Password": PASSWORD }));
    assert_eq!(status, 200, "{user} signs in: {answer}");
    answer["Token"].as_str().expect("token").to_owned()
}

/// A local user associated with the default stack, signed in: their token.
pub(crate) fn portal_user(server: &Server, user: &str) -> String {
    server.ok("identity:CreateLocalUser", json!({ "UserName": user, "Password": PASSWORD }));
    server.ok(
        "streaming:BatchAssociateUserStack",
        json!({ "UserStackAssociations": [{ "StackName": "datasandbox-stack", "UserName": user, "AuthenticationType": "USERPOOL" }] }),
    );
    token_of(server, user)
}

/// A session launched from the portal with `token` (a USERPOOL session): its cookie.
pub(crate) fn portal_session(server: &Server, token: &str) -> String {
    let url = server.call_as(token, "streaming:CreateUserStreamingURL", &json!({ "StackName": "datasandbox-stack" }));
    assert_eq!(url.exit, 0, "{url:?}");
    let opened = crate::support::streaming::open(server, url.stdout["StreamingURL"].as_str().expect("url"));
    assert_eq!(opened.status, 200, "{}", opened.body);
    opened.cookie.expect("a session cookie")
}
