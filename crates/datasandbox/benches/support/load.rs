//! A load generator as `wrk -t1 -cN` is one (the peer figures came from it): one
//! thread, N kept-alive connections, each sending its next request as soon as its answer is
//! read. One thread waiting on all the sockets costs the machine far less than a thread per
//! connection would, and the CPU it leaves is what the proxies measured beside each other share
//! with Jupyter on a two-core machine.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where the requests go.
#[derive(Clone)]
pub enum Target {
    Unix(PathBuf),
    Tcp(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<S: AsyncRead + AsyncWrite + Unpin> Stream for S {}

async fn connect(target: &Target) -> std::io::Result<Box<dyn Stream>> {
    Ok(match target {
        Target::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        Target::Tcp(address) => {
            let stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Box::new(stream)
        }
    })
}

/// `GET path` with `header` from `clients` connections until `deadline`: each request's time in
/// milliseconds, and how many connections it took (a server that closes each one costs one
/// per request). Every answer must be a 200.
pub fn statuses(target: &Target, clients: usize, path: &str, header: (&str, &str), deadline: Instant) -> (Vec<f64>, usize) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{}: {}\r\n\r\n", header.0, header.1).into_bytes();
    run(target, clients, move |_, _| request.clone(), (Instant::now(), deadline))
}

/// Requests from `clients` connections until the window's end, the `n`th of client `c` being
/// `request(c, n)` (a whole HTTP/1.1 request): the time of each sent within the window, in
/// milliseconds, and how many connections they took. Every answer must be a 200.
pub fn run(
    target: &Target,
    clients: usize,
    request: impl Fn(usize, usize) -> Vec<u8> + 'static,
    window: (Instant, Instant),
) -> (Vec<f64>, usize) {
    let request = Rc::new(request);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("a runtime");
    let tasks = tokio::task::LocalSet::new();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let request = Rc::clone(&request);
            tasks.spawn_local(client(target.clone(), move |n| request(c, n), window))
        })
        .collect();
    runtime.block_on(tasks.run_until(async {
        let (mut times, mut connections) = (Vec::new(), 0);
        for handle in handles {
            let (more, made) = handle.await.expect("client");
            times.extend(more);
            connections += made;
        }
        (times, connections)
    }))
}

async fn client(target: Target, request: impl Fn(usize) -> Vec<u8>, (from, until): (Instant, Instant)) -> (Vec<f64>, usize) {
    let (mut times, mut connections) = (Vec::new(), 0);
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut stream = None;
    let mut n = 0;
    loop {
        let started = Instant::now();
        if started >= until {
            return (times, connections);
        }
        let request = request(n);
        n += 1;
        let open = match stream.take() {
            Some(open) => open,
            None => {
                connections += 1;
                connect(&target).await.expect("connect")
            }
        };
        // A kept-alive connection the server closed meanwhile fails at once: once more, anew.
        let (open, close) = match exchange(open, &request, &mut buffer).await {
            Ok(answered) => answered,
            Err(_) => {
                connections += 1;
                exchange(connect(&target).await.expect("connect again"), &request, &mut buffer).await.expect("an answer")
            }
        };
        if started >= from {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        stream = (!close).then_some(open);
    }
}

/// One request and its answer, which must be a 200 with a `content-length` (anything else
/// ends the benchmark: it is not sent again): the stream, and whether the server closes it
/// after this answer. An error is the connection's.
async fn exchange(mut stream: Box<dyn Stream>, request: &[u8], buffer: &mut Vec<u8>) -> std::io::Result<(Box<dyn Stream>, bool)> {
    stream.write_all(request).await?;
    buffer.clear();
    loop {
        if buffer.capacity() == buffer.len() {
            buffer.reserve(buffer.len());
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(close) = answered(buffer) {
            return Ok((stream, close));
        }
    }
}

/// Whether `buffer` holds a whole answer, and if so whether the server closes the connection
/// after it.
fn answered(buffer: &[u8]) -> Option<bool> {
    let head = buffer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head_text = String::from_utf8_lossy(&buffer[..head]);
    let mut lines = head_text.split("\r\n");
    let status = lines.next().and_then(|line| line.split(' ').nth(1)).unwrap_or_default();
    assert_eq!(status, "200", "an answer that is not a 200: {}", String::from_utf8_lossy(buffer));
    let (mut length, mut close) = (None, false);
    for (name, value) in lines.filter_map(|line| line.split_once(':')) {
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.trim().eq_ignore_ascii_case("close");
        }
    }
    let length = length.unwrap_or_else(|| panic!("an answer without content-length: {head_text}"));
    (buffer.len() >= head + 4 + length).then_some(close)
}
