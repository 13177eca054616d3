//! The operator console (`/console`, `console_page.html`): fleets with their capacity, stacks
//! with their settings, sessions (expire, trace), notebooks, streaming URLs, audit search and
//! traces, trail validation and the usage reports. An operator signs in as a local user or
//! through SAML (`/saml/login?to=console`); the console's cookie (`ds_console`, HttpOnly,
//! SameSite Strict, scoped to `/console`) holds the sign-in's token, and every call is an
//! action through the pipeline with `Credentials::Console`, which refuses a token without the
//! `admin` role (`ConsoleAccessDenied`, audited with who was refused).

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use control::{ControlPlane, Credentials};
use serde_json::json;

use crate::cookies;
use crate::session::{call, json_reply as reply};
use crate::sign_in::page_sign_in;

pub(crate) const COOKIE: &str = "ds_console";
const PAGE: &str = include_str!("console_page.html");

pub(crate) fn routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router
        .route("/console", get(|| async { Html(PAGE) }))
        .route("/console/signin", post(sign_in))
        .route("/console/signout", post(sign_out))
        .route("/console/api/{service}/{action}", post(api))
        .route("/console/reports/{bucket}/{*key}", get(report))
}

fn console(headers: &HeaderMap) -> Credentials {
    cookies::cookie_named(headers, COOKIE).map_or(Credentials::Anonymous, Credentials::Console)
}

pub(crate) fn cookie_for(token: &str) -> String {
    cookies::token_cookie(COOKIE, "/console", token)
}

/// A local user's sign-in, kept only if the token may use the console.
async fn sign_in(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let token = match page_sign_in(&control, peer, &headers, body).await {
        Ok(signed) => signed["Token"].as_str().unwrap_or_default().to_owned(),
        Err(refused) => return refused,
    };
    let me =
        call(&control, Credentials::Console(token.clone()), peer, &headers, "identity:GetCallerIdentity", Bytes::from_static(b"{}")).await;
    let Ok(identity) = &me.result else { return reply(me) };
    cookies::with_cookie(axum::Json(json!({ "UserName": identity["UserName"] })).into_response(), &cookie_for(&token))
}

async fn sign_out(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    crate::sign_in::page_sign_out(&control, peer, &headers, (COOKIE, "/console")).await
}

/// Any action, as the signed-in operator.
async fn api(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((service, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, 1024 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(json!({ "Code": "ValidationException", "Message": "the body is over 1 MiB" })))
            .into_response();
    };
    reply(call(&control, console(&headers), peer, &headers, &format!("{service}:{action}"), bytes).await)
}

/// A usage report, downloaded as a file (`storage:GetObject` as the operator).
async fn report(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let input = json!({ "Bucket": bucket, "Key": key });
    let got = call(&control, console(&headers), peer, &headers, "storage:GetObject", Bytes::from(input.to_string())).await;
    let Ok(object) = &got.result else { return reply(got) };
    let Ok(body) = base64::engine::general_purpose::STANDARD.decode(object["Body"].as_str().unwrap_or_default()) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let name: String = key.rsplit('/').next().unwrap_or("report.csv").chars().filter(|c| c.is_ascii_graphic() && *c != '"').collect();
    let mut page = body.into_response();
    page.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        page.headers_mut().insert(header::CONTENT_DISPOSITION, value);
    }
    page
}
