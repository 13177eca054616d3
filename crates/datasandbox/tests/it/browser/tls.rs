//! HTTPS as an operator gets it without a certificate of their own: an `https://` public URL
//! makes the data directory's local authority issue one. Chromium, trusting that authority,
//! signs in on the portal and launches a session, and streams a session over it; `curl` without it gets nothing; cookies are `Secure` and HSTS is
//! sent; and a certificate replaced and signalled with SIGHUP serves new connections while the
//! session's stream, opened before, goes on.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::support::browser::{Browser, run_flow_with_env};
use crate::support::saml::free_port;
use crate::support::server::{Server, eventually};
use crate::support::streaming::streaming_url;

const PASSWORD: &str = "correct horse battery staple";

/// `curl` on `url` with `args`: (exit code, headers and body).
fn curl(url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("curl").args(["-sSf", "-D", "-", "--max-time", "10"]).args(args).arg(url).output().expect("run curl");
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A home whose NSS database (what Chromium on Linux trusts besides the system) trusts `authority`.
fn home_trusting(home: &Path, authority: &Path) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).expect("nssdb directory");
    let db = format!("sql:{}", db.display());
    let run = |args: &[&str]| {
        let out = Command::new("certutil").args(args).output().expect("run certutil (apt-get install libnss3-tools)");
        assert!(out.status.success(), "certutil {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["-N", "-d", &db, "--empty-password"]);
    run(&["-A", "-d", &db, "-n", "DataSandbox local authority", "-t", "C,,", "-i", authority.to_str().expect("path")]);
}

/// The subject of the certificate the server presents to a new connection.
fn presented_subject(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .expect("run openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn chromium_streams_a_session_over_https_from_the_local_authority_and_a_reload_keeps_it() {
    let (api, notebooks) = (free_port(), free_port());
    let public = format!("https://localhost:{api}");
    let server = Server::start(&[
        &format!("server.api_listen=127.0.0.1:{api}"),
        &format!("server.notebook_listen=127.0.0.1:{notebooks}"),
        &format!("server.public_url={public}"),
        &format!("server.notebook_url=https://localhost:{notebooks}"),
    ]);
    let authority = server.data_dir().join("tls/authority.pem");
    assert!(authority.is_file(), "the local authority's certificate is where the log says");
    let ca = authority.to_str().expect("path");

    // Without the authority, curl refuses the server (60: the peer's certificate is not
    // trusted); plain HTTP on the port gets no answer that is a page.
    let (code, said) = curl(&format!("{public}/healthz"), &[]);
    assert_eq!(code, 60, "curl trusted a certificate of an authority it was not given: {said}");
    let (code, said) = curl(&format!("http://localhost:{api}/healthz"), &[]);
    assert!(code != 0 || !said.contains(" 200"), "plain HTTP answered on the TLS listener: {said}");
    // With it: an answer, with HSTS; the notebook origin too.
    let (code, said) = curl(&format!("{public}/healthz"), &["--cacert", ca]);
    assert_eq!(code, 0, "{said}");
    assert!(said.to_ascii_lowercase().contains("strict-transport-security: max-age=31536000"), "{said}");
    // (It serves no health page: an HTTP answer over verified TLS is the point.)
    let (code, said) = curl(&format!("https://localhost:{notebooks}/healthz"), &["--cacert", ca]);
    assert!(code != 60 && said.starts_with("HTTP/1.1 404"), "the notebook origin speaks TLS too: {said}");

    // The streaming URL is the public one, and its session cookie is Secure.
    let url = streaming_url(&server, "dana");
    assert!(url.starts_with(&format!("{public}/streaming/")), "{url}");
    let (code, said) = curl(&url, &["--cacert", ca]);
    assert_eq!(code, 0, "{said}");
    let cookie = said.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie: ds_session=")).expect("a session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");

    // Chromium with the authority in its trust store: a local user signs in on the portal and
    // launches their stack; a streaming URL's session streams over HTTPS and WSS.
    let home = tempfile::tempdir().expect("home");
    home_trusting(home.path(), &authority);
    let env = [("HOME", home.path().to_str().expect("home"))];
    server.ok("identity:CreateLocalUser", json!({ "UserName": "carol", "Password": PASSWORD }));
    let association = json!({ "StackName": "datasandbox-stack", "UserName": "carol", "AuthenticationType": "USERPOOL" });
    server.ok("streaming:BatchAssociateUserStack", json!({ "UserStackAssociations": [association] }));
    let events = run_flow_with_env("portal.mjs", &[&public, "carol", PASSWORD], &env, String::new);
    assert_eq!(events[0]["stacks"], json!(["datasandbox-stack"]), "{events:?}");
    assert!(events[1]["url"].as_str().is_some_and(|u| u.starts_with(&public) && u.ends_with("/session")), "{events:?}");
    // Carol's session ends, so that the fleet's one workspace is free for dana's.
    let carols = server.ok(
        "streaming:DescribeSessions",
        json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet", "UserId": "carol", "AuthenticationType": "USERPOOL" }),
    );
    server.ok("streaming:ExpireSession", json!({ "SessionId": carols["Sessions"][0]["Id"] }));
    let mut browser = Browser::run_with_env("session.mjs", &streaming_url(&server, "dana"), &env);
    browser.expect("streaming", 240);

    // A new certificate (another authority's, so the old one no longer verifies it), then
    // SIGHUP: new connections get it, and the open stream goes on.
    let tls = server.data_dir().join("tls");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=reloaded"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout"])
        .arg(tls.join("server.key"))
        .arg("-out")
        .arg(tls.join("server.pem"))
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let before = presented_subject(api);
    assert!(before.contains("localhost"), "{before}");
    nix_kill(server.pid(), "HUP");
    eventually(10, "the new certificate on new connections", || presented_subject(api).contains("reloaded").then_some(()));
    let (code, said) = curl(&format!("{public}/healthz"), &["--cacert", ca]);
    assert_eq!(code, 60, "the old authority still verified the replaced certificate: {said}");
    browser.send(&format!("shot {}", crate::support::browser::artifacts().join("https-session-after-reload.png").display()));
    let shot = browser.expect("shot", 60);
    assert_eq!((&shot["state"], &shot["closed"]), (&"Streaming".into(), &0.into()), "the stream was dropped at the reload: {shot}");

    // A broken file and SIGHUP: the certificate in use stays, and the server serves on.
    std::fs::write(tls.join("server.pem"), "not a certificate").expect("write");
    nix_kill(server.pid(), "HUP");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(presented_subject(api).contains("reloaded"), "a broken file replaced the certificate in use");
    let (code, said) = curl(&format!("{public}/healthz"), &["-k"]);
    assert_eq!(code, 0, "the server stopped serving after a bad reload: {said}");
}

fn nix_kill(pid: u32, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}
