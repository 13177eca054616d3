//! A notebook in direct mode, opened in a real browser: the session page frames it from its
//! own origin, and a cell run in JupyterLab is recorded.

use crate::support::browser::{Browser, artifacts};
use crate::support::notebooks::direct_notebook_server;
use crate::support::server::eventually;
use crate::support::streaming::streaming_url;

/// In a real browser: the session page frames the notebook from its own origin (another port),
/// JupyterLab draws there, and a reload of the page (the presigned URL spent) finds it again.
/// A cell run there, over the kernel's channels as JupyterLab opens them, prints its output and
/// is recorded before it ran; the stack does not enable `DEBUGGER`, and JupyterLab does not
/// offer its debugger.
#[test]
fn a_direct_notebook_opens_in_the_session_page_from_its_own_origin_and_runs_a_recorded_cell() {
    let server = direct_notebook_server(&[]);
    let url = streaming_url(&server, "nadia");
    let artifacts = artifacts();
    let browser = Browser::run_with_env("notebook.mjs", &url, &[("DATASANDBOX_ARTIFACTS", &artifacts.to_string_lossy())]);
    let opened = browser.expect("opened", 300);
    let page = opened["page"].as_str().expect("page").to_owned();
    let frame = opened["frame"].as_str().expect("frame").to_owned();
    let origin = |u: &str| u.split('/').take(3).collect::<Vec<_>>().join("/");
    assert_ne!(origin(&page), origin(&frame), "the notebook is framed from the page's own origin");
    let reopened = browser.expect("reopened", 90);
    assert_eq!(reopened["frame"], opened["frame"], "{reopened}");

    // The script's waits after `reopened` add up to less than this (about 380 s at worst).
    let ran = browser.expect("ran", 420);
    assert_eq!(ran["output"], "42", "{ran}");
    assert_eq!(ran["debugger"], serde_json::json!({ "shown": true, "enabled": false }), "{ran}");
    assert_eq!(ran["channelsClosed"], 0, "the kernel's channels were closed under JupyterLab: {ran}");
    // Nor before the reload: every refusal of the proxy's is recorded.
    let refused = server.audit(&[("EventName", "KernelMessageRefused")]);
    assert!(refused.is_empty(), "the proxy refused a frame of JupyterLab's: {refused:#?}");
    let cell = ran["cell"].as_str().expect("cell");
    let asked = eventually(20, "the cell's ExecuteCode record", || {
        let asked: Vec<_> =
            server.audit(&[("EventName", "ExecuteCode")]).into_iter().filter(|r| r["requestParameters"]["Code"] == cell).collect();
        (!asked.is_empty()).then_some(asked)
    });
    // A run JupyterLab dropped never reached the proxy: each one recorded ran, and ran well.
    for asked in &asked {
        assert_eq!(asked["requestParameters"]["UserId"], "nadia", "{asked}");
        let message = asked["requestParameters"]["MessageId"].as_str().expect("a message id").to_owned();
        let result = eventually(20, "the cell's ExecuteCodeResult record", || {
            server.audit(&[("EventName", "ExecuteCodeResult")]).into_iter().find(|r| r["requestParameters"]["MessageId"] == message)
        });
        assert_eq!(result["requestParameters"]["Status"], "ok", "{result}");
        let place = |record: &serde_json::Value| record["sequenceNumber"].as_u64().expect("a sequence number");
        assert!(place(asked) < place(&result), "recorded before it ran: {asked} {result}");
    }
    assert!(server.audit(&[("EventName", "KernelMessageRefused")]).is_empty(), "the proxy refused a message of JupyterLab's");
}
