//! A minimal HTTP/1.1 client over a Unix or TCP stream, enough to drive the API from tests
//! and benchmarks without going through the CLI.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

pub struct Connection<S: Read + Write> {
    reader: BufReader<S>,
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub fn unix(socket: &Path) -> std::io::Result<Connection<UnixStream>> {
    Ok(Connection { reader: BufReader::new(UnixStream::connect(socket)?) })
}

pub fn tcp(address: &str) -> std::io::Result<Connection<std::net::TcpStream>> {
    Ok(Connection { reader: BufReader::new(std::net::TcpStream::connect(address)?) })
}

impl<S: Read + Write> Connection<S> {
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Reply> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        // A server may answer (and close) before it has read the whole body, as one refusing a
        // body over its limit does: its answer is still read.
        let written = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body)).and_then(|()| stream.flush());
        if let Err(err) = written
            && !matches!(err.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
        {
            return Err(err);
        }
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line `{status_line}`")))?;
        let mut length = 0usize;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("connection closed in headers"));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(Reply { status, headers, body })
    }

    /// The connection, for a reply that goes on after its head (a stream of events).
    pub fn into_reader(self) -> BufReader<S> {
        self.reader
    }

    pub fn call(&mut self, action: &str, input: &serde_json::Value, token: Option<&str>) -> std::io::Result<Reply> {
        let (service, name) = action.split_once(':').expect("service:Action");
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        self.request("POST", &format!("/api/{service}/{name}"), &headers, input.to_string().as_bytes())
    }
}

/// A WebSocket to the gateway, as a browser opens one: the given cookie (a whole `name=value`)
/// and, when asked, a subprotocol.
pub fn websocket(
    api: &str,
    path: &str,
    cookie: &str,
    protocol: Option<&str>,
    read_timeout: std::time::Duration,
) -> Result<tungstenite::WebSocket<std::net::TcpStream>, tungstenite::Error> {
    let stream = std::net::TcpStream::connect(api).expect("connect");
    stream.set_read_timeout(Some(read_timeout)).expect("timeout");
    let mut request = tungstenite::http::Request::builder()
        .uri(format!("ws://{api}{path}"))
        .header("host", api)
        .header("cookie", cookie)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", tungstenite::handshake::client::generate_key());
    if let Some(protocol) = protocol {
        request = request.header("sec-websocket-protocol", protocol);
    }
    tungstenite::client(request.body(()).expect("request"), stream).map(|(socket, _)| socket).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(err) => err,
        tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
    })
}
