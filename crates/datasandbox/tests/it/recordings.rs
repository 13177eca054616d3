//! Session recording, attacked: a recorded session's display is kept in segments that only
//! auditors may play or export (with a justification, on the record); what the user types,
//! pastes or copies is in no segment; `recordings verify` names the segment a flipped byte, a
//! cut tail, a deleted segment or a swap is in; and `kill -9` leaves a segment sealed as
//! incomplete at the next start, a few seconds short at most.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stream::{Rfb, inside, session};
use crate::support::server::{Called, Server, eventually, unb64};

const MARKER: &str = "SECRET-7f3a";

pub(crate) fn signed_in(server: &Server, user: &str, roles: &[&str]) -> String {
    let password = crate::support::users::PASSWORD;
    server.ok("identity:CreateLocalUser", json!({ "UserName": user, "Password": password, "Roles": roles }));
    crate::support::users::token_of(server, user)
}

pub(crate) fn recorded_server() -> Server {
    crate::support::streaming::server(&[
        "stream_view=DESKTOP",
        // Segments roll every 3 s here (300 s × 10 ms), timeouts likewise scaled.
        "streaming.timeout_scale_ms=10",
        "stacks.datasandbox-stack.session_recording=true",
    ])
}

/// A recorded session of `user`'s, from its stream's first opening (where `meanwhile` acts)
/// until it is expired after three segments, the pointer moving across the screen meanwhile
/// (the display draws it into its pixels): its id and its stored segments.
pub(crate) fn recorded_session(server: &Server, auditor: &str, user: &str, meanwhile: impl FnOnce(&mut Rfb, &str)) -> (String, Vec<Value>) {
    let (cookie, opened) = session(server, user);
    assert_eq!(opened["Recorded"], true, "the session page says the session is recorded");
    let (id, instance) =
        (opened["SessionId"].as_str().expect("id").to_owned(), opened["InstanceId"].as_str().expect("instance").to_owned());
    let mut rfb = Rfb::open(server, &cookie, &id);
    rfb.handshake();
    meanwhile(&mut rfb, &instance);
    let mut step = 0u16;
    eventually(30, "three sealed segments", || {
        for _ in 0..10 {
            step = step.wrapping_add(1);
            rfb.send(&pointer_step(step));
            std::thread::sleep(Duration::from_millis(100));
        }
        (segments(server, auditor, &id).len() >= 3).then_some(())
    });
    server.ok("streaming:ExpireSession", json!({ "SessionId": id }));
    let stored = eventually(30, "the recording's last segment", || {
        let stored = segments(server, auditor, &id);
        stored.last().is_some_and(|s| s["EndsRecording"] == true).then_some(stored)
    });
    (id, stored)
}

/// A `PointerEvent` at the `step`th place of a walk across the screen: input that keeps a
/// session from idling out while a test waits.
pub(crate) fn pointer_step(step: u16) -> Vec<u8> {
    let mut event = vec![5, 0];
    event.extend_from_slice(&(40 + (step.wrapping_mul(37)) % 1200).to_be_bytes());
    event.extend_from_slice(&(40 + (step.wrapping_mul(23)) % 700).to_be_bytes());
    event
}

/// The `KeyEvent`s that type `text`, key by key, as a browser's keyboard sends them.
fn key_events(text: &str) -> Vec<u8> {
    let mut events = Vec::new();
    for byte in text.bytes() {
        for down in [1u8, 0] {
            events.extend_from_slice(&[4, down, 0, 0]);
            events.extend_from_slice(&u32::from(byte).to_be_bytes());
        }
    }
    events
}

/// What the display sent in one segment, played by `auditor` for `why`.
fn played(server: &Server, auditor: &str, session_id: &str, segment: u64, why: &str) -> Vec<u8> {
    let out = server.call_as(
        auditor,
        "streaming:PlayRecordingSegment",
        &json!({ "SessionId": session_id, "Segment": segment, "Justification": why }),
    );
    assert_eq!(out.exit, 0, "{:?}", out.stderr);
    out.stdout["Records"].as_array().expect("records").iter().flat_map(|r| unb64(r["Data"].as_str().expect("data"))).collect()
}

/// The first segment's header, from its export.
fn segment_header(server: &Server, auditor: &str, session_id: &str, why: &str) -> Value {
    let out = server.call_as(
        auditor,
        "streaming:ExportRecordingSegment",
        &json!({ "SessionId": session_id, "Segment": 0, "Justification": why }),
    );
    assert_eq!(out.exit, 0, "{:?}", out.stderr);
    let bytes = unb64(out.stdout["Body"].as_str().expect("body"));
    let length = u32::from_be_bytes(bytes[7..11].try_into().expect("4 bytes")) as usize;
    serde_json::from_slice(&bytes[11..11 + length]).expect("the header's JSON")
}

fn segments(server: &Server, auditor: &str, session_id: &str) -> Vec<Value> {
    let out = server.call_as(auditor, "streaming:DescribeRecordings", &json!({ "SessionId": session_id }));
    assert_eq!(out.exit, 0, "{:?}", out.stderr);
    out.stdout["Segments"].as_array().cloned().unwrap_or_default()
}

fn refused(called: Called) -> String {
    assert_ne!(called.exit, 0, "the call succeeded: {:?}", called.stdout);
    called.stderr["Code"].as_str().unwrap_or_default().to_owned()
}

fn verify(server: &Server, session_id: &str, dir: &Path) -> (i32, String) {
    let out = server.cli(&["recordings", "verify", session_id, "--from", dir.to_str().expect("utf-8")], &[]);
    (out.exit, out.stdout.as_str().map_or_else(|| out.stdout.to_string(), str::to_owned))
}

/// A copy of the export in `from`, changed by `change`, verified: its exit code and report.
fn tampered(server: &Server, session_id: &str, from: &Path, change: impl FnOnce(&Path)) -> (i32, String) {
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(from).expect("export").flatten() {
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
    }
    change(copy.path());
    verify(server, session_id, copy.path())
}

#[test]
fn a_recorded_session_is_played_by_auditors_only_and_every_tampering_is_named() {
    let server = recorded_server();
    let auditor = signed_in(&server, "aude", &["auditor"]);
    let (id, stored) = recorded_session(&server, &auditor, "alice", |rfb, instance| {
        // What the user types, pastes and copies out never reaches a segment.
        rfb.send(&key_events(&format!("{MARKER}-typed")));
        rfb.paste(&format!("{MARKER}-pasted"));
        inside(&server, instance, &format!("printf {MARKER}-copied | xclip -selection clipboard -i >/dev/null 2>&1"));
    });
    // The session's end is on the record (written a moment after its last segment is stored).
    eventually(10, "the session's end, recorded", || {
        let ended = server.audit(&[("EventName", "SessionEnded")]);
        ended.iter().any(|r| r["requestParameters"]["SessionId"] == id && r["requestParameters"]["Recorded"] == true).then_some(())
    });

    // Playing: the middle segment decodes alone, from its own handshake and first frame.
    let middle = stored.len() as u64 / 2;
    let why = "Investigating ticket INC-4411: suspected copy of the cohort table";
    let display = played(&server, &auditor, &id, middle, why);
    assert!(display.starts_with(b"RFB 003.008\n\x01\x01\0\0\0\0"), "a segment starts with its own handshake: {:?}", &display[..16]);
    let name = u32::from_be_bytes(display[38..42].try_into().expect("4 bytes")) as usize;
    assert_eq!(display[42 + name], 0, "then a framebuffer update");
    // Neither the copied nor the pasted text, nor the typing's key events, in any segment's
    // display data (the recorder's connection carries no client message back).
    let typed = key_events(MARKER);
    for segment in 0..stored.len() as u64 {
        let bytes = played(&server, &auditor, &id, segment, why);
        assert!(!contains(&bytes, MARKER.as_bytes()), "segment {segment} holds the marker");
        assert!(!contains(&bytes, &typed[..32]), "segment {segment} holds the typing");
    }

    // Nobody else plays, lists or exports: the recorded user, another analyst, an admin, the operator.
    let alice_token = server.token_for("alice");
    let admin = signed_in(&server, "adam", &["admin"]);
    let reviewer = signed_in(&server, "rita", &["reviewer"]);
    for (who, token) in [("the recorded user", &alice_token), ("an admin", &admin), ("a reviewer", &reviewer)] {
        let input = json!({ "SessionId": id, "Segment": 0, "Justification": why });
        assert_eq!(refused(server.call_as(token, "streaming:PlayRecordingSegment", &input)), "AccessDeniedException", "{who}");
        assert_eq!(refused(server.call_as(token, "streaming:DescribeRecordings", &json!({ "SessionId": id }))), "AccessDeniedException");
    }
    assert_eq!(
        refused(server.call("streaming:ExportRecordingSegment", &json!({ "SessionId": id, "Segment": 0, "Justification": why }))),
        "AccessDeniedException"
    );
    let key = format!("{id}/000000.dsrec");
    assert_ne!(
        server.call("storage:GetObject", &json!({ "Bucket": "datasandbox-recordings", "Key": key })).exit,
        0,
        "the bucket is sealed"
    );
    // Nor through the key that wraps the segments' data keys: nobody decrypts, disables or
    // re-points it, and nobody takes its alias first.
    let header = segment_header(&server, &auditor, &id, why);
    let context = json!({ "SessionId": id, "Segment": "0" });
    let decrypt = json!({ "CiphertextBlob": header["wrapped_key"], "EncryptionContext": context });
    assert_eq!(refused(server.call_as(&admin, "keys:Decrypt", &decrypt)), "AccessDeniedException", "the admin unwraps a data key");
    assert_eq!(refused(server.call("keys:Decrypt", &decrypt)), "AccessDeniedException", "the operator unwraps a data key");
    let recordings_key = json!({ "KeyId": "alias/datasandbox/recordings" });
    assert_eq!(refused(server.call_as(&admin, "keys:DisableKey", &recordings_key)), "AccessDeniedException");
    assert_eq!(refused(server.call("keys:ScheduleKeyDeletion", &recordings_key)), "AccessDeniedException");
    let own = server.ok("keys:CreateKey", json!({}))["KeyMetadata"]["KeyId"].clone();
    let squat = json!({ "AliasName": "alias/datasandbox/recordings-2", "TargetKeyId": own });
    assert_eq!(refused(server.call("keys:CreateAlias", &squat)), "ValidationException", "the platform's alias names are reserved");
    // A viewing without a reason is refused; each viewing is on the record, with its reason.
    for vague in ["x", "xxxxxxxxxxxx", "because."] {
        let input = json!({ "SessionId": id, "Segment": 0, "Justification": vague });
        assert_eq!(refused(server.call_as(&auditor, "streaming:PlayRecordingSegment", &input)), "ValidationException", "{vague}");
    }
    let viewings = server.audit(&[("EventName", "PlayRecordingSegment")]);
    assert!(
        viewings.iter().any(|r| r["userIdentity"]["userName"] == "aude"
            && r["requestParameters"]["Justification"] == why
            && r["requestParameters"]["Segment"] == middle
            && r["errorCode"].is_null()),
        "{viewings:?}"
    );
    assert!(viewings.iter().filter(|r| r["errorCode"] == "AccessDeniedException").count() >= 3);

    // Export (as stored, encrypted) and verify offline; then each tampering is named.
    let export = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("http://{}", server.api);
    let out = server.cli(
        &["recordings", "export", &id, "--to", export.path().to_str().expect("utf-8"), "--justification", why, "--endpoint", &endpoint],
        &[("DATASANDBOX_TOKEN", &auditor)],
    );
    assert_eq!(out.exit, 0, "{:?}", out.stderr);
    let (exit, report) = verify(&server, &id, export.path());
    assert_eq!(exit, 0, "{report}");
    eprintln!("{report}");
    let last = stored.len() - 1;
    let file = |dir: &Path, n: usize| dir.join(format!("{n:06}.dsrec"));
    let (exit, report) = tampered(&server, &id, export.path(), |dir| {
        let mut bytes = std::fs::read(file(dir, 1)).expect("segment 1");
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        std::fs::write(file(dir, 1), bytes).expect("write");
    });
    assert!(exit == 1 && report.contains("segment 1 (000001.dsrec):"), "a flipped byte: {report}");
    let (exit, report) = tampered(&server, &id, export.path(), |dir| {
        let bytes = std::fs::read(file(dir, last)).expect("last");
        std::fs::write(file(dir, last), &bytes[..bytes.len() - 100]).expect("write");
    });
    assert!(exit == 1 && report.contains(&format!("segment {last} ({last:06}.dsrec):")), "a truncated tail: {report}");
    let (exit, report) = tampered(&server, &id, export.path(), |dir| std::fs::remove_file(file(dir, 1)).expect("delete"));
    assert!(exit == 1 && report.contains("segment 1 is missing"), "a deleted segment: {report}");
    let (exit, report) = tampered(&server, &id, export.path(), |dir| {
        let (a, b) = (std::fs::read(file(dir, 1)).expect("1"), std::fs::read(file(dir, 2)).expect("2"));
        std::fs::write(file(dir, 1), b).expect("write");
        std::fs::write(file(dir, 2), a).expect("write");
    });
    assert!(exit == 1 && report.contains("segment 1 (000001.dsrec): it holds segment 2"), "swapped segments: {report}");
    let (exit, report) = tampered(&server, &id, export.path(), |dir| std::fs::remove_file(file(dir, last)).expect("delete"));
    assert!(exit == 1 && report.contains(&format!("segment {last}: missing")), "the last segment deleted: {report}");
}

/// End to end, with the real display: the recorder follows a resize (that it asks for the
/// whole new size itself is shown by the recorder's unit test against a display that grows).
#[test]
fn a_desktop_its_user_enlarges_is_recorded_whole() {
    let server = recorded_server();
    let auditor = signed_in(&server, "aude", &["auditor"]);
    let (id, stored) = recorded_session(&server, &auditor, "bob", |rfb, _| {
        // The browser asks for a larger desktop (noVNC's "remote resizing"), then works in the new part.
        let mut encodings = vec![2, 0, 0, 2];
        encodings.extend_from_slice(&(-308i32).to_be_bytes());
        encodings.extend_from_slice(&(-223i32).to_be_bytes());
        rfb.send(&encodings);
        let mut resize = vec![251, 0, 0x06, 0x40, 0x03, 0xe8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x06, 0x40, 0x03, 0xe8, 0, 0, 0, 0];
        rfb.send(&resize);
        for step in 0..30u16 {
            resize = vec![5, 0];
            resize.extend_from_slice(&(1300 + step * 9).to_be_bytes());
            resize.extend_from_slice(&(820 + step * 5).to_be_bytes());
            rfb.send(&resize);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let why = "Checking that an enlarged desktop is recorded whole";
    let mut rectangles = Vec::new();
    for segment in 0..stored.len() as u64 {
        let bytes = played(&server, &auditor, &id, segment, why);
        rectangles.extend(update_rectangles(&bytes));
    }
    let resized = rectangles.iter().position(|&(_, _, w, h, encoding)| encoding == -223 && (w, h) == (1600, 1000));
    let resized = resized.unwrap_or_else(|| panic!("no DesktopSize to 1600×1000 was recorded: {rectangles:?}"));
    assert!(
        rectangles[resized..].iter().any(|&(x, y, w, h, encoding)| encoding != -223 && (x + w > 1280 || y + h > 800)),
        "nothing beyond the first 1280×800 was recorded after the resize"
    );
}

/// The rectangles of the framebuffer updates in one segment's display data: (x, y, w, h, encoding).
fn update_rectangles(display: &[u8]) -> Vec<(u32, u32, u32, u32, i32)> {
    let at16 = |at: usize| u32::from(u16::from_be_bytes([display[at], display[at + 1]]));
    let at32 = |at: usize| u32::from_be_bytes(display[at..at + 4].try_into().expect("4 bytes"));
    let mut rectangles = Vec::new();
    if display.len() < 42 {
        return rectangles;
    }
    let mut at = 42 + at32(38) as usize;
    while at + 4 <= display.len() {
        match display[at] {
            0 => {
                let count = at16(at + 2);
                at += 4;
                for _ in 0..count {
                    if at + 12 > display.len() {
                        return rectangles;
                    }
                    let (x, y, w, h, encoding) = (at16(at), at16(at + 2), at16(at + 4), at16(at + 6), at32(at + 8) as i32);
                    at += 12;
                    at += match encoding {
                        0 => (w * h * 4) as usize,
                        1 => 4,
                        16 if at + 4 <= display.len() => 4 + at32(at) as usize,
                        -223 | -224 => 0,
                        _ => return rectangles,
                    };
                    rectangles.push((x, y, w, h, encoding));
                }
            }
            2 => at += 1,
            _ => return rectangles,
        }
    }
    rectangles
}

#[test]
fn an_analyst_who_stops_the_display_loses_the_session_and_the_recording_is_kept() {
    let server = recorded_server();
    let auditor = signed_in(&server, "aude", &["auditor"]);
    let (cookie, opened) = session(&server, "erin");
    let (id, instance) =
        (opened["SessionId"].as_str().expect("id").to_owned(), opened["InstanceId"].as_str().expect("instance").to_owned());
    let mut rfb = Rfb::open(&server, &cookie, &id);
    rfb.handshake();
    eventually(30, "a first sealed segment", || (!segments(&server, &auditor, &id).is_empty()).then_some(()));
    // Code in the instance kills the display, to work on unrecorded (it would have to start one of its own).
    inside(&server, &instance, "kill -9 $(pgrep -f Xtigervnc) 2>/dev/null");
    let ended = eventually(40, "the session ended for its recording", || {
        let ended = server.audit(&[("EventName", "SessionEnded")]);
        ended.into_iter().find(|r| r["requestParameters"]["SessionId"] == id)
    });
    assert_eq!(ended["requestParameters"]["EndReason"], "RECORDING_FAILED", "{ended}");
    let failed = server.audit(&[("EventName", "RecordingFailed")]);
    assert!(failed.iter().any(|r| r["requestParameters"]["SessionId"] == id), "{failed:?}");
    let stored = eventually(30, "the recording's last segment", || {
        let stored = segments(&server, &auditor, &id);
        stored.last().is_some_and(|s| s["EndsRecording"] == true).then_some(stored)
    });
    assert!(stored.iter().all(|s| s["Complete"] == true), "what was recorded is kept, sealed: {stored:?}");
}

#[test]
fn kill_9_mid_session_leaves_a_segment_sealed_as_incomplete() {
    let mut server = crate::support::streaming::server(&[
        "stream_view=DESKTOP",
        // Long segments: the one cut by the crash is the session's first.
        "streaming.timeout_scale_ms=1000",
        "stacks.datasandbox-stack.session_recording=true",
    ]);
    let auditor = signed_in(&server, "aude", &["auditor"]);
    let (cookie, carol) = session(&server, "carol");
    let id = carol["SessionId"].as_str().expect("id").to_owned();
    let mut rfb = Rfb::open(&server, &cookie, &id);
    rfb.handshake();
    std::thread::sleep(Duration::from_secs(8));
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    server.crash_and_restart(&[]);
    let recovered = eventually(30, "the cut segment stored", || segments(&server, &auditor, &id).into_iter().next());
    assert_eq!(recovered["Complete"], false, "{recovered}");
    assert_eq!(recovered["EndsRecording"], true);
    let ended = chrono::DateTime::parse_from_rfc3339(recovered["EndTime"].as_str().expect("end")).expect("time");
    let lost = killed_at.signed_duration_since(ended);
    assert!(lost <= chrono::Duration::seconds(10), "the crash lost {lost} of recording");
    let sealed = server.audit(&[("EventName", "RecordingSegmentSealed")]);
    assert!(sealed.iter().any(|r| r["requestParameters"]["SessionId"] == id && r["requestParameters"]["Complete"] == false));
    let export = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("http://{}", server.api);
    let why = "Checking what a crash leaves of a recording";
    let out = server.cli(
        &["recordings", "export", &id, "--to", export.path().to_str().expect("utf-8"), "--justification", why, "--endpoint", &endpoint],
        &[("DATASANDBOX_TOKEN", &auditor)],
    );
    assert_eq!(out.exit, 0, "{:?}", out.stderr);
    let (exit, report) = verify(&server, &id, export.path());
    assert!(exit == 0 && report.contains("INCOMPLETE"), "{report}");
    eprintln!("recovered {:.1} s after the kill: {report}", killed.elapsed().as_secs_f64());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A recording past `recording.max_session_bytes` ends its session (which cannot stream
/// unrecorded), and so does one that would leave the node's disk with less than
/// `recording.min_free_bytes`: a full-screen video no longer fills the disk until the trail,
/// on its reserve, stops every action of the node (review finding).
#[test]
fn a_recording_past_its_bounds_ends_its_session_not_the_node() {
    let recorded = ["stream_view=DESKTOP", "streaming.timeout_scale_ms=10", "stacks.datasandbox-stack.session_recording=true"];
    let ended_for = |server: &Server, id: &str| {
        let ended = eventually(60, "the session ended for its recording", || {
            server.audit(&[("EventName", "SessionEnded")]).into_iter().find(|r| r["requestParameters"]["SessionId"] == id)
        });
        assert_eq!(ended["requestParameters"]["EndReason"], "RECORDING_FAILED", "{ended}");
        let failed = server.audit(&[("EventName", "RecordingFailed")]);
        let failed = failed.iter().find(|r| r["requestParameters"]["SessionId"] == id).expect("the failure on the record");
        failed["requestParameters"]["Reason"].as_str().unwrap_or_default().to_owned()
    };
    // 64 KiB a session, 96 KiB a user's day: a few whole frames.
    let bounds = ["recording.max_session_bytes=65536", "recording.max_user_bytes_per_day=98304"];
    let server = crate::support::streaming::server(&[&recorded[..], &bounds].concat());
    // Erin streams, her pointer moving (no idle or disconnect timeout ends it first), until
    // her recording reaches its bound. The stream may also close at any point of the
    // handshake, once the recording stops.
    let stream_until_ended = |user: &str| {
        let (cookie, opened) = session(&server, user);
        let id = opened["SessionId"].as_str().expect("id").to_owned();
        let streamed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(mut rfb) = Rfb::try_open(&server, &cookie, &id) {
                rfb.handshake();
                let mut step = 0u16;
                while step < 600 && rfb.try_send(&pointer_step(step)) {
                    step += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }));
        if streamed.is_err() {
            eprintln!("(the stream closed during its handshake)");
        }
        ended_for(&server, &id)
    };
    let reason = stream_until_ended("erin");
    assert!(reason.contains("recording.max_session_bytes"), "{reason}");
    // Her next session finds her day's recordings at their bound, at its opening or within its
    // first frames (review finding: one user's sessions, one after another, could bring the
    // node to its free-space floor).
    let reason = stream_until_ended("erin");
    assert!(reason.contains("recording.max_user_bytes_per_day"), "{reason}");
    // The node goes on: another user's recorded session streams.
    let (cookie, next) = session(&server, "fay");
    let mut rfb = Rfb::open(&server, &cookie, next["SessionId"].as_str().expect("id"));
    rfb.handshake();
    drop(server);

    // A disk with less room than recordings leave: the recording never starts, nor the stream.
    let server = crate::support::streaming::server(&[&recorded[..], &["recording.min_free_bytes=4398046511104"]].concat());
    let (cookie, opened) = session(&server, "erin");
    let id = opened["SessionId"].as_str().expect("id").to_owned();
    let path = format!("/stream/{id}");
    let stream =
        crate::support::http::websocket(&server.api, &path, &format!("ds_session={cookie}"), Some("binary"), Duration::from_secs(30));
    assert!(stream.is_err(), "a recorded stream opened with no room to record it");
    let reason = ended_for(&server, &id);
    assert!(reason.contains("recording.min_free_bytes"), "{reason}");
}
