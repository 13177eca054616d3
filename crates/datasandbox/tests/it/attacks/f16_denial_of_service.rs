//! Finding 16 (the identity part): an address's sign-ins take their place in its budget before
//! the argon2 work, so a burst of concurrent attempts cannot all run it; one user cannot hold a
//! fleet's capacity or its queue.

use serde_json::json;

use crate::support::server::Server;
use crate::support::streaming::{open, server, streaming_url};
use crate::support::users::sign_in_from;

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

#[test]
fn f16_a_burst_of_saml_responses_does_not_fork_an_xmlsec1_each() {
    // The server, in a mount namespace of its own, finds at /usr/bin/xmlsec1 a wrapper that
    // notes how many checks are under way, takes a second, then runs the real xmlsec1.
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    std::fs::copy("/usr/bin/xmlsec1", dir.join("xmlsec1.real")).expect("copy xmlsec1");
    let wrapper = dir.join("xmlsec1");
    let script = format!(
        "#!/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\nD={d}\nmkdir \"$D/running.$$\"\nls \"$D\" | grep -c '^running\\.' >> \"$D/counts\"\nsleep 1\nrmdir \"$D/running.$$\"\nexec \"$D/xmlsec1.real\" \"$@\"\n",
        d = dir.display()
    );
    std::fs::write(&wrapper, script).expect("wrapper");
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mount = format!("mount --bind {} /usr/bin/xmlsec1 && exec \"$@\"", wrapper.display());
    let idp = tempfile::tempdir().expect("tempdir");
    crate::support::saml::identity_provider(idp.path(), &format!("http://127.0.0.1:{}", crate::support::saml::free_port()));
    let metadata = format!("idp_metadata={}", idp.path().join("idp.xml").display());
    let server = Server::start_under(&["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", &mount, "sh"], &[&metadata]);
    // Eight genuine responses at once (anyone can make the server check one that is well shaped).
    let sp = crate::support::saml::fetch_sp_metadata(&server, idp.path());
    let cases: Vec<serde_json::Value> =
        (0..8).map(|n| json!({ "name": format!("r{n}"), "user": format!("user{n}"), "mfa": false })).collect();
    let made = crate::support::saml::responses(idp.path(), &sp, &json!(cases));
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let (server, response) = (&server, made[format!("r{n}")].as_str().expect("response").to_owned());
                scope.spawn(move || crate::support::saml::post_acs(server, &response, "").status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let counts = std::fs::read_to_string(dir.join("counts")).expect("xmlsec1 ran");
    let most = counts.lines().filter_map(|l| l.trim().parse::<u32>().ok()).max().unwrap_or_default();
    assert!(most <= 2, "{most} xmlsec1 checks ran at once (answers {answers:?})");
    // (200: the page where an IdP-initiated sign-in is confirmed.)
    assert!(answers.iter().all(|s| *s == 200 || *s == 429), "{answers:?}");
    assert!(answers.contains(&200), "the checks still sign users in: {answers:?}");
}
