//! SAML 2.0 sign-in against a real identity provider: pysaml2 (PyPI) signing with Debian's
//! xmlsec1 (`saml_idp.py`). IdP-initiated and SP-initiated sign-in reach a session in the
//! user's `user/federated/<sha256(issuer, NameID)>/` folder; a table of attacks is refused, each with
//! its own reason and an audit record naming the subject the response claimed; nothing a
//! refused response says reaches a token or a session.

use serde_json::json;

use crate::support::saml::{fetch_sp_metadata, free_port, identity_provider, post_acs, post_acs_from, responses, sessions_of, unpercent};
use crate::support::streaming::{STACK, active, open, server};
use crate::support::{http, streaming};

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

    // IdP-initiated with AppStream's relay state, as bob, no MFA: bound to no browser, it lands
    // on a page naming the account, signs in to the portal when bob confirms there, and
    // launches nothing by itself; bob's click on the portal launches the stack.
    let bob = post_acs(
        &server,
        made["idp_initiated"].as_str().expect("response"),
        &format!("https://appstream.example/saml?stackname={STACK}&accountId=000000000000"),
    );
    assert_eq!((bob.status, bob.cookie.as_deref()), (200, None), "signed in before bob confirmed: {}", bob.body);
    assert!(bob.body.contains("Continue as <span id=\"user\">bob@example.test</span>?"), "{}", bob.body);
    let (confirmed, cookie) = crate::support::saml::confirm_idp_initiated(&server, &bob.body, "http://localhost");
    assert_eq!(confirmed.status, 303, "{}", String::from_utf8_lossy(&confirmed.body));
    let portal = format!("ds_portal={}", cookie.expect("the portal cookie is set"));
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
    crate::support::instances::works_in_home_folder(&server, instance, "federated", &format!("{issuer}\nbob@example.test"));
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
    // (IdP-initiated too: confirmed on its page.)
    let carol = post_acs(&server, made["response_signed"].as_str().expect("response"), "");
    assert_eq!(carol.status, 200, "{}", carol.body);
    let (confirmed, cookie) = crate::support::saml::confirm_idp_initiated(&server, &carol.body, "http://localhost");
    assert_eq!(confirmed.status, 303, "{}", String::from_utf8_lossy(&confirmed.body));
    let token = cookie.expect("portal cookie");
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
