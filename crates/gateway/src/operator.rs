//! What only the operator asks of a running server, on the control socket, besides actions:
//! `POST /operator/backup`, which takes a backup while serving and answers with its progress
//! as it goes, one JSON object a line (`{"Progress": …}`), then `{"Backup": …}` or
//! `{"Error": …}`.

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use control::ControlPlane;
use control::backup::Keys;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::listen::PeerCredentials;

pub(crate) fn routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router.route("/operator/backup", post(backup))
}

async fn backup(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<PeerCredentials>, body: axum::body::Bytes) -> Response {
    let input: Value = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(err) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({ "Error": format!("the request is not JSON: {err}") }))).into_response();
        }
    };
    let Some(to) = input["To"].as_str().filter(|to| to.starts_with('/')).map(std::path::PathBuf::from) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({ "Error": "`To` must be an absolute path" }))).into_response();
    };
    let keys = match input["Passphrase"].as_str() {
        Some(passphrase) => Keys::Sealed(passphrase.to_owned()),
        None => Keys::LeftOut,
    };
    let (lines, received) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        let progress_lines = lines.clone();
        let mut progress = move |line: &str| {
            let _ = progress_lines.send(json!({ "Progress": line }));
        };
        let last = match control.backup(&to, keys, peer.uid, &mut progress).await {
            Ok(written) => json!({ "Backup": {
                "Directory": written.dir.display().to_string(),
                "Files": written.files,
                "Bytes": written.bytes,
                "Objects": written.objects,
                "Keys": written.keys,
                "Skipped": written.skipped,
            } }),
            Err(message) => json!({ "Error": message }),
        };
        let _ = lines.send(last);
    });
    let stream = tokio_stream_of(received).map(|line| Ok::<_, std::convert::Infallible>(format!("{line}\n")));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

fn tokio_stream_of(mut received: tokio::sync::mpsc::UnboundedReceiver<Value>) -> impl futures::Stream<Item = Value> {
    futures::stream::poll_fn(move |cx| received.poll_recv(cx))
}
