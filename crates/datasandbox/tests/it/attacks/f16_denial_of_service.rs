//! Finding 16 (the identity part): an address's sign-ins take their place in its budget before
//! the argon2 work, so a burst of concurrent attempts cannot all run it; one user cannot hold a
//! fleet's capacity or its queue.

use serde_json::json;

use super::users::sign_in_from;
use crate::Server;
use crate::streaming::{open, server, streaming_url};

#[test]
fn f16_a_burst_of_sign_ins_from_one_address_does_not_all_run_argon2() {
    let server = Server::start(&[]);
    // Twelve at once, from one address, for names that do not exist (each costs a decoy check).
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|n| {
                let server = &server;
                scope.spawn(move || sign_in_from(server, "127.0.0.3", &json!({ "UserName": format!("nobody{n}"), "Password": "guess" })).0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let checked = answers.iter().filter(|s| **s == 401).count();
    let turned_away = answers.iter().filter(|s| **s == 429).count();
    assert!(turned_away > 0, "all {checked} concurrent attempts ran the password check: {answers:?}");
    assert_eq!(checked + turned_away, 12, "{answers:?}");
}

#[test]
fn f16_one_user_cannot_take_a_fleets_queue() {
    // No capacity: every session waits in the queue (max_queue 100).
    let server = server(&["fleets.datasandbox-fleet.desired_instances=0"]);
    for _ in 0..5 {
        assert_eq!(open(&server, &streaming_url(&server, "hog")).status, 200);
    }
    let sixth = open(&server, &streaming_url(&server, "hog"));
    assert_eq!(sixth.status, 429, "a sixth place for one user: {}", sixth.body);
    assert!(sixth.body.contains("max_sessions_per_user"), "{}", sixth.body);
    // Everyone else still gets a place.
    assert_eq!(open(&server, &streaming_url(&server, "fair")).status, 200);
}
