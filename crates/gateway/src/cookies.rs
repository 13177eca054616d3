//! The cookies of the pages: reading one from a request, and setting or clearing a sign-in's.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The value of the cookie `wanted`, if the request carries it.
pub(crate) fn cookie_named(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == wanted).then(|| value.to_owned())
    })
}

/// A page's cookie for a sign-in's token: HttpOnly, SameSite Strict, scoped to `path`.
pub(crate) fn token_cookie(name: &str, path: &str, token: &str) -> String {
    format!("{name}={token}; Path={path}; HttpOnly; SameSite=Strict")
}

/// `response` with `cookie` set.
pub(crate) fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// A page's sign-out: its cookie cleared.
pub(crate) fn signed_out(name: &str, path: &str) -> Response {
    with_cookie(axum::Json(json!({})).into_response(), &format!("{}; Max-Age=0", token_cookie(name, path, "")))
}
