//! My Files on the session page: uploads into and downloads from the user's own home folder,
//! only where the session's stack enables them, through the storage actions as the session's
//! user; every transfer and refusal on the record, never a file's content; no name leaves the
//! user's own folder.

use serde_json::{Value, json};

use crate::support::http;
use crate::support::server::Server;
use crate::support::server::eventually;
use crate::support::streaming::{expire, redeem, server, status};

fn request(server: &Server, method: &str, path: &str, cookie: &str, body: &[u8]) -> http::Reply {
    http::tcp(&server.api).expect("connect").request(method, path, &[("cookie", &format!("ds_session={cookie}"))], body).expect("request")
}

fn active(server: &Server, user: &str) -> (String, Value) {
    let cookie = redeem(server, user);
    let session = eventually(60, "the session to be ACTIVE", || {
        let s = status(server, &cookie);
        (s["State"] == "ACTIVE").then_some(s)
    });
    (cookie, session)
}

fn inside(server: &Server, instance: &str, script: &str) -> String {
    let out = server.cli(&["instances", "exec", instance, "--", "/bin/sh", "-c", script], &[]);
    out.stdout.as_str().map_or_else(|| out.stdout.to_string(), str::to_owned)
}

fn listed(server: &Server, cookie: &str) -> Value {
    let reply = request(server, "GET", "/session/files", cookie, b"");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

fn names(listing: &Value) -> Vec<String> {
    listing["Files"].as_array().into_iter().flatten().filter_map(|f| f["Name"].as_str().map(str::to_owned)).collect()
}

fn blocked(server: &Server, session_id: &str) -> Vec<Value> {
    server
        .audit(&[("EventName", "FileTransferBlocked")])
        .into_iter()
        .filter(|r| r["requestParameters"]["SessionId"] == session_id)
        .collect()
}

#[test]
fn my_files_obey_the_stacks_file_settings() {
    let server = server(&[]);
    // The seed's stack: upload enabled, download disabled.
    let (alice, alice_session) = active(&server, "alice");
    let session = alice_session.clone();
    let (id, instance) = (session["SessionId"].as_str().expect("id"), session["InstanceId"].as_str().expect("instance"));
    // The home folder is the sandbox's, made before the instance's files were placed (and so
    // before its sync started): there as soon as the session is ACTIVE.
    let stat = |format: &str, path: &str| inside(&server, instance, &format!("stat -c '{format}' {path}"));
    assert_eq!(stat("%u %F", "/home/user/MyFiles/HomeFolder"), "1000 directory\n");
    let (made, placed) = (stat("%z", "/home/user/MyFiles/HomeFolder"), stat("%z", "/run/datasandbox/credential"));
    assert!(made <= placed, "the folder was made at {made}, after the instance's files ({placed})");

    let uploaded = request(&server, "PUT", "/session/files/notes/plan.txt", &alice, b"draft plan");
    assert_eq!(uploaded.status, 200, "{}", String::from_utf8_lossy(&uploaded.body));
    eventually(10, "the upload in the instance's home folder", || {
        (inside(&server, instance, "cat \"/home/user/MyFiles/HomeFolder/notes/plan.txt\" 2>/dev/null") == "draft plan").then_some(())
    });
    let puts = server.audit(&[("EventName", "PutObject"), ("Username", "alice")]);
    let put = puts
        .iter()
        .find(|r| r["requestParameters"]["Key"].as_str().is_some_and(|k| k.ends_with("/notes/plan.txt")))
        .expect("the upload's record");
    assert_eq!(put["sourceIPAddress"], "127.0.0.1", "{put}");
    assert_eq!(put["userIdentity"]["sessionContext"]["sessionIssuer"]["principalId"], id, "{put}");

    inside(&server, instance, "printf 'patient,score' > \"/home/user/MyFiles/HomeFolder/result.csv\"");
    let listing = eventually(10, "the instance's file in My Files", || {
        let listing = listed(&server, &alice);
        names(&listing).contains(&"result.csv".to_owned()).then_some(listing)
    });
    assert_eq!((listing["Upload"].clone(), listing["Download"].clone()), (json!(true), json!(false)));
    assert!(!names(&listing).iter().any(|n| n.starts_with("session")), "the launcher's files are not the user's: {listing}");
    let refused = request(&server, "GET", "/session/files/result.csv", &alice, b"");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["Code"], "FileTransferDisabled");
    assert!(!String::from_utf8_lossy(&refused.body).contains("patient"));
    let records = eventually(10, "the refused download on the record", || {
        let records = blocked(&server, id);
        (!records.is_empty()).then_some(records)
    });
    assert_eq!(records[0]["requestParameters"]["Name"], "result.csv");
    assert_eq!(records[0]["requestParameters"]["Setting"], "FILE_DOWNLOAD");
    assert_eq!(records[0]["sourceIPAddress"], "127.0.0.1");
    assert!(!records[0].to_string().contains("patient"), "contents never reach the trail");

    // Names stay inside the user's own folder, whatever the encoding; nothing is written.
    for bad in ["../x", "%2e%2e/x", "a/../../b", "./x", "a//b", "dir/", "%2Fetc%2Fpasswd", "tab%09here"] {
        let reply = request(&server, "PUT", &format!("/session/files/{bad}"), &alice, b"escape");
        assert!(reply.status == 400 || reply.status == 404, "{bad}: {} {}", reply.status, String::from_utf8_lossy(&reply.body));
    }
    let after = names(&listed(&server, &alice));
    assert!(after.iter().all(|n| !n.contains("..") && !n.contains('\t') && n != "x" && n != "b"), "{after:?}");
    assert!(request(&server, "GET", "/session/files", "not-a-cookie", b"").status == 401);

    // The opposite settings for the next session: download enabled, upload disabled.
    let settings = json!([
        { "Action": "FILE_UPLOAD", "Permission": "DISABLED" },
        { "Action": "FILE_DOWNLOAD", "Permission": "ENABLED" },
    ]);
    server.ok("streaming:UpdateStack", json!({ "Name": "datasandbox-stack", "UserSettings": settings }));
    let (bob, session) = active(&server, "bob");
    let (id, instance) = (session["SessionId"].as_str().expect("id"), session["InstanceId"].as_str().expect("instance"));
    let refused = request(&server, "PUT", "/session/files/tool.sh", &bob, b"curl evil");
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["Code"], "FileTransferDisabled");
    eventually(10, "the refused upload on the record", || {
        blocked(&server, id)
            .iter()
            .any(|r| r["requestParameters"]["Setting"] == "FILE_UPLOAD" && r["requestParameters"]["Bytes"] == 9)
            .then_some(())
    });
    assert!(!names(&listed(&server, &bob)).contains(&"tool.sh".to_owned()), "a refused upload writes nothing");
    inside(&server, instance, "printf 'summary only' > \"/home/user/MyFiles/HomeFolder/summary.txt\"");
    let download = eventually(10, "bob's file to download", || {
        let reply = request(&server, "GET", "/session/files/summary.txt", &bob, b"");
        (reply.status == 200).then_some(reply)
    });
    assert_eq!(download.body, b"summary only");
    let disposition = download.headers.iter().find(|(n, _)| n == "content-disposition").map(|(_, v)| v.clone());
    assert_eq!(disposition.as_deref(), Some("attachment; filename=\"summary.txt\""));
    let gets = server.audit(&[("EventName", "GetObject"), ("Username", "bob")]);
    assert!(
        gets.iter()
            .any(|r| r["requestParameters"]["Key"].as_str().is_some_and(|k| k.ends_with("/summary.txt"))
                && r["sourceIPAddress"] == "127.0.0.1"),
        "{gets:#?}"
    );
    // Each page sees only its user's folder: carol, with downloads enabled too, finds no
    // `summary.txt` in hers, and alice's listing does not show it.
    assert!(!names(&listed(&server, &alice)).contains(&"summary.txt".to_owned()));
    expire(&server, &alice_session);
    let (carol, _) = active(&server, "carol");
    let missing = request(&server, "GET", "/session/files/summary.txt", &carol, b"");
    assert_eq!(missing.status, 404, "{}", String::from_utf8_lossy(&missing.body));
}

fn printouts(server: &Server, cookie: &str) -> Vec<String> {
    listed(server, cookie)["Printouts"].as_array().into_iter().flatten().filter_map(|p| p["Name"].as_str().map(str::to_owned)).collect()
}

/// Prints a small PDF from inside the instance through its CUPS scheduler, as any program
/// there would (Chromium does the same with `--kiosk-printing`).
fn print_inside(server: &Server, instance: &str, marker: &str) {
    let script = format!(
        "for i in $(seq 100); do [ -S /tmp/cups/cups.sock ] && break; sleep 0.1; done; \
         printf '%%PDF-1.4 {marker}\\n' > /tmp/report.pdf && CUPS_SERVER=/tmp/cups/cups.sock lp -d Print /tmp/report.pdf"
    );
    let out = inside(server, instance, &script);
    assert!(out.contains("request id is Print-"), "lp: {out}");
}

#[test]
fn printouts_reach_the_device_only_when_the_stack_allows_printing() {
    let server = server(&["stream_view=DESKTOP"]);
    // The seed's stack: printing to the local device disabled.
    let (alice, session) = active(&server, "alice");
    let (id, instance) = (session["SessionId"].as_str().expect("id"), session["InstanceId"].as_str().expect("instance"));
    print_inside(&server, instance, "quarterly-figures");
    eventually(20, "alice's printout in her print folder", || printouts(&server, &alice).contains(&"job-1.pdf".to_owned()).then_some(()));
    assert_eq!(listed(&server, &alice)["Print"], false);
    let refused = request(&server, "GET", "/session/printouts/job-1.pdf", &alice, b"");
    assert_eq!(refused.status, 403, "{}", String::from_utf8_lossy(&refused.body));
    assert_eq!(refused.json()["Code"], "FileTransferDisabled");
    assert!(!String::from_utf8_lossy(&refused.body).contains("quarterly"));
    eventually(10, "the refused printout on the record", || {
        blocked(&server, id).iter().any(|r| r["requestParameters"]["Setting"] == "PRINTING_TO_LOCAL_DEVICE").then_some(())
    });

    let settings = json!([{ "Action": "PRINTING_TO_LOCAL_DEVICE", "Permission": "ENABLED" }]);
    server.ok("streaming:UpdateStack", json!({ "Name": "datasandbox-stack", "UserSettings": settings }));
    let (bob, session) = active(&server, "bob");
    let (id, instance) = (session["SessionId"].as_str().expect("id"), session["InstanceId"].as_str().expect("instance"));
    print_inside(&server, instance, "bobs-chart");
    eventually(20, "bob's printout", || printouts(&server, &bob).contains(&"job-1.pdf".to_owned()).then_some(()));
    let printout = request(&server, "GET", "/session/printouts/job-1.pdf", &bob, b"");
    assert_eq!(printout.status, 200, "{}", String::from_utf8_lossy(&printout.body));
    assert_eq!(printout.body, b"%PDF-1.4 bobs-chart\n", "the document as printed, from bob's own print folder");
    let downloaded = eventually(10, "the printout's transfer on the record", || {
        let records: Vec<Value> = server
            .audit(&[("EventName", "PrintoutDownloaded")])
            .into_iter()
            .filter(|r| r["requestParameters"]["SessionId"] == id)
            .collect();
        records.into_iter().next()
    });
    assert_eq!(downloaded["requestParameters"]["Bytes"], 20);
    assert_eq!(downloaded["sourceIPAddress"], "127.0.0.1");

    // The print folder is the instance's to write: a link planted there, named like a
    // printout, is neither listed nor followed on the host.
    inside(&server, instance, "ln -s /etc/passwd /run/print/job-77.pdf; ln -s /etc /run/print/job-78.pdf");
    assert!(!printouts(&server, &bob).iter().any(|p| p == "job-77.pdf" || p == "job-78.pdf"));
    for planted in ["job-77.pdf", "job-78.pdf"] {
        let reply = request(&server, "GET", &format!("/session/printouts/{planted}"), &bob, b"");
        assert_eq!(reply.status, 404, "{planted}: {}", String::from_utf8_lossy(&reply.body));
        assert!(!String::from_utf8_lossy(&reply.body).contains("root:"));
    }
    for bad in ["..%2Fdisplay%2Frfb.sock", "notes.pdf", "job-1.pdf.part"] {
        assert_eq!(request(&server, "GET", &format!("/session/printouts/{bad}"), &bob, b"").status, 400, "{bad}");
    }
}
