//! A PNG read whole, chunk by chunk, in pieces: it may hold only what draws it. Kept chunks
//! have the sizes the format gives them, and the pixels' zlib stream inflates to exactly the
//! rows the header announces and ends where the image data ends: bytes hidden in an extra
//! chunk, a padded one or after the stream (a ZIP, a table) make the file fail.

use std::io::{self, Read};

use flate2::{Decompress, FlushDecompress, Status};

/// The chunks a PNG may keep: those that draw it (see [`PNG_KEPT`]), with the most
/// bytes each may hold.
const SIZES: [(&[u8; 4], u32); 10] = [
    (b"IHDR", 13),
    (b"PLTE", 768),
    (b"tRNS", 256),
    (b"gAMA", 4),
    (b"cHRM", 32),
    (b"sRGB", 1),
    (b"sBIT", 4),
    (b"pHYs", 9),
    (b"bKGD", 6),
    (b"IEND", 0),
];

/// Why `source` (a PNG, from its start) holds more than its picture, if it does.
pub(super) fn hidden_payload(source: &mut dyn Read) -> io::Result<Option<String>> {
    let mut signature = [0u8; 8];
    source.read_exact(&mut signature)?;
    let (mut header, mut inflater, mut image_bytes) = (None::<Header>, Decompress::new(true), 0u64);
    let mut out = vec![0u8; 1 << 16];
    loop {
        let mut head = [0u8; 8];
        if source.read_exact(&mut head).is_err() {
            return Ok(Some("the PNG ends inside a chunk".into()));
        }
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind: [u8; 4] = [head[4], head[5], head[6], head[7]];
        let name = String::from_utf8_lossy(&kind).into_owned();
        if &kind == b"IDAT" {
            let Some(header) = &header else { return Ok(Some("image data before the PNG's header".into())) };
            let mut left = u64::from(length);
            let mut piece = vec![0u8; 1 << 16];
            while left > 0 {
                let n = (left as usize).min(piece.len());
                source.read_exact(&mut piece[..n])?;
                left -= n as u64;
                image_bytes += n as u64;
                if let Some(why) = inflate(&mut inflater, &piece[..n], &mut out, header.image_bytes) {
                    return Ok(Some(why));
                }
            }
            skip(source, 4)?;
            continue;
        }
        let Some((_, most)) = SIZES.iter().find(|(k, _)| **k == kind) else {
            return Ok(Some(format!("a `{name}` chunk, which does not draw the picture (text, EXIF, private data)")));
        };
        if length > *most {
            return Ok(Some(format!("a `{name}` chunk of {length} bytes, where at most {most} belong")));
        }
        let mut data = vec![0u8; length as usize];
        source.read_exact(&mut data)?;
        skip(source, 4)?;
        match &kind {
            b"IHDR" if header.is_none() => match Header::of(&data) {
                Some(parsed) => header = Some(parsed),
                None => return Ok(Some("a PNG header that announces no picture this check can measure".into())),
            },
            b"IHDR" => return Ok(Some("a second PNG header".into())),
            b"IEND" => break,
            _ if header.is_none() => return Ok(Some(format!("a `{name}` chunk before the PNG's header"))),
            _ => {}
        }
    }
    let trailing = io::copy(source, &mut io::sink())?;
    if trailing > 0 {
        return Ok(Some(format!("{trailing} bytes follow the PNG's end")));
    }
    let Some(header) = header else { return Ok(Some("a PNG without a header".into())) };
    if inflater.total_in() != image_bytes || inflater.total_out() != header.image_bytes {
        return Ok(Some(format!(
            "the image data ({} bytes, {} inflated) is not exactly the picture its header announces ({} bytes)",
            image_bytes,
            inflater.total_out(),
            header.image_bytes
        )));
    }
    Ok(None)
}

/// Feeds one piece of image data to the inflater, until it is taken in and nothing more comes
/// out of what was; why the data is more than the picture, if it is.
fn inflate(inflater: &mut Decompress, mut input: &[u8], out: &mut [u8], image_bytes: u64) -> Option<String> {
    loop {
        let before = (inflater.total_in(), inflater.total_out());
        let Ok(status) = inflater.decompress(input, out, FlushDecompress::None) else {
            return Some("the image data is not a valid zlib stream".into());
        };
        input = &input[(inflater.total_in() - before.0) as usize..];
        if inflater.total_out() > image_bytes {
            return Some(format!("the image data inflates past the {image_bytes} bytes its header announces"));
        }
        if status == Status::StreamEnd {
            return (!input.is_empty()).then(|| "bytes follow the image data's zlib stream".into());
        }
        if (inflater.total_in(), inflater.total_out()) == before {
            return (!input.is_empty()).then(|| "the image data's zlib stream stalls".into());
        }
    }
}

fn skip(source: &mut dyn Read, bytes: u64) -> io::Result<()> {
    let copied = io::copy(&mut source.take(bytes), &mut io::sink())?;
    if copied == bytes { Ok(()) } else { Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the PNG ends inside a chunk")) }
}

/// What the header says the inflated image data holds.
struct Header {
    image_bytes: u64,
}

impl Header {
    fn of(data: &[u8]) -> Option<Header> {
        if data.len() != 13 {
            return None;
        }
        let (width, height) = (u32::from_be_bytes(data[0..4].try_into().ok()?), u32::from_be_bytes(data[4..8].try_into().ok()?));
        let (depth, color, interlace) = (data[8], data[9], data[12]);
        let channels = match color {
            0 | 3 => 1,
            2 => 3,
            4 => 2,
            6 => 4,
            _ => return None,
        };
        if width == 0 || height == 0 || width > 1 << 24 || height > 1 << 24 || ![1, 2, 4, 8, 16].contains(&depth) {
            return None;
        }
        let bits = u64::from(depth) * channels;
        // Each row: a filter byte, then its pixels' bits, rounded up to bytes.
        let rows = |w: u64, h: u64| if w == 0 || h == 0 { 0 } else { h * (1 + (w * bits).div_ceil(8)) };
        let (w, h) = (u64::from(width), u64::from(height));
        let image_bytes = match interlace {
            0 => rows(w, h),
            // Adam7: seven passes, each a sub-image of every dx-th column and dy-th row.
            1 => [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
                .iter()
                .map(|(x0, y0, dx, dy)| rows(w.saturating_sub(*x0).div_ceil(*dx), h.saturating_sub(*y0).div_ceil(*dy)))
                .sum(),
            _ => return None,
        };
        Some(Header { image_bytes })
    }
}

/// A PNG's chunks (type, whole length with its header and CRC) up to and with `IEND`, or why
/// they cannot be walked.
fn png_chunks(body: &[u8]) -> Result<Vec<([u8; 4], usize)>, String> {
    let mut rest = body.get(8..).ok_or("a PNG too short to hold a chunk")?;
    let mut chunks = Vec::new();
    while !rest.is_empty() {
        let malformed = || "a malformed PNG chunk".to_owned();
        let length = u32::from_be_bytes(rest.get(..4).ok_or_else(malformed)?.try_into().map_err(|_| malformed())?) as usize;
        let whole = length.checked_add(12).ok_or_else(malformed)?;
        let chunk = rest.get(..whole).ok_or_else(malformed)?;
        let kind: [u8; 4] = chunk[4..8].try_into().map_err(|_| malformed())?;
        chunks.push((kind, whole));
        rest = &rest[whole..];
        if &kind == b"IEND" {
            break;
        }
    }
    Ok(chunks)
}

/// The chunks a PNG keeps: those that draw it. Every other chunk (text, EXIF, times, ICC
/// profiles, private chunks) may carry what the picture should not, and is taken out before
/// anyone reviews the image.
const PNG_KEPT: [&[u8; 4]; 11] = [b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"pHYs", b"bKGD"];

/// A PNG with only the chunks that draw it, and the types of those taken out; `None` when
/// `body` is not a PNG whose chunks can be walked (the type checks judge it then). What
/// follows its end stays, for the polyglot check to find.
pub(super) fn strip_png_metadata(body: &[u8]) -> Option<(Vec<u8>, Vec<String>)> {
    if !body.starts_with(b"\x89PNG\r\n\x1a\n") {
        return None;
    }
    let chunks = png_chunks(body).ok()?;
    let (mut kept, mut removed, mut at) = (body[..8].to_vec(), Vec::new(), 8);
    for (kind, whole) in chunks {
        if PNG_KEPT.iter().any(|k| **k == kind) {
            kept.extend_from_slice(&body[at..at + whole]);
        } else {
            removed.push(String::from_utf8_lossy(&kind).into_owned());
        }
        at += whole;
    }
    kept.extend_from_slice(&body[at..]);
    Some((kept, removed))
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Write as _;

    use super::*;

    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0, 0, 0, 0]);
        c
    }

    /// A 3×2 RGB PNG; `extra` is added to the inflated rows, `after` after the zlib stream.
    pub(in crate::airlock) fn png(extra: &[u8], after: &[u8], more: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut ihdr = 3u32.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&2u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut rows = vec![0u8; 2 * (1 + 9)];
        rows.extend_from_slice(extra);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&rows).expect("deflate");
        let mut data = zlib.finish().expect("deflate");
        data.extend_from_slice(after);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &ihdr));
        for (kind, body) in more {
            png.extend(chunk(kind, body));
        }
        png.extend(chunk(b"IDAT", &data));
        png.extend(chunk(b"IEND", b""));
        png
    }

    fn judged(png: &[u8]) -> Option<String> {
        hidden_payload(&mut &png[..]).expect("read")
    }

    #[test]
    fn a_png_holds_its_picture_and_nothing_else() {
        assert_eq!(judged(&png(b"", b"", &[(b"pHYs", &[0; 9])])), None);
        assert!(judged(&png(b"PK\x03\x04 a table", b"", &[])).is_some_and(|w| w.contains("inflates past")));
        assert!(judged(&png(b"", b"PK\x05\x06 trailing", &[])).is_some_and(|w| w.contains("follow the image data")));
        assert!(judged(&png(b"", b"", &[(b"pHYs", &[0; 900])])).is_some_and(|w| w.contains("at most 9")));
        assert!(judged(&png(b"", b"", &[(b"zzZz", b"private")])).is_some_and(|w| w.contains("does not draw")));
        assert!(judged(&png(b"", b"", &[(b"tEXt", b"Comment\0p017")])).is_some());
        let tail = b"PK\x03\x04 an archive";
        let mut tailed = png(b"", b"", &[]);
        tailed.extend_from_slice(tail);
        assert_eq!(judged(&tailed), Some(format!("{} bytes follow the PNG's end", tail.len())));
    }

    #[test]
    fn interlaced_sizes_follow_adam7() {
        // 1×1 8-bit gray, interlaced: only the first pass has a pixel.
        let header = Header::of(&[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 1]).expect("a header");
        assert_eq!(header.image_bytes, 2);
        let header = Header::of(&[0, 0, 0, 8, 0, 0, 0, 8, 8, 0, 0, 0, 1]).expect("a header");
        // 8×8: passes of 1×1, 1×1, 2×1, 2×2, 4×2, 4×4, 8×4 pixels, a filter byte per row.
        assert_eq!(header.image_bytes, 2 + 2 + 3 + 2 * 3 + 2 * 5 + 4 * 5 + 4 * 9);
    }
}
