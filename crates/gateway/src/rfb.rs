//! RFB (RFC 6143) as the stream bridge sees it: each direction is parsed message by message,
//! so that the session's clipboard settings hold at the protocol level whatever the peers do.
//!
//! - `ClientCutText` (paste into the session) passes only when `CLIPBOARD_COPY_FROM_LOCAL_DEVICE`
//!   is enabled and the text is within its `MaximumLength`; `ServerCutText` (copy out of the
//!   session) likewise for `CLIPBOARD_COPY_TO_LOCAL_DEVICE`. A dropped text is skipped, never
//!   buffered, and reported by size and direction (never its content).
//! - The client's `SetEncodings` is rewritten to the encodings this parser can delimit (raw,
//!   CopyRect, ZRLE and a few pseudo-encodings), so every server message has a known length.
//! - The extended clipboard (UTF-8 text, negotiated by noVNC and TigerVNC) is filtered the same
//!   way, message by message, in `rfb/extended.rs`.
//! - The pixel format is fixed once the client asks for updates, and fence payloads never
//!   cross (see [`Shared`]).
//! - Anything the parser does not know ends the connection: a byte it cannot account for is
//!   a byte it cannot filter.
//!
//! Memory per direction is bounded: headers (at most 4 + 4 × 256 bytes, a `SetEncodings`) are
//! gathered, payloads stream through (or are skipped) in whatever pieces they arrive.

mod client;
mod cut_text;
mod extended;
mod framing;
mod policy;
mod server;
mod shared;

pub use client::ClientFilter;
pub use policy::{Clipboard, Event, Policy};
pub use server::ServerFilter;
pub use shared::Shared;

#[cfg(test)]
mod tests {
    use super::policy::RfbError;
    use super::*;

    const OPEN: Policy = Policy { paste: Clipboard(Some(10)), copy: Clipboard(Some(10)) };
    const CLOSED: Policy = Policy { paste: Clipboard(None), copy: Clipboard(None) };

    fn client_handshake() -> Vec<u8> {
        let mut bytes = b"RFB 003.008\n".to_vec();
        bytes.extend_from_slice(&[1, 1]); // None, shared
        bytes
    }

    fn cut(kind: u8, text: &[u8]) -> Vec<u8> {
        let mut bytes = vec![kind, 0, 0, 0];
        bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
        bytes.extend_from_slice(text);
        bytes
    }

    fn set_encodings(encodings: &[i32]) -> Vec<u8> {
        let mut bytes = vec![2, 0];
        bytes.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
        for e in encodings {
            bytes.extend_from_slice(&e.to_be_bytes());
        }
        bytes
    }

    /// Feeds the whole input at once and byte by byte: both must agree.
    fn run_client(policy: Policy, input: &[u8]) -> (Vec<u8>, Vec<Event>) {
        let whole = {
            let mut filter = ClientFilter::new(policy, Shared::default());
            let (mut out, mut events) = (Vec::new(), Vec::new());
            filter.feed(input, &mut out, &mut events).expect("valid stream");
            (out, events)
        };
        let mut filter = ClientFilter::new(policy, Shared::default());
        let (mut out, mut events) = (Vec::new(), Vec::new());
        for byte in input {
            filter.feed(std::slice::from_ref(byte), &mut out, &mut events).expect("valid stream");
        }
        assert_eq!((&out, &events), (&whole.0, &whole.1), "split input parsed differently");
        whole
    }

    fn run_server(policy: Policy, input: &[u8]) -> (Vec<u8>, Vec<Event>) {
        let whole = {
            let mut filter = ServerFilter::new(policy, Shared::default());
            let (mut out, mut events) = (Vec::new(), Vec::new());
            filter.feed(input, &mut out, &mut events).expect("valid stream");
            (out, events)
        };
        let mut filter = ServerFilter::new(policy, Shared::default());
        let (mut out, mut events) = (Vec::new(), Vec::new());
        for chunk in input.chunks(3) {
            filter.feed(chunk, &mut out, &mut events).expect("valid stream");
        }
        assert_eq!((&out, &events), (&whole.0, &whole.1), "split input parsed differently");
        whole
    }

    #[test]
    fn paste_passes_only_when_enabled_and_short_enough() {
        let mut stream = client_handshake();
        stream.extend(cut(6, b"hello"));
        stream.extend([4, 1, 0, 0, 0, 0, 0, 0x61]); // a key
        let (out, events) = run_client(OPEN, &stream);
        assert_eq!(out, stream, "allowed: everything passes");
        assert_eq!(events, [Event::ClipboardPassed { direction: "FROM_LOCAL_DEVICE", bytes: 5 }, Event::Input]);

        let (out, events) = run_client(CLOSED, &stream);
        let mut expected = client_handshake();
        expected.extend([4, 1, 0, 0, 0, 0, 0, 0x61]);
        assert_eq!(out, expected, "disabled: the text is gone, the key passes");
        assert_eq!(events[0], Event::ClipboardBlocked { direction: "FROM_LOCAL_DEVICE", bytes: 5, reason: "DISABLED" });

        let mut long = client_handshake();
        long.extend(cut(6, b"longer than ten"));
        let (out, events) = run_client(OPEN, &long);
        assert_eq!(out, client_handshake());
        assert_eq!(events, [Event::ClipboardBlocked { direction: "FROM_LOCAL_DEVICE", bytes: 15, reason: "MAXIMUM_LENGTH" }]);
    }

    #[test]
    fn the_extended_clipboard_is_negotiated_and_filtered_like_classic_text() {
        use extended::tests::{extended, provide};
        let mut stream = client_handshake();
        stream.extend(set_encodings(&[7, 16, extended::PSEUDO_ENCODING, 0, -239, 5, -314]));
        let short = provide(6, 1, "grüße");
        let long = provide(6, 1, "far more than ten characters");
        let huge_header = extended(6, 1 << 28 | 1, &[])[..4]
            .iter()
            .copied()
            .chain((-(extended::BUFFER_LIMIT as i32) - 1).to_be_bytes())
            .collect::<Vec<u8>>();
        stream.extend(&short);
        stream.extend(&long);
        stream.extend(&huge_header);
        stream.extend(vec![0; extended::BUFFER_LIMIT as usize + 1]);
        stream.extend(cut(6, b"after"));
        let (out, events) = run_client(OPEN, &stream);
        let mut expected = client_handshake();
        expected.extend(set_encodings(&[16, extended::PSEUDO_ENCODING, 0, -239]));
        expected.extend(&short);
        expected.extend(cut(6, b"after"));
        assert_eq!(out, expected, "the short UTF-8 text and the classic one pass; the long and the huge do not");
        assert_eq!(
            events,
            [
                Event::ClipboardPassed { direction: "FROM_LOCAL_DEVICE", bytes: 8 },
                Event::ClipboardBlocked { direction: "FROM_LOCAL_DEVICE", bytes: 29, reason: "MAXIMUM_LENGTH" },
                Event::ClipboardBlocked { direction: "FROM_LOCAL_DEVICE", bytes: extended::BUFFER_LIMIT + 1, reason: "MAXIMUM_LENGTH" },
                Event::ClipboardPassed { direction: "FROM_LOCAL_DEVICE", bytes: 5 },
            ]
        );
        let (out, events) = run_client(CLOSED, &stream);
        assert!(!out.windows(short.len()).any(|w| w == short), "paste disabled: the extended text is dropped too");
        assert!(matches!(events[0], Event::ClipboardBlocked { reason: "DISABLED", .. }), "{events:?}");
    }

    #[test]
    fn unknown_or_wrong_client_bytes_end_the_stream() {
        for (bad, error) in [
            (b"RFB 003.003\n".to_vec(), RfbError::Version("RFB 003.003".into())),
            (
                {
                    let mut b = b"RFB 003.008\n".to_vec();
                    b.push(2);
                    b
                },
                RfbError::Security(2),
            ),
            (
                {
                    let mut b = client_handshake();
                    b.push(99);
                    b
                },
                RfbError::UnknownMessage { direction: "client", kind: 99 },
            ),
            (
                {
                    let mut b = client_handshake();
                    b.extend([2, 0, 0xff, 0xff]);
                    b
                },
                RfbError::TooLarge("SetEncodings"),
            ),
        ] {
            let mut filter = ClientFilter::new(OPEN, Shared::default());
            assert_eq!(filter.feed(&bad, &mut Vec::new(), &mut Vec::new()), Err(error));
        }
    }

    fn server_handshake(name: &[u8]) -> Vec<u8> {
        let mut bytes = b"RFB 003.008\n".to_vec();
        bytes.extend_from_slice(&[2, 1, 2]); // None and VncAuth offered
        bytes.extend_from_slice(&[0, 0, 0, 0]); // security result: OK
        bytes.extend_from_slice(&[0, 4, 0, 3]); // 4 × 3
        bytes.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        bytes.extend_from_slice(&(name.len() as u32).to_be_bytes());
        bytes.extend_from_slice(name);
        bytes
    }

    #[test]
    fn server_updates_pass_whole_and_copy_out_obeys_the_stack() {
        let mut stream = server_handshake(b"desk");
        // A FramebufferUpdate: a raw 2×2 rectangle (32 bpp), a ZRLE one of 5 bytes, a cursor.
        stream.extend([0, 0, 0, 3]);
        stream.extend([0, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, 0]);
        stream.extend([7u8; 16]);
        stream.extend([0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 16]);
        stream.extend([0, 0, 0, 5, 1, 2, 3, 4, 5]);
        stream.extend([0, 0, 0, 0, 0, 9, 0, 1]);
        stream.extend((-239i32).to_be_bytes());
        stream.extend([9u8; 9 * 4 + 2]);
        stream.push(2); // Bell
        let copy = cut(3, b"secret");
        stream.extend(&copy);
        stream.push(2);

        let (out, events) = run_server(OPEN, &stream);
        let mut expected = stream.clone();
        expected[12..15].copy_from_slice(&[1, 1, 0]); // only None offered onward
        expected.remove(14);
        assert_eq!(out, expected);
        assert_eq!(events, [Event::ClipboardPassed { direction: "TO_LOCAL_DEVICE", bytes: 6 }]);

        let (out, events) = run_server(CLOSED, &stream);
        let without_copy: Vec<u8> = expected[..expected.len() - copy.len() - 1].iter().copied().chain([2]).collect();
        assert_eq!(out, without_copy);
        assert_eq!(events, [Event::ClipboardBlocked { direction: "TO_LOCAL_DEVICE", bytes: 6, reason: "DISABLED" }]);
    }

    #[test]
    fn a_server_encoding_nobody_asked_for_ends_the_stream() {
        let mut stream = server_handshake(b"");
        stream.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 7]); // Tight
        let mut filter = ServerFilter::new(OPEN, Shared::default());
        assert_eq!(filter.feed(&stream, &mut Vec::new(), &mut Vec::new()), Err(RfbError::Encoding(7)));
    }
}

/// Finding 12 of the security review: the filter's idea of the pixel size and the server's
/// must never part, and fence payloads carry nothing to the user's device.
#[cfg(test)]
mod attack_f12 {
    use super::*;

    const CLOSED: Policy = Policy { paste: Clipboard(None), copy: Clipboard(None) };

    fn set_pixel_format(bits: u8) -> Vec<u8> {
        let depth = if bits == 32 { 24 } else { bits };
        vec![0, 0, 0, 0, bits, depth, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]
    }

    fn update_request() -> Vec<u8> {
        vec![3, 0, 0, 0, 0, 0, 0, 4, 0, 3]
    }

    fn server_init() -> Vec<u8> {
        let mut bytes = b"RFB 003.008\n".to_vec();
        bytes.extend_from_slice(&[1, 1]);
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        bytes.extend_from_slice(&[0, 4, 0, 3]);
        bytes.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes
    }

    fn raw_rectangle(w: u16, h: u16, bytes_per_pixel: usize) -> Vec<u8> {
        let mut bytes = vec![0, 0, 0, 0];
        bytes.extend_from_slice(&w.to_be_bytes());
        bytes.extend_from_slice(&h.to_be_bytes());
        bytes.extend_from_slice(&0i32.to_be_bytes());
        bytes.extend(vec![0x11; usize::from(w) * usize::from(h) * bytes_per_pixel]);
        bytes
    }

    fn server_cut_text(text: &[u8]) -> Vec<u8> {
        let mut bytes = vec![3, 0, 0, 0];
        bytes.extend_from_slice(&(text.len() as u32).to_be_bytes());
        bytes.extend_from_slice(text);
        bytes
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Runs a session: the client's messages, then the server's; returns what reached the
    /// client and the events. Errors end the stream (nothing more reaches the client).
    fn session(client_messages: &[Vec<u8>], server_messages: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>, Vec<Event>) {
        let shared = Shared::default();
        let mut client = ClientFilter::new(CLOSED, shared.clone());
        let mut server = ServerFilter::new(CLOSED, shared);
        let (mut to_server, mut to_client, mut events) = (Vec::new(), Vec::new(), Vec::new());
        let mut handshake = b"RFB 003.008\n".to_vec();
        handshake.extend_from_slice(&[1, 1]);
        client.feed(&handshake, &mut to_server, &mut events).expect("client handshake");
        server.feed(&server_init(), &mut to_client, &mut events).expect("server handshake");
        for message in client_messages {
            if client.feed(message, &mut to_server, &mut events).is_err() {
                return (to_server, to_client, events);
            }
        }
        for message in server_messages {
            if server.feed(message, &mut to_client, &mut events).is_err() {
                break;
            }
        }
        (to_server, to_client, events)
    }

    #[test]
    fn attack_f12_a_pixel_format_change_mid_update_does_not_smuggle_cut_text_out() {
        // The client asks for 8 bpp and a full update, then (while the server is still sending
        // 8-bpp rectangles) claims 32 bpp: the filter must not read the rest as 4× longer.
        let client = [set_pixel_format(8), update_request(), set_pixel_format(32)];
        let mut update = vec![0, 0, 0, 2];
        update.extend(raw_rectangle(4, 3, 1));
        update.extend(raw_rectangle(4, 3, 1));
        let server = [update, server_cut_text(b"the secret text")];
        let (_, to_client, events) = session(&client, &server);
        assert!(!contains(&to_client, b"the secret text"), "cut text crossed as pixels");
        assert!(
            events.iter().any(|e| matches!(e, Event::ClipboardBlocked { direction: "TO_LOCAL_DEVICE", .. })),
            "the copy was judged: {events:?}"
        );
    }

    #[test]
    fn attack_f12_a_pixel_format_sent_before_server_init_is_the_one_in_effect() {
        // Pipelined: the client's SetPixelFormat is read by the filter before the server's
        // ServerInit, yet the server applies it after; the filter must not take ServerInit's.
        let shared = Shared::default();
        let mut client = ClientFilter::new(CLOSED, shared.clone());
        let mut server = ServerFilter::new(CLOSED, shared);
        let (mut to_server, mut to_client, mut events) = (Vec::new(), Vec::new(), Vec::new());
        let mut pipelined = b"RFB 003.008\n".to_vec();
        pipelined.extend_from_slice(&[1, 1]);
        pipelined.extend(set_pixel_format(8));
        pipelined.extend(update_request());
        client.feed(&pipelined, &mut to_server, &mut events).expect("client");
        let mut stream = server_init();
        stream.extend([0, 0, 0, 1]);
        stream.extend(raw_rectangle(4, 3, 1));
        stream.extend(server_cut_text(b"the secret text"));
        let _ = server.feed(&stream, &mut to_client, &mut events);
        assert!(!contains(&to_client, b"the secret text"), "cut text crossed as pixels");
    }

    #[test]
    fn attack_f12_fence_payloads_do_not_reach_the_client() {
        // ServerFence (248): flags (request), a payload of up to 64 bytes.
        let mut fence = vec![248, 0, 0, 0, 0x80, 0, 0, 0, 9];
        fence.extend_from_slice(b"exfil-123");
        let (_, to_client, _) = session(&[update_request()], &[fence]);
        assert!(!contains(&to_client, b"exfil-123"), "the fence payload reached the client");
        // ClientFence likewise carries nothing into the session.
        let mut client_fence = vec![248, 0, 0, 0, 0x80, 0, 0, 0, 9];
        client_fence.extend_from_slice(b"infil-456");
        let (to_server, _, _) = session(&[client_fence], &[]);
        assert!(!contains(&to_server, b"infil-456"), "the fence payload reached the session");
    }

    #[test]
    fn a_fence_answered_by_the_client_carries_the_servers_payload_back() {
        let shared = Shared::default();
        let mut client = ClientFilter::new(CLOSED, shared.clone());
        let mut server = ServerFilter::new(CLOSED, shared);
        let (mut to_server, mut to_client, mut events) = (Vec::new(), Vec::new(), Vec::new());
        let mut handshake = b"RFB 003.008\n".to_vec();
        handshake.extend_from_slice(&[1, 1]);
        client.feed(&handshake, &mut to_server, &mut events).expect("client handshake");
        let mut stream = server_init();
        stream.extend([248, 0, 0, 0, 0x80, 0, 0, 3, 4, 0, 0, 0, 1]);
        server.feed(&stream, &mut to_client, &mut events).expect("server");
        assert!(to_client.ends_with(&[248, 0, 0, 0, 0x80, 0, 0, 3, 0]), "the client sees an empty fence");
        to_server.clear();
        client.feed(&[248, 0, 0, 0, 0, 0, 0, 3, 0], &mut to_server, &mut events).expect("client's answer");
        assert_eq!(to_server, [248, 0, 0, 0, 0, 0, 0, 3, 4, 0, 0, 0, 1], "the server gets its payload back");
    }
}
