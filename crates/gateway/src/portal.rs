//! The analyst portal (`/portal`): a local user signs in (name, password, TOTP code once
//! enrolled), sees the stacks they are associated with and launches one, which opens its
//! session page. The portal's cookie (`ds_portal`, HttpOnly, SameSite Strict, scoped to
//! `/portal`) holds the sign-in's bearer token; every call it makes is an action through the
//! pipeline as that user.
//!
//! The catalog is `DescribeUserStackAssociations`; the launch is `CreateUserStreamingURL` (a
//! URL for the caller only, of a stack they are associated with, tagged `USERPOOL`); "my
//! sessions" is `DescribeUserSessions`, with the operator commands run in each, and
//! `ExpireSession` lets the user end their own. Federated users see the stacks their roles
//! may stream: the policies decide `streaming:CreateUserStreamingURL` on a stack resource
//! whose user must be the principal. A session's `AuthenticationType` decides its home
//! folder's access mode everywhere (`sessions::access_mode` in the control plane).
//!
//! `/portal/events` keeps the list live without revealing anything: the control plane's
//! session-changes broadcast carries only the user of each session that changes (state,
//! connection, an operator's command), the stream passes a content-free `changed` to that
//! user's pages, and the page asks for its sessions again as the user.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use control::{ControlPlane, Credentials};
use tokio::sync::broadcast::error::RecvError;

use crate::cookies;
use crate::session::{call, json_reply as reply};
use crate::sign_in::page_sign_in;
use serde_json::json;

pub(crate) const COOKIE: &str = "ds_portal";
const PAGE: &str = include_str!("portal_page.html");

pub(crate) fn routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router
        .route("/portal", get(|| async { Html(PAGE) }))
        .route("/portal/signin", post(sign_in))
        .route("/portal/signout", post(sign_out))
        .route("/portal/catalog", get(catalog))
        .route("/portal/launch", post(launch))
        .route("/portal/sessions", get(sessions))
        .route("/portal/events", get(events))
        .route("/portal/end", post(end))
        .route("/portal/password", post(change_password))
        .route("/portal/providers", get(providers))
        .route("/portal/airlock/requests", get(airlock_requests))
        .route("/portal/airlock/link", post(airlock_link))
        .route("/portal/airlock/download/{token}", get(airlock_download))
}

/// My airlock requests: state, files, checks and, once decided, the reviewers' comments.
async fn airlock_requests(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    reply(call(&control, bearer(&headers), peer, &headers, "airlock:DescribeRequests", Bytes::from_static(b"{}")).await)
}

/// A download link for one released file (`{RequestId, Path}`), for the signed-in researcher.
async fn airlock_link(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    with_body(&control, peer, &headers, body, "airlock:CreateDownloadUrl").await
}

/// One use of a download link, as the signed-in user it was made for: the file as an
/// attachment that the browser saves and never renders.
async fn airlock_download(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::extract::Path(token): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let input = Bytes::from(json!({ "Token": token }).to_string());
    let answer = call(&control, bearer(&headers), peer, &headers, "airlock:DownloadFile", input).await;
    let Ok(out) = &answer.result else { return reply(answer) };
    let body =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, out["Body"].as_str().unwrap_or_default()).unwrap_or_default();
    let name: String = out["Path"]
        .as_str()
        .unwrap_or("file")
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect();
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    for (key, value) in [
        (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        (axum::http::header::CACHE_CONTROL, "no-store".to_owned()),
        (axum::http::header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_owned()),
    ] {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            headers.insert(key, value);
        }
    }
    response
}

fn portal_token(headers: &HeaderMap) -> Option<String> {
    cookies::cookie_named(headers, COOKIE)
}

pub(crate) fn cookie_for(token: &str) -> String {
    cookies::token_cookie(COOKIE, "/portal", token)
}

async fn sign_in(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let signed = match page_sign_in(&control, peer, &headers, body).await {
        Ok(signed) => signed,
        Err(refused) => return refused,
    };
    let page = axum::Json(json!({ "UserId": signed["UserId"], "MfaAuthenticated": signed["MfaAuthenticated"] })).into_response();
    cookies::with_cookie(page, &cookie_for(signed["Token"].as_str().unwrap_or_default()))
}

async fn sign_out(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    crate::sign_in::page_sign_out(&control, peer, &headers, (COOKIE, "/portal")).await
}

/// The page's request body (up to 4 KiB) as the input of `action`, as the signed-in user.
async fn with_body(control: &ControlPlane, peer: SocketAddr, headers: &HeaderMap, body: Body, action: &str) -> Response {
    let bytes = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    reply(call(control, bearer(headers), peer, headers, action, bytes).await)
}

fn bearer(headers: &HeaderMap) -> Credentials {
    portal_token(headers).map_or(Credentials::Anonymous, Credentials::Bearer)
}

/// Which federated sign-ins the page may offer.
async fn providers(State(control): State<ControlPlane>) -> Response {
    let (saml, oidc) = control.federation_providers();
    axum::Json(json!({ "Saml": saml, "Oidc": oidc })).into_response()
}

/// The caller and the stacks they may launch.
async fn catalog(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    let me = call(&control, bearer(&headers), peer, &headers, "identity:GetCallerIdentity", Bytes::from_static(b"{}")).await;
    let Ok(identity) = &me.result else { return reply(me) };
    let stacks = call(
        &control,
        bearer(&headers),
        peer,
        &headers,
        "streaming:DescribeUserStackAssociations",
        Bytes::from(json!({ "UserName": identity["UserName"], "AuthenticationType": "USERPOOL" }).to_string()),
    )
    .await;
    match stacks.result {
        Ok(found) => {
            // A local user's principal id is `local:<user>` (`model::home`): only they have a
            // password here to change.
            let local = identity["PrincipalId"].as_str().is_some_and(|id| id.starts_with("local:"));
            axum::Json(json!({ "UserName": identity["UserName"], "LocalUser": local, "Stacks": found["UserStackAssociations"] }))
                .into_response()
        }
        Err(_) => reply(stacks),
    }
}

/// A streaming URL of the chosen stack for the signed-in user; the page opens it.
async fn launch(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    with_body(&control, peer, &headers, body, "streaming:CreateUserStreamingURL").await
}

/// My sessions: state, end reason and what operators ran in each.
async fn sessions(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    reply(call(&control, bearer(&headers), peer, &headers, "streaming:DescribeUserSessions", Bytes::from_static(b"{}")).await)
}

/// How often a portal's change stream asks whether its sign-in still holds.
const SIGN_IN_CHECKED_EVERY: Duration = Duration::from_secs(30);

/// My sessions, live (Server-Sent Events): a `changed` message each time one of the user's
/// sessions changes state or connection, or an operator runs a command in its workspace. The
/// message carries nothing; the page asks for its sessions again, as the user. The stream
/// ends when the sign-in does, or when the server stops.
async fn events(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::Extension(stopping): axum::Extension<crate::listen::Stopping>,
    headers: HeaderMap,
) -> Response {
    let me = call(&control, bearer(&headers), peer, &headers, "identity:GetCallerIdentity", Bytes::from_static(b"{}")).await;
    let Ok(identity) = &me.result else { return reply(me) };
    // The whole identity (mode, provider, id): another `bob` hears nothing of this one's.
    let user = identity["PrincipalId"].as_str().unwrap_or_default().to_owned();
    let left = identity["Expiration"].as_str().and_then(control::rfc3339_to_millis).map(|until| until - control::now_millis());
    // A credential without an end (none the portal hands out) is heard for a working day.
    let lasts = left.map_or(Duration::from_secs(12 * 3600), |ms| Duration::from_millis(u64::try_from(ms).unwrap_or_default()));
    let token = portal_token(&headers).unwrap_or_default();
    let changes = control.session_changes();
    let (heard, told) = (control.clone(), token.clone());
    let stream = futures::stream::unfold(changes, move |mut changes| {
        let (user, control, token) = (user.clone(), heard.clone(), told.clone());
        async move {
            loop {
                let change = match changes.recv().await {
                    Ok(changed) if changed == user || changed == control::EVERYONE_CHANGED => true,
                    Ok(_) => false,
                    // Fell behind: something may have been missed, so ask again.
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return None,
                };
                // A change of the user's may be their deletion: nothing more is told once the
                // sign-in has ended.
                if change {
                    return control.sign_in_holds(&token).await.then(|| (Ok::<_, Infallible>(Event::default().data("changed")), changes));
                }
            }
        }
    });
    // It ends with the sign-in (its expiry; a sign-out or the user's deletion, looked for every
    // half minute), or when the server stops (which waits for open responses).
    let until = tokio::time::Instant::now() + lasts;
    let ended = async move {
        loop {
            let next = until.min(tokio::time::Instant::now() + SIGN_IN_CHECKED_EVERY);
            tokio::time::sleep_until(next).await;
            if next == until || !control.sign_in_holds(&token).await {
                return;
            }
        }
    };
    let end = async move {
        tokio::select! {
            () = ended => {}
            () = stopping.wait() => {}
        }
    };
    let stream = futures::StreamExt::take_until(stream, Box::pin(end));
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// Ends one of the user's own sessions (`streaming:ExpireSession`, `USER_ENDED`).
async fn end(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: Body) -> Response {
    with_body(&control, peer, &headers, body, "streaming:ExpireSession").await
}

/// A local user's new password (`identity:ChangePassword`, the old one and a code again, and
/// whether their sessions end too); every sign-in of theirs ends with it, this page's too.
async fn change_password(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    with_body(&control, peer, &headers, body, "identity:ChangePassword").await
}
