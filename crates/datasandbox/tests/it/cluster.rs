//! Several nodes on one metadata store: leases, fencing, a lost node and its sessions, a
//! session opened on the node that runs it, and what SQLite refuses. The nodes are servers on
//! this host, each with its own data directory, network and name (`support::nodes`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http;
use crate::support::nodes::{Shared, copy_master_key};
use crate::support::server::{Server, eventually};
use crate::support::streaming::{FLEET, open, status, streaming_url};

/// Nodes' sessions start a shell, without a display: these tests are about where sessions run.
const SESSIONS: [&str; 2] = ["stacks.datasandbox-stack.application=shell", "stream_view=DIRECT"];

fn nodes(server: &Server) -> Vec<Value> {
    let listed = server.cli(&["nodes"], &[]);
    assert_eq!(listed.exit, 0, "{:?}", listed.stderr);
    listed.stdout["Nodes"].as_array().cloned().unwrap_or_default()
}

fn node<'a>(listed: &'a [Value], name: &str) -> &'a Value {
    listed.iter().find(|n| n["Name"] == name).unwrap_or_else(|| panic!("node {name} is not listed: {listed:?}"))
}

/// The instance a session runs on, and that instance's node, from the shared store.
fn session_node(shared: &Shared, session_id: &str) -> String {
    shared.sql(&format!(
        "SELECT i.node FROM sessions s JOIN instances i ON i.instance_id = s.instance_id WHERE s.session_id = '{session_id}'"
    ))
}

fn with_image(server: Server) -> Server {
    assert_eq!(server.cli(&["image", "build", "base"], &[]).exit, 0, "image build on {}", server.api);
    server
}

#[test]
fn a_second_node_on_sqlite_is_refused_and_told_to_use_postgresql() {
    let first_dir = tempfile::tempdir().expect("temp dir");
    let database = format!("metadata.url=sqlite://{}?mode=rwc", first_dir.path().join("metadata.db").display());
    let first = Server::try_start_in(first_dir, &[&database, "cluster.node=first"], &[]).expect("the first node starts");
    assert_eq!(node(&nodes(&first), "first")["State"], "ACTIVE");

    // Without the first node's master key, a second node could open none of its secrets.
    let refused = Server::try_start_in(tempfile::tempdir().expect("temp dir"), &[&database, "cluster.node=second"], &[])
        .err()
        .expect("a node with another master key is refused");
    assert!(
        refused.contains("is not the one the other nodes on this metadata store use") && refused.contains("copy `master.key`"),
        "{refused}"
    );
    // With it, SQLite still serves one node only.
    let dir = tempfile::tempdir().expect("temp dir");
    copy_master_key(&first, dir.path());
    let refused = Server::try_start_in(dir, &[&database, "cluster.node=second"], &[]).err().expect("a second node on SQLite is refused");
    assert!(
        refused.contains("SQLite, which serves one node") && refused.contains("node `first`") && refused.contains("postgres://"),
        "{refused}"
    );
    assert_eq!(nodes(&first).len(), 1, "the refused node left no row");
    // Where the nodes are is the operators' to know, not a user's.
    let denied = first.call_as(&first.token_for("nora"), "cluster:DescribeNodes", &json!({}));
    assert_eq!(denied.stderr["Code"], "AccessDeniedException", "{denied:?}");
}

#[test]
fn two_nodes_serve_any_call_and_a_session_opens_on_the_node_that_runs_it() {
    let shared = Shared::start();
    let fleet = ["fleet_type=ALWAYS_ON", "fleets.datasandbox-fleet.desired_instances=1"];
    let overrides: Vec<&str> = SESSIONS.iter().chain(fleet.iter()).copied().collect();
    let a = with_image(shared.node("a", None, &overrides));
    let b = with_image(shared.node("b", Some(&a), &overrides));
    let listed = nodes(&b);
    assert_eq!((node(&listed, "a")["State"].as_str(), node(&listed, "b")["State"].as_str()), (Some("ACTIVE"), Some("ACTIVE")));
    assert_eq!(node(&listed, "a")["Address"], format!("http://{}", a.api));

    // Any node answers any call: an object written through one is read through the other.
    let body = crate::support::server::b64(b"written on a\n");
    a.ok("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": "shared/a.txt", "Body": body }));
    assert_eq!(b.ok("storage:GetObject", json!({ "Bucket": "datasandbox-home", "Key": "shared/a.txt" }))["Body"], body);

    // A URL made on a is redeemed on b. The fleet keeps one instance warm, which falls to a
    // (shares go by name), so b, with none, leaves the session to a; b's session page then
    // sends the browser there.
    // And the fleet RUNNING, as a URL needs: its state follows its warm instance (a full run
    // once asked for the URL in between).
    eventually(60, "a's warm instance and the fleet RUNNING", || {
        let warm = shared.sql("SELECT COUNT(*) FROM instances WHERE node = 'a' AND state = 'RUNNING' AND session_id IS NULL") == "1";
        (warm && shared.sql("SELECT state FROM fleets WHERE name = 'datasandbox-fleet'") == "RUNNING").then_some(())
    });
    let opened = open(&b, &streaming_url(&a, "nora"));
    assert_eq!(opened.status, 200, "{}", opened.body);
    let cookie = opened.cookie.expect("a session cookie");
    let on_b = eventually(60, "the session to be ACTIVE", || Some(status(&b, &cookie)).filter(|s| s["State"] == "ACTIVE"));
    let session_id = on_b["SessionId"].as_str().expect("session id").to_owned();
    assert_eq!(session_node(&shared, &session_id), "a");
    assert_eq!((on_b["Node"].as_str(), on_b["NodeUrl"].as_str()), (Some("a"), Some(format!("http://{}", a.api).as_str())));
    // The handoff: a one-time URL on the session's node, a new cookie there, the old one spent.
    let reply = http::tcp(&b.api)
        .expect("connect")
        .request("POST", "/session/handoff", &[("cookie", &format!("ds_session={cookie}"))], b"")
        .expect("request");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let handoff = reply.json()["HandoffUrl"].as_str().expect("a handoff URL").to_owned();
    let path = handoff.strip_prefix(&format!("http://{}", a.api)).expect("the URL is node a's").to_owned();
    // Only the session's node spends it.
    assert_ne!(http::tcp(&b.api).expect("connect").request("GET", &path, &[], b"").expect("request").status, 303);
    let accepted = http::tcp(&a.api).expect("connect").request("GET", &path, &[], b"").expect("request");
    assert_eq!(accepted.status, 303, "{}", String::from_utf8_lossy(&accepted.body));
    let moved = accepted
        .headers
        .iter()
        .find(|(n, _)| n == "set-cookie")
        .and_then(|(_, v)| v.split(';').next()?.strip_prefix("ds_session=").map(str::to_owned))
        .expect("a cookie for node a");
    let there = status(&a, &moved);
    assert_eq!((there["State"].as_str(), there.get("NodeUrl")), (Some("ACTIVE"), None), "{there}");
    // The code works once, and the cookie of the other node no longer acts for the session.
    assert_eq!(http::tcp(&a.api).expect("connect").request("GET", &path, &[], b"").expect("request").status, 401);
    let stale = http::tcp(&b.api)
        .expect("connect")
        .request("GET", "/session/status", &[("cookie", &format!("ds_session={cookie}"))], b"")
        .expect("request");
    assert_eq!(stale.status, 401, "the cookie b gave still works after the handoff");
    let handoffs = a.audit(&[("EventName", "AcceptSessionHandoff")]);
    assert_eq!(handoffs.iter().filter(|r| r["errorCode"].is_null()).count(), 1, "{handoffs:#?}");

    // Ended through b, which does not run its instance: a, which does, stops it. Before, it
    // ran on, its credential renewed and its user's folder open to it (review finding).
    let instance = shared.sql(&format!("SELECT instance_id FROM sessions WHERE session_id = '{session_id}'"));
    b.ok("streaming:ExpireSession", json!({ "SessionId": session_id }));
    eventually(60, "the ended session's instance to stop on its node", || {
        (shared.sql(&format!("SELECT state FROM instances WHERE instance_id = '{instance}'")) == "TERMINATED").then_some(())
    });
}

#[test]
fn a_killed_node_is_lost_once_its_sessions_end_its_capacity_moves_and_it_comes_back() {
    let shared = Shared::start();
    let fleet = ["fleet_type=ALWAYS_ON", "fleets.datasandbox-fleet.desired_instances=2"];
    let overrides: Vec<&str> = SESSIONS.iter().chain(fleet.iter()).copied().collect();
    let mut a = with_image(shared.node("a", None, &overrides));
    // b joins after the deploy and builds the image it needs at its first launch.
    let b = shared.node("b", Some(&a), &overrides);
    // Each node keeps its share of the fleet warm: one each.
    let running_on = |node: &str| -> i64 {
        shared
            .sql(&format!("SELECT COUNT(*) FROM instances WHERE fleet = '{FLEET}' AND node = '{node}' AND state = 'RUNNING'"))
            .parse()
            .unwrap_or(-1)
    };
    eventually(90, "one warm instance on each node", || (running_on("a") == 1 && running_on("b") == 1).then_some(()));
    // A session on a's instance: redeemed on a, which hands out its own warm instance.
    let opened = open(&a, &streaming_url(&a, "nora"));
    assert_eq!(opened.status, 200, "{}", opened.body);
    let cookie = opened.cookie.expect("cookie");
    let session = eventually(30, "the session to be ACTIVE", || Some(status(&a, &cookie)).filter(|s| s["State"] == "ACTIVE"));
    let session_id = session["SessionId"].as_str().expect("session id").to_owned();
    assert_eq!(session_node(&shared, &session_id), "a");

    a.crash_and_restart_later();
    let killed = Instant::now();
    eventually(25, "node b to take node a for lost", || (node(&nodes(&b), "a")["State"] == "LOST").then_some(()));
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(20), "a lost node was noticed after {took:?}");
    let ended = eventually(10, "a's session to end", || {
        let row = shared.sql(&format!("SELECT state || ' ' || COALESCE(end_reason, '') FROM sessions WHERE session_id = '{session_id}'"));
        (row.starts_with("EXPIRED")).then_some(row)
    });
    assert_eq!(ended, "EXPIRED NODE_LOST");
    let lost = b.audit(&[("EventName", "NodeLost")]);
    assert_eq!(lost.len(), 1, "one NodeLost record: {lost:#?}");
    assert_eq!(lost[0]["requestParameters"]["Node"], "a");
    let session_ends: Vec<Value> = b
        .audit(&[("EventName", "SessionEnded")])
        .into_iter()
        .filter(|r| r["requestParameters"]["SessionId"] == session_id.as_str())
        .collect();
    assert_eq!(session_ends.len(), 1, "the session ended once: {session_ends:#?}");
    // The fleet's capacity is rebuilt on b.
    eventually(60, "both warm instances on b", || (running_on("b") == 2).then_some(()));
    // A new session is served, by b.
    let opened = open(&b, &streaming_url(&b, "omar"));
    assert_eq!(opened.status, 200, "{}", opened.body);
    let cookie = opened.cookie.expect("cookie");
    eventually(30, "omar's session to be ACTIVE", || (status(&b, &cookie)["State"] == "ACTIVE").then_some(()));

    // a comes back: under a new epoch, its left-over instance destroyed, its row reconciled.
    let env: Vec<(&str, &str)> = shared.env();
    let mut all = shared.overrides();
    all.push("cluster.node=a".to_owned());
    all.extend(overrides.iter().map(|o| (*o).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    a.restart_with_env(&all, &env);
    let back = nodes(&b);
    assert_eq!((node(&back, "a")["State"].as_str(), node(&back, "a")["Epoch"].as_i64()), (Some("ACTIVE"), Some(2)));
    let left = shared.sql("SELECT COUNT(*) FROM instances WHERE node = 'a' AND state NOT IN ('TERMINATED', 'FAILED')");
    let reaped = a.audit(&[("EventName", "ReconcileInstances")]);
    assert!(!reaped.is_empty() || left == "0", "a's instances were neither reconciled nor gone: {left}");
    // The shares settle back to one each.
    eventually(90, "one warm instance on a again", || (running_on("a") >= 1).then_some(()));
}

#[test]
fn a_node_stopped_past_its_lease_changes_nothing_it_lost_and_rejoins() {
    let shared = Shared::start();
    // A short lease, so the test does not wait for the default's 15 s.
    let timing = ["cluster.heartbeat_ms=500", "cluster.lease_ms=2000"];
    let overrides: Vec<&str> = SESSIONS.iter().chain(timing.iter()).copied().collect();
    let a = with_image(shared.node("a", None, &overrides));
    let b = shared.node("b", Some(&a), &overrides);
    let opened = open(&a, &streaming_url(&a, "nora"));
    assert_eq!(opened.status, 200, "{}", opened.body);
    let cookie = opened.cookie.expect("cookie");
    let session = eventually(60, "the session to be ACTIVE", || Some(status(&a, &cookie)).filter(|s| s["State"] == "ACTIVE"));
    let session_id = session["SessionId"].as_str().expect("session id").to_owned();
    assert_eq!(session_node(&shared, &session_id), "a");

    let pid = a.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    eventually(15, "node b to take node a for lost", || (node(&nodes(&b), "a")["State"] == "LOST").then_some(()));
    eventually(10, "a's session to end", || {
        (shared.sql(&format!("SELECT end_reason FROM sessions WHERE session_id = '{session_id}'")) == "NODE_LOST").then_some(())
    });
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success());

    // a finds its lease gone: its fenced writes change nothing, it ends its instance and rejoins.
    eventually(20, "node a to rejoin", || {
        (node(&nodes(&b), "a")["Epoch"] == 2 && node(&nodes(&b), "a")["State"] == "ACTIVE").then_some(())
    });
    let log = std::fs::read_to_string(a.data_dir().join("server.log")).expect("a's log");
    assert!(log.contains("the fenced lease renewal touched 0 rows"), "a did not log its lost lease");
    assert!(log.contains("a fenced write touched 0 rows"), "a did not log its fenced instance writes");
    assert_eq!(
        shared.sql(&format!("SELECT end_reason FROM sessions WHERE session_id = '{session_id}'")),
        "NODE_LOST",
        "a changed a session it lost"
    );
    // Joining comes first, then the reconciliation, then the record of both.
    eventually(20, "a's record of its rejoining", || (a.audit(&[("EventName", "NodeRejoined")]).len() == 1).then_some(()));
    let instance = session["InstanceId"].as_str().expect("instance");
    eventually(20, "a's old instance to be destroyed and its row reconciled", || {
        (shared.sql(&format!("SELECT state FROM instances WHERE instance_id = '{instance}'")) == "TERMINATED").then_some(())
    });
}

#[test]
fn a_portal_on_one_node_hears_a_session_or_airlock_change_made_on_another() {
    let shared = Shared::start();
    let a = with_image(shared.node("a", None, &SESSIONS));
    let b = shared.node("b", Some(&a), &SESSIONS);
    let token = crate::support::users::portal_user(&a, "carol");
    // Carol's portal is open on b, signed in there.
    let body = json!({ "UserName": "carol", "Password": crate::support::users::PASSWORD }).to_string();
    let signed = http::tcp(&b.api)
        .expect("connect")
        .request("POST", "/portal/signin", &[("content-type", "application/json"), ("origin", "http://localhost")], body.as_bytes())
        .expect("sign in");
    assert_eq!(signed.status, 200, "{}", String::from_utf8_lossy(&signed.body));
    let cookie = signed.headers.iter().find(|(n, _)| n == "set-cookie").and_then(|(_, v)| v.split(';').next()).expect("cookie").to_owned();
    let mut connection = http::tcp(&b.api).expect("connect");
    let head = connection.request("GET", "/portal/events", &[("cookie", &cookie), ("accept", "text/event-stream")], b"").expect("open");
    assert_eq!(head.status, 200);
    let mut reader = connection.into_reader();
    reader.get_ref().set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
    let mut seen = String::new();
    let mut changes = |seen: &mut String| {
        let mut buffer = [0u8; 4096];
        while let Ok(read) = std::io::Read::read(&mut reader, &mut buffer) {
            if read == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
        seen.matches("data: changed").count()
    };
    let before = changes(&mut seen);
    // A session launched on a, from a's portal.
    let launched = Instant::now();
    let _cookie = crate::support::users::portal_session(&a, &token);
    let heard = eventually(10, "b's portal to hear the change made on a", || (changes(&mut seen) > before).then(|| launched.elapsed()));
    eprintln!("a change on node a reached node b's portal {} ms after the launch began", heard.as_millis());
    assert!(heard <= Duration::from_secs(5), "b heard a's change only after {heard:?}");

    // So does a change to one of her airlock requests (My requests lives on the same page).
    let create = json!({ "Direction": "EXPORT", "Workspace": "datasandbox-stack", "Justification": "results" });
    let created = a.call_as(&token, "airlock:CreateRequest", &create);
    assert_eq!(created.exit, 0, "{created:?}");
    let before = changes(&mut seen);
    let withdrawn = Instant::now();
    let id = created.stdout["RequestId"].as_str().expect("request id");
    assert_eq!(a.call_as(&token, "airlock:WithdrawRequest", &json!({ "RequestId": id })).exit, 0);
    let heard =
        eventually(10, "b's portal to hear the request change made on a", || (changes(&mut seen) > before).then(|| withdrawn.elapsed()));
    assert!(heard <= Duration::from_secs(5), "b heard a's request change only after {heard:?}");
}

/// Writes objects through `server` until `stop`, one call at a time; the keys acknowledged and
/// the error codes of the calls refused.
fn put_until(server: &Server, stop: &std::sync::atomic::AtomicBool) -> (Vec<String>, Vec<String>) {
    let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let key = format!("load/{n:05}.txt");
        // Larger than the bodies kept in the metadata store (32 KiB): each is a blob in S3.
        let body = crate::support::server::b64(&large(&key));
        let called = server.call("storage:PutObject", &json!({ "Bucket": "datasandbox-home", "Key": key, "Body": body }));
        if called.exit == 0 {
            acknowledged.push(key);
        } else {
            refused.push(called.stderr["Code"].as_str().unwrap_or("(no code)").to_owned());
        }
        n += 1;
    }
    (acknowledged, refused)
}

/// Writes through `server` for 2 s, runs `outage`, writes on for 3 s more; the keys
/// acknowledged and the error codes of the calls refused.
fn under_load(server: &Server, outage: impl FnOnce()) -> (Vec<String>, Vec<String>) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let load = scope.spawn(|| put_until(server, &stop));
        std::thread::sleep(Duration::from_secs(2));
        outage();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        load.join().expect("the load")
    })
}

/// Every acknowledged object is there, whole.
fn all_there(server: &Server, keys: &[String]) {
    for key in keys {
        let got = server.ok("storage:GetObject", json!({ "Bucket": "datasandbox-home", "Key": key }));
        assert!(crate::support::server::unb64(got["Body"].as_str().expect("body")) == large(key), "{key}");
    }
}

/// The body written under `key`: its name, repeated past 40 KiB.
fn large(key: &str) -> Vec<u8> {
    key.as_bytes().repeat(40 * 1024 / key.len() + 1)
}

#[test]
fn postgresql_restarted_under_load_loses_nothing_acknowledged_and_refuses_meanwhile() {
    let shared = Shared::start_private();
    let a = shared.node("a", None, &[]);
    let (acknowledged, refused) = under_load(&a, || shared.postgres().restart());
    eprintln!("{} writes acknowledged, {} refused during the restart: {refused:?}", acknowledged.len(), refused.len());
    assert!(acknowledged.len() > 10, "the node did not come back after the restart");
    // A write the store could not take was refused as a temporary outage, never failed as ours.
    assert!(refused.iter().all(|code| code == "ServiceUnavailable"), "{refused:?}");
    all_there(&a, &acknowledged);
    // Each refusal is in the trail.
    let recorded = a.audit(&[("EventName", "PutObject")]).iter().filter(|r| r["errorCode"] == "ServiceUnavailable").count();
    assert_eq!(recorded, refused.len(), "refusals recorded");
    // The outage was shorter than the lease: the node kept it.
    let me = nodes(&a);
    assert_eq!((node(&me, "a")["State"].as_str(), node(&me, "a")["Epoch"].as_i64()), (Some("ACTIVE"), Some(1)));
}

#[test]
fn an_s3_outage_delays_writes_but_loses_none_acknowledged() {
    let shared = Shared::start_private();
    let a = shared.node("a", None, &[]);
    let (acknowledged, refused) = under_load(&a, || {
        shared.moto().pause();
        std::thread::sleep(Duration::from_secs(3));
        shared.moto().resume();
    });
    eprintln!("{} writes acknowledged, {} refused across a 3 s S3 outage: {refused:?}", acknowledged.len(), refused.len());
    assert!(acknowledged.len() > 10, "writes did not resume after the outage");
    all_there(&a, &acknowledged);
    assert_eq!(shared.moto().object_count_under("datasandbox-blobs", "blobs/"), acknowledged.len(), "one body in the bucket per object");
}

/// What the relay of a node answers a client that is not a node of the cluster: `curl` over
/// TLS with no certificate, then with one of an authority of its own. Returns curl's exit codes
/// and what it printed.
fn strangers_at_the_relay(relay: &str, path: &str) -> Vec<(i32, String)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "1", "-subj", "/CN=a.nodes.datasandbox"])
        .args(["-addext", "subjectAltName=DNS:a.nodes.datasandbox", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let url = format!("https://{relay}{path}");
    let no_cert = vec!["-sk".to_owned(), "--max-time".into(), "10".into(), url.clone()];
    let own_cert = vec![
        "-sk".to_owned(),
        "--max-time".into(),
        "10".into(),
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        url,
    ];
    [no_cert, own_cert]
        .iter()
        .map(|args| {
            let out = std::process::Command::new("curl").args(args).output().expect("curl");
            (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .collect()
}

/// A presigned URL of the shared notebook for a session, made through `node`.
fn presigned(node: &Server, session_id: &str) -> String {
    let made = node.ok(
        "notebooks:CreatePresignedNotebookInstanceUrl",
        json!({ "NotebookInstanceName": "shared-nb", "StreamingSessionId": session_id }),
    );
    made["AuthorizedUrl"].as_str().expect("a notebook URL").to_owned()
}

#[test]
fn a_notebook_on_one_node_opens_from_a_session_on_another_and_answers_to_both() {
    use crate::notebooks::{execute, get, open_notebook, send};
    let shared = Shared::start();
    // The one warm instance falls to `a` (shares go by name): the session runs there, and the
    // notebook is made on `b`, whose disk holds its volume.
    let fleet = [
        "fleet_type=ALWAYS_ON",
        "fleets.datasandbox-fleet.desired_instances=1",
        "stacks.datasandbox-stack.user_settings.FILE_DOWNLOAD=ENABLED",
    ];
    let overrides: Vec<&str> = SESSIONS.iter().chain(fleet.iter()).copied().collect();
    let a = with_image(shared.node("a", None, &overrides));
    let b = shared.node("b", Some(&a), &overrides);
    assert_eq!(b.cli(&["image", "build", "notebook"], &[]).exit, 0, "the notebook image on b");
    b.ok("notebooks:CreateNotebookInstance", json!({ "NotebookInstanceName": "shared-nb", "InstanceType": "stream.standard.small" }));
    let described = eventually(180, "the notebook in service on b", || {
        let described = a.ok("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": "shared-nb" }));
        assert_ne!(described["NotebookInstanceStatus"], "Failed", "{described}");
        Some(described).filter(|d| d["NotebookInstanceStatus"] == "InService")
    });
    assert_eq!(described["Node"], "b", "{described}");
    let relay = node(&nodes(&a), "b")["RelayAddress"].as_str().expect("b's relay address").to_owned();

    // A session on a, and the notebook's URL for it, made through a.
    eventually(60, "a's warm instance", || {
        (shared.sql("SELECT COUNT(*) FROM instances WHERE node = 'a' AND state = 'RUNNING' AND session_id IS NULL") == "1").then_some(())
    });
    let opened = open(&a, &streaming_url(&a, "nora"));
    assert_eq!(opened.status, 200, "{}", opened.body);
    let cookie = opened.cookie.expect("a session cookie");
    let session = eventually(60, "the session to be ACTIVE", || Some(status(&a, &cookie)).filter(|s| s["State"] == "ACTIVE"));
    let session_id = session["SessionId"].as_str().expect("session id").to_owned();
    assert_eq!(session_node(&shared, &session_id), "a");
    let url = presigned(&a, &session_id);

    // The browser opens it on a; a's proxy reaches b's Jupyter through b's relay, for HTTP and
    // for a kernel's WebSocket.
    let (nb, base, notebook_cookie) = open_notebook(&a, &cookie, &url);
    let reply = get(&nb, &format!("{base}api/status"), &notebook_cookie);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let kernel = send(&nb, "POST", &format!("{base}api/kernels"), &notebook_cookie, &json!({ "name": "python3" }));
    assert_eq!(kernel.status, 201, "{}", String::from_utf8_lossy(&kernel.body));
    let kernel = kernel.json()["id"].as_str().expect("kernel id").to_owned();
    assert_eq!(execute(&nb, &base, &notebook_cookie, &kernel, "6*7"), "42");
    // The kernel ran on b: its files are on b's volume.
    execute(&nb, &base, &notebook_cookie, &kernel, "open('/home/user/work/from-a.txt', 'w').write('written through a')");
    let listed = get(&nb, &format!("{base}api/contents"), &notebook_cookie).json();
    assert!(listed["content"].as_array().is_some_and(|c| c.iter().any(|f| f["name"] == "from-a.txt")), "{listed}");
    // a, which proxied them, recorded the requests.
    let requests = a.audit(&[("EventName", "NotebookRequest")]);
    assert!(requests.iter().any(|r| r["requestParameters"]["Method"] == "WEBSOCKET"), "{requests:#?}");

    // Nothing but a node of the cluster gets through b's relay: no certificate, or one of an
    // authority of its own, and the handshake fails before any request.
    for (exit, body) in strangers_at_the_relay(&relay, "/notebook/shared-nb/api/status") {
        assert_ne!(exit, 0, "a stranger's request through the relay succeeded: {body}");
        assert!(body.is_empty(), "the relay answered a stranger: {body}");
    }
    let plain = http::tcp(&relay).and_then(|mut c| c.request("GET", "/notebook/shared-nb/api/status", &[], b""));
    if let Ok(reply) = plain {
        assert_ne!(reply.status, 200, "plain HTTP through the relay: {}", String::from_utf8_lossy(&reply.body));
    }

    // Stopped through a, the notebook stops on b, and its access ends.
    a.ok("notebooks:StopNotebookInstance", json!({ "NotebookInstanceName": "shared-nb" }));
    eventually(30, "the notebook stopped by b", || {
        let described = a.ok("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": "shared-nb" }));
        (described["NotebookInstanceStatus"] == "Stopped").then_some(())
    });
    assert_eq!(get(&nb, &format!("{base}api/status"), &notebook_cookie).status, 403);
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    let volume = b.data_dir().join("notebooks/shared-nb");
    assert!(!mounts.contains(volume.to_str().expect("utf-8")), "b left the volume mounted: {mounts}");
    // Grown and started through a: b grows the disk it holds, and the file is still there.
    a.ok("notebooks:UpdateNotebookInstance", json!({ "NotebookInstanceName": "shared-nb", "VolumeSizeInGB": 6 }));
    a.ok("notebooks:StartNotebookInstance", json!({ "NotebookInstanceName": "shared-nb" }));
    eventually(180, "the notebook in service again", || {
        let described = a.ok("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": "shared-nb" }));
        assert_ne!(described["NotebookInstanceStatus"], "Failed", "{described}");
        (described["NotebookInstanceStatus"] == "InService").then_some(())
    });
    assert_eq!(std::fs::metadata(volume.join("volume.img")).expect("b's disk").len(), 6 << 30);
    let url = presigned(&a, &session_id);
    let (nb, base, notebook_cookie) = open_notebook(&a, &cookie, &url);
    let file = get(&nb, &format!("{base}api/contents/from-a.txt"), &notebook_cookie).json();
    assert_eq!(file["content"], "written through a", "{file}");

    // Stopped and deleted through a: b removes the volume from its disk.
    a.ok("notebooks:StopNotebookInstance", json!({ "NotebookInstanceName": "shared-nb" }));
    eventually(30, "the notebook stopped by b", || {
        let described = a.ok("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": "shared-nb" }));
        (described["NotebookInstanceStatus"] == "Stopped").then_some(())
    });
    a.ok("notebooks:DeleteNotebookInstance", json!({ "NotebookInstanceName": "shared-nb" }));
    eventually(30, "b to remove the deleted notebook's volume", || (!volume.exists()).then_some(()));
}
