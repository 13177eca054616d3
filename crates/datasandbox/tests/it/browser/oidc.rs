//! OpenID Connect sign-in against a real provider: panva's oidc-provider (npm), with the
//! authorization code flow and PKCE. In Debian's Chromium: the portal → the provider → the
//! callback → the catalog → a session. Then the attacks a browser-side adversary has: the
//! callback replayed (with and without the browser's state cookie), a forged state, a state
//! from another browser, a code the provider never issued, and the provider's own refusal —
//! each refused with its reason and audited. (Forged ID tokens — audience, issuer, expiry,
//! nonce, signature, `alg: none`, HS256 — are refused in `control`'s unit tests.)

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::http;
use crate::support::saml::free_port;
use crate::support::server::Server;
use crate::support::streaming::server;

/// The provider, on loopback, stopped when dropped. Its stdout stays open (it logs notices
/// there, and would die writing into a closed pipe).
struct Provider(std::process::Child, #[allow(dead_code, reason = "held open")] std::io::BufReader<std::process::ChildStdout>);

impl Provider {
    fn start(port: u16, redirect: &str, dir: &std::path::Path) -> Provider {
        let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web");
        let mut child = Command::new("node")
            .arg(web.join("tests/oidc_provider.mjs"))
            .args([&port.to_string(), "datasandbox", redirect])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("provider.log")).expect("log"))
            .spawn()
            .expect("run node");
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        std::io::BufRead::read_line(&mut stdout, &mut line).expect("read");
        assert_eq!(line.trim(), "listening", "the OpenID provider did not start");
        Provider(child, stdout)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Reply {
    status: u16,
    location: Option<String>,
    cookies: Vec<String>,
    body: String,
}

impl Reply {
    fn code(&self) -> String {
        let start = self.body.find("<code id=\"code\">").map(|i| i + 16);
        start.and_then(|s| self.body[s..].split('<').next()).unwrap_or_default().to_owned()
    }
}

fn get(server: &Server, path: &str, cookie: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = cookie.map(|c| vec![("cookie", c)]).unwrap_or_default();
    let reply = http::tcp(&server.api).expect("connect").request("GET", path, &headers, b"").expect("request");
    let location = reply.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone());
    let cookies = reply.headers.iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v.clone()).collect();
    Reply { status: reply.status, location, cookies, body: String::from_utf8_lossy(&reply.body).into_owned() }
}

/// A fresh sign-in's state and the cookie that binds it to "this browser".
fn fresh_state(server: &Server) -> (String, String) {
    let started = get(server, "/oidc/login", None);
    assert_eq!(started.status, 303, "{}", started.body);
    let cookie =
        started.cookies.iter().find_map(|c| c.split(';').next()?.strip_prefix("ds_oidc=").map(str::to_owned)).expect("state cookie");
    (cookie.clone(), format!("ds_oidc={cookie}"))
}

#[test]
fn oidc_sign_in_with_pkce_reaches_a_session_and_callbacks_cannot_be_replayed_or_forged() {
    let port = free_port();
    let issuer = format!("oidc.issuer=http://127.0.0.1:{port}");
    let server = server(&[&issuer, "oidc.client_id=datasandbox", "oidc.scopes=openid email roles", "oidc.session_seconds=1200"]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("user.json"),
        json!({ "sub": "frank", "email": "frank@example.test", "roles": ["saml-stack"], "amr": ["pwd", "otp"] }).to_string(),
    )
    .expect("user.json");
    let _provider = Provider::start(port, &format!("http://{}/oidc/callback", server.api), dir.path());

    // SAML is not set up here: starting it is refused, and the refusal recorded.
    let no_saml = get(&server, "/saml/login", None);
    assert_eq!((no_saml.status, no_saml.code().as_str()), (400, "SAMLNotConfigured"), "{}", no_saml.body);
    let starts = server.audit(&[("EventName", "SignInStartRefused")]);
    assert!(starts.iter().any(|r| r["errorCode"] == "SAMLNotConfigured" && r["sourceIPAddress"] == "127.0.0.1"), "{starts:#?}");

    // The redirect to the provider: PKCE with S256, a nonce, and the state bound to the browser.
    let started = get(&server, "/oidc/login?stack=datasandbox-stack", None);
    assert_eq!(started.status, 303, "{}", started.body);
    let location = started.location.clone().expect("to the provider");
    assert!(location.starts_with(&format!("http://127.0.0.1:{port}/auth?")), "{location}");
    for part in ["code_challenge_method=S256", "code_challenge=", "nonce=", "state=", "response_type=code", "client_id=datasandbox"] {
        assert!(location.contains(part), "{part} in {location}");
    }
    assert!(started.cookies.iter().any(|c| c.starts_with("ds_oidc=") && c.contains("HttpOnly")), "{:?}", started.cookies);

    // Frank, in a real browser.
    let events = crate::support::browser::run_flow("oidc.mjs", &[&format!("http://{}", server.api)], || {
        format!("the provider said: {}", std::fs::read_to_string(dir.path().join("provider.log")).unwrap_or_default())
    });
    assert_eq!(events[0]["user"], "frank");
    assert_eq!(events[0]["stacks"], json!(["datasandbox-stack"]));
    assert!(events[1]["url"].as_str().is_some_and(|u| u.ends_with("/session")), "{events:?}");
    let signed_in = server.audit(&[("EventName", "AssumeRoleWithWebIdentity"), ("Username", "frank")]);
    let record = signed_in.iter().find(|r| r["errorCode"].is_null()).expect("frank's sign-in on the record");
    assert_eq!(record["userIdentity"]["type"], "WebIdentityUser");
    assert_eq!(record["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"], "true", "amr otp is a second factor");
    assert_eq!(record["responseElements"]["Roles"], json!(["saml-stack"]));
    let sessions = server.ok(
        "streaming:DescribeSessions",
        json!({ "StackName": "datasandbox-stack", "FleetName": "datasandbox-fleet", "UserId": "frank", "AuthenticationType": "SAML" }),
    );
    assert_eq!(sessions["Sessions"][0]["State"], "ACTIVE", "{sessions}");
    // The sign-in lasts oidc.session_seconds, and so does the session it launched.
    let ends =
        chrono::DateTime::parse_from_rfc3339(sessions["Sessions"][0]["MaxExpirationTime"].as_str().expect("time")).expect("RFC 3339");
    let left = ends.timestamp() - chrono::Utc::now().timestamp();
    assert!((1100..=1200).contains(&left), "the session ends in {left} s");

    // The callback the browser went through, again: without the browser's cookie, then with it.
    let callback = events[0]["callback"].as_str().expect("the callback URL");
    let path = &callback[callback.find("/oidc/callback").expect("path")..];
    let state = path.split("state=").nth(1).expect("state").split('&').next().expect("state").to_owned();
    let state = String::from_utf8(state.bytes().collect()).expect("utf8");
    let stolen = get(&server, path, None);
    assert_eq!((stolen.status, stolen.code().as_str()), (401, "OIDCStateMismatch"), "{}", stolen.body);
    let replayed = get(&server, path, Some(&format!("ds_oidc={}", unpercent(&state))));
    assert_eq!((replayed.status, replayed.code().as_str()), (401, "OIDCReplay"), "{}", replayed.body);

    // Another browser's state; a forged one; a code the provider never issued; its refusal.
    let (mine, my_cookie) = fresh_state(&server);
    let (theirs, _) = fresh_state(&server);
    let crossed = get(&server, &format!("/oidc/callback?code=x&state={theirs}"), Some(&my_cookie));
    assert_eq!(crossed.code(), "OIDCStateMismatch", "{}", crossed.body);
    let forged_state = format!("{}.AAAA", mine.split('.').next().expect("body"));
    let forged = get(&server, &format!("/oidc/callback?code=x&state={forged_state}"), Some(&format!("ds_oidc={forged_state}")));
    assert_eq!(forged.code(), "OIDCInvalidState", "{}", forged.body);
    let bogus = get(&server, &format!("/oidc/callback?code=not-a-code&state={mine}"), Some(&my_cookie));
    assert_eq!(bogus.code(), "OIDCTokenRejected", "{}", bogus.body);
    let (denied_state, denied_cookie) = fresh_state(&server);
    let denied =
        get(&server, &format!("/oidc/callback?error=access_denied&error_description=no&state={denied_state}"), Some(&denied_cookie));
    assert_eq!(denied.code(), "OIDCProviderError", "{}", denied.body);
    let refusals = server.audit(&[("EventName", "AssumeRoleWithWebIdentity")]);
    for code in ["OIDCStateMismatch", "OIDCReplay", "OIDCInvalidState", "OIDCTokenRejected", "OIDCProviderError"] {
        assert!(refusals.iter().any(|r| r["errorCode"] == code), "{code} is on the record: {refusals:#?}");
    }
    crate::support::streaming::expire(&server, &sessions["Sessions"][0]);
}

fn unpercent(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}
