//! The pixel stream through the gateway, with a raw RFB client over the WebSocket: the
//! instance's display answers, and the stack's clipboard settings hold at the protocol —
//! text pasted with paste disabled never reaches the instance's X clipboard, text copied
//! inside with copy-out disabled never reaches the client, `MaximumLength` holds, the extended
//! clipboard is stopped, and each transfer is audited by size and direction.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http;
use crate::support::server::{Server, eventually};
use crate::support::streaming::{redeem, status};

pub(crate) struct Rfb {
    socket: tungstenite::WebSocket<TcpStream>,
    buffer: Vec<u8>,
    /// The desktop's width and height, once the handshake has told them.
    size: (u16, u16),
}

impl Rfb {
    /// Opens the session's stream, once the gateway takes it: a session is ACTIVE a moment
    /// before its display (and, when recorded, its recorder) is, and the stream waits for both.
    pub(crate) fn open(server: &Server, cookie: &str, session_id: &str) -> Rfb {
        let path = format!("/stream/{session_id}");
        let socket = crate::support::server::eventually(30, "the stream to open", || {
            http::websocket(&server.api, &path, &format!("ds_session={cookie}"), Some("binary"), Duration::from_millis(100)).ok()
        });
        Rfb { socket, buffer: Vec::new(), size: (0, 0) }
    }

    /// Opens the session's stream once, if the gateway takes it.
    pub(crate) fn try_open(server: &Server, cookie: &str, session_id: &str) -> Option<Rfb> {
        let path = format!("/stream/{session_id}");
        let socket =
            http::websocket(&server.api, &path, &format!("ds_session={cookie}"), Some("binary"), Duration::from_millis(100)).ok()?;
        Some(Rfb { socket, buffer: Vec::new(), size: (0, 0) })
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.socket.send(tungstenite::Message::Binary(bytes.to_vec().into())).expect("send");
    }

    /// Sends, if the stream is still open: whether it was.
    pub(crate) fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.socket.send(tungstenite::Message::Binary(bytes.to_vec().into())).is_ok()
    }

    /// Reads until `n` bytes are buffered or `within` passes.
    fn fill(&mut self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.buffer.len() < n {
            if Instant::now() > deadline {
                return false;
            }
            match self.socket.read() {
                Ok(tungstenite::Message::Binary(data)) => self.buffer.extend_from_slice(&data),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(err) => panic!("the stream ended: {err}"),
            }
        }
        true
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        assert!(self.fill(n, Duration::from_secs(15)), "the display sent fewer than {n} bytes");
        self.buffer.drain(..n).collect()
    }

    /// RFB 3.8 with no authentication (the only type the gateway offers); the desktop's size.
    pub(crate) fn handshake(&mut self) -> (u16, u16) {
        assert_eq!(self.take(12), b"RFB 003.008\n");
        self.send(b"RFB 003.008\n");
        let count = self.take(1)[0];
        assert_eq!(self.take(usize::from(count)), [1], "only None is offered to the client");
        self.send(&[1]);
        assert_eq!(self.take(4), [0, 0, 0, 0]);
        self.send(&[1]);
        let init = self.take(24);
        let name = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        self.take(name);
        self.size = (u16::from_be_bytes([init[0], init[1]]), u16::from_be_bytes([init[2], init[3]]));
        self.size
    }

    /// The whole display as it is now, raw: its pixels in the server's format (32 bits each,
    /// blue-green-red-pad), rectangle after rectangle. A bell or a cut text the display sends
    /// meanwhile is passed over; nothing else may be asked of the server meanwhile.
    pub(crate) fn frame(&mut self) -> Vec<u8> {
        let (width, height) = self.size;
        assert!(width > 0, "the handshake comes first");
        let mut encodings = vec![2, 0, 0, 1];
        encodings.extend_from_slice(&0i32.to_be_bytes());
        self.send(&encodings);
        let mut request = vec![3, 0, 0, 0, 0, 0];
        request.extend_from_slice(&width.to_be_bytes());
        request.extend_from_slice(&height.to_be_bytes());
        self.send(&request);
        // A framebuffer update: a padding byte, then how many rectangles follow.
        let update = loop {
            match self.take(1)[0] {
                0 => break self.take(3),
                2 => {}
                3 => {
                    let cut = self.take(7);
                    self.take(u32::from_be_bytes([cut[3], cut[4], cut[5], cut[6]]) as usize);
                }
                other => panic!("a framebuffer update was expected, got message type {other}"),
            }
        };
        let mut pixels = Vec::with_capacity(usize::from(width) * usize::from(height) * 4);
        for _ in 0..u16::from_be_bytes([update[1], update[2]]) {
            let rect = self.take(12);
            let (w, h) = (u16::from_be_bytes([rect[4], rect[5]]) as usize, u16::from_be_bytes([rect[6], rect[7]]) as usize);
            assert_eq!(&rect[8..12], &[0, 0, 0, 0], "raw encoding");
            pixels.extend(self.take(w * h * 4));
        }
        pixels
    }

    pub(crate) fn paste(&mut self, text: &str) {
        let mut message = vec![6, 0, 0, 0];
        message.extend_from_slice(&(text.len() as u32).to_be_bytes());
        message.extend_from_slice(text.as_bytes());
        self.send(&message);
    }

    /// The next `ServerCutText` within `within` (nothing else is asked of the server).
    fn copied(&mut self, within: Duration) -> Option<String> {
        if !self.fill(8, within) {
            return None;
        }
        let header = self.take(8);
        assert_eq!(header[0], 3, "only cut text was expected from the server, got {header:?}");
        let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        Some(String::from_utf8(self.take(length)).expect("latin-1 test text"))
    }
}

/// Pixels of the watermark's grey in one full raw frame of the session's display.
fn watermark_pixels(server: &Server, cookie: &str, session_id: &str) -> usize {
    let mut rfb = Rfb::open(server, cookie, session_id);
    rfb.handshake();
    rfb.frame().chunks(4).filter(|p| p[..3] == [0xa0, 0xa0, 0xa0]).count()
}

/// An extended-clipboard `provide` of `text`, as noVNC sends it.
fn extended_provide(text: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut data = ((text.len() + 1) as u32).to_be_bytes().to_vec();
    data.extend_from_slice(text.as_bytes());
    data.push(0);
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&data).expect("deflate");
    let mut body = (1u32 << 28 | 1).to_be_bytes().to_vec();
    body.extend(zlib.finish().expect("deflate"));
    let mut message = vec![6, 0, 0, 0];
    message.extend_from_slice(&(-(body.len() as i32)).to_be_bytes());
    message.extend(body);
    message
}

pub(crate) fn inside(server: &Server, instance: &str, script: &str) -> String {
    let out = server.cli(&["instances", "exec", instance, "--", "/bin/sh", "-c", &format!("export DISPLAY=:1; {script}")], &[]);
    out.stdout.as_str().map_or_else(|| out.stdout.to_string(), str::to_owned)
}

pub(crate) fn session(server: &Server, user: &str) -> (String, Value) {
    let cookie = redeem(server, user);
    let session = eventually(60, "the session to be ACTIVE", || {
        let s = status(server, &cookie);
        (s["State"] == "ACTIVE").then_some(s)
    });
    (cookie, session)
}

fn clipboard_records(server: &Server) -> Vec<Value> {
    let mut records = server.audit(&[("EventName", "ClipboardBlocked")]);
    records.extend(server.audit(&[("EventName", "ClipboardTransferred")]));
    records
}

#[test]
fn clipboard_settings_hold_on_the_wire_in_both_directions() {
    let server = crate::support::streaming::server(&["stream_view=DESKTOP"]);
    // The seed's stack: paste into the session enabled, copy out of it disabled.
    let (cookie, alice) = session(&server, "alice");
    let (id, instance) = (alice["SessionId"].as_str().expect("id"), alice["InstanceId"].as_str().expect("instance"));
    let mut rfb = Rfb::open(&server, &cookie, id);
    let (width, height) = rfb.handshake();
    assert_eq!((width, height), (1280, 800));
    // The default stack asks for a watermark: the user and the session, in the display's pixels.
    let grey = eventually(20, "the watermark in the display's pixels", || {
        let grey = watermark_pixels(&server, &cookie, id);
        (grey > 5000).then_some(grey)
    });
    eprintln!("watermark: {grey} pixels");

    rfb.paste("from-the-laptop");
    eventually(10, "the pasted text in the instance's clipboard", || {
        (inside(&server, instance, "xclip -selection clipboard -o").trim() == "from-the-laptop").then_some(())
    });
    inside(&server, instance, "printf secret-inside | xclip -selection clipboard -i >/dev/null 2>&1");
    assert_eq!(rfb.copied(Duration::from_secs(2)), None, "copy-out is disabled: nothing reaches the client");
    eventually(10, "both transfers on the record", || {
        let records = clipboard_records(&server);
        let passed = records.iter().any(|r| {
            r["eventName"] == "ClipboardTransferred"
                && r["requestParameters"]["Direction"] == "FROM_LOCAL_DEVICE"
                && r["requestParameters"]["Bytes"] == 15
        });
        let blocked = records.iter().any(|r| {
            r["eventName"] == "ClipboardBlocked"
                && r["requestParameters"]["Direction"] == "TO_LOCAL_DEVICE"
                && r["requestParameters"]["Bytes"] == 13
                && r["requestParameters"]["Reason"] == "DISABLED"
        });
        (passed && blocked).then_some(())
    });
    let trail = clipboard_records(&server).iter().map(Value::to_string).collect::<String>();
    assert!(!trail.contains("secret-inside") && !trail.contains("from-the-laptop"), "contents never reach the trail");

    // The opposite settings, with a MaximumLength of 8, for the next session.
    let settings = json!([
        { "Action": "CLIPBOARD_COPY_FROM_LOCAL_DEVICE", "Permission": "DISABLED" },
        { "Action": "CLIPBOARD_COPY_TO_LOCAL_DEVICE", "Permission": "ENABLED", "MaximumLength": 8 },
    ]);
    server.ok("streaming:UpdateStack", json!({ "Name": "datasandbox-stack", "UserSettings": settings, "Watermark": "DISABLED" }));
    let (cookie, bob) = session(&server, "bob");
    let (id, instance) = (bob["SessionId"].as_str().expect("id"), bob["InstanceId"].as_str().expect("instance"));
    let mut rfb = Rfb::open(&server, &cookie, id);
    rfb.handshake();
    assert!(!inside(&server, instance, "ps -eo args").contains("watermark"), "no watermark was asked for");
    assert_eq!(watermark_pixels(&server, &cookie, id), 0);
    inside(&server, instance, "printf short | xclip -selection clipboard -i >/dev/null 2>&1");
    assert_eq!(rfb.copied(Duration::from_secs(10)).as_deref(), Some("short"), "copy-out enabled: within the limit it arrives");
    inside(&server, instance, "printf far-too-long-for-eight | xclip -selection clipboard -i >/dev/null 2>&1");
    assert_eq!(rfb.copied(Duration::from_secs(2)), None, "over MaximumLength nothing arrives");
    rfb.paste("not-welcome");
    // The same paste in the extended clipboard's form (UTF-8 in a zlib stream): stopped too.
    rfb.send(&extended_provide("nicht willkommen ✗"));
    std::thread::sleep(Duration::from_millis(500));
    let clipboard = inside(&server, instance, "xclip -selection clipboard -o 2>/dev/null");
    assert!(!clipboard.contains("not-welcome"), "paste is disabled: {clipboard}");
    let reasons: Vec<String> = eventually(10, "bob's refusals on the record", || {
        let reasons: Vec<String> = clipboard_records(&server)
            .iter()
            .filter(|r| r["requestParameters"]["SessionId"] == id && r["eventName"] == "ClipboardBlocked")
            .filter_map(|r| r["requestParameters"]["Reason"].as_str().map(str::to_owned))
            .collect();
        (reasons.len() >= 3).then_some(reasons)
    });
    assert_eq!(reasons.iter().filter(|r| *r == "MAXIMUM_LENGTH").count(), 1, "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| *r == "DISABLED").count(), 2, "the classic and the extended paste: {reasons:?}");

    // The stream is the session's own: another session's cookie does not open it.
    let path = format!("/stream/{}", alice["SessionId"].as_str().expect("id"));
    let stolen = http::websocket(&server.api, &path, &format!("ds_session={cookie}"), Some("binary"), Duration::from_secs(5));
    assert!(stolen.is_err(), "bob's cookie opened alice's display");
}
