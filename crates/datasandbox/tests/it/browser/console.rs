//! The operator console in a real browser (Debian's Chromium through Playwright): an operator
//! holding the `admin` role signs in through SAML, sees the fleets, creates a streaming URL
//! that a user opens, finds the session, traces it, expires it, and validates the trail. A
//! signed-in user without the role is refused, and the refusal is on the record with their name.

use serde_json::{Value, json};

use crate::support::http;
use crate::support::saml::{IdpServer, fetch_sp_metadata, free_port, identity_provider};
use crate::support::streaming::server;

const PASSWORD: &str = "correct horse battery staple";

#[test]
fn an_admin_runs_the_console_and_others_are_kept_out() {
    let idp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    identity_provider(idp.path(), &format!("http://127.0.0.1:{port}"));
    let metadata = format!("idp_metadata={}", idp.path().join("idp.xml").display());
    let server = server(&[&metadata]);

    // Without a cookie, and with a token that lacks the admin role: refused.
    let bare = http::tcp(&server.api).expect("connect").request("POST", "/console/api/streaming/DescribeFleets", &[], b"{}").expect("call");
    assert_eq!(bare.status, 401, "{}", String::from_utf8_lossy(&bare.body));
    server.ok("identity:CreateLocalUser", json!({ "UserName": "olga", "Password": PASSWORD }));
    let body = json!({ "UserName": "olga", "Password": PASSWORD }).to_string();
    let olga = http::tcp(&server.api)
        .expect("connect")
        .request("POST", "/console/signin", &[("content-type", "application/json"), ("origin", "http://localhost")], body.as_bytes())
        .expect("sign in");
    assert_eq!(olga.status, 403, "{}", String::from_utf8_lossy(&olga.body));
    assert_eq!(olga.json()["Code"], "ConsoleAccessDenied");
    assert!(olga.headers.iter().all(|(n, _)| n != "set-cookie"), "no console cookie for a non-admin");
    let refused = server.audit(&[("Username", "olga"), ("EventName", "GetCallerIdentity")]);
    assert!(refused.iter().any(|r| r["errorCode"] == "ConsoleAccessDenied"), "{refused:#?}");

    // The admin, through SAML, in a real browser.
    let sp = fetch_sp_metadata(&server, idp.path());
    let _idp = IdpServer::start(idp.path(), &sp, port, "oscar@example.test", &["admin"]);
    let events = crate::support::browser::run_flow("console.mjs", &[&format!("http://{}", server.api), "erin"], String::new);
    let event = |name: &str| events.iter().find(|e| e["event"] == name).cloned().unwrap_or_else(|| panic!("no {name} event: {events:?}"));
    assert_eq!(event("fleets")["fleets"], json!(["datasandbox-fleet"]));
    // The nodes: this server, holding its lease.
    let listed = server.cli(&["nodes"], &[]);
    let name = listed.stdout["Nodes"][0]["Name"].clone();
    assert_eq!(event("nodes")["nodes"], json!([[name, "ACTIVE"]]));
    assert!(event("url")["url"].as_str().is_some_and(|u| u.contains("/streaming/")));
    let trace = event("trace");
    let session = trace["session"].as_str().expect("session id").to_owned();
    let actions: Vec<&str> = trace["actions"].as_array().expect("actions").iter().filter_map(Value::as_str).collect();
    assert!(actions.contains(&"streaming:RedeemStreamingURL"), "{actions:?}");
    assert_eq!(event("expired")["session"], session);
    assert_eq!(event("trail")["text"], "The trail is intact.");
    let report = event("report");
    assert!(report["name"].as_str().is_some_and(|n| n.starts_with("daily-session-report-")), "{report}");
    let csv = report["text"].as_str().expect("the report's text");
    assert!(csv.starts_with("user_session_id,"), "{csv}");
    assert!(csv.contains(&session), "the expired session is in today's report: {csv}");

    // Each of the console's steps is an action of oscar's.
    let expired = server.audit(&[("EventName", "ExpireSession"), ("Username", "oscar@example.test")]);
    assert!(expired.iter().any(|r| r["errorCode"].is_null() && r["requestParameters"]["SessionId"] == session.as_str()), "{expired:#?}");
    let made = server.audit(&[("EventName", "CreateStreamingURL"), ("Username", "oscar@example.test")]);
    assert!(made.iter().any(|r| r["errorCode"].is_null() && r["requestParameters"]["UserId"] == "erin"), "{made:#?}");
    let validated = server.audit(&[("EventName", "ValidateTrail"), ("Username", "oscar@example.test")]);
    assert!(!validated.is_empty());
}
