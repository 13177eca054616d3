//! Fleets, stacks and sessions end to end: streaming URLs opened over HTTP like a browser
//! would, the session page's WebSocket as the live connection, capacity counters exact through
//! sessions, and the timeouts (shortened with `streaming.timeout_scale_ms`).

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http;
use crate::support::server::Server;
use crate::support::server::eventually;
use crate::support::streaming::{FLEET, STACK, active, expire, open, redeem, server, status, streaming_url};

fn fleet_setting(key: &str, value: impl std::fmt::Display) -> String {
    format!("fleets.{FLEET}.{key}={value}")
}

/// Desired, Running, InUse, Available.
fn capacity(server: &Server) -> [i64; 4] {
    let fleets = server.ok("streaming:DescribeFleets", json!({ "Names": [FLEET] }));
    let c = &fleets["Fleets"][0]["ComputeCapacityStatus"];
    ["Desired", "Running", "InUse", "Available"].map(|k| c[k].as_i64().expect("counter"))
}

/// Waits until the fleet is RUNNING with these counters.
fn settle(server: &Server, expected: [i64; 4], what: &str) {
    eventually(30, what, || {
        let fleets = server.ok("streaming:DescribeFleets", json!({ "Names": [FLEET] }));
        (fleets["Fleets"][0]["State"] == "RUNNING" && capacity(server) == expected).then_some(())
    });
}

fn instance_gone(id: &str) -> bool {
    !std::path::Path::new(&format!("/sys/fs/cgroup/pids/datasandbox/{id}")).exists()
}

pub(crate) type Socket = tungstenite::WebSocket<TcpStream>;

/// The session page's live connection.
fn connect(server: &Server, cookie: &str) -> Socket {
    http::websocket(&server.api, "/session/ws", &format!("ds_session={cookie}"), None, Duration::from_millis(200))
        .expect("websocket handshake")
}

/// The next event of a given type on the live connection, within `seconds`.
pub(crate) fn next_event(socket: &mut Socket, kind: &str, seconds: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        match socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let event: Value = serde_json::from_str(&text).expect("JSON event");
                if event["type"] == kind {
                    return event;
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(err) => panic!("the live connection ended while waiting for `{kind}`: {err}"),
        }
    }
    panic!("no `{kind}` event within {seconds} s");
}

fn count_rows(server: &Server, sql: &str) -> i64 {
    server.sql(sql).parse().expect("a count")
}

#[test]
fn bad_streaming_urls_are_rejected_audited_and_allocate_nothing() {
    let server = server(&[&fleet_setting("desired_instances", 1)]);
    server.ok("streaming:CreateFleet", json!({ "Name": "other-fleet", "InstanceType": "stream.standard.small" }));
    let create = |input: Value| server.call("streaming:CreateStreamingURL", &input);
    let base = json!({ "StackName": STACK, "FleetName": FLEET, "UserId": "alice" });
    let with = |key: &str, value: Value| {
        let mut input = base.clone();
        input[key] = value;
        input
    };
    let cases = [
        ("Validity 0", with("Validity", json!(0)), "ValidationException", "outside 1..=604800"),
        ("Validity over a week", with("Validity", json!(604_801)), "ValidationException", "outside 1..=604800"),
        ("UserId too short", with("UserId", json!("a")), "ValidationException", "2..=32"),
        ("UserId too long", with("UserId", json!("u".repeat(33))), "ValidationException", "2..=32"),
        ("UserId with a space", with("UserId", json!("bad user")), "ValidationException", "2..=32"),
        ("unknown stack", with("StackName", json!("nope")), "ResourceNotFoundException", "stack `nope`"),
        (
            "fleet of another stack",
            with("FleetName", json!("other-fleet")),
            "InvalidParameterCombinationException",
            "not fleet `other-fleet`",
        ),
    ];
    for (what, input, code, phrase) in cases {
        let called = create(input);
        assert_eq!(called.exit, 1, "{what}: {:?}", called.stdout);
        assert_eq!(called.stderr["Code"], code, "{what}");
        assert!(called.stderr["Message"].as_str().unwrap_or_default().contains(phrase), "{what}: {}", called.stderr["Message"]);
        let record = server.audit_record(called.stderr["RequestId"].as_str().expect("request id"));
        assert_eq!(record["errorCode"], code, "{what}");
    }
    // A stopped fleet makes no URLs.
    server.ok("streaming:StopFleet", json!({ "Name": FLEET }));
    eventually(10, "the fleet to stop", || {
        (server.ok("streaming:DescribeFleets", json!({}))["Fleets"][0]["State"] == "STOPPED").then_some(())
    });
    assert_eq!(create(base.clone()).stderr["Code"], "OperationNotPermittedException");
    server.ok("streaming:StartFleet", json!({ "Name": FLEET }));
    settle(&server, [1, 0, 0, 1], "the fleet to run");

    let url = streaming_url(&server, "alice");
    let (head, token) = url.split_at(url.find("/streaming/").expect("path") + "/streaming/".len());
    let (claims, signature) = token.split_once('.').expect("claims.signature");
    // Another user's name in the claims, the signature kept: the signature no longer matches.
    let forged_claims = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let text = String::from_utf8(b64.decode(claims).expect("base64url")).expect("utf-8").replace("alice", "admin");
        b64.encode(text)
    };
    let expired = {
        let out =
            server.ok("streaming:CreateStreamingURL", json!({ "StackName": STACK, "FleetName": FLEET, "UserId": "bob", "Validity": 1 }));
        out["StreamingURL"].as_str().expect("url").to_owned()
    };
    std::thread::sleep(Duration::from_millis(1100));
    let sessions_before = count_rows(&server, "SELECT COUNT(*) FROM sessions");
    // One character of the signature changed (a middle one: all six of its bits are data).
    let tampered_signature: String =
        signature.char_indices().map(|(i, c)| if i == 5 { if c == 'A' { 'B' } else { 'A' } } else { c }).collect();
    let attacks = [
        ("tampered claims", format!("{head}{forged_claims}.{signature}"), 403, "InvalidStreamingURLSignature"),
        ("tampered signature", format!("{head}{claims}.{tampered_signature}"), 403, "InvalidStreamingURLSignature"),
        ("not a token", format!("{head}hello"), 400, "MalformedStreamingURL"),
        ("expired", expired, 403, "ExpiredStreamingURL"),
    ];
    for (what, url, status, code) in &attacks {
        let opened = open(&server, url);
        assert_eq!(opened.status, *status, "{what}: {}", opened.body);
        assert!(opened.body.contains(code), "{what}: {}", opened.body);
        assert!(opened.cookie.is_none(), "{what} set a cookie");
    }
    assert_eq!(count_rows(&server, "SELECT COUNT(*) FROM sessions"), sessions_before, "a rejected URL made a session");
    let rejected = server.audit(&[("EventName", "RedeemStreamingURL")]);
    assert_eq!(rejected.len(), attacks.len());
    assert!(rejected.iter().all(|r| r["errorCode"].is_string()));

    // The genuine URL works once; the replay is refused and allocates nothing.
    let first = open(&server, &url);
    assert_eq!(first.status, 200, "{}", first.body);
    let cookie = first.cookie.expect("cookie");
    let session = active(&server, &cookie, 10);
    let replay = open(&server, &url);
    assert_eq!(replay.status, 403);
    assert!(replay.body.contains("StreamingURLAlreadyUsed"), "{}", replay.body);
    assert_eq!(count_rows(&server, "SELECT COUNT(*) FROM sessions"), sessions_before + 1);
    assert_eq!(capacity(&server), [1, 1, 1, 0]);
    // The URL itself never reaches the trail.
    let minted = server.audit(&[("EventName", "CreateStreamingURL")]);
    assert!(minted.iter().all(|r| !r.to_string().contains(token)), "a streaming URL token is in the trail");
    expire(&server, &session);
}

#[test]
fn always_on_capacity_is_exact_through_a_sequence_of_sessions() {
    let server = server(&["fleet_type=ALWAYS_ON", &fleet_setting("desired_instances", 2)]);
    settle(&server, [2, 2, 0, 2], "two warm instances");
    let first = redeem(&server, "alice");
    // A warm instance is taken at redemption.
    let a = status(&server, &first);
    assert_eq!(a["State"], "ACTIVE", "{a}");
    assert_eq!(capacity(&server), [2, 2, 1, 1]);
    let a_instance = a["InstanceId"].as_str().expect("instance").to_owned();
    assert_eq!(a["NetworkAccessConfiguration"]["EniPrivateIpAddress"].as_str().map(|ip| ip.starts_with("10.")), Some(true));
    // The session's variables reach the instance's programs.
    let env =
        server.cli(&["instances", "exec", &a_instance, "--", "/bin/sh", "-c", "tr '\\0' '\\n' < /proc/2/environ | grep ^DS_ | sort"], &[]);
    let env = env.stdout.as_str().unwrap_or_default().to_owned();
    // The operator's command is visible to the session's user.
    let shown = status(&server, &first)["OperatorCommands"].clone();
    assert_eq!(shown.as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(shown[0]["Command"][0], "/bin/sh");
    assert_eq!(shown[0]["Operator"], "root");
    for expected in [
        format!("DS_SESSION_ID={}", a["SessionId"].as_str().expect("id")),
        "DS_USER_NAME=alice".to_owned(),
        format!("DS_STACK_NAME={STACK}"),
        format!("DS_RESOURCE_NAME={FLEET}"),
        "DS_USER_ACCESS_MODE=custom".to_owned(),
        "DS_INSTANCE_TYPE=stream.standard.small".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == expected), "{expected} missing from {env}");
    }
    let second = redeem(&server, "bob");
    let b = status(&server, &second);
    assert_eq!(b["State"], "ACTIVE");
    assert_eq!(capacity(&server), [2, 2, 2, 0]);
    // No instance is free: the third waits, and says where it stands.
    let third = redeem(&server, "carol");
    let c = status(&server, &third);
    assert_eq!(c["State"], "PENDING");
    assert_eq!(c["QueuePosition"], 1);
    assert!(c["EstimatedWaitSeconds"].as_i64().is_some_and(|s| s > 0), "{c}");

    // Ending a session destroys its instance; the fleet replaces it and the queue is served.
    expire(&server, &a);
    eventually(10, "alice's instance to be destroyed", || instance_gone(&a_instance).then_some(()));
    let c = active(&server, &third, 30);
    assert_ne!(c["InstanceId"], a["InstanceId"]);
    assert_eq!(status(&server, &first)["State"], "EXPIRED");
    eventually(10, "full capacity in use", || (capacity(&server) == [2, 2, 2, 0]).then_some(()));
    expire(&server, &b);
    expire(&server, &c);
    eventually(30, "two fresh warm instances", || (capacity(&server) == [2, 2, 0, 2]).then_some(()));
    // The counters include a replacement still starting; its instance reports RUNNING shortly.
    let ids: Vec<String> = eventually(10, "two RUNNING instances", || {
        let instances = server.ok("streaming:DescribeInstances", json!({}));
        let ids: Vec<String> = instances["Instances"]
            .as_array()
            .expect("list")
            .iter()
            .filter(|i| i["State"] == "RUNNING")
            .filter_map(|i| i["InstanceId"].as_str().map(str::to_owned))
            .collect();
        (ids.len() == 2).then_some(ids)
    });
    for used in [&a["InstanceId"], &b["InstanceId"], &c["InstanceId"]] {
        assert!(!ids.iter().any(|id| id == used.as_str().expect("id")), "instance {used} served a second session");
    }
    // Each ended session is on the record for the usage reports, with its reason.
    let ended = eventually(10, "three SessionEnded records", || {
        let ended = server.audit(&[("EventName", "SessionEnded")]);
        (ended.len() == 3).then_some(ended)
    });
    assert!(
        ended
            .iter()
            .all(|r| r["requestParameters"]["EndReason"] == "EXPIRED_BY_API" && r["requestParameters"]["SessionType"] == "ALWAYS_ON")
    );
}

#[test]
fn on_demand_starts_an_instance_on_redemption() {
    let server = server(&[&fleet_setting("desired_instances", 2)]);
    assert_eq!(capacity(&server), [2, 0, 0, 2]);
    let cookie = redeem(&server, "dana");
    let session = active(&server, &cookie, 20);
    assert_eq!(capacity(&server), [2, 1, 1, 1]);
    let instance = session["InstanceId"].as_str().expect("instance").to_owned();
    assert!(!instance_gone(&instance));
    // A stack change applies to new sessions; this one keeps the settings it started with.
    let download = |s: &Value| {
        s["UserSettings"].as_array().expect("settings").iter().find(|x| x["Action"] == "FILE_DOWNLOAD").expect("setting")["Permission"]
            .clone()
    };
    assert_eq!(download(&session), "DISABLED");
    server.ok("streaming:UpdateStack", json!({ "Name": STACK, "UserSettings": [{ "Action": "FILE_DOWNLOAD", "Permission": "ENABLED" }] }));
    assert_eq!(download(&status(&server, &cookie)), "DISABLED");
    let stack = server.ok("streaming:DescribeStacks", json!({ "Names": [STACK] }));
    assert_eq!(download(&stack["Stacks"][0]), "ENABLED");
    // The user ends it from their page.
    let reply = http::tcp(&server.api)
        .expect("connect")
        .request(
            "POST",
            "/session/end",
            &[("cookie", &format!("ds_session={cookie}"))],
            json!({ "SessionId": session["SessionId"] }).to_string().as_bytes(),
        )
        .expect("request");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    eventually(10, "the instance to be destroyed", || instance_gone(&instance).then_some(()));
    assert_eq!(status(&server, &cookie)["EndReason"], "USER_ENDED");
    settle(&server, [2, 0, 0, 2], "the capacity back");
}

#[test]
fn reconnecting_within_the_disconnect_timeout_keeps_the_session() {
    // One timeout second lasts 20 ms: the 60 s disconnect timeout is 1.2 s.
    let server = server(&[
        "fleet_type=ALWAYS_ON",
        &fleet_setting("desired_instances", 1),
        &fleet_setting("disconnect_timeout", 60),
        "streaming.timeout_scale_ms=20",
    ]);
    settle(&server, [1, 1, 0, 1], "a warm instance");
    let cookie = redeem(&server, "erin");
    let mut socket = connect(&server, &cookie);
    let first = next_event(&mut socket, "status", 5);
    assert_eq!(first["Status"]["ConnectionState"], "CONNECTED");
    drop(socket);
    eventually(5, "NOT_CONNECTED", || (status(&server, &cookie)["ConnectionState"] == "NOT_CONNECTED").then_some(()));
    // Back within the timeout: the same session and instance.
    let mut socket = connect(&server, &cookie);
    let again = next_event(&mut socket, "status", 5);
    assert_eq!(again["Status"]["SessionId"], first["Status"]["SessionId"]);
    assert_eq!(again["Status"]["InstanceId"], first["Status"]["InstanceId"]);
    assert_eq!(again["Status"]["State"], "ACTIVE");
    drop(socket);
    // Away longer than the timeout: the session ends and its instance is destroyed.
    let instance = first["Status"]["InstanceId"].as_str().expect("instance").to_owned();
    eventually(10, "the session to expire", || (status(&server, &cookie)["State"] == "EXPIRED").then_some(()));
    assert_eq!(status(&server, &cookie)["EndReason"], "DISCONNECT_TIMEOUT");
    eventually(10, "the instance to be destroyed", || instance_gone(&instance).then_some(()));
    let ended =
        eventually(10, "the SessionEnded record", || Some(server.audit(&[("EventName", "SessionEnded")])).filter(|r| !r.is_empty()));
    assert_eq!(ended[0]["requestParameters"]["ConnectedAtLeastOnce"], true);
    assert_eq!(ended[0]["requestParameters"]["ClientIpAddresses"], json!(["127.0.0.1"]));

    // The day's usage report holds the session as it really was.
    let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let generated = server.ok("audit:GenerateUsageReports", json!({ "Day": day }));
    assert_eq!(generated["Sessions"], 1, "{generated}");
    let key = format!("sessions/schedule=DAILY/year={}/month={}/day={}/daily-session-report-{day}.csv", &day[..4], &day[5..7], &day[8..]);
    let report = server.ok("storage:GetObject", json!({ "Bucket": "datasandbox-reports", "Key": key }));
    let csv = String::from_utf8(crate::support::server::unb64(report["Body"].as_str().expect("body"))).expect("utf-8");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let row: Vec<&str> = lines.next().expect("a row").split(',').collect();
    let column = |name: &str| row[header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"))];
    assert_eq!(column("user_session_id"), first["Status"]["SessionId"].as_str().expect("id"));
    assert_eq!(column("user_id"), "erin");
    assert_eq!(column("authentication_type"), "API");
    assert_eq!(column("fleet_name"), FLEET);
    assert_eq!(column("stack_name"), STACK);
    assert_eq!(
        column("eni_private_ip_address"),
        first["Status"]["NetworkAccessConfiguration"]["EniPrivateIpAddress"].as_str().expect("ip")
    );
    assert_eq!(column("connected_at_least_once"), "true");
    assert_eq!(column("client_ip_addresses"), "127.0.0.1");
    assert_eq!(column("user_settings_clipboard_copy_to_local_device"), "DISABLED");
    assert_eq!(column("user_settings_file_upload"), "ENABLED");
    assert_eq!(column("session_type"), "ALWAYS_ON");
    // These sessions run in direct mode (see `server`).
    assert_eq!(column("stream_view"), "DIRECT");
}

#[test]
fn idle_and_maximum_duration_warn_then_act() {
    // One timeout second lasts 10 ms: idle 60 s → 0.6 s (warned 0.3 s before); the maximum
    // duration of 600 s → 6 s (warned 300 s, 3 s, before).
    let server = server(&[
        "fleet_type=ALWAYS_ON",
        &fleet_setting("desired_instances", 1),
        &fleet_setting("idle_disconnect_timeout", 60),
        &fleet_setting("disconnect_timeout", 300),
        &fleet_setting("max_user_duration", 600),
        "streaming.timeout_scale_ms=10",
    ]);
    settle(&server, [1, 1, 0, 1], "a warm instance");
    let cookie = redeem(&server, "fay");
    let mut socket = connect(&server, &cookie);
    // No input: a warning, then a disconnect — the session itself goes on.
    let warning = next_event(&mut socket, "warning", 5);
    assert_eq!(warning["Reason"], "IDLE");
    let disconnect = next_event(&mut socket, "disconnect", 5);
    assert_eq!(disconnect["Reason"], "IDLE");
    eventually(5, "NOT_CONNECTED", || (status(&server, &cookie)["ConnectionState"] == "NOT_CONNECTED").then_some(()));
    assert_eq!(status(&server, &cookie)["State"], "ACTIVE");
    // Back, and busy: no idle disconnect, but the maximum duration is warned of, then ends it.
    let mut socket = connect(&server, &cookie);
    let started = Instant::now();
    let mut warned = false;
    loop {
        socket.send(tungstenite::Message::Text(r#"{"type":"input"}"#.into())).expect("send input");
        match socket.read() {
            Ok(tungstenite::Message::Text(text)) => {
                let event: Value = serde_json::from_str(&text).expect("JSON");
                assert_ne!(event["type"], "disconnect", "an active user was disconnected as idle");
                if event["type"] == "warning" && event["Reason"] == "MAX_DURATION" {
                    warned = true;
                }
                if event["type"] == "ended" {
                    assert_eq!(event["Reason"], "MAX_DURATION");
                    break;
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(err) => panic!("the connection ended without an `ended` event: {err}"),
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the session outlived its maximum duration");
    }
    assert!(warned, "no warning before the maximum duration");
    assert_eq!(status(&server, &cookie)["EndReason"], "MAX_DURATION");
}

#[test]
fn describe_sessions_pages_and_filters_like_aws() {
    // No capacity: every session stays PENDING in the queue, which is all this test needs.
    let server = server(&[&fleet_setting("desired_instances", 0)]);
    for user in ["ann", "ann", "ben", "ben", "ben", "cat", "cat"] {
        redeem(&server, user);
    }
    let describe = |input: Value| {
        let mut full = json!({ "StackName": STACK, "FleetName": FLEET });
        full.as_object_mut().expect("object").extend(input.as_object().expect("object").clone());
        server.call("streaming:DescribeSessions", &full)
    };
    // Pages of three: 3, 3, 1, each session once.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut input = json!({ "Limit": 3 });
        if let Some(t) = &token {
            input["NextToken"] = json!(t);
        }
        let page = describe(input).stdout;
        let sessions = page["Sessions"].as_array().expect("sessions").clone();
        pages.push(sessions.len());
        seen.extend(sessions.iter().map(|s| s["Id"].as_str().expect("id").to_owned()));
        match page["NextToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, vec![3, 3, 1]);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7);
    let count = |input: Value| describe(input).stdout["Sessions"].as_array().map(Vec::len);
    assert_eq!(count(json!({})), Some(7), "default Limit is 20");
    assert_eq!(count(json!({ "UserId": "ben", "AuthenticationType": "API" })), Some(3));
    assert_eq!(count(json!({ "UserId": "ben", "AuthenticationType": "SAML" })), Some(0));
    assert_eq!(count(json!({ "InstanceId": "i-0000000000000000" })), Some(0));
    let errors = [
        (json!({ "UserId": "ben" }), "InvalidParameterCombinationException"),
        (json!({ "Limit": 51 }), "ValidationException"),
        (json!({ "Limit": 0 }), "ValidationException"),
        (json!({ "AuthenticationType": "LDAP" }), "ValidationException"),
        (json!({ "NextToken": "not-a-token!" }), "ValidationException"),
        (json!({ "StackName": "elsewhere" }), "ResourceNotFoundException"),
    ];
    for (input, code) in errors {
        let called = describe(input.clone());
        assert_eq!(called.stderr["Code"], code, "{input}");
    }
    let states: Vec<Value> = describe(json!({})).stdout["Sessions"].as_array().expect("list").iter().map(|s| s["State"].clone()).collect();
    assert_eq!(states, vec![json!("PENDING"); 7]);
}

/// Redeems `count` URLs at once, each from its own thread; returns the cookies.
fn redeem_concurrently(server: &Server, count: usize) -> Vec<String> {
    let urls: Vec<String> = (0..count).map(|n| streaming_url(server, &format!("user{n}"))).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = urls.iter().map(|url| scope.spawn(move || open(server, url))).collect();
        handles
            .into_iter()
            .map(|h| {
                let opened = h.join().expect("thread");
                assert_eq!(opened.status, 200, "{}", opened.body);
                opened.cookie.expect("cookie")
            })
            .collect()
    })
}

/// Sessions of the default stack and fleet, PENDING or ACTIVE, all pages.
fn sessions(server: &Server) -> Vec<Value> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut input = json!({ "StackName": STACK, "FleetName": FLEET, "Limit": 50 });
        if let Some(t) = &token {
            input["NextToken"] = json!(t);
        }
        let page = server.ok("streaming:DescribeSessions", input);
        all.extend(page["Sessions"].as_array().cloned().unwrap_or_default());
        match page["NextToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => return all,
        }
    }
}

#[test]
fn two_hundred_concurrent_redemptions_are_all_served() {
    // A fleet of 200 serves 200 at once.
    let large = server(&[&fleet_setting("desired_instances", 200), &fleet_setting("max_queue", 500)]);
    redeem_concurrently(&large, 200);
    eventually(300, "200 ACTIVE sessions", || {
        let all = sessions(&large);
        assert!(all.len() == 200, "{} sessions of 200 remain", all.len());
        all.iter().all(|s| s["State"] == "ACTIVE").then_some(())
    });
    assert_eq!(capacity(&large), [200, 200, 200, 0]);
    for session in sessions(&large) {
        expire(&large, &session);
    }
    drop(large);

    // A fleet of 20: 20 are served at once, the rest queue and are served as sessions end.
    let server =
        server(&[&fleet_setting("desired_instances", 20), &fleet_setting("max_queue", 500), &fleet_setting("queue_timeout", 3600)]);
    redeem_concurrently(&server, 200);
    let mut served = std::collections::HashSet::new();
    let started = Instant::now();
    while served.len() < 200 {
        let [_, _, in_use, _] = capacity(&server);
        assert!(in_use <= 20, "{in_use} sessions in use on a fleet of 20");
        for session in sessions(&server).into_iter().filter(|s| s["State"] == "ACTIVE") {
            served.insert(session["Id"].as_str().expect("id").to_owned());
            expire(&server, &session);
        }
        assert!(started.elapsed() < Duration::from_secs(600), "only {} of 200 served", served.len());
    }
    // Each ended session's record follows its instance's teardown.
    let ended = eventually(60, "200 SessionEnded records", || {
        let ended = server.audit(&[("EventName", "SessionEnded")]);
        (ended.len() == 200).then_some(ended)
    });
    assert!(
        ended.iter().all(|r| r["requestParameters"]["EndReason"] == "EXPIRED_BY_API"),
        "a session ended otherwise, for example NO_CAPACITY"
    );
}
