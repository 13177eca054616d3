//! The control plane on PostgreSQL (`metadata.url = "postgres://…"`), the scale-out store:
//! a real cluster (Debian's PostgreSQL 15, `initdb` into a temporary directory, on a loopback
//! port) runs every migration, then the paths that write the most varied SQL: objects and
//! parameters, a streaming session from URL to end, a local user's TOTP sign-in with a code
//! that works once, the portal's associations and launch, SAML sign-in with its replay cache,
//! and a crash and restart that finds everything where it was.

use std::process::Command;

use serde_json::json;

use crate::support::postgres::Cluster;
use crate::support::saml::{fetch_sp_metadata, free_port, identity_provider, post_acs, responses};
use crate::support::server::Server;
use crate::support::streaming::{STACK, active, open, status, streaming_url};

const PASSWORD: &str = "correct horse battery staple";

fn psql(cluster: &Cluster, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &cluster.port().to_string(), "-U", "postgres", "-At", "-c", sql])
        .output()
        .expect("psql");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_control_plane_runs_on_postgresql() {
    let cluster = Cluster::start();
    let idp = tempfile::tempdir().expect("tempdir");
    identity_provider(idp.path(), &format!("http://127.0.0.1:{}", free_port()));
    let overrides = [
        format!("stacks.{STACK}.application=shell"),
        "stream_view=DIRECT".to_owned(),
        cluster.url(),
        format!("idp_metadata={}", idp.path().join("idp.xml").display()),
    ];
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let mut server = Server::start(&overrides);
    assert_eq!(server.cli(&["image", "build", "base"], &[]).exit, 0);
    let tables = psql(
        &cluster,
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('federation_replay', 'user_stack_associations', 'local_users', 'sessions')",
    );
    assert_eq!(tables, "4", "the migrations ran on PostgreSQL");

    // Objects and parameters.
    server.ok("parameters:PutParameter", json!({ "Name": "/pg/check", "Value": "on postgres", "Type": "SecureString" }));
    let body = crate::support::server::b64(b"rows,1\n");
    server.ok("storage:PutObject", json!({ "Bucket": "datasandbox-home", "Key": "shared/pg.csv", "Body": body }));
    let listed = server.ok("storage:ListObjectsV2", json!({ "Bucket": "datasandbox-home", "Prefix": "shared/" }));
    assert_eq!(listed["KeyCount"], 1, "{listed}");

    // A streaming session, start to end.
    let opened = open(&server, &streaming_url(&server, "erin"));
    assert_eq!(opened.status, 200, "{}", opened.body);
    let cookie = opened.cookie.expect("session cookie");
    let session = active(&server, &cookie, 60);
    server.ok("streaming:ExpireSession", json!({ "SessionId": session["SessionId"] }));
    assert_eq!(status(&server, &cookie)["State"], "EXPIRED");

    // A local user with TOTP (a code works once) and the portal's launch.
    server.ok("identity:CreateLocalUser", json!({ "UserName": "carol", "Password": PASSWORD }));
    let endpoint = format!("http://{}", server.api);
    let sign_in =
        |body: serde_json::Value| server.cli(&["call", "identity:SignIn", "--input", &body.to_string(), "--endpoint", &endpoint], &[]);
    let token = sign_in(json!({ "UserName": "carol", "Password": PASSWORD })).stdout["Token"].as_str().expect("token").to_owned();
    let secret = server.call_as(&token, "identity:AssociateSoftwareToken", &json!({ "Password": PASSWORD })).stdout["SecretCode"]
        .as_str()
        .expect("secret")
        .to_owned();
    let code = |when: &str| {
        let out = Command::new("oathtool").args(["--totp", "-b", "-N", when, &secret]).output().expect("oathtool");
        String::from_utf8(out.stdout).expect("digits").trim().to_owned()
    };
    assert_eq!(server.call_as(&token, "identity:VerifySoftwareToken", &json!({ "UserCode": code("now") })).exit, 0);
    let next = code("now + 30 seconds");
    let with_mfa = sign_in(json!({ "UserName": "carol", "Password": PASSWORD, "TotpCode": next }));
    assert_eq!(with_mfa.stdout["MfaAuthenticated"], true, "{with_mfa:?}");
    assert_eq!(sign_in(json!({ "UserName": "carol", "Password": PASSWORD, "TotpCode": next })).stderr["Code"], "NotAuthorizedException");
    server.ok(
        "streaming:BatchAssociateUserStack",
        json!({ "UserStackAssociations": [{ "StackName": STACK, "UserName": "carol", "AuthenticationType": "USERPOOL" }] }),
    );
    let carol = with_mfa.stdout["Token"].as_str().expect("token").to_owned();
    let url = server.call_as(&carol, "streaming:CreateUserStreamingURL", &json!({ "StackName": STACK }));
    assert!(url.stdout["StreamingURL"].as_str().is_some_and(|u| u.contains("/streaming/")), "{url:?}");
    let mine = server.call_as(
        &carol,
        "streaming:DescribeUserStackAssociations",
        &json!({ "UserName": "carol", "AuthenticationType": "USERPOOL" }),
    );
    assert_eq!(mine.stdout["UserStackAssociations"][0]["StackName"], STACK, "{mine:?}");

    // SAML, with the replay cache in PostgreSQL.
    let sp = fetch_sp_metadata(&server, idp.path());
    let made = responses(idp.path(), &sp, &json!([{ "name": "ok", "user": "gina@example.test" }]));
    crate::support::saml::signed_in_idp_initiated(&server, made["ok"].as_str().expect("response"));
    assert_eq!(post_acs(&server, made["ok"].as_str().expect("response"), "").code(), "SAMLReplay");

    // A crash and a restart: the data is where it was, the replay still refused.
    server.crash_and_restart(&overrides);
    let value = server.ok("parameters:GetParameter", json!({ "Name": "/pg/check", "WithDecryption": true }));
    assert_eq!(value["Parameter"]["Value"], "on postgres");
    let ended = server.ok(
        "streaming:DescribeSessions",
        json!({ "StackName": STACK, "FleetName": "datasandbox-fleet", "SessionId": session["SessionId"] }),
    );
    assert_eq!(ended["Sessions"][0]["State"], "EXPIRED", "{ended}");
    // (The restarted server listens on another port, so the old response's destination is no
    // longer ours; the replay cache's row is what must have survived.)
    assert_eq!(psql(&cluster, "SELECT count(*) FROM federation_replay WHERE id LIKE 'saml:%'"), "1");
    let records = server.audit(&[("EventName", "AssumeRoleWithSAML")]);
    let codes: Vec<&serde_json::Value> = records.iter().map(|r| &r["errorCode"]).collect();
    assert!(codes.contains(&&serde_json::Value::Null) && codes.contains(&&json!("SAMLReplay")), "{codes:?}");
}
