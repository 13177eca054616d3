//! SAML 2.0 sign-in against a real identity provider: pysaml2 (PyPI) signing with Debian's
//! xmlsec1 (`saml_idp.py`). IdP-initiated and SP-initiated sign-in reach a session in the
//! user's `user/federated/<sha256(issuer, NameID)>/` folder; a table of attacks is refused, each with
//! its own reason and an audit record naming the subject the response claimed; nothing a
//! refused response says reaches a token or a session.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::server::Server;
use crate::streaming::{active, open, server};
use crate::{http, streaming};

const STACK: &str = "datasandbox-stack";

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

#[test]
fn saml_sign_in_reaches_a_session_and_forged_responses_are_refused() {
    let idp = tempfile::tempdir().expect("tempdir");
    identity_provider(idp.path(), &format!("http://127.0.0.1:{}", free_port()));
    let metadata = format!("idp_metadata={}", idp.path().join("idp.xml").display());
    let server = server(&[&metadata]);
    let sp = fetch_sp_metadata(&server, idp.path());
    let text = std::fs::read_to_string(&sp).expect("sp.xml");
    let base = format!("http://{}", server.api);
    assert!(
        text.contains(&format!("entityID=\"{base}/saml/metadata\"")) && text.contains(&format!("Location=\"{base}/saml/acs\"")),
        "{text}"
    );

    // SP-initiated: the login redirects to the IdP's SSO with an AuthnRequest; the IdP answers it.
    let login = http::tcp(&server.api).expect("connect").request("GET", &format!("/saml/login?stack={STACK}"), &[], b"").expect("login");
    assert_eq!(login.status, 303);
    let location = login.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone()).expect("a redirect");
    assert!(location.contains("/sso?SAMLRequest="), "{location}");
    let query: Vec<(String, String)> = location
        .split_once('?')
        .expect("query")
        .1
        .split('&')
        .map(|kv| kv.split_once('=').expect("pair"))
        .map(|(k, v)| (k.into(), unpercent(v)))
        .collect();
    let request = query.iter().find(|(k, _)| k == "SAMLRequest").map(|(_, v)| v.clone()).expect("SAMLRequest");
    let relay = query.iter().find(|(k, _)| k == "RelayState").map(|(_, v)| v.clone()).expect("RelayState");
    // The sign-in is bound to this browser: its response is accepted only with this cookie.
    let browser = login.headers.iter().find(|(n, _)| n == "set-cookie").and_then(|(_, v)| v.split(';').next()).map(str::to_owned);
    assert!(browser.as_deref().is_some_and(|c| c.starts_with("ds_saml=")), "{browser:?}");
    assert_eq!(relay, format!("stack={STACK}"));

    let alice = "alice@example.test";
    let cases = json!([
        { "name": "sp_initiated", "user": alice, "authn_request": request },
        { "name": "idp_initiated", "user": "bob@example.test", "mfa": false, "duration": 1800 },
        { "name": "response_signed", "user": "carol@example.test", "attack": "response_signed" },
        { "name": "unsigned", "user": alice, "attack": "unsigned" },
        { "name": "wrapping", "user": "mallory", "victim": alice, "attack": "wrapping" },
        { "name": "wrapping_extensions", "user": "mallory", "victim": alice, "attack": "wrapping_extensions" },
        { "name": "wrong_audience", "user": alice, "attack": "wrong_audience" },
        { "name": "wrong_recipient", "user": alice, "attack": "wrong_recipient" },
        { "name": "wrong_destination", "user": alice, "destination": "https://other-sp.test/acs" },
        { "name": "expired", "user": alice, "attack": "expired" },
        { "name": "not_yet_valid", "user": alice, "attack": "not_yet_valid" },
        { "name": "unknown_issuer", "user": alice, "attack": "unknown_issuer" },
        { "name": "wrong_key", "user": alice, "attack": "wrong_key" },
        { "name": "tampered_attribute", "user": alice, "attack": "tampered_attribute" },
        { "name": "sha1", "user": alice, "attack": "sha1" },
        { "name": "comment_in_name_id", "user": alice, "victim": alice, "attack": "comment_in_name_id" },
        { "name": "doctype", "user": alice, "attack": "doctype" },
        { "name": "unknown_request", "user": alice, "in_response_to": "_ds00000000000000000000000x99999999999999x00000000000000000000000000000000" },
        { "name": "other_provider", "user": alice, "idp_name": "somebody-else" },
    ]);
    let made = responses(idp.path(), &sp, &cases);

    // The attacks: each refused with its own reason, audited with the subject it claimed.
    let table = [
        ("unsigned", "SAMLUnsigned"),
        ("wrapping", "SAMLSignatureWrapping"),
        ("wrapping_extensions", "SAMLSignatureWrapping"),
        ("wrong_audience", "SAMLAudienceMismatch"),
        ("wrong_recipient", "SAMLRecipientMismatch"),
        ("wrong_destination", "SAMLDestinationMismatch"),
        ("expired", "SAMLExpired"),
        ("not_yet_valid", "SAMLNotYetValid"),
        ("unknown_issuer", "SAMLUnknownIssuer"),
        ("wrong_key", "SAMLSignatureInvalid"),
        ("tampered_attribute", "SAMLSignatureInvalid"),
        ("sha1", "SAMLWeakSignature"),
        ("comment_in_name_id", "InvalidSAMLResponse"),
        ("doctype", "InvalidSAMLResponse"),
        ("unknown_request", "SAMLUnknownRequest"),
        ("other_provider", "SAMLNoRole"),
    ];
    for (case, code) in table {
        let posted = post_acs(&server, made[case].as_str().expect("response"), &format!("stack={STACK}"));
        assert!(posted.status == 401 || posted.status == 403, "{case}: {} {}", posted.status, posted.body);
        assert_eq!(posted.code(), code, "{case}: {}", posted.body);
        let reason = match case {
            "comment_in_name_id" => "holds something other than text",
            "doctype" => "not well-formed XML",
            _ => "",
        };
        assert!(posted.body.contains(reason), "{case}: {}", posted.body);
        assert!(posted.cookie.is_none() && posted.location.is_none(), "{case}: a refused response signs nobody in");
    }
    let refusals = server.audit(&[("EventName", "AssumeRoleWithSAML")]);
    for (case, code) in table {
        assert!(
            refusals.iter().any(|r| r["errorCode"] == code && r["userIdentity"]["type"] == "SAMLUser"),
            "{case}: no audit record with {code}: {refusals:#?}"
        );
    }
    let wrapped = refusals.iter().find(|r| r["errorCode"] == "SAMLSignatureWrapping").expect("wrapping record");
    assert!(wrapped["userIdentity"]["userName"].is_string(), "the claimed subject is on the record: {wrapped}");
    // OpenID Connect is not set up here: starting it is refused, and the refusal recorded.
    let no_oidc = http::tcp(&server.api).expect("connect").request("GET", "/oidc/login", &[], b"").expect("request");
    assert_eq!(no_oidc.status, 400, "{}", String::from_utf8_lossy(&no_oidc.body));
    let starts = server.audit(&[("EventName", "SignInStartRefused")]);
    assert!(starts.iter().any(|r| r["errorCode"] == "OIDCNotConfigured"), "{starts:#?}");
    let posted_nothing = post_acs(&server, "", "");
    assert_eq!(posted_nothing.status, 401, "{}", posted_nothing.body);
    assert!(sessions_of(&server, alice).is_empty(), "no refused response opened a session");

    // IdP-initiated with AppStream's relay state, as bob, no MFA: bound to no browser, it signs
    // in to the portal (which names the account) and launches nothing by itself; bob's click
    // on the portal launches the stack.
    let bob = post_acs(
        &server,
        made["idp_initiated"].as_str().expect("response"),
        &format!("https://appstream.example/saml?stackname={STACK}&accountId=000000000000"),
    );
    assert_eq!((bob.status, bob.location.as_deref()), (303, Some("/portal")), "{}", bob.body);
    let portal = format!("ds_portal={}", bob.cookie.clone().expect("the portal cookie is set"));
    let launched = http::tcp(&server.api)
        .expect("connect")
        .request(
            "POST",
            "/portal/launch",
            &[("cookie", &portal), ("content-type", "application/json")],
            json!({ "StackName": STACK }).to_string().as_bytes(),
        )
        .expect("launch");
    assert_eq!(launched.status, 200, "{}", String::from_utf8_lossy(&launched.body));
    let url = launched.json()["StreamingURL"].as_str().expect("a streaming URL").to_owned();
    let opened = open(&server, &url);
    assert_eq!(opened.status, 200, "{}", opened.body);
    let status = active(&server, opened.cookie.as_deref().expect("session cookie"), 60);
    assert_eq!(status["UserId"], "bob@example.test");
    let bob_sessions = sessions_of(&server, "bob@example.test");
    assert_eq!(bob_sessions.len(), 1, "{bob_sessions:?}");
    assert_eq!(bob_sessions[0]["AuthenticationType"], "SAML");
    // SessionDuration (1800 s) bounds the session below the fleet's 16 hours.
    let ends = chrono::DateTime::parse_from_rfc3339(bob_sessions[0]["MaxExpirationTime"].as_str().expect("time")).expect("RFC 3339");
    let left = (ends.timestamp() - chrono::Utc::now().timestamp()) as f64;
    assert!((1700.0..=1800.0).contains(&left), "the session ends in {left} s");
    let instance = bob_sessions[0]["InstanceId"].as_str().expect("instance");
    // A federated folder is the provider's user's: its hash covers the issuer too.
    let issuer = bob_sessions[0]["Issuer"].as_str().expect("a SAML session names its identity provider");
    crate::portal::works_in_home_folder(&server, instance, "federated", &format!("{issuer}\nbob@example.test"));
    let signed_in = server.audit(&[("EventName", "AssumeRoleWithSAML"), ("Username", "bob@example.test")]);
    let record = signed_in.iter().find(|r| r["errorCode"].is_null()).expect("bob's sign-in on the record");
    assert_eq!(record["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"], "false");
    assert_eq!(record["responseElements"]["Roles"], json!(["saml-stack"]));

    // The same response again is a replay.
    let again = post_acs(&server, made["idp_initiated"].as_str().expect("response"), "");
    assert_eq!(again.code(), "SAMLReplay", "{}", again.body);

    // SP-initiated: answers our request, MFA at the IdP, into a session.
    let alice_in = post_acs_from(&server, made["sp_initiated"].as_str().expect("response"), &relay, browser.as_deref());
    assert_eq!(alice_in.status, 303, "{}", alice_in.body);
    let opened = open(&server, alice_in.location.as_deref().expect("a streaming URL"));
    let status = active(&server, opened.cookie.as_deref().expect("session cookie"), 60);
    assert_eq!(status["UserId"], alice);
    let records = server.audit(&[("EventName", "AssumeRoleWithSAML"), ("Username", alice)]);
    let ok = records.iter().find(|r| r["errorCode"].is_null()).expect("alice's sign-in");
    assert_eq!(ok["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"], "true");

    // A whole-response signature is as good; without a relay state the browser lands on the portal,
    // whose token lists what the role grants and can launch it (but not as anyone else).
    let carol = post_acs(&server, made["response_signed"].as_str().expect("response"), "");
    assert_eq!((carol.status, carol.location.as_deref()), (303, Some("/portal")), "{}", carol.body);
    let token = carol.cookie.expect("portal cookie");
    let catalog = server.call_as(
        &token,
        "streaming:DescribeUserStackAssociations",
        &json!({ "UserName": "carol@example.test", "AuthenticationType": "SAML" }),
    );
    assert_eq!(catalog.stdout["UserStackAssociations"][0]["StackName"], STACK, "{catalog:?}");
    let someone_else = server.call_as(
        &token,
        "streaming:DescribeUserStackAssociations",
        &json!({ "UserName": "bob@example.test", "AuthenticationType": "SAML" }),
    );
    assert_eq!(someone_else.stderr["Code"], "AccessDeniedException");
    let mine = server.call_as(&token, "streaming:DescribeUserSessions", &json!({}));
    assert_eq!(mine.stdout["Sessions"], json!([]), "carol has no session yet: {mine:?}");
    streaming::expire(&server, &bob_sessions[0]);
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

#[test]
fn saml_sign_in_in_a_real_browser_reaches_the_portal_and_a_session() {
    let idp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    identity_provider(idp.path(), &format!("http://127.0.0.1:{port}"));
    let metadata = format!("idp_metadata={}", idp.path().join("idp.xml").display());
    let server = server(&[&metadata]);
    let sp = fetch_sp_metadata(&server, idp.path());
    let _idp = IdpServer::start(idp.path(), &sp, port, "dana@example.test", &["saml-stack"]);

    let events = crate::portal::browser("saml.mjs", &[&format!("http://{}", server.api)], String::new);
    assert_eq!(events[0]["user"], "dana@example.test");
    assert_eq!(events[0]["stacks"], json!([STACK]));
    assert!(events[1]["url"].as_str().is_some_and(|u| u.ends_with("/session")), "{events:?}");
    let sessions = sessions_of(&server, "dana@example.test");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["State"], "ACTIVE");
    // The sign-in answered the SP's own request (SP-initiated), and the launch was the SAML user's.
    let records = server.audit(&[("EventName", "AssumeRoleWithSAML"), ("Username", "dana@example.test")]);
    assert!(records.iter().any(|r| r["errorCode"].is_null()), "{records:#?}");
    let launches = server.audit(&[("EventName", "CreateUserStreamingURL"), ("Username", "dana@example.test")]);
    assert!(launches.iter().any(|r| r["errorCode"].is_null() && r["resources"][0]["ARN"].as_str().is_some_and(|a| a.ends_with(":stack/datasandbox-stack"))), "{launches:#?}");
    streaming::expire(&server, &sessions[0]);
}
