//! The airlock through the API, as a researcher, two reviewers, an auditor and an attacker see
//! it: a results table leaves only after its checks and two other people's approval, as a
//! signed release record, downloadable by its researcher alone; and the attack table of the
//! airlock issue, each refused or blocked with its reason, audited, nothing released.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::server::{Called, Server, b64, unb64};

const HOME: &str = "datasandbox-home";
const STACK: &str = "datasandbox-stack";

/// The EICAR test file, which every malware scanner is to find.
const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A ClamAV signature database of the test's own, holding the EICAR test signature only (no
/// signature update can be downloaded here), readable by the scanner's `nobody`.
fn eicar_database() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let setting = eicar_database_in(dir.path());
    (dir, setting)
}

/// The same in `dir`; the spec setting that points the airlock at it.
pub(crate) fn eicar_database_in(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let md5 =
        std::process::Command::new("md5sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().and_then(
            |mut child| {
                use std::io::Write as _;
                child.stdin.take().expect("stdin").write_all(EICAR)?;
                child.wait_with_output()
            },
        );
    let md5 = String::from_utf8_lossy(&md5.expect("md5sum").stdout).split_whitespace().next().expect("a digest").to_owned();
    let signatures = dir.join("test.hdb");
    std::fs::write(&signatures, format!("{md5}:{}:Eicar-Test-Signature\n", EICAR.len())).expect("write the signature");
    std::fs::set_permissions(&signatures, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    format!("airlock.clamav_database={}", dir.display())
}

fn home(user: &str) -> String {
    format!("user/custom/{}/", hex::encode(Sha256::digest(user.as_bytes())))
}

/// A bearer token for `user` holding `roles`.
fn token(server: &Server, user: &str, roles: &[&str]) -> String {
    let out = server.ok("identity:CreateSessionToken", json!({ "UserId": user, "Roles": roles }));
    out["Token"].as_str().expect("token").to_owned()
}

/// A person signed in whose roles the user directory vouches for: a local user holding
/// `roles`, and the token of their sign-in.
fn signed_in(server: &Server, user: &str, roles: &[&str]) -> String {
    let password = crate::support::users::PASSWORD;
    server.ok("identity:CreateLocalUser", json!({ "UserName": user, "Password": password, "Roles": roles }));
    crate::support::users::token_of(server, user)
}

/// The call's result, failing the test if it failed.
fn ok(called: Called, what: &str) -> Value {
    assert_eq!(called.exit, 0, "{what}: {:?}", called.stderr);
    called.stdout
}

/// The error code of a call that must fail.
fn refused(called: Called) -> String {
    assert_ne!(called.exit, 0, "the call succeeded: {:?}", called.stdout);
    called.stderr["Code"].as_str().unwrap_or_default().to_owned()
}

struct People<'a> {
    server: &'a Server,
    nora: String,
}

impl People<'_> {
    fn put(&self, name: &str, body: &[u8]) -> String {
        let key = format!("{}{name}", home("nora"));
        ok(self.server.call_as(&self.nora, "storage:PutObject", &json!({ "Bucket": HOME, "Key": key, "Body": b64(body) })), "put");
        key
    }

    /// A request of nora's with one file from her home folder, submitted; its id and state.
    fn submitted(&self, name: &str, body: &[u8]) -> (String, String) {
        let key = self.put(name, body);
        let created = ok(
            self.server.call_as(
                &self.nora,
                "airlock:CreateRequest",
                &json!({ "Direction": "EXPORT", "Workspace": STACK, "Justification": "results for the paper" }),
            ),
            "create",
        );
        let id = created["RequestId"].as_str().expect("request id").to_owned();
        let added = ok(
            self.server.call_as(&self.nora, "airlock:AddFile", &json!({ "RequestId": id, "Source": { "Bucket": HOME, "Key": key } })),
            "add",
        );
        assert_eq!(added["Sha256"], hex::encode(Sha256::digest(body)));
        let submitted = ok(self.server.call_as(&self.nora, "airlock:SubmitRequest", &json!({ "RequestId": id })), "submit");
        (id, submitted["State"].as_str().expect("state").to_owned())
    }
}

/// My Files' "Request export" of a home-folder file, with the session's cookie.
fn export_from_page(server: &Server, cookie: &str, name: &str, why: &str) -> crate::support::http::Reply {
    let body = json!({ "Name": name, "Justification": why }).to_string();
    crate::support::http::tcp(&server.api)
        .expect("connect")
        .request(
            "POST",
            "/session/export",
            &[("cookie", &format!("ds_session={cookie}")), ("content-type", "application/json")],
            body.as_bytes(),
        )
        .expect("request")
}

/// An import of one file (`body`, from `who`'s device), submitted: its id, once in review.
fn submitted_import(server: &Server, who: &str, path: &str, body: &[u8]) -> String {
    let create = json!({ "Direction": "IMPORT", "Workspace": STACK, "Justification": "a code list" });
    let created = ok(server.call_as(who, "airlock:CreateRequest", &create), "create");
    let id = created["RequestId"].as_str().expect("id").to_owned();
    ok(server.call_as(who, "airlock:AddFile", &json!({ "RequestId": id, "Path": path, "Body": b64(body) })), "add");
    assert_eq!(ok(server.call_as(who, "airlock:SubmitRequest", &json!({ "RequestId": id })), "submit")["State"], "in_review");
    id
}

fn vote(server: &Server, who: &str, id: &str, decision: &str, comment: Option<&str>) -> Called {
    let mut input = json!({ "RequestId": id, "Decision": decision });
    if let Some(comment) = comment {
        input["Comment"] = json!(comment);
    }
    server.call_as(who, "airlock:CastVote", &input)
}

#[test]
fn a_table_leaves_only_after_its_checks_and_two_others_approve_signed_and_for_its_researcher_alone() {
    let (_signatures, database) = eicar_database();
    let server = Server::start(&["streaming.timeout_scale_ms=1", &database]);
    let nora = token(&server, "nora", &[]);
    let (rita, ravi) = (signed_in(&server, "rita", &["reviewer"]), signed_in(&server, "ravi", &["reviewer"]));
    let auditor = signed_in(&server, "aude", &["auditor"]);
    let people = People { server: &server, nora: nora.clone() };
    let table = b"region,count\nnorth,120\nsouth,45\n";
    let (id, state) = people.submitted("results.csv", table);
    assert_eq!(state, "in_review");

    // Frozen: no file changes after submission.
    let key = people.put("later.csv", b"region,count\nnorth,99\n");
    let later = server.call_as(&nora, "airlock:AddFile", &json!({ "RequestId": id, "Source": { "Bucket": HOME, "Key": key } }));
    assert_eq!(refused(later), "ConflictException");
    // Nobody reviews their own request, whatever roles they hold: lena, a reviewer, asks for
    // a file to come in, and cannot vote on it.
    let lena = signed_in(&server, "lena", &["reviewer"]);
    let hers = submitted_import(&server, &lena, "codes.txt", b"A01 cholera\n");
    assert_eq!(refused(vote(&server, &lena, &hers, "APPROVE", None)), "AccessDeniedException", "self-approval");
    // Nor can an operator make reviewers up: a token it issues, whatever roles it names,
    // does not vote.
    let ghost = token(&server, "ghost", &["reviewer"]);
    assert_eq!(refused(vote(&server, &ghost, &id, "APPROVE", None)), "AccessDeniedException", "a made-up reviewer");
    // A user without the reviewer role does not vote at all; an auditor only reads.
    assert_eq!(refused(vote(&server, &token(&server, "zed", &[]), &id, "APPROVE", None)), "AccessDeniedException");
    assert_eq!(refused(vote(&server, &auditor, &id, "APPROVE", None)), "AccessDeniedException");

    ok(vote(&server, &rita, &id, "APPROVE", None), "rita's vote");
    assert_eq!(refused(vote(&server, &rita, &id, "APPROVE", None)), "ConflictException", "a second vote by the same reviewer");
    // Votes stay hidden until all are cast.
    let queue = ok(server.call_as(&ravi, "airlock:DescribeReviewQueue", &json!({ "RequestId": id })), "queue");
    assert_eq!((queue["Requests"][0]["VotesCast"].as_i64(), queue["Requests"][0]["Votes"].as_array().map(Vec::len)), (Some(1), Some(0)));
    let decided = ok(vote(&server, &ravi, &id, "APPROVE", None), "ravi's vote");
    assert_eq!(decided["State"], "approved");

    // Released by a reviewer, never by its researcher (nor by a token an operator issued).
    assert_eq!(refused(server.call_as(&nora, "airlock:ReleaseRequest", &json!({ "RequestId": id }))), "AccessDeniedException");
    assert_eq!(refused(server.call_as(&ghost, "airlock:ReleaseRequest", &json!({ "RequestId": id }))), "AccessDeniedException");
    let released = ok(server.call_as(&rita, "airlock:ReleaseRequest", &json!({ "RequestId": id })), "release");
    assert_eq!(released["State"], "released");

    // Its researcher downloads it, through a link for her alone (to anyone else it does not exist).
    assert_eq!(
        refused(server.call_as(&rita, "airlock:CreateDownloadUrl", &json!({ "RequestId": id, "Path": "results.csv" }))),
        "ResourceNotFoundException"
    );
    // Not from a workspace of hers: an operator can start one for any user and run code in
    // it, and would take the export out under her name (review finding).
    assert_eq!(server.cli(&["image", "build", "base"], &[]).exit, 0);
    let workspace = crate::support::instances::create(&server, "nora");
    let link = json!({ "RequestId": id, "Path": "results.csv" });
    let (_, answer) = crate::support::instances::sh(
        &server,
        &workspace,
        &crate::support::instances::endpoint_call("airlock:CreateDownloadUrl", &link, true),
    );
    assert!(answer.contains("signed in") && !answer.contains("/portal/airlock/download/"), "a workspace took a download link: {answer}");
    let url = ok(server.call_as(&nora, "airlock:CreateDownloadUrl", &link), "link");
    let link_token = url["Url"].as_str().expect("url").rsplit('/').next().expect("token").to_owned();
    assert_eq!(refused(server.call_as(&rita, "airlock:DownloadFile", &json!({ "Token": link_token }))), "AccessDeniedException");
    let downloaded = ok(server.call_as(&nora, "airlock:DownloadFile", &json!({ "Token": link_token })), "download");
    assert_eq!(unb64(downloaded["Body"].as_str().expect("body")), table);
    let uses = server.audit(&[("EventName", "DownloadFile")]);
    assert_eq!(uses.len(), 2, "every use of a link is recorded, refusals too");
    for used in &uses {
        // Which file, and never the link's secret (an auditor reads the trail).
        let asked = &used["requestParameters"];
        assert_eq!((asked["RequestId"].as_str(), asked["Path"].as_str()), (Some(id.as_str()), Some("results.csv")), "{used}");
        assert!(!used.to_string().contains(&link_token), "{used}");
    }

    // Later requests of the workspace: a file identical to the released one, and one sharing
    // a row with it, are flagged for the reviewers (a flag, not a block).
    let flagged = |name: &str, body: &[u8], rule: &str| {
        let (later, state) = people.submitted(name, body);
        assert_eq!(state, "in_review", "{name}");
        let queue = ok(server.call_as(&ravi, "airlock:DescribeReviewQueue", &json!({ "RequestId": later })), "queue");
        let checks = queue["Requests"][0]["Checks"].as_array().cloned().unwrap_or_default();
        let found = checks.iter().find(|c| c["Rule"] == rule && c["Outcome"] == "FLAG").unwrap_or_else(|| panic!("{name}: {checks:#?}"));
        assert!(found["Detail"].as_str().is_some_and(|d| d.contains(&id)), "{found}");
    };
    flagged("again.csv", table, "diff.released");
    flagged("more.csv", b"region,count\nnorth,120\neast,77\n", "diff.overlap");

    // The signed release record verifies offline, and an edited one does not.
    let record = ok(server.call_as(&auditor, "airlock:GetReleaseRecord", &json!({ "RequestId": id })), "record");
    assert_eq!(record["Record"]["Files"][0]["Sha256"], hex::encode(Sha256::digest(table)));
    assert_eq!(record["Record"]["Votes"].as_array().map(Vec::len), Some(2));
    let dir = tempfile::tempdir().expect("temp dir");
    let (good, edited) = (dir.path().join("release.json"), dir.path().join("edited.json"));
    std::fs::write(&good, record.to_string()).expect("write");
    let mut tampered = record.clone();
    tampered["Record"]["Files"][0]["Sha256"] = json!(hex::encode(Sha256::digest(b"something else")));
    std::fs::write(&edited, tampered.to_string()).expect("write");
    let verified = server.cli(&["airlock", "verify", good.to_str().expect("utf-8")], &[]);
    assert_eq!(verified.exit, 0, "{:?}", verified.stderr);
    let failed = server.cli(&["airlock", "verify", edited.to_str().expect("utf-8")], &[]);
    assert_ne!(failed.exit, 0, "an edited release record verified");
    assert!(failed.stderr.as_str().is_some_and(|e| e.contains("changed after it was signed")), "{:?}", failed.stderr);

    // Revoked: the link is dead at once.
    let revoked = ok(server.call_as(&ravi, "airlock:RevokeRequest", &json!({ "RequestId": id })), "revoke");
    assert_eq!(revoked["LinksEnded"], 1);
    assert_eq!(refused(server.call_as(&nora, "airlock:DownloadFile", &json!({ "Token": link_token }))), "AccessDeniedException");

    // The airlock's copies are reached through its actions only: not by the researcher, not
    // even by the operator.
    let copy = json!({ "Bucket": "datasandbox-airlock", "Key": format!("{id}/results.csv") });
    assert_eq!(refused(server.call("storage:GetObject", &copy)), "AccessDeniedException");
    assert_eq!(refused(server.call_as(&nora, "storage:GetObject", &copy)), "AccessDeniedException");
}

/// A 1×1 gray PNG with one more chunk before its pixels.
fn png_with_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0, 0, 0, 0]);
        c
    };
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&[0, 0x80]).expect("deflate");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]));
    png.extend(chunk(kind, data));
    png.extend(chunk(b"IDAT", &zlib.finish().expect("deflate")));
    png.extend(chunk(b"IEND", b""));
    png
}

/// A ZIP archive of `members`, deflated.
fn zipped(members: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in members {
        writer.start_file(*name, zip::write::SimpleFileOptions::default()).expect("a member");
        writer.write_all(body).expect("write");
    }
    writer.finish().expect("finish").into_inner()
}

#[test]
fn the_airlock_attack_table_is_refused_or_blocked_with_its_reason_and_audited() {
    let (_signatures, database) = eicar_database();
    let types = r#"airlock.allowed_types=["csv", "text", "png", "zip", "json"]"#;
    let server = Server::start(&["streaming.timeout_scale_ms=1", "airlock.link_hours=1", types, &database]);
    let nora = token(&server, "nora", &[]);
    let (rita, ravi) = (signed_in(&server, "rita", &["reviewer"]), signed_in(&server, "ravi", &["reviewer"]));
    let people = People { server: &server, nora: nora.clone() };

    // Blocked by the checks, with the rule that failed.
    let elf = b"\x7fELF\x02\x01\x01\x00 not a table".to_vec();
    let mut polyglot = b"\x89PNG\r\n\x1a\n....IHDR....IEND\xae\x42\x60\x82".to_vec();
    polyglot.extend_from_slice(b"PK\x03\x04 a hidden archive");
    // A well-formed picture carrying a table in a chunk that draws it, padded past its size.
    let carrier = png_with_chunk(b"pHYs", b"region,count\nsouth,3\n");
    // Archives are allowed here, and checked member by member.
    let zeros = vec![b'0'; 16 << 20];
    for (name, body, rule) in [
        ("small.csv", b"region,count\nnorth,120\nsouth,3\n".to_vec(), "table.small-count"),
        // A column named with a NUL (PostgreSQL's text holds none: its finding failed to be
        // stored, and the request stayed scanning for good).
        ("nul.json", br#"[{"region": "north", "count\u0000": 120}, {"region": "south", "count\u0000": 3}]"#.to_vec(), "table.small-count"),
        ("margin.csv", b"region,male,female,total\nnorth,120,*,300\nsouth,200,150,350\n".to_vec(), "table.margin"),
        ("tool.csv", elf, "type.allowed"),
        ("plot.png", polyglot, "type.polyglot"),
        ("figure.png", carrier, "type.polyglot"),
        ("bomb.zip", zipped(&[("zeros.csv", &zeros)]), "archive.ratio"),
        ("escape.zip", zipped(&[("../../home/omar/notes.txt", b"hello")]), "archive.path"),
        ("tables.zip", zipped(&[("tables/small.csv", b"region,count\nsouth,3\n")]), "table.small-count"),
        ("eicar.txt", EICAR.to_vec(), "malware.clamav"),
        ("eicar.zip", zipped(&[("readme.txt", EICAR)]), "malware.clamav"),
    ] {
        let (id, state) = people.submitted(name, &body);
        assert_eq!(state, "blocked", "{name}");
        let mine = ok(server.call_as(&nora, "airlock:DescribeRequests", &json!({ "RequestId": id })), "describe");
        let checks = mine["Requests"][0]["Checks"].as_array().cloned().unwrap_or_default();
        assert!(checks.iter().any(|c| c["Rule"] == rule && c["Outcome"] == "FAIL"), "{name}: {checks:#?}");
        assert_eq!(refused(vote(&server, &rita, &id, "APPROVE", None)), "ConflictException", "a vote on a blocked request");
    }

    // An override: the researcher asks the reviewers to pass a small count, with why. It goes
    // to review marked as such; what a file is or carries is never passed over.
    let key = people.put("rare.csv", b"disease,cases\nflu,1200\nrare-x,3\n");
    let created = ok(
        server.call_as(&nora, "airlock:CreateRequest", &json!({ "Direction": "EXPORT", "Workspace": STACK, "Justification": "x" })),
        "create",
    );
    let rare = created["RequestId"].as_str().expect("id").to_owned();
    ok(server.call_as(&nora, "airlock:AddFile", &json!({ "RequestId": rare, "Source": { "Bucket": HOME, "Key": key } })), "add");
    let malware =
        json!({ "RequestId": rare, "Overrides": [{ "Path": "rare.csv", "Rule": "malware.clamav", "Justification": "trust me" }] });
    assert_eq!(refused(server.call_as(&nora, "airlock:SubmitRequest", &malware)), "ValidationException");
    let why = "the count of 3 is published by the registry already";
    let asked = json!({ "RequestId": rare, "Overrides": [{ "Path": "rare.csv", "Rule": "table.small-count", "Justification": why }] });
    assert_eq!(ok(server.call_as(&nora, "airlock:SubmitRequest", &asked), "submit")["State"], "in_review");
    let queue = ok(server.call_as(&rita, "airlock:DescribeReviewQueue", &json!({ "RequestId": rare })), "queue");
    let checks = queue["Requests"][0]["Checks"].as_array().cloned().unwrap_or_default();
    let small = checks.iter().find(|c| c["Rule"] == "table.small-count").expect("the small-count result");
    assert_eq!(small["Outcome"], "OVERRIDDEN", "{checks:#?}");
    assert!(small["Detail"].as_str().is_some_and(|d| d.contains(why)), "{small}");

    // Names that leave the request, and another user's file.
    let created = ok(
        server.call_as(&nora, "airlock:CreateRequest", &json!({ "Direction": "EXPORT", "Workspace": STACK, "Justification": "x" })),
        "create",
    );
    let id = created["RequestId"].as_str().expect("id").to_owned();
    let key = people.put("ok.csv", b"a,b\n100,200\n");
    for path in ["../../etc/passwd", "/abs.csv", "a/../b.csv", "a\\b.csv"] {
        let added =
            server.call_as(&nora, "airlock:AddFile", &json!({ "RequestId": id, "Path": path, "Source": { "Bucket": HOME, "Key": key } }));
        assert_eq!(refused(added), "ValidationException", "{path}");
    }
    let omar = token(&server, "omar", &[]);
    let omars = format!("{}secret.csv", home("omar"));
    ok(server.call_as(&omar, "storage:PutObject", &json!({ "Bucket": HOME, "Key": omars, "Body": b64(b"a,b\n100,200\n") })), "omar's file");
    let stolen = server.call_as(&nora, "airlock:AddFile", &json!({ "RequestId": id, "Source": { "Bucket": HOME, "Key": omars } }));
    assert_eq!(refused(stolen), "AccessDeniedException");
    // Another user cannot add to, submit or see nora's request.
    assert_eq!(refused(server.call_as(&omar, "airlock:SubmitRequest", &json!({ "RequestId": id }))), "ResourceNotFoundException");
    // Withdrawn: nothing more happens to it.
    ok(server.call_as(&nora, "airlock:AddFile", &json!({ "RequestId": id, "Source": { "Bucket": HOME, "Key": key } })), "add");
    ok(server.call_as(&nora, "airlock:WithdrawRequest", &json!({ "RequestId": id })), "withdraw");
    assert_eq!(refused(server.call_as(&nora, "airlock:SubmitRequest", &json!({ "RequestId": id }))), "ConflictException");
    assert_eq!(refused(vote(&server, &rita, &id, "APPROVE", None)), "ConflictException", "a vote on a withdrawn request");
    // Nor are its files, which no check passed, previewed (review finding).
    let preview = server.call_as(&rita, "airlock:PreviewFile", &json!({ "RequestId": id, "Path": key.rsplit('/').next() }));
    assert_eq!(refused(preview), "ConflictException", "a preview of a withdrawn draft's files");

    // Changes requested: the comment reaches the researcher, a resubmission resets the votes.
    let (id, _) = people.submitted("table.csv", b"region,count\nnorth,120\nsouth,45\n");
    assert_eq!(refused(vote(&server, &rita, &id, "REQUEST_CHANGES", None)), "ValidationException", "changes without a comment");
    ok(vote(&server, &rita, &id, "REQUEST_CHANGES", Some("round to the nearest 5")), "rita");
    let decided = ok(vote(&server, &ravi, &id, "APPROVE", None), "ravi");
    assert_eq!(decided["State"], "changes_requested");
    let mine = ok(server.call_as(&nora, "airlock:DescribeRequests", &json!({ "RequestId": id })), "describe");
    let votes = mine["Requests"][0]["Votes"].as_array().cloned().unwrap_or_default();
    assert!(votes.iter().any(|v| v["Comment"] == "round to the nearest 5"), "{votes:?}");
    assert!(votes.iter().all(|v| v.get("Reviewer").is_none()), "the researcher learns what, not who: {votes:?}");
    let key = people.put("table.csv", b"region,count\nnorth,120\nsouth,45\n");
    ok(server.call_as(&nora, "airlock:AddFile", &json!({ "RequestId": id, "Source": { "Bucket": HOME, "Key": key } })), "replace");
    // A file swapped in meanwhile is previewed only once submitted again, after its checks
    // (review finding).
    let preview = json!({ "RequestId": id, "Path": "table.csv" });
    assert_eq!(refused(server.call_as(&rita, "airlock:PreviewFile", &preview)), "ConflictException", "a preview of unchecked files");
    let again = ok(server.call_as(&nora, "airlock:SubmitRequest", &json!({ "RequestId": id })), "resubmit");
    assert_eq!((again["Submission"].as_i64(), again["State"].as_str()), (Some(2), Some("in_review")));
    let queue = ok(server.call_as(&ravi, "airlock:DescribeReviewQueue", &json!({ "RequestId": id })), "queue");
    assert_eq!(queue["Requests"][0]["VotesCast"], 0, "the resubmission reset the votes");

    // A link expires (an hour, at this server's time scale 3.6 s).
    ok(vote(&server, &rita, &id, "APPROVE", None), "rita");
    ok(vote(&server, &ravi, &id, "APPROVE", None), "ravi");
    ok(server.call_as(&rita, "airlock:ReleaseRequest", &json!({ "RequestId": id })), "release");
    let url = ok(server.call_as(&nora, "airlock:CreateDownloadUrl", &json!({ "RequestId": id, "Path": "table.csv" })), "link");
    let link = url["Url"].as_str().expect("url").rsplit('/').next().expect("token").to_owned();
    ok(server.call_as(&nora, "airlock:DownloadFile", &json!({ "Token": link })), "a fresh link");
    std::thread::sleep(std::time::Duration::from_millis(4000));
    assert_eq!(refused(server.call_as(&nora, "airlock:DownloadFile", &json!({ "Token": link }))), "AccessDeniedException");

    // Every refusal above is in the trail with its reason.
    let votes = server.audit(&[("EventName", "CastVote")]);
    assert!(votes.iter().filter(|r| r["errorCode"] == "ConflictException").count() >= 5, "{votes:#?}");
    let added = server.audit(&[("EventName", "AddFile")]);
    assert!(added.iter().any(|r| r["errorCode"] == "AccessDeniedException"), "{added:#?}");
    // Nothing of the blocked, withdrawn or refused requests was released.
    let released = server.audit(&[("EventName", "ReleaseRequest")]);
    assert_eq!(released.iter().filter(|r| r["errorCode"].is_null()).count(), 1, "{released:#?}");
}

#[test]
fn a_researcher_asks_for_a_file_to_leave_from_inside_her_workspace() {
    use crate::support::streaming::{active, redeem, server as session_server};
    let (_signatures, database) = eicar_database();
    let server = session_server(&[&database, "stacks.second-stack.application=shell"]);
    let cookie = redeem(&server, "nora");
    let session = active(&server, &cookie, 60);
    let instance = session["InstanceId"].as_str().expect("instance");
    let script = "printf 'region,count\\nnorth,120\\nsouth,45\\n' > /tmp/results.csv && \
                  /run/datasandbox/datasandbox airlock submit /tmp/results.csv --justification 'the tables of the paper'";
    let submitted = server.cli(&["instances", "exec", instance, "--", "/bin/sh", "-c", script], &[]);
    assert_eq!(submitted.exit, 0, "{submitted:?}");
    assert_eq!(submitted.stdout["State"], "in_review", "{submitted:?}");
    // The request is hers, in her session's workspace, holding the file as it was inside.
    let id = submitted.stdout["RequestId"].as_str().expect("request id");
    let mine = ok(server.call_as(&token(&server, "nora", &[]), "airlock:DescribeRequests", &json!({ "RequestId": id })), "describe");
    let request = &mine["Requests"][0];
    assert_eq!((request["Workspace"].as_str(), request["Researcher"].as_str()), (Some(STACK), Some("custom user `nora`")), "{request}");
    assert_eq!(request["Files"][0]["Sha256"], hex::encode(Sha256::digest(b"region,count\nnorth,120\nsouth,45\n")));
    // Inside a workspace a request is an export of that workspace: not of another, and not an
    // import (which would land in a workspace's /imports once approved).
    for (direction, workspace, why) in [("EXPORT", "second-stack", "an export is"), ("IMPORT", STACK, "not from inside a workspace")] {
        let input = json!({ "Direction": direction, "Workspace": workspace, "Justification": "x" }).to_string();
        let script = format!(
            ". /run/datasandbox/session.env 2>/dev/null; DATASANDBOX_ENDPOINT=${{DS_ENDPOINT:-$(tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^DS_ENDPOINT=//p')}} \
             DATASANDBOX_TOKEN=$(cat /run/datasandbox/credential) /run/datasandbox/datasandbox call airlock:CreateRequest --input '{input}'"
        );
        let called = server.cli(&["instances", "exec", instance, "--", "/bin/sh", "-c", &script], &[]);
        assert_ne!(called.exit, 0, "{direction} of {workspace} from inside: {called:?}");
        assert!(format!("{called:?}").contains(why), "{direction} of {workspace}: {called:?}");
    }
    // Nor does a request made in the portal for another workspace take files from this one
    // (review finding: they went out labelled as the other's), and from inside, only this
    // workspace's imports come in.
    let elsewhere = ok(
        server.call_as(
            &token(&server, "nora", &[]),
            "airlock:CreateRequest",
            &json!({ "Direction": "EXPORT", "Workspace": "second-stack", "Justification": "x" }),
        ),
        "a request for the other workspace",
    );
    // Nor does code inside act on her requests for other workspaces (review finding), or see
    // them, or learn which workspace they are for.
    let other = json!({ "RequestId": elsewhere["RequestId"] });
    let unknown = "does not exist";
    for (action, input, why) in [
        ("airlock:AddFile", json!({ "RequestId": elsewhere["RequestId"], "Path": "results.csv", "Body": b64(b"a,b\n1,2\n") }), unknown),
        ("airlock:GetImports", json!({ "Workspace": "second-stack" }), "inside workspace"),
        ("airlock:SubmitRequest", other.clone(), unknown),
        ("airlock:WithdrawRequest", other.clone(), unknown),
        ("airlock:RemoveFile", json!({ "RequestId": elsewhere["RequestId"], "Path": "results.csv" }), unknown),
        ("airlock:DescribeRequests", other.clone(), unknown),
        ("airlock:GetReleaseRecord", other.clone(), "not allowed"),
    ] {
        let script = format!(
            "DATASANDBOX_ENDPOINT=$(tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^DS_ENDPOINT=//p') \
             DATASANDBOX_TOKEN=$(cat /run/datasandbox/credential) /run/datasandbox/datasandbox call {action} --input '{input}'"
        );
        let called = server.cli(&["instances", "exec", instance, "--", "/bin/sh", "-c", &script], &[]);
        assert_ne!(called.exit, 0, "{action} for second-stack from inside: {called:?}");
        assert!(format!("{called:?}").contains(why), "{action}: {called:?}");
        let named = format!("{called:?}").contains("second-stack");
        assert!(!named || action == "airlock:GetImports", "{action} named the workspace: {called:?}");
    }
    let seen = ok(server.call_as(&token(&server, "nora", &[]), "airlock:DescribeRequests", &other), "the portal sees it");
    assert_eq!(seen["Requests"][0]["State"], "draft", "nothing from inside changed it: {seen}");
    // My Files' "Request export", from the session page: a home-folder file goes to review.
    let nora = token(&server, "nora", &[]);
    let key = format!("{}figures.csv", home("nora"));
    ok(
        server.call_as(&nora, "storage:PutObject", &json!({ "Bucket": HOME, "Key": key, "Body": b64(b"year,n\n2025,412\n2026,530\n") })),
        "put",
    );
    let reply = export_from_page(&server, &cookie, "figures.csv", "the yearly counts");
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["State"], "in_review", "{}", String::from_utf8_lossy(&reply.body));
    // A name outside the home folder is refused.
    let reply = export_from_page(&server, &cookie, "../other/secret.csv", "x");
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
    // From her own device, an export cannot bring a file of its own: it comes from inside.
    let created = ok(
        server.call_as(
            &token(&server, "nora", &[]),
            "airlock:CreateRequest",
            &json!({ "Direction": "EXPORT", "Workspace": STACK, "Justification": "x" }),
        ),
        "create",
    );
    let outside = server.call_as(
        &token(&server, "nora", &[]),
        "airlock:AddFile",
        &json!({ "RequestId": created["RequestId"], "Path": "mine.csv", "Body": b64(b"a,b\n100,200\n") }),
    );
    assert_eq!(refused(outside), "ValidationException");
}

#[test]
fn a_table_holding_a_raw_row_of_a_dataset_or_as_many_rows_is_blocked() {
    let (_signatures, database) = eicar_database();
    let spec = format!(
        "{}\n[[buckets]]\nname = \"datasandbox-home\"\nhome_folders = true\n\n[[buckets]]\nname = \"research\"\n\n[datasets.trials]\nbucket = \"research\"\nprefix = \"trials/\"\n",
        model::spec::default_spec_text()
    );
    let server = Server::start_with_spec(&spec, &[&database]);
    let mut cohort = String::from("patient,age,score\n");
    for n in 0..40 {
        cohort.push_str(&format!("p{n:03},{},{}\n", 30 + n, 50 + n));
    }
    server.ok("storage:PutObject", json!({ "Bucket": "research", "Key": "trials/cohort.csv", "Body": b64(cohort.as_bytes()) }));
    let nora = token(&server, "nora", &[]);
    let people = People { server: &server, nora };
    let checks = |id: &str| {
        let mine = ok(server.call_as(&people.nora, "airlock:DescribeRequests", &json!({ "RequestId": id })), "describe");
        mine["Requests"][0]["Checks"].as_array().cloned().unwrap_or_default()
    };
    // One raw row, however its cells are spaced or cased, among statistics.
    let (id, state) = people.submitted("summary.csv", b"group,mean\nall,44.5\n P017 , 47 ,67\n");
    assert_eq!(state, "blocked");
    let found = checks(&id);
    let row = found.iter().find(|c| c["Rule"] == "lineage.row").expect("the lineage check");
    assert_eq!(row["Outcome"], "FAIL", "{found:#?}");
    // The researcher learns that, not where: the check would otherwise tell what datasets they
    // may not read hold. A reviewer sees where.
    assert!(row["Detail"].as_str().is_some_and(|d| !d.contains("trials") && !d.contains("cohort")), "{row}");
    let reviewer = signed_in(&server, "rita", &["reviewer"]);
    let queue = ok(server.call_as(&reviewer, "airlock:DescribeReviewQueue", &json!({ "RequestId": id })), "queue");
    let checks_seen = queue["Requests"][0]["Checks"].as_array().cloned().unwrap_or_default();
    let row = checks_seen.iter().find(|c| c["Rule"] == "lineage.row").expect("the lineage check");
    assert!(row["Detail"].as_str().is_some_and(|d| d.contains("row 3") && d.contains("trials")), "{row}");
    // As many rows as the dataset, none of them equal.
    let mut copy = String::from("who,a,b\n");
    for n in 0..38 {
        copy.push_str(&format!("x{n},{},{}\n", 100 + n, 200 + n));
    }
    let (id, state) = people.submitted("copy.csv", copy.as_bytes());
    assert_eq!(state, "blocked");
    assert!(checks(&id).iter().any(|c| c["Rule"] == "lineage.row-count" && c["Outcome"] == "FAIL"), "{:#?}", checks(&id));
    // A real summary passes.
    let (id, state) = people.submitted("means.csv", b"group,mean\nall,44.5\nover-50,58.5\n");
    assert_eq!(state, "in_review", "{:#?}", checks(&id));
}

#[test]
fn a_released_import_appears_read_only_under_imports_in_the_researchers_next_session() {
    use crate::support::streaming::{active, redeem, server as session_server};
    let (_signatures, database) = eicar_database();
    let server = session_server(&[&database]);
    let nora = token(&server, "nora", &[]);
    let (rita, ravi) = (signed_in(&server, "rita", &["reviewer"]), signed_in(&server, "ravi", &["reviewer"]));
    let codes = b"code,label\nA01,cholera\nA02,salmonella\n";
    let id = submitted_import(&server, &nora, "codes.csv", codes);
    ok(vote(&server, &rita, &id, "APPROVE", None), "rita");
    ok(vote(&server, &ravi, &id, "APPROVE", None), "ravi");
    ok(server.call_as(&ravi, "airlock:ReleaseRequest", &json!({ "RequestId": id })), "release");

    let cookie = redeem(&server, "nora");
    let session = active(&server, &cookie, 60);
    let instance = session["InstanceId"].as_str().expect("instance");
    let script =
        format!("cat /imports/{id}/codes.csv; echo changed > /imports/{id}/codes.csv && echo WROTE; touch /imports/new && echo MADE; true");
    let inside = server.cli(&["instances", "exec", instance, "--", "/bin/sh", "-c", &script], &[]);
    let text = inside.stdout.as_str().map(str::to_owned).unwrap_or_else(|| inside.stdout.to_string());
    assert!(text.starts_with(std::str::from_utf8(codes).expect("utf-8")), "{inside:?}");
    assert!(!text.contains("WROTE") && !text.contains("MADE"), "the imports can be changed from inside: {inside:?}");
    // Another user's session shows none of nora's imports.
    let other = redeem(&server, "omar");
    let other = active(&server, &other, 60);
    let listed =
        server.cli(&["instances", "exec", other["InstanceId"].as_str().expect("instance"), "--", "/bin/ls", "-A", "/imports"], &[]);
    assert_eq!(listed.stdout.as_str().map(str::trim), Some(""), "{listed:?}");
}

/// Every file added stays in the airlock bucket, replaced and removed ones too (nothing may
/// delete from it), so adding a file again and again filled the node's disk (review finding):
/// what a researcher adds in a day is bounded, whatever they do with it after, and one
/// researcher's budget is not another's.
#[test]
fn a_researchers_additions_in_a_day_are_bounded_replaced_files_included() {
    let server = Server::start(&["airlock.max_bytes_per_day=20000", "airlock.malware_scan=off"]);
    let (nora, omar) = (token(&server, "nora", &[]), token(&server, "omar", &[]));
    let draft = |who: &str| {
        let create = json!({ "Direction": "IMPORT", "Workspace": STACK, "Justification": "a code list" });
        ok(server.call_as(who, "airlock:CreateRequest", &create), "create")["RequestId"].as_str().expect("id").to_owned()
    };
    let add = |who: &str, id: &str, path: &str, bytes: usize| {
        server.call_as(who, "airlock:AddFile", &json!({ "RequestId": id, "Path": path, "Body": b64(&vec![b'a'; bytes]) }))
    };
    let id = draft(&nora);
    ok(add(&nora, &id, "codes.csv", 12_000), "the first file");
    // The same file again, in place of the first: both are kept, so both count.
    let again = add(&nora, &id, "codes.csv", 12_000);
    assert!(again.stderr["Message"].as_str().is_some_and(|m| m.contains("past 20000 bytes") && m.contains("added 12000")), "{again:?}");
    assert_eq!(refused(again), "LimitExceededException");
    // Removing it gives nothing back; what is left of the day still goes.
    ok(server.call_as(&nora, "airlock:RemoveFile", &json!({ "RequestId": id, "Path": "codes.csv" })), "remove");
    ok(add(&nora, &id, "labels.csv", 7_000), "within the day's budget");
    // However small, an addition is a stored object and a record: it counts as 4 KiB at least.
    assert_eq!(refused(add(&nora, &draft(&nora), "more.csv", 1)), "LimitExceededException", "a new request is the same day");
    // Another researcher has a day of their own.
    ok(add(&omar, &draft(&omar), "codes.csv", 15_000), "omar's own budget");
    // The request holds what was added within the budget, and the refusals are on the record.
    let mine = ok(server.call_as(&nora, "airlock:DescribeRequests", &json!({ "RequestId": id })), "describe");
    let files: Vec<&str> = mine["Requests"][0]["Files"].as_array().expect("files").iter().filter_map(|f| f["Path"].as_str()).collect();
    assert_eq!(files, ["labels.csv"]);
    let added = server.audit(&[("EventName", "AddFile")]);
    assert_eq!(added.iter().filter(|r| r["errorCode"] == "LimitExceededException").count(), 2, "{added:#?}");
}
