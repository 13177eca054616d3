//! Finding 8: a DIRECT stack hands Jupyter to the user's browser, where FILE_UPLOAD and
//! FILE_DOWNLOAD cannot hold (kernel output, notebook models, attachments): the product
//! refuses the combination instead of pretending.

use serde_json::json;

use crate::support::server::Server;

#[test]
fn f08_a_direct_notebook_stack_with_file_transfer_disabled_is_refused() {
    let server = Server::start(&[]);
    let created = server.call(
        "streaming:CreateStack",
        &json!({
            "Name": "leaky", "StreamView": "DIRECT", "DefaultApplication": "notebook",
            "UserSettings": [{ "Action": "FILE_DOWNLOAD", "Permission": "DISABLED" }],
        }),
    );
    assert_eq!(created.stderr["Code"], "ValidationException", "{:?}", created.stderr);
    assert!(created.stderr["Message"].as_str().is_some_and(|m| m.contains("FILE_DOWNLOAD cannot hold")), "{:?}", created.stderr);
    // The seed's stack disables downloads: it cannot become DIRECT.
    let updated = server.call("streaming:UpdateStack", &json!({ "Name": "datasandbox-stack", "StreamView": "DIRECT" }));
    assert_eq!(updated.stderr["Code"], "ValidationException", "{:?}", updated.stderr);
    // Nor can a DIRECT notebook stack turn a transfer off.
    server.ok(
        "streaming:CreateStack",
        json!({
            "Name": "open", "StreamView": "DIRECT", "DefaultApplication": "notebook",
            "UserSettings": [{ "Action": "FILE_DOWNLOAD", "Permission": "ENABLED" }, { "Action": "FILE_UPLOAD", "Permission": "ENABLED" }],
        }),
    );
    let updated = server
        .call("streaming:UpdateStack", &json!({ "Name": "open", "UserSettings": [{ "Action": "FILE_UPLOAD", "Permission": "DISABLED" }] }));
    assert_eq!(updated.stderr["Code"], "ValidationException", "{:?}", updated.stderr);
}
