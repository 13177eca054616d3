//! SAML sign-in in a real browser against a real identity provider (pysaml2, `saml_idp.py`):
//! SP-initiated from the portal, and IdP-initiated through the page that asks to confirm it.

use serde_json::json;

use crate::support::browser::run_flow;
use crate::support::saml::{IdpServer, fetch_sp_metadata, free_port, identity_provider, responses, sessions_of};
use crate::support::streaming::{self, STACK, server};

#[test]
fn saml_sign_in_in_a_real_browser_reaches_the_portal_and_a_session() {
    let idp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    identity_provider(idp.path(), &format!("http://127.0.0.1:{port}"));
    let metadata = format!("idp_metadata={}", idp.path().join("idp.xml").display());
    let server = server(&[&metadata]);
    let sp = fetch_sp_metadata(&server, idp.path());
    let _idp = IdpServer::start(idp.path(), &sp, port, "dana@example.test", &["saml-stack"]);

    let events = run_flow("saml.mjs", &[&format!("http://{}", server.api)], String::new);
    assert_eq!(events[0]["user"], "dana@example.test");
    assert_eq!(events[0]["stacks"], json!([STACK]));
    assert!(events[1]["url"].as_str().is_some_and(|u| u.ends_with("/session")), "{events:?}");
    let sessions = sessions_of(&server, "dana@example.test");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["State"], "ACTIVE");
    // The sign-in answered the SP's own request (SP-initiated), and the launch was the SAML user's.
    let records = server.audit(&[("EventName", "AssumeRoleWithSAML"), ("Username", "dana@example.test")]);
    assert!(records.iter().any(|r| r["errorCode"].is_null()), "{records:#?}");
    let launches = server.audit(&[("EventName", "CreateUserStreamingURL"), ("Username", "dana@example.test")]);
    assert!(launches.iter().any(|r| r["errorCode"].is_null() && r["resources"][0]["ARN"].as_str().is_some_and(|a| a.ends_with(":stack/datasandbox-stack"))), "{launches:#?}");
    streaming::expire(&server, &sessions[0]);
}

/// An IdP-initiated response posted from another origin's page lands on a page naming the
/// account, whose button ignores a click that comes at once (double-clickjacking: the second
/// click of a double-click another site asked for, after it closed its window over this one),
/// stays disabled while the page lacks the focus and through a burst of keys, and takes a click
/// made once the page was in front, untouched, for a second.
#[test]
fn an_idp_initiated_sign_in_is_confirmed_only_by_a_click_made_once_the_page_was_in_front() {
    let idp = tempfile::tempdir().expect("tempdir");
    identity_provider(idp.path(), &format!("http://127.0.0.1:{}", free_port()));
    let metadata = format!("idp_metadata={}", idp.path().join("idp.xml").display());
    let server = server(&[&metadata]);
    let sp = fetch_sp_metadata(&server, idp.path());
    let made = responses(
        idp.path(),
        &sp,
        &json!([{ "name": "clicked", "user": "erin@example.test" }, { "name": "tapped", "user": "erin@example.test" }]),
    );
    let response = |name: &str| made[name].as_str().expect("a response").to_owned();

    let events = run_flow("saml_confirm.mjs", &[&format!("http://{}", server.api), &response("clicked"), &response("tapped")], String::new);
    let event = |name: &str| events.iter().find(|e| e["event"] == name).cloned().unwrap_or_else(|| panic!("no {name}: {events:?}"));
    let unconfirmed = |name: &str| event(name)["url"].as_str().is_some_and(|u| u.ends_with("/saml/acs"));
    assert!(unconfirmed("early"), "a click at once confirmed the sign-in: {events:?}");
    assert_eq!(event("early")["disabled"], true, "{events:?}");
    assert_eq!(event("unfocused")["disabled"], true, "the button armed without the focus: {events:?}");
    assert!(unconfirmed("refocused"), "a click as the focus came back confirmed the sign-in: {events:?}");
    assert_eq!(event("mashed")["disabled"], true, "the button armed through a burst of keys: {events:?}");
    assert!(event("armed")["afterMs"].as_u64().is_some_and(|ms| ms >= 900), "the button was enabled too soon: {events:?}");
    assert_eq!(event("portal")["user"], "erin@example.test", "{events:?}");
    assert!(event("tapped")["url"].as_str().is_some_and(|u| u.ends_with("/portal")), "a tap never confirmed: {events:?}");
    let signed_in = server.audit(&[("EventName", "AssumeRoleWithSAML"), ("Username", "erin@example.test")]);
    assert!(signed_in.iter().any(|r| r["errorCode"].is_null()), "{signed_in:#?}");
}
