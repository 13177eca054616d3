//! What a filter is told (the stack's clipboard settings) and what it tells back: the events
//! the bridge acts on, and the error that ends a stream.

/// What the stack allows across the clipboard in one direction: `None` when disabled, else
/// the largest text in characters (classic RFB cut text is Latin-1: a byte per character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clipboard(pub Option<u32>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `CLIPBOARD_COPY_FROM_LOCAL_DEVICE`: client → session.
    pub paste: Clipboard,
    /// `CLIPBOARD_COPY_TO_LOCAL_DEVICE`: session → client.
    pub copy: Clipboard,
}

/// Something the bridge must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key or pointer event: the user is there (the idle timeout).
    Input,
    /// A clipboard text stopped, by size and direction.
    ClipboardBlocked { direction: &'static str, bytes: u64, reason: &'static str },
    /// A clipboard text let through, by size and direction.
    ClipboardPassed { direction: &'static str, bytes: u64 },
    /// The server's framebuffer has a new size (`DesktopSize`, `ExtendedDesktopSize`).
    Resized { width: u16, height: u16 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RfbError {
    #[error("protocol version `{0}` is not RFB 3.8")]
    Version(String),
    #[error("security type {0} is not None (the display is reachable only by the gateway)")]
    Security(u8),
    #[error("unknown {direction} message type {kind}")]
    UnknownMessage { direction: &'static str, kind: u8 },
    #[error("the server used encoding {0}, which the client was not allowed to ask for")]
    Encoding(i32),
    #[error("{0} is larger than the bridge accepts")]
    TooLarge(&'static str),
    #[error("{0} bits per pixel is not 8, 16 or 32")]
    PixelFormat(u8),
}
