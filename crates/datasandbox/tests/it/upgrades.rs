//! Upgrades go forward only: the store records which versions of DataSandbox started on it,
//! and a binary older than the store's schema refuses to start on it, saying what to do,
//! before it changes anything.

use crate::support::backend;
use crate::support::server::Server;

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
