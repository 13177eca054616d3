//! The client side of `call`, `storage cp` and `audit lookup`: HTTP/1 over the control socket
//! (the local operator) or over TCP with a bearer token.

use std::path::Path;
use std::process::ExitCode;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::cli::EndpointArgs;

/// A failed call: the error document and the exit code it maps to.
pub struct CallError {
    pub document: Value,
    pub exit: u8,
}

impl CallError {
    fn connection(message: String) -> CallError {
        CallError { document: json!({ "Code": "ConnectionError", "Message": message, "RequestId": null }), exit: 2 }
    }

    pub fn local(code: &str, message: String) -> CallError {
        CallError { document: json!({ "Code": code, "Message": message, "RequestId": null }), exit: 1 }
    }
}

pub async fn call(data_dir: &Path, endpoint: &EndpointArgs, action: &str, input: Bytes) -> Result<Value, CallError> {
    let (service, name) = action
        .split_once(':')
        .ok_or_else(|| CallError::local("ValidationException", format!("`{action}` is not of the form service:Action")))?;
    let (status, body) = match &endpoint.endpoint {
        None => {
            let socket = data_dir.join("control.sock");
            let stream = tokio::net::UnixStream::connect(&socket).await.map_err(|e| {
                CallError::connection(format!(
                    "cannot reach the control socket `{}`: {e}; is `datasandbox up` running with this --data-dir?",
                    socket.display()
                ))
            })?;
            send(stream, "localhost", &format!("/api/{service}/{name}"), None, input).await?
        }
        Some(url) => {
            let (tls, authority) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
                (Some(authority), _) => (true, authority),
                (None, Some(authority)) => (false, authority),
                _ => return Err(CallError::local("ValidationException", format!("endpoint `{url}` must start with https:// or http://"))),
            };
            let authority = authority.trim_end_matches('/');
            // Inside an instance (its credential is there) the endpoint is on the instance's own link.
            let inside_instance = endpoint.instance_link || Path::new("/run/datasandbox/credential").exists();
            if !tls && !inside_instance && !loopback(authority) {
                return Err(CallError::local(
                    "ValidationException",
                    format!("`{url}` would carry the token in the clear: use https:// (plain http:// is for loopback)"),
                ));
            }
            let stream =
                tokio::net::TcpStream::connect(authority).await.map_err(|e| CallError::connection(format!("cannot reach `{url}`: {e}")))?;
            let path = format!("/api/{service}/{name}");
            if tls {
                let stream = tls_to(stream, authority, endpoint.ca_cert.as_deref()).await?;
                send(stream, authority, &path, endpoint.token.as_deref(), input).await?
            } else {
                send(stream, authority, &path, endpoint.token.as_deref(), input).await?
            }
        }
    };
    let document: Value = serde_json::from_slice(&body)
        .map_err(|e| CallError::connection(format!("the server answered {status} with a body that is not JSON: {e}")))?;
    match status {
        200..=299 => Ok(document),
        400..=499 => Err(CallError { document, exit: 1 }),
        _ => Err(CallError { document, exit: 2 }),
    }
}

/// Whether `authority` (`host:port`) is this host's loopback.
fn loopback(authority: &str) -> bool {
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// TLS to `authority` (`host:port`), trusting the system's authorities and `ca_cert`.
async fn tls_to(
    stream: tokio::net::TcpStream,
    authority: &str,
    ca_cert: Option<&Path>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, CallError> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_cert {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| CallError::local("ValidationException", format!("cannot read the CA certificate `{}`: {e}", path.display())))?;
        roots.add_parsable_certificates(certs);
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| CallError::connection(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| CallError::local("ValidationException", format!("`{host}` is not a host name or address")))?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| CallError::connection(format!("TLS with `{authority}` failed: {e} (a local authority's certificate: pass --ca-cert)")))
}

async fn send<S>(stream: S, host: &str, path: &str, token: Option<&str>, body: Bytes) -> Result<(u16, Bytes), CallError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| CallError::connection(format!("HTTP handshake failed: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::post(path)
        .header("host", host)
        .header("content-type", "application/json")
        .header("user-agent", concat!("datasandbox-cli/", env!("CARGO_PKG_VERSION")));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request =
        request.body(Full::new(body)).map_err(|e| CallError::local("ValidationException", format!("cannot build the request: {e}")))?;
    let response = sender.send_request(request).await.map_err(|e| CallError::connection(format!("the request failed: {e}")))?;
    let status = response.status().as_u16();
    let body =
        response.into_body().collect().await.map_err(|e| CallError::connection(format!("reading the response failed: {e}")))?.to_bytes();
    Ok((status, body))
}

pub fn finish(result: Result<Value, CallError>) -> ExitCode {
    match result {
        Ok(value) => {
            println!("{}", for_terminal(&serde_json::to_string_pretty(&value).expect("JSON values serialize")));
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}

pub fn fail(err: CallError) -> ExitCode {
    eprintln!("{}", for_terminal(&err.document.to_string()));
    ExitCode::from(err.exit)
}

/// Whether a terminal acts on a character rather than showing it: a control character (C0,
/// DEL, C1) or a bidirectional override or isolate, which reorders the text after it.
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control() || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// JSON as a terminal can show it without acting on it, and still the same JSON: serde escapes
/// only the controls below U+0020, and a user's strings in an answer (a record's code, a file's
/// name) can hold DEL, a C1 control (U+009B starts an escape sequence on terminals that take
/// them) or a bidirectional override that reorders what the operator reads. Each such
/// character, which JSON holds only inside a string, is written as its `\u` escape.
pub fn for_terminal(json: &str) -> String {
    use std::fmt::Write as _;
    let acts = acts_on_terminal;
    if !json.chars().any(|c| acts(c) && c != '\n') {
        return json.to_owned();
    }
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if acts(c) && c != '\n' {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

pub async fn call_command(data_dir: &Path, endpoint: &EndpointArgs, action: &str, input: &str) -> ExitCode {
    // The server judges the JSON (and audits a malformed body); the client passes it through.
    finish(call(data_dir, endpoint, action, Bytes::from(input.to_owned())).await)
}

/// A stack by name, or the only one there is, with its fleet.
async fn stack_and_fleet(data_dir: &Path, stack: Option<&str>) -> Result<(String, String), CallError> {
    let local = EndpointArgs::LOCAL;
    let input = match stack {
        Some(name) => json!({ "Names": [name] }),
        None => json!({}),
    };
    let stacks = call(data_dir, &local, "streaming:DescribeStacks", Bytes::from(input.to_string())).await?;
    let stacks = stacks["Stacks"].as_array().cloned().unwrap_or_default();
    let [stack] = stacks.as_slice() else {
        let names: Vec<&str> = stacks.iter().filter_map(|s| s["Name"].as_str()).collect();
        return Err(CallError::local("ValidationException", format!("name a stack with --stack (there are: {})", names.join(", "))));
    };
    let name = stack["Name"].as_str().unwrap_or_default().to_owned();
    let fleet = stack["FleetName"].as_str().ok_or_else(|| {
        CallError::local("ValidationException", format!("stack `{name}` has no fleet; run streaming:AssociateFleet first"))
    })?;
    Ok((name, fleet.to_owned()))
}

/// `datasandbox streaming-url`: the URL of `streaming:CreateStreamingURL`.
pub async fn streaming_url(
    data_dir: &Path,
    user: &str,
    stack: Option<&str>,
    validity: u32,
    application: Option<&str>,
) -> Result<String, CallError> {
    let (stack, fleet) = stack_and_fleet(data_dir, stack).await?;
    let mut input = json!({ "StackName": stack, "FleetName": fleet, "UserId": user, "Validity": validity });
    if let Some(application) = application {
        input["ApplicationId"] = json!(application);
    }
    let local = EndpointArgs::LOCAL;
    let out = call(data_dir, &local, "streaming:CreateStreamingURL", Bytes::from(input.to_string())).await?;
    Ok(out["StreamingURL"].as_str().unwrap_or_default().to_owned())
}

/// `datasandbox sessions`: every page of `streaming:DescribeSessions` for a stack.
pub async fn sessions(data_dir: &Path, stack: Option<&str>) -> Result<Value, CallError> {
    let (stack, fleet) = stack_and_fleet(data_dir, stack).await?;
    let local = EndpointArgs::LOCAL;
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut input = json!({ "StackName": stack, "FleetName": fleet, "Limit": 50 });
        if let Some(t) = &token {
            input["NextToken"] = json!(t);
        }
        let page = call(data_dir, &local, "streaming:DescribeSessions", Bytes::from(input.to_string())).await?;
        all.extend(page["Sessions"].as_array().cloned().unwrap_or_default());
        match page["NextToken"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => return Ok(json!({ "Sessions": all })),
        }
    }
}

fn parse_location(text: &str) -> Option<(&str, &str)> {
    text.strip_prefix("ds://")?.split_once('/')
}

pub async fn copy(data_dir: &Path, endpoint: &EndpointArgs, source: &str, destination: &str) -> ExitCode {
    let engine = base64::engine::general_purpose::STANDARD;
    match (parse_location(source), parse_location(destination)) {
        (None, Some((bucket, key))) => {
            let body = match tokio::fs::read(source).await {
                Ok(body) => body,
                Err(err) => return fail(CallError::local("ValidationException", format!("cannot read `{source}`: {err}"))),
            };
            let input = json!({ "Bucket": bucket, "Key": key, "Body": engine.encode(&body) });
            match call(data_dir, endpoint, "storage:PutObject", Bytes::from(input.to_string())).await {
                Ok(out) => {
                    eprintln!("upload: {source} to {destination} ({} bytes, ETag {})", body.len(), out["ETag"].as_str().unwrap_or(""));
                    ExitCode::SUCCESS
                }
                Err(err) => fail(err),
            }
        }
        (Some((bucket, key)), None) => {
            let input = json!({ "Bucket": bucket, "Key": key });
            let out = match call(data_dir, endpoint, "storage:GetObject", Bytes::from(input.to_string())).await {
                Ok(out) => out,
                Err(err) => return fail(err),
            };
            let body = match engine.decode(out["Body"].as_str().unwrap_or_default()) {
                Ok(body) => body,
                Err(err) => return fail(CallError::connection(format!("the server sent a Body that is not base64: {err}"))),
            };
            let written = if destination == "-" {
                use std::io::Write as _;
                std::io::stdout().lock().write_all(&body)
            } else {
                std::fs::write(destination, &body)
            };
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(CallError::local("ValidationException", format!("cannot write `{destination}`: {err}"))),
            }
        }
        _ => fail(CallError::local("ValidationException", "give exactly one side as ds://bucket/key and the other as a local path".into())),
    }
}
