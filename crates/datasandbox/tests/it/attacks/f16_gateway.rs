//! Finding 16 (the gateway's part): a connection that sends its request slowly, or nothing,
//! does not hold the server's resources for ever.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::server::Server;

/// Reads until the server closes the connection; how long that took, or `None` if it did not
/// within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some((started.elapsed(), answer)),
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            Err(_) => return Some((started.elapsed(), answer)),
        }
    }
}

#[test]
fn f16_a_slowloris_connection_is_closed() {
    let server = Server::start(&[]);
    // Half a request head, then silence.
    let mut slow = TcpStream::connect(&server.api).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: a").expect("write");
    // A connection that never says anything.
    let mut silent = TcpStream::connect(&server.api).expect("connect");
    // The notebook origin's listener likewise.
    let notebooks = notebook_address(&server);
    let mut slow_notebook = TcpStream::connect(&notebooks).expect("connect");
    slow_notebook.write_all(b"GET /notebook/nb-0/lab HTTP/1.1\r\nhost: localhost\r\nx-slow: a").expect("write");
    let (took, _) = closed_within(&mut slow, Duration::from_secs(30)).expect("the slow request head was still held after 30 s");
    assert!(took < Duration::from_secs(20), "{took:?}");
    closed_within(&mut silent, Duration::from_secs(10)).expect("the silent connection was still held");
    closed_within(&mut slow_notebook, Duration::from_secs(10)).expect("the notebook listener held the slow request head");
}

/// The notebook listener's address, from the server's log (`notebooks=…` when it started).
fn notebook_address(server: &Server) -> String {
    // The line may be written just after the ready line.
    let log = crate::support::server::eventually(10, "the log names the notebook listener", || {
        std::fs::read_to_string(server.data_dir().join("server.log")).ok().filter(|log| log.contains("notebooks="))
    });
    let at = log.find("notebooks=").expect("the log names the notebook listener");
    let rest = &log[at..];
    let start = rest.find("127.0.0.1:").expect("an address");
    rest[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect()
}

#[test]
fn f16_a_stalled_request_body_is_given_up() {
    let server = Server::start(&[]);
    let mut slow = TcpStream::connect(&server.api).expect("connect");
    slow.write_all(
        b"POST /api/storage/ListBuckets HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
    )
    .expect("write");
    let (took, answer) = closed_within(&mut slow, Duration::from_secs(60)).expect("the stalled body was still waited for after 60 s");
    assert!(took < Duration::from_secs(45), "{took:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
}
