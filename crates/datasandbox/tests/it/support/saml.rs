//! A real SAML identity provider (pysaml2 signing with Debian's xmlsec1, `saml_idp.py`): its
//! metadata, the responses it signs, and the service provider's side of posting them, for the
//! SAML tests and the attack rows on federated sign-in.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::http;
use crate::support::server::Server;
use crate::support::streaming::STACK;

pub(crate) fn python() -> PathBuf {
    std::env::var_os("DATASANDBOX_TEST_PYTHON")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ci-venv/bin/python"), PathBuf::from)
}

fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/saml_idp.py")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// Keys, certificates and metadata of a fresh IdP at `base` (its own, and an attacker's).
pub(crate) fn identity_provider(dir: &Path, base: &str) {
    let out = Command::new(python()).args(["-W", "ignore"]).arg(helper()).arg("init").arg(dir).arg(base).output().expect("run python");
    assert!(out.status.success(), "saml_idp.py init: {}", String::from_utf8_lossy(&out.stderr));
}

/// The SP's metadata, as the IdP's administrator would download it.
pub(crate) fn fetch_sp_metadata(server: &Server, dir: &Path) -> PathBuf {
    let reply = http::tcp(&server.api).expect("connect").request("GET", "/saml/metadata", &[], b"").expect("metadata");
    assert_eq!(reply.status, 200);
    let path = dir.join("sp.xml");
    std::fs::write(&path, &reply.body).expect("write sp.xml");
    path
}

/// One signed response per case, made by the IdP.
pub(crate) fn responses(dir: &Path, sp: &Path, cases: &Value) -> Value {
    let mut child = Command::new(python())
        .args(["-W", "ignore"])
        .arg(helper())
        .arg("responses")
        .arg(dir)
        .arg(sp)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), cases.to_string().as_bytes()).expect("cases");
    let out = child.wait_with_output().expect("responses");
    assert!(out.status.success(), "saml_idp.py responses: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

pub(crate) struct Posted {
    pub status: u16,
    pub location: Option<String>,
    pub cookie: Option<String>,
    pub body: String,
}

impl Posted {
    pub(crate) fn code(&self) -> String {
        let start = self.body.find("<code id=\"code\">").map(|i| i + 16);
        start.and_then(|s| self.body[s..].split('<').next()).unwrap_or_default().to_owned()
    }
}

pub(crate) fn post_acs(server: &Server, response: &str, relay_state: &str) -> Posted {
    post_acs_from(server, response, relay_state, None)
}

/// Posts a response from the browser holding `cookie` (the `ds_saml` of its `/saml/login`).
pub(crate) fn post_acs_from(server: &Server, response: &str, relay_state: &str, cookie: Option<&str>) -> Posted {
    let mut form = form_encode(&[("SAMLResponse", response)]);
    if !relay_state.is_empty() {
        form.push('&');
        form.push_str(&form_encode(&[("RelayState", relay_state)]));
    }
    let reply = http::tcp(&server.api)
        .expect("connect")
        .request(
            "POST",
            "/saml/acs",
            &[("content-type", "application/x-www-form-urlencoded"), ("cookie", cookie.unwrap_or_default())],
            form.as_bytes(),
        )
        .expect("post");
    let header = |name: &str| reply.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    Posted {
        status: reply.status,
        location: header("location"),
        cookie: header("set-cookie").and_then(|c| c.split(';').next()?.strip_prefix("ds_portal=").map(str::to_owned)),
        body: String::from_utf8_lossy(&reply.body).into_owned(),
    }
}

/// The confirmation an IdP-initiated sign-in's page posts (its button), from a page of
/// `origin`: the reply, and the portal cookie's token if one was set.
pub(crate) fn confirm_idp_initiated(server: &Server, page: &str, origin: &str) -> (http::Reply, Option<String>) {
    let token = page.split_once("name=\"Token\" value=\"").and_then(|(_, rest)| rest.split_once('"')).map(|(token, _)| token);
    let form = form_encode(&[("Token", token.expect("the page holds the sign-in to confirm"))]);
    let reply = http::tcp(&server.api)
        .expect("connect")
        .request("POST", "/portal/federated", &[("content-type", "application/x-www-form-urlencoded"), ("origin", origin)], form.as_bytes())
        .expect("post");
    let cookie = reply
        .headers
        .iter()
        .find(|(n, _)| n == "set-cookie")
        .and_then(|(_, c)| c.split(';').next()?.strip_prefix("ds_portal=").map(str::to_owned));
    (reply, cookie)
}

/// An IdP-initiated response posted, and its sign-in confirmed on the page it lands on: the
/// portal cookie's token.
pub(crate) fn signed_in_idp_initiated(server: &Server, response: &str) -> String {
    let posted = post_acs(server, response, "");
    assert_eq!(posted.status, 200, "{}", posted.body);
    let (confirmed, cookie) = confirm_idp_initiated(server, &posted.body, "http://localhost");
    assert_eq!(confirmed.status, 303, "{}", String::from_utf8_lossy(&confirmed.body));
    cookie.expect("the portal's cookie")
}

pub(crate) fn form_encode(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

pub(crate) fn sessions_of(server: &Server, user: &str) -> Vec<Value> {
    let found = server.ok(
        "streaming:DescribeSessions",
        json!({ "StackName": STACK, "FleetName": "datasandbox-fleet", "UserId": user, "AuthenticationType": "SAML" }),
    );
    found["Sessions"].as_array().cloned().unwrap_or_default()
}

pub(crate) fn unpercent(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("hex"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

/// The IdP as an HTTP server on loopback, stopped when dropped.
pub(crate) struct IdpServer(std::process::Child);

impl IdpServer {
    pub(crate) fn start(dir: &Path, sp: &Path, port: u16, user: &str, roles: &[&str]) -> IdpServer {
        std::fs::write(dir.join("user.json"), json!({ "user": user, "roles": roles }).to_string()).expect("user.json");
        let mut child = Command::new(python())
            .args(["-W", "ignore"])
            .arg(helper())
            .arg("serve")
            .arg(dir)
            .arg(sp)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line).expect("read");
        assert_eq!(line.trim(), "listening", "the IdP did not start");
        IdpServer(child)
    }
}

impl Drop for IdpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
