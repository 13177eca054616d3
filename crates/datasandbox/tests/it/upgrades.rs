//! Upgrades go forward only: the store records which versions of DataSandbox started on it,
//! and a binary older than the store's schema refuses to start on it, saying what to do,
//! before it changes anything.

use serde_json::json;

use crate::support::backend;
use crate::support::server::{Server, unb64};

#[test]
fn a_store_records_its_versions_and_an_older_binary_refuses_a_newer_schema() {
    let mut server = Server::start(&[]);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(server.sql("SELECT version FROM software_versions"), version);
    assert!(server.stop().success());

    // A migration this binary does not know, as a newer binary would have applied it.
    let checksum = if backend::scale_out() { "'\\x00'::bytea" } else { "X'00'" };
    server.sql(&format!(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (99990101, 'from a newer release', CURRENT_TIMESTAMP, true, {checksum}, 0)"
    ));
    let refused = server.try_restart(&[]).expect_err("an older binary started on a newer store");
    assert!(refused.contains("written by a newer DataSandbox"), "{refused}");
    assert!(refused.contains("migration 99990101") && refused.contains("run the newer binary"), "{refused}");
    // Nothing was changed: the newer migration is still the store's newest.
    assert_eq!(server.sql("SELECT MAX(version) FROM _sqlx_migrations"), "99990101");

    // Once it is gone (the newer release's data restored away), the store opens again.
    server.sql("DELETE FROM _sqlx_migrations WHERE version = 99990101");
    server.restart(&[]);
    assert_eq!(server.sql("SELECT version FROM software_versions"), version);
}

/// The data directory release 0.1.0 left (made by `scripts/make-upgrade-fixture` with that
/// release's binary): this binary serves it with everything in it, migrating its store forward.
/// A SQLite store; the scale-out suite has no dump of a PostgreSQL one yet.
#[test]
fn this_version_serves_the_data_directory_the_previous_release_left() {
    if backend::scale_out() {
        return;
    }
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-dir-0.1.0.tar.gz");
    let dir = tempfile::tempdir().expect("data dir");
    let unpacked = std::process::Command::new("tar").arg("-xzf").arg(&fixture).arg("-C").arg(dir.path()).status().expect("run tar");
    assert!(unpacked.success(), "cannot unpack {}", fixture.display());
    let server = Server::serve_in(dir, &["fleet_type=ON_DEMAND"]);

    let report = server.ok("storage:GetObject", json!({ "Bucket": "datasandbox-home", "Key": "user/dana/report.txt" }));
    assert_eq!(unb64(report["Body"].as_str().expect("body")), b"written by 0.1.0\n");
    let parameter = server.ok("parameters:GetParameter", json!({ "Name": "/db/password", "WithDecryption": true }));
    assert_eq!(parameter["Parameter"]["Value"], "s3cr3t");
    let again = server.call("identity:CreateLocalUser", &json!({ "UserName": "carol", "Password": "another-horse-battery-1" }));
    assert!(
        again.exit == 1 && again.stderr.to_string().contains("UsernameExistsException"),
        "the release's user is gone: {:?}",
        again.stderr
    );
    let versions = server.sql("SELECT version FROM software_versions ORDER BY first_started");
    assert_eq!(versions.lines().collect::<Vec<_>>(), ["0.1.0", env!("CARGO_PKG_VERSION")], "{versions}");
    // Its trail goes on from the release's: one chain, valid, with the release's records.
    let written = server.audit(&[("EventName", "PutParameter")]);
    assert!(
        written
            .iter()
            .any(|r| r["requestParameters"]["Name"] == "/db/password" && r["userAgent"].as_str().is_some_and(|a| a.contains("0.1.0")))
    );
    let validated = server.cli(&["audit", "validate"], &[]);
    assert_eq!(validated.exit, 0, "{:?}", validated.stdout);
}
