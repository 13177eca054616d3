//! A local user's sign-in: the body's name, password and code taken out as credentials, so
//! that no record holds them, and the checks a page's sign-in must pass first.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use control::{ActionError, ControlPlane, Credentials, ErrorCode};
use serde_json::json;

use crate::session;

/// A local user's sign-in posted by a page (`identity:SignIn`): what it issued, or the refusal
/// as the page should get it.
pub(crate) async fn page_sign_in(
    control: &ControlPlane,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<serde_json::Value, Response> {
    // A form cannot send JSON's content type without the page asking first (CORS): a sign-in
    // posted by another site's form (login CSRF, `enctype=text/plain`) is refused here.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        let error =
            ActionError::new(415, ErrorCode::UnsupportedMediaTypeException, "a sign-in is a JSON body (Content-Type: application/json)");
        control.record_refused_request("SignInRefused", &error, json!({ "Reason": "not JSON" }), &peer.ip().to_string()).await;
        return Err(
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, axum::Json(json!({ "Code": error.code, "Message": error.message }))).into_response()
        );
    }
    // And it comes from this server's page: a browser always names the page's origin on a
    // POST, and `origin::guard` has refused any other than this one.
    if !headers.contains_key(header::ORIGIN) {
        let error =
            ActionError::new(403, ErrorCode::CrossOriginRequestRefused, "a sign-in is posted by this server's sign-in page (Origin)");
        control.record_refused_request("SignInRefused", &error, json!({ "Reason": "no Origin" }), &peer.ip().to_string()).await;
        return Err((StatusCode::FORBIDDEN, axum::Json(json!({ "Code": error.code, "Message": error.message }))).into_response());
    }
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let (credentials, input) = sign_in_credentials(&bytes, peer);
    let signed = session::call(control, credentials, peer, headers, "identity:SignIn", bytes::Bytes::from(input.to_string())).await;
    match signed.result {
        Ok(issued) => Ok(issued),
        Err(_) => Err(session::json_reply(signed)),
    }
}

/// A sign-in body (`UserName`, `Password`, `TotpCode`) as credentials, and the rest as input.
pub(crate) fn sign_in_credentials(body: &[u8], peer: SocketAddr) -> (Credentials, serde_json::Value) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct SignIn {
        user_name: String,
        password: String,
        totp_code: Option<String>,
        #[serde(flatten)]
        rest: serde_json::Map<String, serde_json::Value>,
    }
    match serde_json::from_slice::<SignIn>(body) {
        Ok(form) => (
            Credentials::LocalUser {
                user_name: form.user_name.chars().take(64).collect(),
                password: control::Secret(form.password),
                totp_code: form.totp_code.filter(|c| !c.trim().is_empty()).map(control::Secret),
                source_ip: peer.ip().to_string(),
            },
            serde_json::Value::Object(form.rest),
        ),
        Err(_) => (Credentials::Anonymous, json!({})),
    }
}

/// A page's sign-out: the token its cookie `name` (on `path`) holds ends (`identity:SignOut`),
/// then the cookie is cleared. A cookie cleared alone left its token valid until it expired,
/// for whoever had copied it.
pub(crate) async fn page_sign_out(control: &ControlPlane, peer: SocketAddr, headers: &HeaderMap, (name, path): (&str, &str)) -> Response {
    if let Some(token) = crate::cookies::cookie_named(headers, name) {
        let input = bytes::Bytes::from(json!({ "Token": token }).to_string());
        let _ = session::call(control, Credentials::Bearer(token), peer, headers, "identity:SignOut", input).await;
    }
    crate::cookies::signed_out(name, path)
}
