//! The console's recordings player in a real browser (Debian's Chromium through Playwright):
//! an auditor opens a recorded session with a reason, seeks to the middle, where a frame is
//! drawn from its segment's own start (screenshot `recording-middle.png`), plays and pauses;
//! each segment played is on the record as theirs.

use crate::recordings::{recorded_server, recorded_session, signed_in};

#[test]
fn an_auditor_seeks_and_plays_a_recording_in_the_console() {
    let server = recorded_server();
    let auditor = signed_in(&server, "aude", &["auditor"]);
    let (id, stored) = recorded_session(&server, &auditor, "alice", |_, _| {});
    let why = "Reviewing the session for the quarterly access audit";
    let base = format!("http://{}", server.api);
    let password = crate::support::users::PASSWORD;
    let events = crate::support::browser::run_flow("recordings.mjs", &[&base, "aude", password, &id, why], String::new);
    let event = |name: &str| events.iter().find(|e| e["event"] == name).cloned().unwrap_or_else(|| panic!("no {name} event: {events:?}"));
    assert_eq!(event("segments")["segments"], stored.len());
    let seeked = event("seeked");
    assert_eq!((seeked["width"].as_u64(), seeked["height"].as_u64()), (Some(1280), Some(800)), "{seeked}");
    assert!(seeked["drawn"].as_u64().is_some_and(|lit| lit > 1000), "a frame was drawn: {seeked}");
    let played = event("played");
    assert!(played["after"].as_f64() > played["before"].as_f64(), "playing moved on: {played}");
    assert!(events.iter().all(|e| e["event"] != "pageerror"), "{events:?}");
    let viewings = server.audit(&[("EventName", "PlayRecordingSegment"), ("Username", "aude")]);
    assert!(!viewings.is_empty() && viewings.iter().all(|v| v["requestParameters"]["Justification"] == why), "{viewings:?}");
}
