//! Finding 4: identity is (access mode, issuer, user id) everywhere. A local `bob` and a
//! `bob` that an application (or an identity provider) names are two people: they never share
//! a notebook, a home folder, a session list or an ARN.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::server::Server;
use crate::support::server::eventually;
use crate::support::streaming::{redeem, status};
use crate::support::users::{portal_session, portal_user};

fn notebook_server(overrides: &[&str]) -> Server {
    // Direct mode: the notebook URL goes to the user's browser (whose stack must then allow
    // downloads: the user's device is the notebook's screen).
    // Two users' notebooks are made here: volumes of the smallest size keep the test within the
    // free space a CI machine has (each volume's size is claimed against it, sparse or not).
    let mut all = vec![
        "stream_view=DIRECT",
        "stacks.datasandbox-stack.user_settings.FILE_DOWNLOAD=ENABLED",
        "notebooks.Data-Sandbox-Notebook.volume_size_gb=5",
    ];
    all.extend_from_slice(overrides);
    let server = Server::start(&all);
    for recipe in ["base", "notebook"] {
        let built = server.cli(&["image", "build", recipe], &[]);
        assert_eq!(built.exit, 0, "image {recipe}: {:?}", built.stderr);
    }
    server
}

/// The notebook a session was given: once the validator has answered (the session page has
/// its notebook URL), the name the URL was presigned for, from its record.
fn notebook_of(server: &Server, cookie: &str) -> String {
    eventually(180, "the notebook URL on the session page", || status(server, cookie)["NotebookUrl"].as_str().map(str::to_owned));
    let session = status(server, cookie)["SessionId"].as_str().expect("session").to_owned();
    let presigned = server.audit(&[("EventName", "CreatePresignedNotebookInstanceUrl")]);
    let record = presigned
        .iter()
        .find(|r| r["errorCode"].is_null() && r["requestParameters"]["StreamingSessionId"] == session.as_str())
        .expect("the presign of the session's notebook URL");
    record["requestParameters"]["NotebookInstanceName"].as_str().expect("a notebook name").to_owned()
}

#[test]
fn f04_a_local_bob_never_opens_the_notebook_of_an_applications_bob() {
    let server = notebook_server(&[]);
    // An application's `bob` (CreateStreamingURL, access mode custom) gets his notebook first.
    let custom_cookie = redeem(&server, "bob");
    let custom_notebook = notebook_of(&server, &custom_cookie);
    // Then the local user `bob`, from the portal (access mode local).
    let token = portal_user(&server, "bob");
    let local_cookie = portal_session(&server, &token);
    let local_notebook = notebook_of(&server, &local_cookie);
    assert_ne!(local_notebook, custom_notebook, "the local bob was handed the custom bob's notebook");
    // Each notebook belongs to one whole identity, and says so.
    let listed = server.ok("notebooks:ListNotebookInstances", json!({}));
    let owned: Vec<(Value, Value)> = listed["NotebookInstances"]
        .as_array()
        .expect("notebooks")
        .iter()
        .filter(|n| n["Owner"] == "bob")
        .map(|n| (n["NotebookInstanceName"].clone(), n["OwnerAccessMode"].clone()))
        .collect();
    assert_eq!(owned.len(), 2, "{owned:?}");
    assert!(
        owned.contains(&(json!(custom_notebook), json!("custom"))) && owned.contains(&(json!(local_notebook), json!("local"))),
        "{owned:?}"
    );
    // An operator's presign of the application's bob's notebook for the local bob's session is
    // refused too: the notebook's owner is checked, not only its name.
    let local_session = status(&server, &local_cookie)["SessionId"].as_str().expect("session").to_owned();
    let crossed = server.call(
        "notebooks:CreatePresignedNotebookInstanceUrl",
        &json!({ "NotebookInstanceName": custom_notebook, "StreamingSessionId": local_session }),
    );
    assert_eq!(crossed.stderr["Code"], "NotebookOwnedByAnotherUser", "{crossed:?}");
    // And their home folders and ARNs differ (AppStream's layout: the mode is a folder).
    let hash = hex::encode(Sha256::digest(b"bob"));
    for (mode, cookie) in [("custom", &custom_cookie), ("local", &local_cookie)] {
        let session = status(&server, cookie)["SessionId"].as_str().expect("session").to_owned();
        let records = server.audit(&[("EventName", "GetSessionStatus")]);
        let mine = records.iter().find(|r| r["userIdentity"]["sessionContext"]["sessionIssuer"]["principalId"] == session.as_str());
        let arn = mine.expect("a status record of the session")["userIdentity"]["arn"].as_str().expect("arn").to_owned();
        assert!(arn.ends_with(&format!(":user/{mode}/bob")), "{arn}");
        let listed = server.ok("storage:ListObjectsV2", json!({ "Bucket": "datasandbox-home", "Prefix": format!("user/{mode}/{hash}/") }));
        assert!(listed["KeyCount"].as_i64().is_some_and(|n| n > 0), "{mode} bob's session works in user/{mode}/: {listed}");
    }
}

#[test]
fn f04_a_saml_bob_never_opens_a_local_bobs_notebook() {
    let idp = tempfile::tempdir().expect("tempdir");
    crate::support::saml::identity_provider(idp.path(), &format!("http://127.0.0.1:{}", crate::support::saml::free_port()));
    let metadata = format!("idp_metadata={}", idp.path().join("idp.xml").display());
    let server = notebook_server(&[&metadata]);
    // The local user `bob` opens his notebook and keeps his work in it.
    let token = portal_user(&server, "bob");
    let local_notebook = notebook_of(&server, &portal_session(&server, &token));
    // The identity provider's `bob` (its NameID, which the IdP's users or admins choose).
    let sp = crate::support::saml::fetch_sp_metadata(&server, idp.path());
    let made = crate::support::saml::responses(idp.path(), &sp, &json!([{ "name": "bob", "user": "bob", "mfa": false }]));
    let saml_token = crate::support::saml::signed_in_idp_initiated(&server, made["bob"].as_str().expect("response"));
    let saml_cookie = portal_session(&server, &saml_token);
    let saml_notebook = notebook_of(&server, &saml_cookie);
    assert_ne!(saml_notebook, local_notebook, "the SAML bob was handed the local bob's notebook");
    // The SAML bob's notebook and session name his identity provider.
    let described = server.ok("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": saml_notebook }));
    assert_eq!(described["OwnerAccessMode"], "federated");
    let issuer = status(&server, &saml_cookie)["Issuer"].as_str().expect("the session's identity provider").to_owned();
    assert_eq!(described["OwnerIssuer"], issuer.as_str());
    // Neither sees the other's sessions from the portal.
    for token in [&token, &saml_token] {
        let mine = server.call_as(token, "streaming:DescribeUserSessions", &json!({}));
        assert_eq!(mine.stdout["Sessions"].as_array().map(Vec::len), Some(1), "{mine:?}");
    }
}
