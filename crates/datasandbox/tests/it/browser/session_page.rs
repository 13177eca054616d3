//! The session page in a real browser (Debian's Chromium through Playwright), where the order
//! of its answers matters: it never shows an older status than one it has already shown.

use crate::support::browser::Browser;
use crate::support::streaming::{active, expire, redeem, server, streaming_url};

/// The page asks for its first status (an audited call) and opens its live socket at once;
/// the socket's statuses are newer. Here the first answer is held until the socket has made
/// the page "Connected", then delivered: the page stays where it is.
#[test]
fn the_session_page_never_goes_back_to_an_older_status() {
    // One instance at a time: bob waits in the queue behind alice.
    let server = server(&["fleets.datasandbox-fleet.desired_instances=1"]);
    let alice = active(&server, &redeem(&server, "alice"), 30);
    let mut browser = Browser::run("stale.mjs", &streaming_url(&server, "bob"));
    let held = browser.expect("held", 60);
    assert_eq!(held["state"], "PENDING", "{held}");
    expire(&server, &alice);
    browser.send("release");
    let shown = browser.expect("shown", 90);
    assert_eq!(shown["text"], "Connected", "the page went back to an older status: {shown}");
}
