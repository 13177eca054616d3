//! Finding 7: the sandbox helper got its whole spec in argv — the instance's credential, its
//! session's variables — and Jupyter its token in its environment: `ps` showed them to every
//! host user.

use serde_json::json;

use crate::support::instances::{create, sh};

/// The host processes whose command line or environment contains `secret`.
fn holders(secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        if entry.file_name().to_str().is_none_or(|n| n.parse::<u32>().is_err()) {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let bytes = std::fs::read(entry.path().join(file)).unwrap_or_default();
            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                let cmdline = String::from_utf8_lossy(&std::fs::read(entry.path().join("cmdline")).unwrap_or_default()).replace('\0', " ");
                found.push(format!("{} ({file}): {}", entry.file_name().to_string_lossy(), &cmdline[..cmdline.len().min(120)]));
            }
        }
    }
    found
}

#[test]
fn f07_no_secret_is_on_a_host_processs_command_line_or_in_its_environment() {
    let server = crate::support::notebooks::server_with_notebook_image();
    // An instance's credential.
    let instance = create(&server, "mallory");
    let (code, credential) = sh(&server, &instance, "cat /run/datasandbox/credential");
    assert_eq!(code, 0, "{credential}");
    assert!(credential.starts_with("dsi_"), "{credential}");
    assert_eq!(holders(&credential), Vec::<String>::new(), "the instance credential is visible in /proc");
    // Also as the bytes a serialized spec would carry (`[100,115,105,95,…]`).
    let as_bytes = serde_json::to_string(credential.as_bytes()).expect("serializes");
    assert_eq!(holders(&as_bytes[1..as_bytes.len() - 1]), Vec::<String>::new(), "the instance credential is visible in /proc");

    // A notebook server's token.
    let notebook = crate::support::notebooks::create_notebook(&server, "tokens");
    // The user's code cannot read it (it is the server's group's)…
    let (code, out) = sh(&server, &notebook, "cat /run/datasandbox/jupyter-token");
    assert_ne!(code, 0, "the user's code read Jupyter's token: {out}");
    // …so the host reads it through the server's root, to look for it everywhere else.
    let server_pid = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.starts_with(b"/opt/jupyter/bin/python\0-I\0-m\0jupyterlab")
                && String::from_utf8_lossy(&cmdline).contains("/notebook/tokens/")
        })
        .expect("the notebook's Jupyter server");
    let token = std::fs::read_to_string(format!("/proc/{server_pid}/root/run/datasandbox/jupyter-token")).expect("the token");
    assert_eq!(token.trim().len(), 64, "the token: {token}");
    assert_eq!(holders(token.trim()), Vec::<String>::new(), "Jupyter's token is visible in /proc");
    server.ok("notebooks:StopNotebookInstance", json!({ "NotebookInstanceName": "tokens" }));
}
