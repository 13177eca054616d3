//! The analyst portal with local users, in a real browser (Debian's Chromium through
//! Playwright): sign in → the catalog of the stacks the user is associated with → launch →
//! the session page, for a session of AppStream's USERPOOL kind whose instance works in the
//! user's `user/local/…` home folder. Associations are AppStream's; a user launches only what
//! they are associated with.

use serde_json::{Value, json};

use crate::support::browser::run_flow;
use crate::support::instances::works_in_home_folder;
use crate::support::server::eventually;
use crate::support::streaming::server;

const PASSWORD: &str = "correct horse battery staple";

/// A portal's live view of its user's sessions (`/portal/events`, Server-Sent Events), read
/// as it comes.
struct Changes {
    reader: std::io::BufReader<std::net::TcpStream>,
    seen: String,
}

impl Changes {
    /// Signs `user` in on the portal and opens the stream with the portal's cookie.
    fn open(server: &crate::support::server::Server, user: &str) -> Changes {
        let body = json!({ "UserName": user, "Password": PASSWORD }).to_string();
        let signed = crate::support::http::tcp(&server.api)
            .expect("connect")
            .request("POST", "/portal/signin", &[("content-type", "application/json"), ("origin", "http://localhost")], body.as_bytes())
            .expect("sign in");
        assert_eq!(signed.status, 200, "{}", String::from_utf8_lossy(&signed.body));
        let cookie =
            signed.headers.iter().find(|(n, _)| n == "set-cookie").map(|(_, v)| v.split(';').next().unwrap_or_default().to_owned());
        let cookie = cookie.expect("the portal's cookie");
        let mut connection = crate::support::http::tcp(&server.api).expect("connect");
        let head = connection.request("GET", "/portal/events", &[("cookie", &cookie), ("accept", "text/event-stream")], b"").expect("open");
        assert_eq!(head.status, 200);
        assert!(head.headers.iter().any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream")), "{:?}", head.headers);
        let reader = connection.into_reader();
        reader.get_ref().set_read_timeout(Some(std::time::Duration::from_millis(100))).expect("read timeout");
        Changes { reader, seen: String::new() }
    }

    /// How many `changed` messages have come so far.
    fn count(&mut self) -> usize {
        let mut buffer = [0u8; 4096];
        while let Ok(read) = std::io::Read::read(&mut self.reader, &mut buffer) {
            if read == 0 {
                break;
            }
            self.seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
        self.seen.matches("data: changed").count()
    }
}

#[test]
fn a_local_user_signs_in_on_the_portal_and_launches_their_stack() {
    let mut server = server(&[]);
    server.ok("identity:CreateLocalUser", json!({ "UserName": "carol", "Password": PASSWORD }));
    server.ok("identity:CreateLocalUser", json!({ "UserName": "dave", "Password": PASSWORD }));
    let associated = server.ok(
        "streaming:BatchAssociateUserStack",
        json!({ "UserStackAssociations": [
            { "StackName": "datasandbox-stack", "UserName": "carol", "AuthenticationType": "USERPOOL" },
            { "StackName": "no-such-stack", "UserName": "carol", "AuthenticationType": "USERPOOL" },
            { "StackName": "datasandbox-stack", "UserName": "ghost", "AuthenticationType": "USERPOOL" },
        ] }),
    );
    let codes: Vec<&Value> = associated["errors"].as_array().expect("errors").iter().map(|e| &e["ErrorCode"]).collect();
    assert_eq!(codes, [&json!("STACK_NOT_FOUND"), &json!("USER_NAME_NOT_FOUND")]);
    let bad = server.call(
        "streaming:BatchAssociateUserStack",
        &json!({ "UserStackAssociations": [{ "StackName": "datasandbox-stack", "UserName": "carol", "AuthenticationType": "API" }] }),
    );
    assert_eq!(bad.stderr["Code"], "ValidationException", "{bad:?}");

    // Dave is not associated: the portal offers him nothing and a launch is refused.
    let endpoint = format!("http://{}", server.api);
    let dave = server.cli(
        &["call", "identity:SignIn", "--input", &json!({ "UserName": "dave", "Password": PASSWORD }).to_string(), "--endpoint", &endpoint],
        &[],
    );
    let token = dave.stdout["Token"].as_str().expect("dave's token").to_owned();
    let refused = server.call_as(&token, "streaming:CreateUserStreamingURL", &json!({ "StackName": "datasandbox-stack" }));
    assert_eq!(refused.stderr["Code"], "AccessDeniedException", "{refused:?}");
    let others = server.call_as(
        &token,
        "streaming:DescribeUserStackAssociations",
        &json!({ "UserName": "carol", "AuthenticationType": "USERPOOL" }),
    );
    assert_eq!(others.stderr["Code"], "AccessDeniedException", "a user sees only their own associations: {others:?}");

    // Carol's portal, open beside, hears of each change to her sessions, and only to hers.
    let mut carol_live = Changes::open(&server, "carol");
    let mut dave_live = Changes::open(&server, "dave");
    let bare = crate::support::http::tcp(&server.api).expect("connect").request("GET", "/portal/events", &[], b"").expect("request");
    assert_eq!(bare.status, 401, "no stream without a sign-in");

    // Carol, in a real browser: sign in, the catalog, launch, the session page.
    let events = run_flow("portal.mjs", &[&format!("http://{}", server.api), "carol", PASSWORD], String::new);
    assert_eq!(events[0]["stacks"], json!(["datasandbox-stack"]));
    assert!(events[1]["url"].as_str().is_some_and(|u| u.ends_with("/session")), "{events:?}");
    assert!(events[2]["text"].as_str().is_some_and(|t| t.contains("datasandbox-stack — ACTIVE")), "{events:?}");

    // A USERPOOL session whose instance works in carol's local home folder.
    let sessions = server.ok(
        "streaming:DescribeSessions",
        json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet", "UserId": "carol", "AuthenticationType": "USERPOOL" }),
    );
    let session = sessions["Sessions"][0].clone();
    assert_eq!(session["State"], "ACTIVE", "{sessions}");
    let instance = session["InstanceId"].as_str().expect("instance");
    // Queued, active, connected: at least the first two, whatever the timing of the third.
    eventually(10, "carol's portal to hear of her session", || (carol_live.count() >= 2).then_some(()));
    let before_exec = carol_live.count();
    works_in_home_folder(&server, instance, "local", "carol");
    eventually(10, "carol's portal to hear of the operator's command", || (carol_live.count() > before_exec).then_some(()));
    let launches = server.audit(&[("EventName", "CreateUserStreamingURL"), ("Username", "carol")]);
    assert!(launches.iter().any(|r| r["errorCode"].is_null()), "the launch is on the record: {launches:#?}");

    // My sessions: carol sees hers, with the operator's command in her workspace; dave cannot
    // end it; carol can.
    let carol = server.cli(
        &["call", "identity:SignIn", "--input", &json!({ "UserName": "carol", "Password": PASSWORD }).to_string(), "--endpoint", &endpoint],
        &[],
    );
    let carol = carol.stdout["Token"].as_str().expect("carol's token").to_owned();
    let mine = server.call_as(&carol, "streaming:DescribeUserSessions", &json!({}));
    let listed = mine.stdout["Sessions"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{mine:?}");
    assert_eq!(listed[0]["State"], "ACTIVE");
    assert!(listed[0]["OperatorCommands"].as_array().is_some_and(|c| !c.is_empty()), "the operator's exec is shown: {listed:?}");
    assert!(listed[0].get("NotebookUrl").is_none());
    assert_eq!(server.call_as(&token, "streaming:DescribeUserSessions", &json!({})).stdout["Sessions"], json!([]), "dave has none");
    let id = listed[0]["SessionId"].as_str().expect("id").to_owned();
    let stolen = server.call_as(&token, "streaming:ExpireSession", &json!({ "SessionId": id }));
    assert_eq!(stolen.stderr["Code"], "AccessDeniedException", "dave ended carol's session: {stolen:?}");
    let before_end = carol_live.count();
    let ended = server.call_as(&carol, "streaming:ExpireSession", &json!({ "SessionId": id }));
    assert_eq!(ended.exit, 0, "{ended:?}");
    eventually(10, "carol's portal to hear that her session ended", || (carol_live.count() > before_end).then_some(()));
    assert_eq!(dave_live.count(), 0, "dave's portal heard of carol's session: {}", dave_live.seen);
    let after = server.call_as(&carol, "streaming:DescribeUserSessions", &json!({}));
    assert_eq!(after.stdout["Sessions"][0]["State"], "EXPIRED");
    assert_eq!(after.stdout["Sessions"][0]["EndReason"], "USER_ENDED");

    // Open streams do not hold a stopping server up (it drains open requests first).
    assert!(server.stop().success(), "the server stops with portals open");
    drop((carol_live, dave_live));
}

/// A local user changes their password on the portal, asking that their sessions end too: a
/// wrong current password changes nothing, the change signs the page out, and the new password
/// signs in. Neither password reaches the trail; the choice does.
#[test]
fn a_local_user_changes_their_password_on_the_portal() {
    const NEW: &str = "a fresh passphrase for erin";
    let server = crate::support::server::Server::start(&[]);
    server.ok("identity:CreateLocalUser", json!({ "UserName": "erin", "Password": PASSWORD }));
    let events = run_flow("password.mjs", &[&format!("http://{}", server.api), "erin", PASSWORD, NEW], String::new);
    assert_eq!(events[0]["event"], "refused", "{events:?}");
    assert_eq!((&events[1]["event"], &events[1]["signIn"]), (&json!("changed"), &json!(true)), "{events:?}");
    assert!(events[1]["notice"].as_str().is_some_and(|n| n.contains("sign in with the new one")), "{events:?}");
    assert_eq!(events[2]["user"], "erin", "{events:?}");
    let records = server.audit(&[("EventName", "ChangePassword")]);
    let changed: Vec<&Value> = records.iter().filter(|r| r["errorCode"].is_null()).collect();
    assert_eq!(changed.len(), 1, "{records:#?}");
    assert_eq!(changed[0]["requestParameters"]["EndStreamingSessions"], true, "{records:#?}");
    let trail = records.iter().map(Value::to_string).collect::<String>();
    assert!(!trail.contains("correct horse") && !trail.contains("fresh passphrase"), "a password reached the trail");
}
