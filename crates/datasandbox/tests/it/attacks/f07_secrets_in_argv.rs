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
    let (code, token) = sh(
        &server,
        &notebook,
        "cat /run/datasandbox/jupyter-token 2>/dev/null || for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null; done | sed -n 's/^JUPYTER_TOKEN=//p' | head -1",
    );
    assert_eq!(code, 0, "{token}");
    assert_eq!(token.trim().len(), 64, "the token: {token}");
    assert_eq!(holders(token.trim()), Vec::<String>::new(), "Jupyter's token is visible in /proc");
    server.ok("notebooks:StopNotebookInstance", json!({ "NotebookInstanceName": "tokens" }));
}
