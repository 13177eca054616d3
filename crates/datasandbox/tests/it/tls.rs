//! TLS with the operator's own certificate, and what plain HTTP is still allowed: the CLI calls
//! an `https://` endpoint trusting the operator's CA (and refuses without it), and a server
//! asked to serve plain HTTP beyond loopback refuses to start. (Chromium over HTTPS with the
//! local authority: `browser::tls`.)

use std::process::Command;

use crate::support::saml::free_port;
use crate::support::server::Server;

/// A CA and a certificate it issues for localhost, made with openssl in `dir`.
fn operator_certificate(dir: &std::path::Path) {
    let script = "set -e
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=operator-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out server.pem 2>/dev/null";
    let status = Command::new("sh").arg("-c").arg(script).current_dir(dir).status().expect("run openssl");
    assert!(status.success(), "openssl failed");
}

#[test]
fn the_cli_reaches_an_https_endpoint_with_the_operators_ca_and_not_without_it() {
    let certs = tempfile::tempdir().expect("certs");
    operator_certificate(certs.path());
    let (cert, key) = (certs.path().join("server.pem"), certs.path().join("server.key"));
    let server = Server::start(&[
        &format!("server.tls_cert={}", cert.display()),
        &format!("server.tls_key={}", key.display()),
        "fleet_type=ON_DEMAND",
    ]);
    let port = server.api.rsplit_once(':').expect("port").1.to_owned();
    let endpoint = format!("https://localhost:{port}");
    let token = server.token_for("dana");
    let ca = certs.path().join("ca.pem");
    let input = "{}";
    let with_ca =
        ["call", "identity:GetCallerIdentity", "--input", input, "--endpoint", &endpoint, "--ca-cert", ca.to_str().expect("path")];
    let called = server.cli(&with_ca, &[("DATASANDBOX_TOKEN", token.as_str())]);
    assert_eq!(called.exit, 0, "{:?}", called.stderr);
    assert!(called.stdout.to_string().contains("dana"), "{:?}", called.stdout);
    let without = server
        .cli(&["call", "identity:GetCallerIdentity", "--input", input, "--endpoint", &endpoint], &[("DATASANDBOX_TOKEN", token.as_str())]);
    assert_eq!(without.exit, 2, "{:?}", without.stdout);
    assert!(without.stderr.to_string().contains("--ca-cert"), "{:?}", without.stderr);
    // The operator's certificate is the one served (not a local authority's).
    assert!(!server.data_dir().join("tls").exists());
}

#[test]
fn plain_http_beyond_loopback_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let out = Command::new(crate::support::server::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["up", "-c", &format!("server.api_listen=0.0.0.0:{port}")])
        .output()
        .expect("run datasandbox");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("server.api_listen: `0.0.0.0") && said.contains("allow_plain_http"), "{said}");
    assert!(!dir.path().join("metadata.db").exists(), "a refused start changed the data directory");
}
