//! A notebook in direct mode, opened in a real browser: the session page frames it from its
//! own origin.

use crate::support::browser::Browser;
use crate::support::notebooks::direct_notebook_server;
use crate::support::streaming::streaming_url;

/// In a real browser: the session page frames the notebook from its own origin (another port),
/// JupyterLab draws there, and a reload of the page (the presigned URL spent) finds it again.
#[test]
fn a_direct_notebook_opens_in_the_session_page_from_its_own_origin() {
    let server = direct_notebook_server(&[]);
    let url = streaming_url(&server, "nadia");
    let browser = Browser::run("notebook.mjs", &url);
    let opened = browser.expect("opened", 300);
    let page = opened["page"].as_str().expect("page").to_owned();
    let frame = opened["frame"].as_str().expect("frame").to_owned();
    let origin = |u: &str| u.split('/').take(3).collect::<Vec<_>>().join("/");
    assert_ne!(origin(&page), origin(&frame), "the notebook is framed from the page's own origin");
    let reopened = browser.expect("reopened", 90);
    assert_eq!(reopened["frame"], opened["frame"], "{reopened}");
}
