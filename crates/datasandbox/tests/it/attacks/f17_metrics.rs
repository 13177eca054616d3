//! Finding 17 (part): the metrics (who is active, how much, how often) are the operator's.

use serde_json::json;

use crate::support::http;
use crate::support::server::Server;

#[test]
fn f17_metrics_are_not_served_to_strangers_on_the_public_listener() {
    let server = Server::start(&[]);
    server.ok("storage:ListBuckets", json!({}));
    let public = http::tcp(&server.api).expect("connect").request("GET", "/metrics", &[], b"").expect("metrics");
    assert_eq!(public.status, 404, "metrics on the public listener: {}", String::from_utf8_lossy(&public.body));
    // The operator reads them on the control socket.
    let operator = http::unix(&server.socket()).expect("connect").request("GET", "/metrics", &[], b"").expect("metrics");
    assert_eq!(operator.status, 200);
    assert!(String::from_utf8_lossy(&operator.body).contains("datasandbox_actions_total"));
}
