//! The automated checks a submitted file goes through. Each result names its rule and says
//! `PASS`, `FLAG` (the reviewers must look) or `FAIL` (the request is blocked). They read the
//! file once, front to back, keeping only counters and the first few findings.
//!
//! - `type.allowed`: the type by content (magic bytes, then UTF-8 text) against the allow-list
//!   (`airlock.allowed_types`: csv, tsv, text, markdown, json, png, pdf); anything else, an
//!   archive included, fails.
//! - `type.polyglot`: a file that is also another type (a ZIP directory inside a PDF or after a
//!   PNG's end, markup or script in a text file) fails.
//! - `size.limit`: a file over `airlock.max_file_bytes` fails: too large to check is blocked,
//!   never passed.
//! - `table.small-count`: in a CSV or TSV, a count from 1 to `airlock.small_count_threshold`
//!   − 1 fails; `table.zero`: zeros are flagged; `table.identifier`: columns whose name looks
//!   like an identifier are flagged.
//!
//! The malware scan (`malware.clamav`) is `scan.rs`.

use serde::Serialize;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(super) enum Outcome {
    Pass,
    Flag,
    Fail,
    /// A failure the researcher asked the reviewers to pass, with a reason they read.
    Overridden,
}

impl Outcome {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Flag => "FLAG",
            Outcome::Fail => "FAIL",
            Outcome::Overridden => "OVERRIDDEN",
        }
    }
}

/// One check's result on one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Finding {
    pub rule: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

/// The settings the checks read (from `[airlock]`).
pub(super) struct Policy<'a> {
    pub allowed_types: &'a [String],
    pub max_file_bytes: u64,
    pub small_count_threshold: u64,
}

/// What a file is, by its content (and, among text, its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Csv,
    Tsv,
    Json,
    Markdown,
    Text,
    Png,
    Pdf,
    /// Not an allowed kind: what it looks like.
    Other(&'static str),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Csv => "csv",
            Kind::Tsv => "tsv",
            Kind::Json => "json",
            Kind::Markdown => "markdown",
            Kind::Text => "text",
            Kind::Png => "png",
            Kind::Pdf => "pdf",
            Kind::Other(what) => what,
        }
    }
}

/// The kind of `body`, named `path`.
pub(super) fn kind_of(path: &str, body: &[u8]) -> Kind {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"PK\x03\x04", "a ZIP archive"),
        (b"PK\x05\x06", "a ZIP archive"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"BZh", "a bzip2 archive"),
        (b"\xfd7zXZ\x00", "an xz archive"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"\x7fELF", "an ELF executable"),
        (b"MZ", "a Windows executable"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"SQLite format 3\x00", "an SQLite database"),
        (b"PAR1", "a Parquet file"),
    ];
    if body.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Kind::Png;
    }
    if body.starts_with(b"%PDF-") {
        return Kind::Pdf;
    }
    if let Some((_, what)) = SIGNATURES.iter().find(|(magic, _)| body.starts_with(magic)) {
        return Kind::Other(what);
    }
    if body.contains(&0) || std::str::from_utf8(body).is_err() {
        return Kind::Other("binary data");
    }
    let lower = path.to_ascii_lowercase();
    let extension = lower.rsplit_once('.').map_or("", |(_, e)| e);
    match extension {
        "csv" => Kind::Csv,
        "tsv" | "tab" => Kind::Tsv,
        "json" if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => Kind::Json,
        "json" => Kind::Other("text that is not valid JSON"),
        "md" | "markdown" => Kind::Markdown,
        _ => Kind::Text,
    }
}

/// Every check on one file.
pub(super) fn check_file(path: &str, body: &[u8], policy: &Policy<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let pass = |rule, detail: &str| Finding { rule, outcome: Outcome::Pass, detail: detail.to_owned() };
    if body.len() as u64 > policy.max_file_bytes {
        findings.push(Finding {
            rule: "size.limit",
            outcome: Outcome::Fail,
            detail: format!(
                "{} bytes is over the {} the checks read (airlock.max_file_bytes): blocked, not skipped",
                body.len(),
                policy.max_file_bytes
            ),
        });
        return findings;
    }
    findings.push(pass("size.limit", &format!("{} bytes", body.len())));
    let kind = kind_of(path, body);
    if policy.allowed_types.iter().any(|t| t == kind.name()) {
        findings.push(pass("type.allowed", kind.name()));
    } else {
        findings.push(Finding {
            rule: "type.allowed",
            outcome: Outcome::Fail,
            detail: format!("{} by its content, which is not among the allowed types ({})", kind.name(), policy.allowed_types.join(", ")),
        });
        return findings;
    }
    findings.push(match polyglot(kind, body) {
        Some(why) => Finding { rule: "type.polyglot", outcome: Outcome::Fail, detail: why },
        None => pass("type.polyglot", "one type only"),
    });
    // Whatever its name says, text that is a table is checked as one.
    if let Some(separator) = table_separator(kind, body) {
        findings.extend(check_table(body, separator, policy.small_count_threshold));
    }
    findings
}

/// Why a file of `kind` is also something else, if it is.
fn polyglot(kind: Kind, body: &[u8]) -> Option<String> {
    let find = |needle: &[u8]| body.windows(needle.len()).position(|w| w == needle);
    match kind {
        Kind::Png => match png_chunks(body) {
            Err(why) => Some(why),
            Ok(chunks) if chunks.last().map(|(kind, _)| kind.as_slice()) != Some(b"IEND") => Some("the PNG has no end (IEND)".into()),
            Ok(chunks) => {
                let end: usize = 8 + chunks.iter().map(|(_, len)| len).sum::<usize>();
                (end < body.len()).then(|| format!("{} bytes follow the PNG's end", body.len() - end))
            }
        },
        Kind::Pdf => {
            // What a PDF may carry besides pages, and compressed object streams, which could
            // hide those names from this search: refused rather than guessed at.
            const CARRIERS: [&str; 7] = ["/EmbeddedFile", "/JavaScript", "/JS", "/Launch", "/RichMedia", "/XFA", "/ObjStm"];
            CARRIERS
                .iter()
                .find_map(|name| {
                    find(name.as_bytes())
                        .map(|at| format!("the PDF holds {name} at byte {at}; export it as plain pages (PDF/A, no object streams)"))
                })
                .or_else(|| find(b"PK\x03\x04").or(find(b"PK\x05\x06")).map(|at| format!("a ZIP archive is inside the PDF at byte {at}")))
        }
        _ => {
            // Without a lower-cased copy of the file: compared in place, case-insensitively.
            ["<script", "<svg", "<html", "<iframe", "javascript:"].iter().find_map(|tag| {
                body.windows(tag.len())
                    .position(|w| w.eq_ignore_ascii_case(tag.as_bytes()))
                    .map(|at| format!("markup `{tag}` at byte {at}"))
            })
        }
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

/// The separator of `body` if it is a table: a CSV or TSV by content, or any text whose first
/// records all split into the same number (two or more) of fields on one separator.
pub(super) fn table_separator(kind: Kind, body: &[u8]) -> Option<u8> {
    let consistent = |separator: u8| {
        let widths: Vec<usize> =
            Records::new(body, separator).take(20).filter(|r| r.iter().any(|f| !f.trim().is_empty())).map(|r| r.len()).collect();
        widths.len() >= 2 && widths[0] >= 2 && widths.iter().all(|w| *w == widths[0])
    };
    match kind {
        Kind::Png | Kind::Pdf | Kind::Json | Kind::Other(_) => None,
        Kind::Tsv => Some(b'\t'),
        Kind::Csv => Some(b','),
        Kind::Text | Kind::Markdown => [b',', b'\t', b';', b'|'].into_iter().find(|s| consistent(*s)),
    }
}

/// The most findings of one kind a table check lists (the count says how many there were).
const LISTED: usize = 5;

/// The table checks of a CSV or TSV: small counts fail, zeros and identifier-like columns are
/// flagged.
fn check_table(body: &[u8], separator: u8, threshold: u64) -> Vec<Finding> {
    let mut rows = Records::new(body, separator);
    let header: Vec<String> = rows.next().unwrap_or_default();
    let identifiers: Vec<&String> = header.iter().filter(|name| looks_like_identifier(name)).collect();
    let (mut small, mut zeros) = (Vec::new(), 0usize);
    let mut small_count = 0usize;
    for (row, record) in rows.enumerate() {
        for (column, cell) in record.iter().enumerate() {
            let Some(value) = count_in(cell) else { continue };
            if value == 0.0 {
                zeros += 1;
            } else if value.fract() == 0.0 && value >= 1.0 && value < threshold as f64 {
                small_count += 1;
                if small.len() < LISTED {
                    let name = header.get(column).map_or_else(|| format!("column {}", column + 1), |h| format!("`{h}`"));
                    small.push(format!("{value} at row {}, {name}", row + 2));
                }
            }
        }
    }
    let mut findings = Vec::new();
    findings.push(if small_count > 0 {
        Finding {
            rule: "table.small-count",
            outcome: Outcome::Fail,
            detail: format!("{small_count} count(s) from 1 to {}: {}", threshold - 1, small.join("; ")),
        }
    } else {
        Finding { rule: "table.small-count", outcome: Outcome::Pass, detail: format!("no count below {threshold}") }
    });
    if zeros > 0 {
        findings.push(Finding { rule: "table.zero", outcome: Outcome::Flag, detail: format!("{zeros} zero cell(s)") });
    }
    if !identifiers.is_empty() {
        let names: Vec<String> = identifiers.iter().map(|n| format!("`{n}`")).collect();
        findings.push(Finding {
            rule: "table.identifier",
            outcome: Outcome::Flag,
            detail: format!("column(s) that look like identifiers: {}", names.join(", ")),
        });
    }
    findings
}

/// The count a cell shows, if it shows one: a number, signed or not, in ASCII or full-width
/// digits, alone or followed by a note (`3 (2.1%)`, `3*`). A suppressed cell (`<5`, `*`)
/// shows none.
fn count_in(cell: &str) -> Option<f64> {
    let ascii: String = cell
        .trim()
        .chars()
        .map(|c| match c {
            '\u{ff10}'..='\u{ff19}' => char::from(b'0' + (c as u32 - 0xff10) as u8),
            '\u{ff0e}' => '.',
            '\u{ff0d}' | '\u{2212}' => '-',
            other => other,
        })
        .collect();
    let unsigned = ascii.trim_start_matches(['-', '+']).trim_start();
    let number: String = unsigned.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let rest = unsigned[number.len()..].trim_start();
    if number.is_empty() || !(rest.is_empty() || rest.starts_with(['(', '%', '*', '[', ' '])) {
        return None;
    }
    number.parse::<f64>().ok()
}

fn looks_like_identifier(name: &str) -> bool {
    let lower = name.trim().to_ascii_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    words.iter().any(|w| ["id", "nhs", "ssn", "email", "dob", "postcode", "zip", "phone", "mrn", "name"].contains(w))
}

/// The records of a CSV or TSV (RFC 4180 quoting), one at a time.
pub(super) struct Records<'a> {
    body: &'a [u8],
    at: usize,
    separator: u8,
}

impl<'a> Records<'a> {
    pub(super) fn new(body: &'a [u8], separator: u8) -> Records<'a> {
        Records { body, at: 0, separator }
    }
}

impl Iterator for Records<'_> {
    type Item = Vec<String>;

    fn next(&mut self) -> Option<Vec<String>> {
        if self.at >= self.body.len() {
            return None;
        }
        let (mut fields, mut field, mut quoted) = (Vec::new(), Vec::new(), false);
        while self.at < self.body.len() {
            let byte = self.body[self.at];
            self.at += 1;
            match (quoted, byte) {
                (true, b'"') if self.body.get(self.at) == Some(&b'"') => {
                    field.push(b'"');
                    self.at += 1;
                }
                (true, b'"') => quoted = false,
                (true, _) => field.push(byte),
                (false, b'"') if field.is_empty() => quoted = true,
                // CRLF, LF, or a lone CR (old Mac files, which spreadsheets still read) ends a record.
                (false, b'\r') if self.body.get(self.at) == Some(&b'\n') => {}
                (false, b'\r' | b'\n') => break,
                (false, b) if b == self.separator => fields.push(String::from_utf8_lossy(&std::mem::take(&mut field)).into_owned()),
                (false, _) => field.push(byte),
            }
        }
        fields.push(String::from_utf8_lossy(&field).into_owned());
        Some(fields)
    }
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
mod tests {
    use super::*;

    fn policy() -> (Vec<String>, u64) {
        (["csv", "tsv", "text", "markdown", "json", "png", "pdf"].map(str::to_owned).to_vec(), 10)
    }

    fn run(path: &str, body: &[u8]) -> Vec<Finding> {
        let (types, threshold) = policy();
        check_file(path, body, &Policy { allowed_types: &types, max_file_bytes: 1 << 20, small_count_threshold: threshold })
    }

    fn failed(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().filter(|f| f.outcome == Outcome::Fail).map(|f| f.rule).collect()
    }

    #[test]
    fn a_table_with_a_cell_of_three_fails_and_a_safe_one_passes() {
        let findings = run("results.csv", b"region,count\nnorth,120\n\"south, east\",3\nwest,0\n");
        assert_eq!(failed(&findings), ["table.small-count"]);
        let small = findings.iter().find(|f| f.rule == "table.small-count").expect("the small-count result");
        assert!(small.detail.contains("3 at row 3, `count`"), "{}", small.detail);
        assert!(findings.iter().any(|f| f.rule == "table.zero" && f.outcome == Outcome::Flag));
        assert!(failed(&run("results.csv", b"region,count\nnorth,120\nsouth,45\n")).is_empty());
        let ids = run("people.tsv", b"patient_id\tnhs number\ttotal\n1234\t999\t40\n");
        assert!(ids.iter().any(|f| f.rule == "table.identifier" && f.detail.contains("patient_id") && f.detail.contains("nhs number")));
    }

    #[test]
    fn a_table_is_checked_as_one_whatever_its_name_or_line_ends() {
        for (name, body) in [
            ("results.txt", &b"region,count\nnorth,120\nsouth,3\n"[..]),
            ("results", b"region\tcount\nnorth\t120\nsouth\t3\n"),
            ("results.md", b"region;count\rnorth;120\rsouth;3\r"),
            ("results.csv", b"region,count\rnorth,120\rsouth,3\r"),
        ] {
            assert_eq!(failed(&run(name, body)), ["table.small-count"], "{name}");
        }
        assert!(failed(&run("notes.txt", b"Dear reviewer, here are my notes.\nThanks, nora\n")).is_empty());
    }

    #[test]
    fn small_counts_are_found_however_written_and_suppressed_cells_pass() {
        for cell in ["3", " 3 ", "-3", "3.0", "3 (2.1%)", "3*", "\u{ff13}", "+3"] {
            assert_eq!(failed(&run("t.csv", format!("group,n\na,120\nb,{cell}\n").as_bytes())), ["table.small-count"], "{cell:?}");
        }
        for cell in ["<5", "*", "12", "", "n/a", "3b"] {
            assert!(failed(&run("t.csv", format!("group,n\na,120\nb,{cell}\n").as_bytes())).is_empty(), "{cell:?}");
        }
    }

    #[test]
    fn types_come_from_content_not_names() {
        assert_eq!(failed(&run("results.csv", b"\x7fELF\x02\x01\x01")), ["type.allowed"]);
        assert_eq!(failed(&run("results.zip", b"PK\x03\x04\x14\x00")), ["type.allowed"]);
        assert_eq!(failed(&run("notes.txt", b"a\x00b")), ["type.allowed"]);
        assert_eq!(kind_of("figure.txt", b"\x89PNG\r\n\x1a\nrest"), Kind::Png);
        assert_eq!(kind_of("data.json", b"{\"a\": [1, 2]}"), Kind::Json);
        assert_eq!(failed(&run("data.json", b"{\"a\": ")), ["type.allowed"]);
    }

    #[test]
    fn a_polyglot_fails() {
        let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x00IHDR\x00\x00\x00\x00\x00\x00\x00\x00IEND\xae\x42\x60\x82".to_vec();
        assert!(failed(&run("plot.png", &png)).is_empty());
        png.extend_from_slice(b"PK\x03\x04 hidden archive");
        assert_eq!(failed(&run("plot.png", &png)), ["type.polyglot"]);
        assert_eq!(failed(&run("paper.pdf", b"%PDF-1.7 ... PK\x03\x04 ...")), ["type.polyglot"]);
        assert_eq!(failed(&run("paper.pdf", b"%PDF-1.7 1 0 obj << /Type /EmbeddedFile >>")), ["type.polyglot"]);
        assert!(failed(&run("paper.pdf", b"%PDF-1.4 1 0 obj << /Type /Page >> endobj")).is_empty());
        assert_eq!(failed(&run("report.md", b"# Results\n<script>fetch('//x')</script>")), ["type.polyglot"]);
    }

    #[test]
    fn a_png_loses_its_text_and_exif_chunks_and_keeps_its_pixels() {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&[0, 0, 0, 0]);
            c
        };
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [
            (&b"IHDR"[..], &b"0123456789abc"[..]),
            (b"tEXt", b"Author\0nora, patient p017"),
            (b"IDAT", b"pixels"),
            (b"eXIf", b"gps"),
            (b"IEND", b""),
        ] {
            png.extend(chunk(kind, data));
        }
        let (stripped, removed) = strip_png_metadata(&png).expect("a PNG");
        assert_eq!(removed, ["tEXt", "eXIf"]);
        assert!(!stripped.windows(4).any(|w| w == b"p017") && stripped.windows(6).any(|w| w == b"pixels"));
        assert!(strip_png_metadata(b"not a png").is_none());
    }

    #[test]
    fn a_file_too_large_to_check_is_blocked() {
        let (types, _) = policy();
        let findings =
            check_file("big.csv", &[b'1'; 100], &Policy { allowed_types: &types, max_file_bytes: 99, small_count_threshold: 10 });
        assert_eq!(failed(&findings), ["size.limit"]);
    }
}
