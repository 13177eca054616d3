//! Sessions do not fill the trail with polling: the home-folder sync and the launcher learn of
//! changes under the user's prefix through the endpoint's long poll (`storage:WaitForChanges`)
//! instead of listing it again and again. An idle session writes at most one record a minute,
//! a change made in storage still reaches the workspace within seconds, and a notebook
//! session's launch writes at most 20 records.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::notebooks::direct_notebook_server;
use crate::support::server::{Server, b64, eventually};
use crate::support::streaming::{active, redeem, server};

/// The records the instance at `address` wrote, oldest first.
fn records_from(server: &Server, address: &str) -> Vec<Value> {
    let mut records: Vec<Value> =
        server.audit(&[("EventSource", "storage")]).into_iter().chain(server.audit(&[("EventSource", "parameters")])).collect();
    records.retain(|r| r["sourceIPAddress"] == address);
    records.sort_by(|a, b| a["eventTime"].as_str().cmp(&b["eventTime"].as_str()));
    records
}

fn millis(record: &Value) -> i64 {
    let time = record["eventTime"].as_str().expect("time");
    chrono::DateTime::parse_from_rfc3339(time).expect("an RFC 3339 time").timestamp_millis()
}

#[test]
fn an_idle_session_writes_at_most_a_record_a_minute_and_still_hears_of_changes_at_once() {
    let server = server(&[]);
    let cookie = redeem(&server, "ida");
    let session = active(&server, &cookie, 120);
    let address = session["NetworkAccessConfiguration"]["EniPrivateIpAddress"].as_str().expect("address").to_owned();
    let instance = session["InstanceId"].as_str().expect("instance").to_owned();
    // Settled: the sync's first listing and first long poll are behind it.
    std::thread::sleep(Duration::from_secs(5));
    let since = chrono::Utc::now().timestamp_millis();
    std::thread::sleep(Duration::from_secs(130));
    let idle: Vec<Value> = records_from(&server, &address).into_iter().filter(|r| millis(r) >= since).collect();
    let names: Vec<&str> = idle.iter().map(|r| r["eventName"].as_str().unwrap_or_default()).collect();
    eprintln!("an idle session's records over 130 s: {names:?}");
    assert!(idle.len() <= 3, "an idle session wrote {} records in 130 s: {names:?}", idle.len());
    for pair in idle.windows(2) {
        let gap = millis(&pair[1]) - millis(&pair[0]);
        assert!(gap >= 55_000, "two records {gap} ms apart from an idle session: {names:?}");
    }
    assert!(names.iter().all(|n| *n == "WaitForChanges"), "{names:?}");

    // A change in storage reaches the workspace's folder within seconds, as it happens.
    let home = session["HomePrefix"].as_str().map(str::to_owned).unwrap_or_else(|| {
        use sha2::Digest as _;
        format!("user/custom/{}/", hex::encode(sha2::Sha256::digest(b"ida")))
    });
    let put = Instant::now();
    server.ok("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": format!("{home}pushed.txt"), "Body": b64(b"pushed") }));
    eventually(10, "the object in the workspace's home folder", || {
        let out = server.cli(&["instances", "exec", &instance, "--", "/bin/cat", "/home/user/MyFiles/HomeFolder/pushed.txt"], &[]);
        (out.exit == 0).then_some(())
    });
    eprintln!("storage → workspace in {:?}", put.elapsed());
    assert!(put.elapsed() < Duration::from_secs(5), "the change took {:?}", put.elapsed());
}

#[test]
fn a_notebook_sessions_launch_writes_at_most_twenty_records() {
    let server = direct_notebook_server(&[]);
    let cookie = redeem(&server, "lena");
    let session = active(&server, &cookie, 180);
    let (address, instance) = (
        session["NetworkAccessConfiguration"]["EniPrivateIpAddress"].as_str().expect("address").to_owned(),
        session["InstanceId"].as_str().expect("instance").to_owned(),
    );
    eventually(240, "the launcher's answer", || {
        let log = server.cli(&["instances", "exec", &instance, "--", "/bin/cat", "/tmp/launcher.log"], &[]);
        log.stdout.as_str().is_some_and(|l| l.contains("your notebook is ready")).then_some(())
    });
    let launch = records_from(&server, &address);
    let names: Vec<&str> = launch.iter().map(|r| r["eventName"].as_str().unwrap_or_default()).collect();
    eprintln!("the launch's records: {names:?}");
    assert!(launch.len() <= 20, "the launch wrote {} records: {names:?}", launch.len());
}

/// A wait costs a listing at every change: one caller holds at most four at once, and the
/// fifth is refused (and recorded), not queued; a wait ends as soon as its prefix changes.
#[test]
fn a_caller_holds_at_most_four_waits_and_a_change_ends_them() {
    let server = Server::start(&["fleet_type=ON_DEMAND"]);
    let input = json!({ "Bucket": "datasandbox-home", "Prefix": "waits/" });
    let token = server.ok("storage:WaitForChanges", input.clone())["Token"].as_str().expect("token").to_owned();
    let mut waiting = input.clone();
    waiting["Token"] = json!(token);
    waiting["WaitSeconds"] = json!(30);
    let waits: Vec<_> = (0..4)
        .map(|_| {
            let (dir, input) = (server.data_dir().to_owned(), waiting.to_string());
            std::thread::spawn(move || {
                let out = std::process::Command::new(crate::support::server::BIN)
                    .arg("--data-dir")
                    .arg(&dir)
                    .args(["call", "storage:WaitForChanges", "--input", &input])
                    .output()
                    .expect("run the CLI");
                serde_json::from_slice::<Value>(&out.stdout).unwrap_or_default()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let fifth = server.call("storage:WaitForChanges", &waiting);
    assert_eq!(fifth.stderr["Code"], "LimitExceededException", "{fifth:?}");
    let changed = Instant::now();
    server.ok("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": "waits/now", "Body": b64(b"x") }));
    for wait in waits {
        assert_eq!(wait.join().expect("a wait")["Changed"], true);
    }
    assert!(changed.elapsed() < Duration::from_secs(5), "the waits ended {:?} after the change", changed.elapsed());
    // Ended, they no longer count.
    assert_eq!(server.ok("storage:WaitForChanges", input)["Token"].as_str().map(str::len), Some(32));
}

/// A server that stops ends the waits under way, and the sessions' clients do not answer that
/// with a burst of new ones: each was told to come back later. (They used to be answered
/// "unchanged" at once, again and again, until their instance ended: dozens of records a
/// millisecond from every session.)
#[test]
fn a_stopping_server_ends_the_waits_without_a_burst_of_new_ones() {
    let mut server = server(&[]);
    let cookie = redeem(&server, "stig");
    let session = active(&server, &cookie, 120);
    let address = session["NetworkAccessConfiguration"]["EniPrivateIpAddress"].as_str().expect("address").to_owned();
    // Settled: the sync's long poll is waiting.
    std::thread::sleep(Duration::from_secs(5));
    let since = chrono::Utc::now().timestamp_millis();
    assert!(server.stop().success(), "a clean stop");
    server.restart(&[]);
    let stopping: Vec<Value> = records_from(&server, &address).into_iter().filter(|r| millis(r) >= since).collect();
    let calls: Vec<(&str, &str)> =
        stopping.iter().map(|r| (r["eventName"].as_str().unwrap_or_default(), r["errorCode"].as_str().unwrap_or("ok"))).collect();
    eprintln!("the session's records while the server stopped: {calls:?}");
    assert!(stopping.len() <= 4, "{} records from one session while the server stopped: {calls:?}", stopping.len());
    assert!(calls.contains(&("WaitForChanges", "ServiceUnavailable")), "the wait under way was not refused: {calls:?}");
}
