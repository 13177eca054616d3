//! Local users for small sites: argon2id passwords, TOTP enrolment and sign-in checked
//! against an independent TOTP implementation (Debian's `oathtool`), codes that work once,
//! guessing slowed per source (never an account lock a stranger could cause), a per-address
//! limit, MFA in the audit record, and no password or code anywhere in the trail.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::server::Called;
use crate::support::server::Server;

const PASSWORD: &str = "correct horse battery staple";

/// `identity:SignIn` over HTTP, as a browser or script would (no token: the body is the credential).
fn sign_in(server: &Server, body: Value) -> Called {
    let endpoint = format!("http://{}", server.api);
    server.cli(&["call", "identity:SignIn", "--input", &body.to_string(), "--endpoint", &endpoint], &[])
}

fn code(secret: &str, when: &str) -> String {
    let out = Command::new("oathtool").args(["--totp", "-b", "-N", when, secret]).output().expect("oathtool (apt-get install oathtool)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("digits").trim().to_owned()
}

fn refused(called: &Called, code: &str) {
    assert_eq!(called.exit, 1, "{called:?}");
    assert_eq!(called.stderr["Code"], code, "{called:?}");
}

#[test]
fn local_users_sign_in_with_password_and_totp_and_guessing_is_stopped() {
    let server = Server::start(&[]);
    // Bad input changes nothing: a short password, a bad name, then a duplicate.
    for (input, code) in [
        (json!({ "UserName": "carol", "Password": "short" }), "ValidationException"),
        (json!({ "UserName": "x", "Password": PASSWORD }), "ValidationException"),
    ] {
        let called = server.call("identity:CreateLocalUser", &input);
        refused(&called, code);
    }
    server.ok("identity:CreateLocalUser", json!({ "UserName": "carol", "Password": PASSWORD }));
    refused(&server.call("identity:CreateLocalUser", &json!({ "UserName": "carol", "Password": PASSWORD })), "UsernameExistsException");
    // Her sign-in is her own: no operator issues a token that acts as her (review finding).
    let issued = server.call("identity:CreateSessionToken", &json!({ "UserId": "carol", "AccessMode": "local" }));
    refused(&issued, "ValidationException");

    // Password only, before enrolment: a token without MFA.
    let signed = sign_in(&server, json!({ "UserName": "carol", "Password": PASSWORD }));
    assert_eq!(signed.exit, 0, "{signed:?}");
    assert_eq!(signed.stdout["MfaAuthenticated"], false);
    let token = signed.stdout["Token"].as_str().expect("token").to_owned();
    let me = server.call_as(&token, "identity:GetCallerIdentity", &json!({}));
    assert_eq!(me.stdout["UserName"], "carol", "{me:?}");
    assert_eq!(me.stdout["PrincipalId"], "local:carol");

    // TOTP enrolment: a secret, confirmed with a code from an independent implementation.
    let enrolment = server.call_as(&token, "identity:AssociateSoftwareToken", &json!({ "Password": PASSWORD }));
    assert_eq!(enrolment.exit, 0, "{enrolment:?}");
    let secret = enrolment.stdout["SecretCode"].as_str().expect("secret").to_owned();
    assert!(enrolment.stdout["OtpauthUri"].as_str().is_some_and(|u| u.starts_with("otpauth://totp/DataSandbox:carol?secret=")));
    refused(&server.call_as(&token, "identity:VerifySoftwareToken", &json!({ "UserCode": "000000" })), "CodeMismatchException");
    let verified = server.call_as(&token, "identity:VerifySoftwareToken", &json!({ "UserCode": code(&secret, "now") }));
    assert_eq!(verified.exit, 0, "{verified:?}");

    // From now on the password alone is not enough (and the answer does not say the password
    // was right); a wrong code is refused; a code works once.
    refused(&sign_in(&server, json!({ "UserName": "carol", "Password": PASSWORD })), "NotAuthorizedException");
    refused(&sign_in(&server, json!({ "UserName": "carol", "Password": PASSWORD, "TotpCode": "000000" })), "NotAuthorizedException");
    let next = code(&secret, "now + 30 seconds");
    let with_mfa = sign_in(&server, json!({ "UserName": "carol", "Password": PASSWORD, "TotpCode": next }));
    assert_eq!(with_mfa.exit, 0, "{with_mfa:?}");
    assert_eq!(with_mfa.stdout["MfaAuthenticated"], true);
    refused(&sign_in(&server, json!({ "UserName": "carol", "Password": PASSWORD, "TotpCode": next })), "NotAuthorizedException");
    let mfa_token = with_mfa.stdout["Token"].as_str().expect("token").to_owned();
    let request = server.call_as(&mfa_token, "identity:GetCallerIdentity", &json!({}));
    assert_eq!(request.exit, 0);
    let records = server.audit(&[("EventName", "GetCallerIdentity"), ("Username", "carol")]);
    let flags: Vec<&Value> = records.iter().map(|r| &r["userIdentity"]["sessionContext"]["attributes"]["mfaAuthenticated"]).collect();
    assert!(flags.contains(&&json!("true")) && flags.contains(&&json!("false")), "MFA state reaches the record: {flags:?}");

    // Five failures on one account make this address wait before trying it again (the
    // account itself is never locked: see the attack table's f17); an operator lifts the wait.
    server.ok("identity:CreateLocalUser", json!({ "UserName": "dave", "Password": PASSWORD }));
    for attempt in 0..5 {
        let called = sign_in(&server, json!({ "UserName": "dave", "Password": format!("guess number {attempt}") }));
        refused(&called, "NotAuthorizedException");
    }
    let waiting = sign_in(&server, json!({ "UserName": "dave", "Password": PASSWORD }));
    refused(&waiting, "TooManyRequestsException");
    server.ok("identity:UnlockLocalUser", json!({ "UserName": "dave" }));
    assert_eq!(sign_in(&server, json!({ "UserName": "dave", "Password": PASSWORD })).exit, 0);
    // An unknown name is refused exactly like a wrong password.
    let unknown = sign_in(&server, json!({ "UserName": "mallory", "Password": PASSWORD }));
    refused(&unknown, "NotAuthorizedException");
    assert_eq!(
        unknown.stderr["Message"],
        sign_in(&server, json!({ "UserName": "dave", "Password": "not the password" })).stderr["Message"]
    );

    // Every failure is on the record with the name tried; no password or code is anywhere.
    let failures: Vec<Value> = server.audit(&[("EventName", "SignIn")]).into_iter().filter(|r| r["errorCode"].is_string()).collect();
    assert!(
        failures.iter().any(|r| r["userIdentity"]["userName"] == "dave" && r["errorCode"] == "TooManyRequestsException"),
        "{failures:#?}"
    );
    assert!(failures.iter().any(|r| r["userIdentity"]["userName"] == "mallory"), "{failures:#?}");
    let trail = server.audit(&[]).iter().map(Value::to_string).collect::<String>();
    assert!(!trail.contains("correct horse") && !trail.contains("guess number") && !trail.contains(&next), "secrets stay out of the trail");
    assert!(!trail.contains(&secret), "the TOTP secret stays out of the trail");

    // Signing out ends the sign-in's token, not merely the page's cookie (review finding);
    // nobody signs out a token of another's.
    let daves = sign_in(&server, json!({ "UserName": "dave", "Password": PASSWORD })).stdout["Token"].as_str().expect("token").to_owned();
    refused(&server.call_as(&mfa_token, "identity:SignOut", &json!({ "Token": daves })), "ValidationException");
    assert_eq!(server.call_as(&daves, "identity:SignOut", &json!({ "Token": daves })).exit, 0);
    refused(&server.call_as(&daves, "identity:GetCallerIdentity", &json!({})), "UnrecognizedClientException");
    assert_eq!(server.call_as(&mfa_token, "identity:GetCallerIdentity", &json!({})).exit, 0, "carol's own sign-in holds");
    // The portal's sign-out does it.
    let body = json!({ "UserName": "dave", "Password": PASSWORD }).to_string();
    let page = [("content-type", "application/json"), ("origin", "http://localhost")];
    let signed = crate::support::http::tcp(&server.api)
        .expect("connect")
        .request("POST", "/portal/signin", &page, body.as_bytes())
        .expect("sign in");
    assert_eq!(signed.status, 200, "{}", String::from_utf8_lossy(&signed.body));
    let cookie = signed.headers.iter().find(|(n, _)| n == "set-cookie").and_then(|(_, v)| v.split(';').next()).expect("cookie").to_owned();
    let portal_token = cookie.trim_start_matches("ds_portal=").to_owned();
    assert_eq!(server.call_as(&portal_token, "identity:GetCallerIdentity", &json!({})).exit, 0);
    let out = [("cookie", cookie.as_str()), ("origin", "http://localhost")];
    let signed_out =
        crate::support::http::tcp(&server.api).expect("connect").request("POST", "/portal/signout", &out, b"").expect("sign out");
    assert_eq!(signed_out.status, 200);
    refused(&server.call_as(&portal_token, "identity:GetCallerIdentity", &json!({})), "UnrecognizedClientException");

    // A deleted user's tokens go with them: a token names its user and roles by itself, and
    // held for a deleted user, or for a new one of the same name (review finding).
    server.ok("identity:CreateLocalUser", json!({ "UserName": "fred", "Password": PASSWORD, "Roles": ["reviewer"] }));
    let freds = sign_in(&server, json!({ "UserName": "fred", "Password": PASSWORD })).stdout["Token"].as_str().expect("token").to_owned();
    assert_eq!(server.call_as(&freds, "identity:GetCallerIdentity", &json!({})).exit, 0);
    server.ok("identity:DeleteLocalUser", json!({ "UserName": "fred" }));
    refused(&server.call_as(&freds, "identity:GetCallerIdentity", &json!({})), "UnrecognizedClientException");
    // Nor is the name given again (see `f17_a_deleted_users_sessions_end_and_their_name_is_not_given_again`).
    refused(&server.call("identity:CreateLocalUser", &json!({ "UserName": "fred", "Password": PASSWORD })), "UsernameExistsException");

    // One address may fail at most 20 times a minute, across accounts.
    let mut limited = None;
    for attempt in 0..25 {
        let called = sign_in(&server, json!({ "UserName": format!("nobody{attempt}"), "Password": PASSWORD }));
        if called.stderr["Code"] == "TooManyRequestsException" {
            limited = Some(attempt);
            break;
        }
    }
    assert!(limited.is_some(), "the address was never limited");
}

/// A local user changes their own password, proving the old one again; every sign-in of
/// theirs ends with it (whoever held the old password or a token holds nothing), and neither
/// password reaches the trail.
#[test]
fn a_local_user_changes_their_password_and_every_sign_in_ends() {
    const NEW: &str = "a brand new passphrase, longer";
    let server = Server::start(&[]);
    server.ok("identity:CreateLocalUser", json!({ "UserName": "gina", "Password": PASSWORD }));
    let token = |password: &str| sign_in(&server, json!({ "UserName": "gina", "Password": password }));
    let (first, second) = (token(PASSWORD).stdout["Token"].as_str().expect("token").to_owned(), token(PASSWORD));
    let second = second.stdout["Token"].as_str().expect("token").to_owned();
    let change = |previous: &str, proposed: &str| {
        server.call_as(&first, "identity:ChangePassword", &json!({ "PreviousPassword": previous, "ProposedPassword": proposed }))
    };
    // A wrong old password, or a new one too short, changes nothing.
    refused(&change("not the password", NEW), "NotAuthorizedException");
    refused(&change(PASSWORD, "short"), "ValidationException");
    assert_eq!(server.call_as(&second, "identity:GetCallerIdentity", &json!({})).exit, 0);
    // Nor may an operator's issued token, or anyone not signed in as gina, change it.
    refused(
        &server.call("identity:ChangePassword", &json!({ "PreviousPassword": PASSWORD, "ProposedPassword": NEW })),
        "ValidationException",
    );
    let changed = change(PASSWORD, NEW);
    assert_eq!(changed.exit, 0, "{changed:?}");
    for ended in [&first, &second] {
        refused(&server.call_as(ended, "identity:GetCallerIdentity", &json!({})), "UnrecognizedClientException");
    }
    refused(&token(PASSWORD), "NotAuthorizedException");
    assert_eq!(token(NEW).exit, 0, "the new password signs in");
    let trail = server.audit(&[]).iter().map(Value::to_string).collect::<String>();
    assert!(!trail.contains("correct horse") && !trail.contains("brand new"), "a password reached the trail");
    assert!(trail.contains("ChangePassword"), "the change is on the record");
}

/// MFA reaches the policies: a site that adds a policy granting local users something only
/// with a second factor refuses a password-only token and allows a TOTP-proved one.
#[test]
fn a_policy_can_require_mfa() {
    let mut spec = model::spec::default_spec_text();
    spec.push_str(
        "\n[[policies]]\nname = \"local-users-with-mfa-list-buckets\"\ntext = '''\npermit (principal is DataSandbox::User, action == DataSandbox::Action::\"storage:ListBuckets\", resource)\n  when { principal.access_mode == \"local\" && principal.mfa };'''\n",
    );
    let server = Server::start_with_spec(&spec, &[]);
    server.ok("identity:CreateLocalUser", json!({ "UserName": "erin", "Password": PASSWORD }));
    let password_only = sign_in(&server, json!({ "UserName": "erin", "Password": PASSWORD }));
    let token = password_only.stdout["Token"].as_str().expect("token").to_owned();
    let home = password_only.stdout["HomeFolderPrefix"].as_str().expect("home").to_owned();
    assert!(home.starts_with("user/local/"), "{home}");
    refused(&server.call_as(&token, "storage:ListBuckets", &json!({})), "AccessDeniedException");

    let enrolment = server.call_as(&token, "identity:AssociateSoftwareToken", &json!({ "Password": PASSWORD }));
    let secret = enrolment.stdout["SecretCode"].as_str().expect("secret").to_owned();
    assert_eq!(server.call_as(&token, "identity:VerifySoftwareToken", &json!({ "UserCode": code(&secret, "now") })).exit, 0);
    let with_mfa = sign_in(&server, json!({ "UserName": "erin", "Password": PASSWORD, "TotpCode": code(&secret, "now + 30 seconds") }));
    let mfa_token = with_mfa.stdout["Token"].as_str().expect("token").to_owned();
    let listed = server.call_as(&mfa_token, "storage:ListBuckets", &json!({}));
    assert_eq!(listed.exit, 0, "{listed:?}");
}
