//! One pass over a file, front to back, in pieces: what the checks must know of the whole of
//! it (its size and SHA-256, whether it is UTF-8, where markup, PDF carriers or a ZIP header
//! first appear), carrying only a few bytes from one piece to the next. (A PNG is read whole,
//! chunk by chunk, by `png.rs`.)

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// How much of a file's start is kept, for its type and a table's separator.
pub(super) const HEAD: usize = 64 << 10;

/// Markup or script in a text file (compared without case).
const MARKUP: [&str; 13] =
    ["<script", "<svg", "<html", "<iframe", "javascript:", "<img", "<object", "<embed", "<meta", "<form", "<base", "onerror=", "onload="];

/// What a PDF may carry besides pages (files, script, forms that send, actions that open
/// other documents), and compressed object streams, which could hide those names from this
/// search: refused rather than guessed at. Names are compared whole and decoded (`/J#61vaScript`
/// is `/JavaScript`).
const CARRIERS: [&str; 12] = [
    "EmbeddedFile",
    "JavaScript",
    "JS",
    "Launch",
    "RichMedia",
    "XFA",
    "ObjStm",
    "FileAttachment",
    "AF",
    "SubmitForm",
    "GoToE",
    "ImportData",
];

const ZIP_MAGICS: [&[u8]; 2] = [b"PK\x03\x04", b"PK\x05\x06"];

/// What a piece carries to the next, so that a needle or a PDF name split across two pieces is
/// found: more than the longest needle, and than the longest way to write a carrier's name
/// (every character `#xx`-escaped).
const CARRY: usize = 48;

/// What one pass learned.
pub(super) struct Sniffed {
    pub size: u64,
    pub sha256: String,
    pub head: Vec<u8>,
    pub utf8: bool,
    pub nul: bool,
    /// The first markup tag and where it is.
    pub markup: Option<(&'static str, u64)>,
    /// The first PDF carrier name and where it is.
    pub carrier: Option<(&'static str, u64)>,
    /// Where a ZIP header first appears after the first byte.
    pub zip_inside: Option<u64>,
}

/// Reads `source` to its end.
pub(super) fn sniff(source: &mut dyn Read) -> io::Result<Sniffed> {
    let mut state = State {
        hasher: Sha256::new(),
        partial: Vec::new(),
        window: Vec::with_capacity(PIECE + CARRY + 4),
        found: Sniffed {
            size: 0,
            sha256: String::new(),
            head: Vec::new(),
            utf8: true,
            nul: false,
            markup: None,
            carrier: None,
            zip_inside: None,
        },
    };
    let mut piece = vec![0u8; PIECE];
    loop {
        let n = source.read(&mut piece)?;
        if n == 0 {
            break;
        }
        state.feed(&piece[..n]);
    }
    Ok(state.finish())
}

const PIECE: usize = 1 << 20;

struct State {
    hasher: Sha256,
    /// An incomplete UTF-8 sequence at the end of the last piece.
    partial: Vec<u8>,
    /// The last piece's final bytes, then this piece: where needles are looked for.
    window: Vec<u8>,
    found: Sniffed,
}

impl State {
    fn feed(&mut self, piece: &[u8]) {
        let start = self.found.size;
        self.hasher.update(piece);
        if self.found.head.len() < HEAD {
            let take = piece.len().min(HEAD - self.found.head.len());
            self.found.head.extend_from_slice(&piece[..take]);
        }
        self.found.nul |= memchr::memchr(0, piece).is_some();
        self.utf8(piece);
        self.needles(start, piece);
        self.found.size += piece.len() as u64;
    }

    fn utf8(&mut self, piece: &[u8]) {
        if !self.found.utf8 {
            return;
        }
        let mut joined;
        let bytes = if self.partial.is_empty() {
            piece
        } else {
            joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(piece);
            &joined[..]
        };
        if let Err(error) = std::str::from_utf8(bytes) {
            match error.error_len() {
                None => self.partial = bytes[error.valid_up_to()..].to_vec(),
                Some(_) => self.found.utf8 = false,
            }
        }
    }

    fn needles(&mut self, start: u64, piece: &[u8]) {
        let carried = self.window.len();
        self.window.extend_from_slice(piece);
        let window_at = start - carried as u64;
        let window = &self.window[..];
        let found = &mut self.found;
        if found.markup.is_none() {
            found.markup = MARKUP
                .iter()
                .filter_map(|tag| find_caseless(window, tag.as_bytes()).map(|at| (*tag, window_at + at as u64)))
                .min_by_key(|(_, at)| *at);
        }
        if found.carrier.is_none() {
            found.carrier = carrier_in(window, false).map(|(name, at)| (name, window_at + at as u64));
        }
        if found.zip_inside.is_none() {
            found.zip_inside = ZIP_MAGICS
                .iter()
                .flat_map(|magic| memchr::memmem::find_iter(window, magic).map(|at| window_at + at as u64).find(|at| *at > 0))
                .min();
        }
        let keep = self.window.len().min(CARRY);
        self.window.drain(..self.window.len() - keep);
    }

    fn finish(mut self) -> Sniffed {
        if !self.partial.is_empty() {
            self.found.utf8 = false;
        }
        // A name that ran to the end of the last window ends with the file.
        if self.found.carrier.is_none() {
            let at = self.found.size - self.window.len() as u64;
            self.found.carrier = carrier_in(&self.window, true).map(|(name, offset)| (name, at + offset as u64));
        }
        self.found.sha256 = hex::encode(self.hasher.finalize());
        self.found
    }
}

/// The first PDF name in `window` that, decoded, is a carrier, and where it starts. A name
/// that runs to the window's end is judged with the next window (the carry holds it), unless
/// this is the `last`.
fn carrier_in(window: &[u8], last: bool) -> Option<(&'static str, usize)> {
    let delimiter = |b: u8| b.is_ascii_whitespace() || b"()<>[]{}/%".contains(&b) || b == 0;
    for at in memchr::memchr_iter(b'/', window) {
        let token = &window[at + 1..];
        let end = token.iter().position(|b| delimiter(*b));
        if end.is_none() && !last {
            continue;
        }
        let token = &token[..end.unwrap_or(token.len())];
        if token.len() > CARRY {
            continue;
        }
        let name = crate::core::codec::hex_unescaped(token, b'#');
        if let Some(carrier) = CARRIERS.iter().find(|c| c.as_bytes() == name.as_slice()) {
            return Some((carrier, at));
        }
    }
    None
}

/// Where `needle` (ASCII) first appears in `haystack`, compared without case.
fn find_caseless(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (first, rest) = needle.split_first()?;
    memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), haystack)
        .find(|at| haystack.get(at + 1..at + needle.len()).is_some_and(|tail| tail.eq_ignore_ascii_case(rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte at a time: every needle and header straddles pieces.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else { return Ok(0) };
            out[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn what_straddles_pieces_is_found_as_in_one_piece() {
        let body = "héllo <SCRIPT> /JS PK\u{3}\u{4} ✓".as_bytes();
        for found in [sniff(&mut &body[..]).expect("read"), sniff(&mut Trickle(body)).expect("read")] {
            assert!(found.utf8 && !found.nul);
            assert_eq!(found.markup, Some(("<script", 7)));
            assert_eq!(found.carrier, Some(("JS", 16)));
            assert_eq!(found.zip_inside, Some(20));
            assert_eq!(found.sha256, hex::encode(Sha256::digest(body)));
            assert_eq!(found.size, body.len() as u64);
        }
        assert!(!sniff(&mut Trickle(b"caf\xc3")).expect("read").utf8, "a sequence cut at the end");
        assert!(!sniff(&mut Trickle(b"a\xffb")).expect("read").utf8);
    }

    #[test]
    fn pdf_names_are_decoded_and_compared_whole() {
        let carrier = |body: &[u8]| sniff(&mut Trickle(body)).expect("read").carrier.map(|(name, _)| name);
        assert_eq!(carrier(b"<< /S /J#61vaScript /JS (x) >>"), Some("JavaScript"));
        assert_eq!(carrier(b"<< /Type /Annot /Subtype /FileAttachment >>"), Some("FileAttachment"));
        assert_eq!(carrier(b"<< /Font /AAAAAB+Calibri /JSON 1 >>"), None, "a subset font and a longer name");
        assert_eq!(carrier(b"trailer << /AF"), Some("AF"), "a name that ends the file");
    }
}
