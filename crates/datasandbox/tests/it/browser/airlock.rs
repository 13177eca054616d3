//! The airlock in a real browser (Debian's Chromium through Playwright): a researcher asks
//! from her session page's My Files for a results table to leave; two reviewers, signed in to the
//! console with the reviewer role only, preview and approve it there, the second releases it;
//! the researcher downloads it from the portal; and one correlation id ties the whole chain
//! together in the trail.

use serde_json::{Value, json};

use crate::support::streaming::{active, server};
use crate::support::users::{PASSWORD, portal_session, portal_user};

const TABLE: &str = "region,count\nnorth,120\nsouth,45\n";

#[test]
fn a_results_table_leaves_through_two_reviewers_in_the_console_and_reaches_its_researcher_through_the_portal() {
    let signatures = tempfile::tempdir().expect("temp dir");
    let database = crate::airlock::eicar_database_in(signatures.path());
    let server = server(&[&database]);
    // The researcher works in a session launched from the portal.
    let token = portal_user(&server, "nora");
    let cookie = portal_session(&server, &token);
    let session = active(&server, &cookie, 60);
    let instance = session["InstanceId"].as_str().expect("instance");
    // She writes a results table in her home folder, which syncs to her bucket.
    let script = format!("printf '{}' > /home/user/MyFiles/HomeFolder/results.csv", TABLE.replace('\n', "\\n"));
    let written = server.cli(&["instances", "exec", instance, "--", "/bin/sh", "-c", &script], &[]);
    assert_eq!(written.exit, 0, "{written:?}");
    let session_cookie = format!("ds_session={cookie}");
    crate::support::server::eventually(30, "the table to sync to her home folder", || {
        let listed =
            crate::support::http::tcp(&server.api).ok()?.request("GET", "/session/files", &[("cookie", &session_cookie)], b"").ok()?;
        String::from_utf8_lossy(&listed.body).contains("\"results.csv\"").then_some(())
    });
    // Two reviewers, who hold the reviewer role and nothing else.
    for reviewer in ["rita", "ravi"] {
        server.ok("identity:CreateLocalUser", json!({ "UserName": reviewer, "Password": PASSWORD, "Roles": ["reviewer"] }));
    }

    let base = format!("http://{}", server.api);
    let events = crate::support::browser::run_flow("airlock.mjs", &[&base, &session_cookie, "nora", "rita", "ravi", PASSWORD], String::new);
    let event = |name: &str| events.iter().find(|e| e["event"] == name).cloned().unwrap_or_else(|| panic!("no {name} event: {events:?}"));
    // She asked from her session's My Files, with her reason; the request went to review.
    let exported = event("exported");
    assert!(exported["note"].as_str().is_some_and(|n| n.starts_with("results.csv: sent for review")), "{exported}");
    let request = exported["request"].as_str().expect("request id").to_owned();
    let mine = server.call_as(&token, "airlock:DescribeRequests", &json!({ "RequestId": request }));
    assert_eq!(mine.stdout["Requests"][0]["Justification"], "the tables of the paper", "{mine:?}");
    assert_eq!(event("preview")["cells"], json!([["region", "count"], ["north", "120"], ["south", "45"]]));
    let votes: Vec<&Value> = events.iter().filter(|e| e["event"] == "voted").collect();
    assert_eq!(votes.iter().map(|v| v["state"].as_str().unwrap_or_default()).collect::<Vec<_>>(), ["in_review", "approved"], "{votes:?}");
    // The second reviewer saw one vote cast, not whose or which, until hers decided it.
    let before = events.iter().find(|e| e["event"] == "before" && e["reviewer"] == "ravi").expect("ravi's view before voting");
    assert_eq!(before["votes"], "1 cast", "a vote shown before all were cast: {before}");
    assert_eq!(event("released")["state"], "released");
    assert!(event("requests")["text"].as_str().is_some_and(|t| t.contains("released")), "{events:?}");
    let downloaded = event("downloaded");
    assert_eq!((downloaded["name"].as_str(), downloaded["text"].as_str()), (Some("results.csv"), Some(TABLE)));

    // One correlation id, from the session's submission to the download.
    let created = server.audit(&[("EventName", "CreateRequest")]);
    let correlation = created[0]["correlationId"].as_str().expect("a correlation id").to_owned();
    let traced = server.cli(&["audit", "trace", "--correlation-id", &correlation, "--json"], &[]);
    let text = match &traced.stdout {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    for action in [
        "CreateRequest",
        "AddFile",
        "SubmitRequest",
        "PreviewFile",
        "CastVote",
        "ReleaseRequest",
        "CreateDownloadUrl",
        "DownloadFile",
        "AirlockRequestStateChanged",
    ] {
        assert!(text.contains(&format!(":{action}\"")), "{action} is not in the request's trace: {text}");
    }
}
