//! The console's recordings player in a real browser (Debian's Chromium through Playwright):
//! a session of the default spec (JupyterLab in the kiosk browser) is recorded; an auditor
//! opens the recording with a reason, seeks into it after JupyterLab was drawn, where the frame
//! is rebuilt from its segment's own start and shows JupyterLab's launcher (screenshot
//! `recording-middle.png`), plays and pauses; each segment played is on the record as theirs.

use serde_json::Value;

use crate::recordings::{pointer_step, recorded_session, signed_in};
use crate::support::server::{Server, eventually};

#[test]
fn an_auditor_seeks_into_a_recorded_jupyterlab_session_and_plays_it_in_the_console() {
    // The default spec (the desktop image, the notebook as the stack's application), recorded,
    // its segments rolling every 3 s.
    let server = Server::start(&["streaming.timeout_scale_ms=10", "stacks.datasandbox-stack.session_recording=true"]);
    let auditor = signed_in(&server, "aude", &["auditor"]);
    let mut drawn_at = 0.0;
    let (id, stored) = recorded_session(&server, &auditor, "alice", |rfb, _| {
        // JupyterLab loaded in the kiosk browser (its launcher's logos come last), then drawn on
        // the display (a machine under load paints late); the pointer moves meanwhile (an idle
        // session would be disconnected), and the session goes on a while to be recorded.
        let mut step = 0u16;
        let mut walk = |rfb: &mut crate::stream::Rfb| {
            step = step.wrapping_add(1);
            rfb.send(&pointer_step(step));
        };
        eventually(240, "JupyterLab's launcher in the kiosk browser", || {
            walk(rfb);
            let records = server.audit(&[("EventName", "NotebookRequest")]);
            records.into_iter().find(|r| r["requestParameters"]["Path"] == "kernelspecs/python3/logo-svg.svg")
        });
        eventually(120, "JupyterLab's launcher drawn on the display", || {
            walk(rfb);
            std::thread::sleep(std::time::Duration::from_millis(300));
            (python_yellow(&rfb.frame()) >= 200).then_some(())
        });
        drawn_at = chrono::Utc::now().timestamp_millis() as f64;
        for _ in 0..40 {
            walk(rfb);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
    // Where to seek: 2 s after the launcher was seen drawn, as a share of the recording's length.
    let millis = |at: &str| chrono::DateTime::parse_from_rfc3339(at).expect("a time").timestamp_millis() as f64;
    let (start, end) = (
        millis(stored[0]["StartTime"].as_str().expect("start")),
        millis(stored.last().expect("a segment")["EndTime"].as_str().expect("end")),
    );
    let share = ((drawn_at + 2000.0 - start) / (end - start)).clamp(0.0, 1.0);
    let why = "Reviewing the session for the quarterly access audit";
    let base = format!("http://{}", server.api);
    let password = crate::support::users::PASSWORD;
    let events =
        crate::support::browser::run_flow("recordings.mjs", &[&base, "aude", password, &id, why, &format!("{share:.3}")], String::new);
    let event = |name: &str| events.iter().find(|e| e["event"] == name).cloned().unwrap_or_else(|| panic!("no {name} event: {events:?}"));
    assert_eq!(event("segments")["segments"], stored.len());
    let seeked: Value = event("seeked");
    assert_eq!((seeked["width"].as_u64(), seeked["height"].as_u64()), (Some(1280), Some(800)), "{seeked}");
    assert!(
        seeked["yellow"].as_u64().is_some_and(|yellow| yellow >= 200),
        "JupyterLab's launcher (its Python logos) is not in the frame: {seeked}"
    );
    let played = event("played");
    assert!(played["after"].as_f64() > played["before"].as_f64(), "playing moved on: {played}");
    assert!(events.iter().all(|e| e["event"] != "pageerror"), "{events:?}");
    let viewings = server.audit(&[("EventName", "PlayRecordingSegment"), ("Username", "aude")]);
    assert!(!viewings.is_empty() && viewings.iter().all(|v| v["requestParameters"]["Justification"] == why), "{viewings:?}");
}

/// Pixels of the Python logo's yellow in a raw frame (blue-green-red-pad), counted as the
/// player's page counts them (`web/tests/recordings.mjs`).
fn python_yellow(frame: &[u8]) -> usize {
    frame.chunks(4).filter(|p| p[2] > 220 && p[1] > 180 && p[0] < 120).count()
}
