//! Servers with the notebook image built, and notebooks created and waited for, for the
//! notebook tests and the attack rows that attack a notebook.

use serde_json::{Value, json};

use crate::support::server::Server;

/// A server with the base and notebook images built.
pub(crate) fn server_with_notebook_image() -> Server {
    let server = Server::start(&[]);
    for recipe in ["base", "notebook"] {
        assert_eq!(server.cli(&["image", "build", recipe], &[]).exit, 0, "image {recipe}");
    }
    server
}

/// Creates the notebook `name` as the operator and waits until it is in service; returns its
/// instance.
pub(crate) fn create_notebook(server: &Server, name: &str) -> Value {
    server.ok("notebooks:CreateNotebookInstance", json!({ "NotebookInstanceName": name, "InstanceType": "stream.standard.small" }));
    notebook_in_service(server, name)
}

/// Waits until the notebook `name` is in service; returns its instance (as `DescribeInstances`
/// shows it).
pub(crate) fn notebook_in_service(server: &Server, name: &str) -> Value {
    crate::support::server::eventually(180, "the notebook in service", || {
        let described = server.ok("notebooks:DescribeNotebookInstance", json!({ "NotebookInstanceName": name }));
        assert_ne!(described["NotebookInstanceStatus"], "Failed", "{described}");
        (described["NotebookInstanceStatus"] == "InService").then_some(())
    });
    let instances = server.ok("streaming:DescribeInstances", json!({}));
    instances["Instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["ImageName"] == "datasandbox-notebook").cloned())
        .expect("the notebook's instance")
}

/// A server in direct mode with both images built (the notebook image's Python environment is cached
/// host-wide after its first build).
pub(crate) fn direct_notebook_server(overrides: &[&str]) -> Server {
    direct_notebook_server_in(tempfile::tempdir().expect("temp dir"), overrides)
}

/// The same, on a data directory the test prepared.
pub(crate) fn direct_notebook_server_in(dir: tempfile::TempDir, overrides: &[&str]) -> Server {
    // Direct mode: the notebook URL goes to the user's browser, the user's device, where
    // file transfer settings cannot hold: the stack enables both (the seed's disables downloads).
    let mut all = vec!["stream_view=DIRECT".to_owned(), "stacks.datasandbox-stack.user_settings.FILE_DOWNLOAD=ENABLED".to_owned()];
    all.extend(overrides.iter().map(|o| (*o).to_owned()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let server = Server::start_in(dir, &refs);
    for recipe in ["base", "notebook"] {
        let built = server.cli(&["image", "build", recipe], &[]);
        assert_eq!(built.exit, 0, "image {recipe}: {:?}", built.stderr);
    }
    server
}
