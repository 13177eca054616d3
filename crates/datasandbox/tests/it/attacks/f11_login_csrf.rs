//! Finding 11: login CSRF. Another site's page could sign the victim's browser in as the
//! attacker (a text/plain form posting JSON to the portal; a SAML response the attacker got
//! for themselves), and the relay state then launched the attacker's session.

use serde_json::json;

use crate::support::http;
use crate::support::saml::{fetch_sp_metadata, form_encode, free_port, identity_provider, responses, sessions_of, unpercent};
use crate::support::server::Server;

const STACK: &str = "datasandbox-stack";

#[test]
fn f11_a_cross_site_form_cannot_sign_the_browser_in_to_the_portal() {
    let server = Server::start(&[]);
    server.ok("identity:CreateLocalUser", json!({ "UserName": "mallory", "Password": "correct horse=battery staple" }));
    // <form method=post enctype=text/plain> with a field named `{"UserName":"mallory","Password":"pass`
    // valued ` battery staple"}`.
    let body = br#"{"UserName":"mallory","Password":"correct horse=battery staple"}"#;
    for path in ["/portal/signin", "/console/signin"] {
        let reply = http::tcp(&server.api)
            .expect("connect")
            .request("POST", path, &[("content-type", "text/plain"), ("origin", "http://evil.example")], body)
            .expect("sign in");
        assert!(reply.status >= 400, "{path} signed in from a cross-site form: {}", String::from_utf8_lossy(&reply.body));
        assert!(!reply.headers.iter().any(|(n, _)| n == "set-cookie"), "{path} set a cookie");
        // Even as JSON, not from another origin's page.
        let reply = http::tcp(&server.api)
            .expect("connect")
            .request("POST", path, &[("content-type", "application/json"), ("origin", "http://evil.example")], body)
            .expect("sign in");
        assert_eq!(reply.status, 403, "{path}: {}", String::from_utf8_lossy(&reply.body));
        // Nor from no page at all; from the server's own page it works.
        let json = [("content-type", "application/json")];
        let reply = http::tcp(&server.api).expect("connect").request("POST", path, &json, body).expect("sign in");
        assert_eq!(reply.status, 403, "{path}: {}", String::from_utf8_lossy(&reply.body));
        let own = [("content-type", "application/json"), ("origin", "http://localhost")];
        let reply = http::tcp(&server.api).expect("connect").request("POST", path, &own, body).expect("sign in");
        // (The console then wants the admin role, which mallory does not hold.)
        let signed_in = reply.headers.iter().any(|(n, _)| n == "set-cookie") || reply.json()["Code"] == "ConsoleAccessDenied";
        assert!(signed_in, "{path}: {}", String::from_utf8_lossy(&reply.body));
    }
}

fn post_acs(server: &Server, response: &str, relay_state: &str, cookie: Option<&str>) -> http::Reply {
    let form = form_encode(&[("SAMLResponse", response), ("RelayState", relay_state)]);
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(cookie) = cookie {
        headers.push(("cookie", cookie));
    }
    http::tcp(&server.api).expect("connect").request("POST", "/saml/acs", &headers, form.as_bytes()).expect("post")
}

fn header<'a>(reply: &'a http::Reply, name: &str) -> Option<&'a str> {
    reply.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn f11_a_saml_response_made_for_another_browser_signs_nobody_in_and_launches_nothing() {
    let idp = tempfile::tempdir().expect("tempdir");
    identity_provider(idp.path(), &format!("http://127.0.0.1:{}", free_port()));
    let server = Server::start(&[&format!("idp_metadata={}", idp.path().join("idp.xml").display())]);
    let sp = fetch_sp_metadata(&server, idp.path());

    // The attacker starts a sign-in in their own browser and gets the IdP's answer to it.
    let login = http::tcp(&server.api).expect("connect").request("GET", &format!("/saml/login?stack={STACK}"), &[], b"").expect("login");
    let location = header(&login, "location").expect("a redirect").to_owned();
    let request = location
        .split_once('?')
        .expect("query")
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("SAMLRequest="))
        .map(unpercent)
        .expect("SAMLRequest");
    let attackers_cookie = header(&login, "set-cookie").and_then(|c| c.split(';').next()).map(str::to_owned);
    let made = responses(
        idp.path(),
        &sp,
        &json!([
            { "name": "sp_initiated", "user": "mallory@example.test", "authn_request": request },
            { "name": "idp_initiated", "user": "mallory@example.test" },
        ]),
    );
    // Posted from the victim's browser (no cookie of that sign-in): refused.
    let posted = post_acs(&server, made["sp_initiated"].as_str().expect("response"), &format!("stack={STACK}"), None);
    assert_eq!(posted.status, 401, "another browser's SP-initiated response was accepted: {:?}", header(&posted, "location"));
    assert!(String::from_utf8_lossy(&posted.body).contains("SAMLRequestNotFromThisBrowser"));
    assert!(header(&posted, "set-cookie").is_none_or(|c| !c.starts_with("ds_portal=")), "signed in");
    // An IdP-initiated response is bound to no browser: posted from the attacker's page it
    // signs nobody in and launches nothing, whatever its relay state says; it shows a page
    // naming mallory, whose button only a page of this origin may post (review finding: it set
    // the portal's cookie at once, in place of the victim's).
    let posted = post_acs(&server, made["idp_initiated"].as_str().expect("response"), &format!("stack={STACK}"), None);
    assert_eq!(posted.status, 200, "{}", String::from_utf8_lossy(&posted.body));
    assert!(header(&posted, "set-cookie").is_none_or(|c| !c.starts_with("ds_portal=")), "signed in without a click");
    assert_eq!(header(&posted, "x-frame-options"), Some("DENY"), "the confirmation may be framed (clickjacking)");
    let page = String::from_utf8_lossy(&posted.body).into_owned();
    assert!(page.contains("mallory@example.test"), "{page}");
    let (confirmed, cookie) = crate::support::saml::confirm_idp_initiated(&server, &page, "http://evil.example");
    assert_eq!((confirmed.status, cookie), (403, None), "another site's page confirmed the sign-in");
    assert!(sessions_of(&server, "mallory@example.test").is_empty(), "a session was launched");
    // A sign-in another site's page starts carries no stack to launch: the user's provider
    // may sign them in without a click, and the stack would launch with none either.
    let relay_of = |fetch_site: &str| {
        let started = http::tcp(&server.api)
            .expect("connect")
            .request("GET", &format!("/saml/login?stack={STACK}"), &[("sec-fetch-site", fetch_site)], b"")
            .expect("login");
        header(&started, "location").expect("a redirect").contains("RelayState=stack")
    };
    assert!(relay_of("none") && relay_of("same-origin"), "a bookmark or the portal lost its stack");
    assert!(!relay_of("cross-site") && !relay_of("same-site"), "another site's page chose the stack to launch");
    // The attacker's own browser, with its cookie, still signs in (the flow works).
    assert!(attackers_cookie.as_deref().is_some_and(|c| c.starts_with("ds_saml=")), "{attackers_cookie:?}");
}
