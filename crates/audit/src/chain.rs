//! The per-record hash chain. Every line of a log file starts with a fixed prefix,
//! `{"sequenceNumber":N,"previousRecordHash":"<64 hex>",`, and the hash of a record is the
//! SHA-256 of its whole line. Validation reads the prefix without parsing the rest.

use sha2::{Digest, Sha256};

const SEQUENCE: &[u8] = b"{\"sequenceNumber\":";
const PREVIOUS: &[u8] = b",\"previousRecordHash\":\"";

/// The chain fields read from a line's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link<'a> {
    pub sequence: u64,
    pub previous_hash: &'a str,
}

/// Reads the chain prefix of one line (without its newline); `None` if it is not there.
pub fn parse_link(line: &[u8]) -> Option<Link<'_>> {
    let rest = line.strip_prefix(SEQUENCE)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let sequence = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(PREVIOUS)?;
    let hash = rest.get(..64)?;
    if !hash.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) || rest.get(64..66) != Some(b"\",") {
        return None;
    }
    Some(Link { sequence, previous_hash: std::str::from_utf8(hash).ok()? })
}

pub fn hash_line(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// Sealed log files are CloudTrail-shaped: `{"Records":[` then one record per line, each but
/// the last followed by a comma, then `]}`. The lines are the open file's lines, byte for byte.
pub const SEALED_HEAD: &[u8] = b"{\"Records\":[\n";
pub const SEALED_TAIL: &[u8] = b"\n]}\n";

/// The record lines of a log file's content, open or sealed, and any bytes after the last
/// complete line of an open file (a record whose write never finished).
pub fn record_lines(content: &[u8], sealed: bool) -> Result<(Vec<&[u8]>, &[u8]), ()> {
    if sealed {
        let body = content.strip_prefix(SEALED_HEAD).and_then(|c| c.strip_suffix(SEALED_TAIL)).ok_or(())?;
        if body.is_empty() {
            return Ok((Vec::new(), &[]));
        }
        let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
        let last = lines.len() - 1;
        let mut out = Vec::with_capacity(lines.len());
        for (index, line) in lines.into_iter().enumerate() {
            if index == last {
                out.push(line);
            } else {
                out.push(line.strip_suffix(b",").ok_or(())?);
            }
        }
        Ok((out, &[]))
    } else {
        let end = content.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let lines = if end == 0 { Vec::new() } else { content[..end - 1].split(|b| *b == b'\n').collect() };
        Ok((lines, &content[end..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_strict() {
        let hash = "ab".repeat(32);
        let line = format!("{{\"sequenceNumber\":42,\"previousRecordHash\":\"{hash}\",\"eventVersion\":\"1.09\"}}");
        assert_eq!(parse_link(line.as_bytes()), Some(Link { sequence: 42, previous_hash: &hash }));
        for bad in [
            format!("{{\"sequenceNumber\":-1,\"previousRecordHash\":\"{hash}\","),
            format!("{{\"sequenceNumber\":1,\"previousRecordHash\":\"{}\",", "AB".repeat(32)),
            format!(" {{\"sequenceNumber\":1,\"previousRecordHash\":\"{hash}\","),
            "{\"eventVersion\":\"1.09\"}".to_owned(),
        ] {
            assert_eq!(parse_link(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn sealed_round_trip() {
        let sealed = b"{\"Records\":[\n{\"a\":1},\n{\"b\":2}\n]}\n";
        let (lines, rest) = record_lines(sealed, true).expect("well formed");
        assert_eq!(lines, vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        assert!(rest.is_empty());
        let (lines, rest) = record_lines(b"{\"a\":1}\n{\"b\"", false).expect("open files always split");
        assert_eq!((lines, rest), (vec![&b"{\"a\":1}"[..]], &b"{\"b\""[..]));
    }
}
