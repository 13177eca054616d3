//! Federated sign-in's endpoints.
//!
//! SAML: `/saml/metadata` (for the IdP's administrator), `/saml/login` (SP-initiated sign-in:
//! a redirect to the IdP with an AuthnRequest) and `/saml/acs`, the assertion consumer (POST
//! binding); a posted response is authentication (`Credentials::SamlResponse`) of
//! `identity:AssumeRoleWithSAML`.
//!
//! OpenID Connect: `/oidc/login` redirects to the provider with a state that the `ds_oidc`
//! cookie binds to this browser, and `/oidc/callback` is authentication
//! (`Credentials::OidcCallback`) of `identity:AssumeRoleWithWebIdentity`.
//!
//! Either way the new token becomes the portal's cookie (or the console's, with `to=console`),
//! and a relay state naming a stack launches it at once (as AppStream's relay state does);
//! otherwise the browser lands on the portal. An SP-initiated SAML sign-in is bound to the
//! browser that started it (`ds_saml`, the request id its response must answer), as OIDC's is
//! by `ds_oidc`; an IdP-initiated one is bound to nothing, so it lands on a page that names the
//! account and signs in to the portal only when its user confirms there, launching nothing by
//! itself. A sign-in started from another site's page carries no relay state.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use control::{ControlPlane, Credentials};
use serde_json::json;

use crate::cookies;
use crate::session::call;

/// A response is a few KiB; anything near this is not one.
const MAX_FORM_BYTES: usize = 512 * 1024;

pub(crate) fn routes(router: Router<ControlPlane>) -> Router<ControlPlane> {
    router
        .route("/saml/metadata", get(metadata))
        .route("/saml/login", get(login))
        .route("/saml/acs", post(acs))
        .route("/oidc/login", get(oidc_login))
        .route("/oidc/callback", get(oidc_callback))
        .route(CONFIRM_PATH, post(confirmed))
}

async fn metadata(State(control): State<ControlPlane>) -> Response {
    ([(header::CONTENT_TYPE, "application/samlmetadata+xml")], control.saml_metadata()).into_response()
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    stack: Option<String>,
    app: Option<String>,
    /// `console`: sign in to the operator console instead of the portal.
    to: Option<String>,
}

impl LoginQuery {
    fn relay_state(&self) -> String {
        let mut relay = form_urlencoded::Serializer::new(String::new());
        if let Some(stack) = &self.stack {
            relay.append_pair("stack", stack);
        }
        if let Some(app) = &self.app {
            relay.append_pair("app", app);
        }
        if let Some(to) = &self.to {
            relay.append_pair("to", to);
        }
        relay.finish()
    }
}

/// The relay state a sign-in started from `headers` carries: what the query asks, unless
/// another site's page started it. A cross-site link or form could otherwise sign a user
/// already signed in at their provider in and launch a stack of the attacker's choosing, with
/// no click of theirs (login CSRF). A typed or bookmarked URL (`none`) and this origin's pages
/// keep it; a browser too old to say where it came from is taken at its word.
fn relay_state_of(query: &LoginQuery, headers: &HeaderMap) -> String {
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin" | "none") | None => query.relay_state(),
        Some(_) => String::new(),
    }
}

/// SP-initiated sign-in; `?stack=…&app=…` (or `?to=console`) travel as the relay state.
async fn login(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    match control.saml_login_url(&relay_state_of(&query, &headers), &peer.ip().to_string()).await {
        Ok((url, request)) => redirect(&url, Some(&saml_cookie(&control, &request, 600))),
        Err(err) => problem(StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_REQUEST), err.code.as_str(), &err.message, None),
    }
}

/// Where a relay state sends the browser after sign-in.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Portal,
    Console,
    /// A stack (and application) to launch at once.
    Launch {
        stack: String,
        app: Option<String>,
    },
}

/// The target a relay state names: ours (`stack=…&app=…`, `to=console`) or AppStream's
/// (`https://…?stackname=…&accountId=…`).
fn relay_target(relay_state: &str) -> Target {
    let query = relay_state.split_once('?').map_or(relay_state, |(_, q)| q);
    let (mut stack, mut app, mut console) = (None, None, false);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.to_ascii_lowercase().as_str() {
            "stack" | "stackname" => stack = Some(value.into_owned()).filter(|s| !s.is_empty()),
            "app" | "applicationid" => app = Some(value.into_owned()).filter(|a| !a.is_empty()),
            "to" => console = value == "console",
            _ => {}
        }
    }
    match (console, stack) {
        (true, _) => Target::Console,
        (false, Some(stack)) => Target::Launch { stack, app },
        (false, None) => Target::Portal,
    }
}

const SAML_COOKIE: &str = "ds_saml";

/// The cookie that binds an SP-initiated sign-in to this browser: the request id its response
/// must answer. The response comes as the IdP's cross-site form post, which carries no
/// SameSite=Lax or Strict cookie: over HTTPS it is `SameSite=None; Secure`; over plain HTTP
/// (where `None` needs `Secure`) it has no SameSite attribute, which Chromium treats as Lax but
/// still sends on a top-level POST within two minutes of setting it.
fn saml_cookie(control: &ControlPlane, request: &str, max_age: u32) -> String {
    let https = control.spec().public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let site = if https { "; SameSite=None; Secure" } else { "" };
    format!("{SAML_COOKIE}={request}; Path=/saml/acs; HttpOnly; Max-Age={max_age}{site}")
}

async fn acs(State(control): State<ControlPlane>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: Body) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return problem(StatusCode::PAYLOAD_TOO_LARGE, "InvalidSAMLResponse", "the posted form is too large to be a SAML response", None);
    };
    let (mut response, mut relay_state) = (None, String::new());
    for (key, value) in form_urlencoded::parse(&bytes) {
        match key.as_ref() {
            "SAMLResponse" => response = Some(value.into_owned()),
            "RelayState" => relay_state = value.into_owned(),
            _ => {}
        }
    }
    let credentials = match response {
        Some(response) => Credentials::SamlResponse {
            response,
            source_ip: peer.ip().to_string(),
            browser_request: cookies::cookie_named(&headers, SAML_COOKIE),
        },
        // Still a call, so that the refusal is audited like any other.
        None => Credentials::Anonymous,
    };
    let signed = call(&control, credentials, peer, &headers, "identity:AssumeRoleWithSAML", Bytes::from_static(b"{}")).await;
    let mut reply = signed_in(&control, signed, &relay_state, peer, &headers).await;
    // The request id has done its work, whatever the outcome.
    if let Ok(value) = HeaderValue::from_str(&saml_cookie(&control, "", 0)) {
        reply.headers_mut().append(header::SET_COOKIE, value);
    }
    reply
}

const OIDC_COOKIE: &str = "ds_oidc";

/// OIDC sign-in: to the provider, with the state bound to this browser for ten minutes.
async fn oidc_login(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    match control.oidc_login_url(&relay_state_of(&query, &headers), &peer.ip().to_string()).await {
        Ok((url, state)) => redirect(&url, Some(&format!("{OIDC_COOKIE}={state}; Path=/oidc; HttpOnly; SameSite=Lax; Max-Age=600"))),
        Err(err) => problem(StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_REQUEST), err.code.as_str(), &err.message, None),
    }
}

#[derive(serde::Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn oidc_callback(
    State(control): State<ControlPlane>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let error = query.error.map(|e| match query.error_description {
        Some(description) => format!("{e}: {description}"),
        None => e,
    });
    let callback = control::OidcCallback {
        code: query.code,
        state: query.state.unwrap_or_default(),
        error,
        browser_state: cookies::cookie_named(&headers, OIDC_COOKIE),
    };
    let signed = call(
        &control,
        Credentials::OidcCallback(callback),
        peer,
        &headers,
        "identity:AssumeRoleWithWebIdentity",
        Bytes::from_static(b"{}"),
    )
    .await;
    let relay_state = signed.result.as_ref().ok().and_then(|t| t["RelayState"].as_str()).unwrap_or_default().to_owned();
    let mut reply = signed_in(&control, signed, &relay_state, peer, &headers).await;
    // The state has done its work, whatever the outcome.
    reply.headers_mut().append(header::SET_COOKIE, HeaderValue::from_static("ds_oidc=; Path=/oidc; HttpOnly; SameSite=Lax; Max-Age=0"));
    reply
}

/// After a federated sign-in: the token in the portal's (or console's) cookie, then the relay
/// state's stack launched, or the portal.
async fn signed_in(
    control: &ControlPlane,
    signed: control::Response,
    relay_state: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Response {
    let token = match &signed.result {
        Ok(issued) => issued["Token"].as_str().unwrap_or_default().to_owned(),
        Err(err) => {
            let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::UNAUTHORIZED);
            return problem(status, err.code.as_str(), &err.message, Some(&signed.request_id));
        }
    };
    // An IdP-initiated response answers nothing this browser asked for: anyone holding one can
    // post it from any page (login CSRF), which would sign the browser in as them, in place of
    // whoever was signed in. Its user confirms first, on a page that names the account.
    if let Some(issued) = signed.result.as_ref().ok().filter(|issued| issued["IdpInitiated"] == true) {
        return confirm_page(&token, issued["UserId"].as_str().unwrap_or_default(), issued["Issuer"].as_str().unwrap_or_default());
    }
    let cookie = crate::portal::cookie_for(&token);
    let (stack, app) = match relay_target(relay_state) {
        Target::Portal => return redirect("/portal", Some(&cookie)),
        // Whether the token may use the console is checked by each of the console's calls.
        Target::Console => return redirect("/console", Some(&crate::console::cookie_for(&token))),
        Target::Launch { stack, app } => (stack, app),
    };
    let launch = json!({ "StackName": stack, "ApplicationId": app });
    let launched =
        call(control, Credentials::Bearer(token), peer, headers, "streaming:CreateUserStreamingURL", Bytes::from(launch.to_string())).await;
    match launched.result {
        Ok(url) => redirect(url["StreamingURL"].as_str().unwrap_or("/portal"), Some(&cookie)),
        // Signed in, but this stack cannot be launched: the portal shows what can.
        Err(err) => {
            tracing::info!(code = err.code.as_str(), message = %err.message, "the relay state's stack could not be launched");
            redirect(
                &format!("/portal?error={}", form_urlencoded::byte_serialize(err.message.as_bytes()).collect::<String>()),
                Some(&cookie),
            )
        }
    }
}

/// Where the confirmation of an IdP-initiated sign-in is posted: under `/portal/`, so that
/// only a page of this origin may post it (`origin::guard`), never another site's form.
const CONFIRM_PATH: &str = "/portal/federated";

/// How long the page's button stays disabled once the page is shown, has the focus and the
/// pointer, and no input came: again after each time it loses one of them. Double-clickjacking:
/// another site's page asks for a double-click (or a burst of clicks or keys), brings this page
/// in front at the first, and the next lands on the button a fraction of a second later.
const ARMED_AFTER_MS: u32 = 1000;

/// The page's script: the button is enabled [`ARMED_AFTER_MS`] after the page is visible,
/// focused and under the mouse (or the mouse never left, or a key was pressed since) with no
/// input meanwhile, and disabled whenever it is not.
const ARMING: &str = r#"const button = document.getElementById("continue");
let timer;
let inside = true;
function arm() {
  clearTimeout(timer);
  button.disabled = true;
  if (document.visibilityState === "visible" && document.hasFocus() && inside) {
    timer = setTimeout(() => { button.disabled = false; }, ARMED_AFTER_MS);
  }
}
for (const input of ["pointerdown", "keydown", "wheel", "touchstart"]) {
  addEventListener(input, () => { if (button.disabled) arm(); }, true);
}
// A key pressed here is the user's, wherever the mouse went.
addEventListener("keydown", () => { if (!inside) { inside = true; arm(); } }, true);
// Only a mouse hovers: a touch or a pen enters and leaves with each tap.
const mouse = (handler) => (event) => { if (event.pointerType === "mouse") handler(); };
document.documentElement.addEventListener("pointerleave", mouse(() => { inside = false; arm(); }));
document.documentElement.addEventListener("pointerenter", mouse(() => { inside = true; arm(); }));
for (const change of ["focus", "blur", "pageshow"]) addEventListener(change, arm);
document.addEventListener("visibilitychange", arm);
arm();"#;

/// The page an IdP-initiated sign-in lands on: the account it is for, and a button that posts
/// its token back from this origin. Not to be framed (a click on it is consent), kept or
/// cached; its button answers only a click made a while after the page was in front, and
/// after any other input.
fn confirm_page(token: &str, user: &str, issuer: &str) -> Response {
    let mut nonce = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let nonce = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, nonce);
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Continue as {user}?</title></head><body>\
         <h1>Continue as <span id=\"user\">{user}</span>?</h1>\
         <p>Your identity provider (<code>{issuer}</code>) signed you in as <b>{user}</b>. If you did not just choose this \
         account there, close this page: another site may be signing your browser in as someone else.</p>\
         <form method=\"post\" action=\"{CONFIRM_PATH}\"><input type=\"hidden\" name=\"Token\" value=\"{token}\">\
         <button id=\"continue\" type=\"submit\" disabled>Continue to the portal as {user}</button></form>\
         <noscript><p>This page needs JavaScript to continue.</p></noscript>\
         <script nonce=\"{nonce}\">{script}</script></body></html>",
        user = escape(user),
        issuer = escape(issuer),
        token = escape(token),
        script = ARMING.replace("ARMED_AFTER_MS", &ARMED_AFTER_MS.to_string()),
    );
    let mut reply = Html(page).into_response();
    let policy = format!("default-src 'none'; script-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'");
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store".to_owned()),
        (header::X_FRAME_OPTIONS, "DENY".to_owned()),
        (header::CONTENT_SECURITY_POLICY, policy),
        // Not `no-referrer`: the form's post would then carry `Origin: null`, which the
        // origin guard refuses.
        (header::REFERRER_POLICY, "same-origin".to_owned()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            reply.headers_mut().insert(name, value);
        }
    }
    reply
}

/// The user's confirmation of an IdP-initiated sign-in: its token becomes the portal's cookie.
async fn confirmed(State(control): State<ControlPlane>, body: Body) -> Response {
    let token = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) => form_urlencoded::parse(&bytes).find(|(key, _)| key == "Token").map(|(_, value)| value.into_owned()),
        Err(_) => None,
    };
    match token {
        Some(token) if control.sign_in_holds(&token).await => redirect("/portal", Some(&crate::portal::cookie_for(&token))),
        _ => problem(StatusCode::UNAUTHORIZED, "NotAuthorizedException", "this sign-in has ended or was never made; sign in again", None),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn redirect(location: &str, cookie: Option<&str>) -> Response {
    let mut reply = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        reply.headers_mut().insert(header::LOCATION, value);
    }
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        reply.headers_mut().insert(header::SET_COOKIE, value);
    }
    reply
}

/// A refusal a person reads in their browser: the reason's code and what to do.
fn problem(status: StatusCode, code: &str, message: &str, request_id: Option<&str>) -> Response {
    let request = request_id.map(|id| format!("<p>Request id: <code>{}</code></p>", escape(id))).unwrap_or_default();
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign-in refused</title></head><body>\
         <h1>Sign-in refused</h1><p><code id=\"code\">{}</code></p><p id=\"message\">{}</p>{request}\
         <p><a href=\"/portal\">Sign in again</a></p></body></html>",
        escape(code),
        escape(message)
    );
    (status, Html(page)).into_response()
}

#[cfg(test)]
mod tests {
    use super::{Target, relay_target};

    #[test]
    fn relay_state_names_a_stack_in_our_form_or_appstreams() {
        assert_eq!(relay_target("stack=analysis&app=notebook"), Target::Launch { stack: "analysis".into(), app: Some("notebook".into()) });
        assert_eq!(
            relay_target("https://appstream2.example/saml?stackname=analysis&accountId=000000000000"),
            Target::Launch { stack: "analysis".into(), app: None }
        );
        assert_eq!(relay_target(""), Target::Portal);
        assert_eq!(relay_target("stack="), Target::Portal);
        assert_eq!(relay_target("to=console"), Target::Console);
    }
}
