//! The automated checks a submitted file goes through. Each result names its rule and says
//! `PASS`, `FLAG` (the reviewers must look) or `FAIL` (the request is blocked). They read the
//! file once, front to back, keeping only counters and the first few findings: memory does not grow with the file
//! (`sniff.rs`, `table.rs`).
//!
//! - `type.allowed`: the type by content (magic bytes, then UTF-8 text) against the allow-list
//!   (`airlock.allowed_types`: csv, tsv, text, markdown, json, png, pdf by default; `zip` may
//!   be added); anything else fails.
//! - `archive.*`: a ZIP archive is checked member by member (see [`archive`]).
//! - `type.polyglot`: a file that is also another type (a ZIP directory inside a PDF or after a
//!   PNG's end, markup or script in a text file) fails.
//! - `size.limit`: a file over `airlock.max_file_bytes` fails: too large to check is blocked,
//!   never passed.
//! - `table.*`: what a table says (`table.rs`).
//!
//! The malware scan (`malware.clamav`) is `scan.rs`.

use std::io::{self, BufReader, SeekFrom, Write as _};

pub(super) use super::finding::{Finding, Outcome};
use super::sniff::{self, Sniffed};
use super::source::Source;
use super::table;

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
    Zip,
    /// Not an allowed kind: what it looks like.
    Other(&'static str),
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Csv => "csv",
            Kind::Tsv => "tsv",
            Kind::Json => "json",
            Kind::Markdown => "markdown",
            Kind::Text => "text",
            Kind::Png => "png",
            Kind::Pdf => "pdf",
            Kind::Zip => "zip",
            Kind::Other(what) => what,
        }
    }
}

/// The kind of a file, by its content (what one pass learned of it) and, among text, its name.
/// A `.json` file is JSON here; whether it parses is checked on its own.
pub(super) fn kind_of(path: &str, head: &[u8], text: bool) -> Kind {
    const SIGNATURES: &[(&[u8], &str)] = &[
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
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Kind::Png;
    }
    if head.starts_with(b"%PDF-") {
        return Kind::Pdf;
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Kind::Zip;
    }
    if let Some((_, what)) = SIGNATURES.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Kind::Other(what);
    }
    if !text {
        return Kind::Other("binary data");
    }
    let lower = path.to_ascii_lowercase();
    match lower.rsplit_once('.').map_or("", |(_, e)| e) {
        // Text a browser or a shell would run is not text here.
        "html" | "htm" | "xhtml" | "svg" | "js" | "mjs" | "xml" | "hta" | "bat" | "cmd" | "ps1" | "vbs" => {
            Kind::Other("text a browser or a shell runs")
        }
        "csv" => Kind::Csv,
        "tsv" | "tab" => Kind::Tsv,
        "json" => Kind::Json,
        "md" | "markdown" => Kind::Markdown,
        _ => Kind::Text,
    }
}

/// Whether `body` is a PNG (for a preview).
pub(super) fn is_png(body: &[u8]) -> bool {
    body.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// What the checks of one file found, and the tables it holds (itself, or an archive's
/// members) for the lineage check.
pub(super) struct Checked {
    pub findings: Vec<Finding>,
    pub tables: Vec<(String, table::Read)>,
}

/// Every check on one file, read from `source` (several passes, each front to back). With
/// `sha256`, a file that does not hash to it is failed and checked no further.
pub(super) fn check_file(path: &str, source: &mut dyn Source, sha256: Option<&str>, policy: &Policy<'_>) -> io::Result<Checked> {
    let mut checked = Checked { findings: Vec::new(), tables: Vec::new() };
    check_into(path, source, sha256, policy, 0, &mut checked)?;
    Ok(checked)
}

fn check_into(
    path: &str,
    source: &mut dyn Source,
    sha256: Option<&str>,
    policy: &Policy<'_>,
    depth: usize,
    checked: &mut Checked,
) -> io::Result<()> {
    let findings = &mut checked.findings;
    let size = source.seek(SeekFrom::End(0))?;
    if size > policy.max_file_bytes {
        let detail =
            format!("{size} bytes is over the {} the checks read (airlock.max_file_bytes): blocked, not skipped", policy.max_file_bytes);
        findings.push(Finding { rule: "size.limit", outcome: Outcome::Fail, detail });
        return Ok(());
    }
    findings.push(pass("size.limit", format!("{size} bytes")));
    source.rewind()?;
    let sniffed = sniff::sniff(source)?;
    if let Some(expected) = sha256
        && sniffed.sha256 != expected
    {
        let detail = "the stored copy does not match its manifest hash".into();
        findings.push(Finding { rule: "manifest.hash", outcome: Outcome::Fail, detail });
        return Ok(());
    }
    let mut kind = kind_of(path, &sniffed.head, sniffed.utf8 && !sniffed.nul);
    if kind == Kind::Json {
        source.rewind()?;
        if serde_json::from_reader::<_, serde::de::IgnoredAny>(BufReader::new(&mut *source)).is_err() {
            kind = Kind::Other("text that is not valid JSON");
        }
    }
    if !policy.allowed_types.iter().any(|t| t == kind.name()) {
        findings.push(Finding {
            rule: "type.allowed",
            outcome: Outcome::Fail,
            detail: format!("{} by its content, which is not among the allowed types ({})", kind.name(), policy.allowed_types.join(", ")),
        });
        return Ok(());
    }
    findings.push(pass("type.allowed", kind.name().to_owned()));
    if kind == Kind::Zip {
        source.rewind()?;
        return archive(path, source, policy, depth, checked);
    }
    let why = if kind == Kind::Png {
        // Its chunks, its pixels and what follows them, read whole: nothing rides along.
        source.rewind()?;
        match super::png::hidden_payload(&mut BufReader::new(&mut *source)) {
            Ok(why) => why,
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Some("the PNG ends inside a chunk".into()),
            Err(err) => return Err(err),
        }
    } else {
        polyglot(kind, &sniffed)
    };
    let findings = &mut checked.findings;
    findings.push(match why {
        Some(why) => Finding { rule: "type.polyglot", outcome: Outcome::Fail, detail: why },
        None => pass("type.polyglot", "one type only".into()),
    });
    tables_of(path, kind, &sniffed, source, policy, checked)
}

/// The table a file holds, if it holds one, read and checked: a CSV or TSV, JSON rows, or any
/// text whose first records split evenly on one separator, whatever its name says.
fn tables_of(
    path: &str,
    kind: Kind,
    sniffed: &Sniffed,
    source: &mut dyn Source,
    policy: &Policy<'_>,
    checked: &mut Checked,
) -> io::Result<()> {
    let size = sniffed.size;
    // JSON rows (an array of records) are a table too.
    if kind == Kind::Json {
        source.rewind()?;
        if let Some(rows) = super::json_rows::as_csv(&mut *source)? {
            let read = table::check(BufReader::with_capacity(1 << 16, rows), b',', policy.small_count_threshold)?;
            checked.findings.extend(read.findings.iter().cloned());
            checked.tables.push((path.to_owned(), read));
        }
        return Ok(());
    }
    let separator = match kind {
        Kind::Tsv => Some(b'\t'),
        // A CSV's separator by its content (`;` where the decimal mark is a comma), else `,`.
        Kind::Csv => Some(table::separator_of(&sniffed.head, size <= sniff::HEAD as u64).unwrap_or(b',')),
        Kind::Text | Kind::Markdown => table::separator_of(&sniffed.head, size <= sniff::HEAD as u64),
        Kind::Png | Kind::Pdf | Kind::Json | Kind::Zip | Kind::Other(_) => None,
    };
    if let Some(separator) = separator {
        source.rewind()?;
        let read = table::check(BufReader::with_capacity(1 << 16, &mut *source), separator, policy.small_count_threshold)?;
        checked.findings.extend(read.findings.iter().cloned());
        checked.tables.push((path.to_owned(), read));
    }
    Ok(())
}

fn pass(rule: &'static str, detail: String) -> Finding {
    Finding { rule, outcome: Outcome::Pass, detail }
}

/// Why a file of `kind` (not a PNG: `png.rs` reads those) is also something else, if it is.
fn polyglot(kind: Kind, sniffed: &Sniffed) -> Option<String> {
    match kind {
        Kind::Pdf => sniffed
            .carrier
            .map(|(name, at)| format!("the PDF holds /{name} at byte {at}; export it as plain pages (PDF/A, no object streams)"))
            .or_else(|| sniffed.zip_inside.map(|at| format!("a ZIP archive is inside the PDF at byte {at}"))),
        _ => sniffed.markup.map(|(tag, at)| format!("markup `{tag}` at byte {at}")),
    }
}

/// The most members an archive may have, and the most its members may expand to per byte
/// stored (beyond the first MiB): more is a ZIP bomb.
const ARCHIVE_MEMBERS: usize = 1000;
const ARCHIVE_RATIO: u64 = 100;

/// A ZIP archive, member by member: each name must be a plain relative path, the members
/// together no larger than `airlock.max_file_bytes` and none expanding more than
/// [`ARCHIVE_RATIO`] times (both measured on the bytes as they come out, not on what the
/// archive declares), no archive inside another; each member is then checked as a file of
/// its own (spilled to a temporary file, read in passes like any file).
fn archive(path: &str, source: &mut dyn Source, policy: &Policy<'_>, depth: usize, checked: &mut Checked) -> io::Result<()> {
    if depth > 0 {
        checked.findings.push(fail("archive.nested", format!("`{path}` is an archive inside an archive")));
        return Ok(());
    }
    let mut zip = match open_archive(source) {
        Ok(zip) => zip,
        Err(finding) => {
            checked.findings.push(finding);
            return Ok(());
        }
    };
    let (mut budget, mut files) = (policy.max_file_bytes, 0usize);
    for index in 0..zip.len() {
        let mut member = match zip.by_index(index) {
            Ok(member) => member,
            Err(err) => {
                checked.findings.push(fail("archive.member", format!("member {index} cannot be read: {err}")));
                return Ok(());
            }
        };
        let name = String::from_utf8_lossy(member.name_raw()).into_owned();
        if let Some(finding) = member_problem(&member, &name) {
            checked.findings.push(finding);
            return Ok(());
        }
        if member.is_dir() {
            continue;
        }
        let stored = member.compressed_size();
        let mut spill = match spill(&mut member, (&name, stored), budget, policy)? {
            Ok((spill, out)) => {
                budget -= out;
                spill
            }
            Err(finding) => {
                checked.findings.push(finding);
                return Ok(());
            }
        };
        files += 1;
        drop(member);
        let mut inner = Checked { findings: Vec::new(), tables: Vec::new() };
        let inside = format!("{path}!{name}");
        check_into(&name, &mut spill, None, policy, depth + 1, &mut inner)?;
        let found = inner.findings.into_iter().filter(|f| f.outcome != Outcome::Pass);
        checked.findings.extend(found.map(|f| Finding { detail: format!("in `{name}`: {}", f.detail), ..f }));
        checked.tables.extend(inner.tables.into_iter().map(|(_, read)| (inside.clone(), read)));
    }
    let total = policy.max_file_bytes - budget;
    checked.findings.push(pass("archive.members", format!("{files} member file(s), {total} bytes when expanded, each checked")));
    Ok(())
}

fn fail(rule: &'static str, detail: String) -> Finding {
    Finding { rule, outcome: Outcome::Fail, detail }
}

type Zip<'a> = zip::ZipArchive<&'a mut dyn Source>;

/// The archive, if its members are all there is to check: not too many of them, no comment,
/// no local header that disagrees with the directory or is missing from it (tools that read
/// local headers in order would extract something else), no byte shared by two entries.
fn open_archive(source: &mut dyn Source) -> Result<Zip<'_>, Finding> {
    let mut zip = zip::ZipArchive::new(source).map_err(|err| fail("archive.member", format!("the archive cannot be read: {err}")))?;
    if zip.len() > ARCHIVE_MEMBERS {
        return Err(fail("archive.members", format!("{} members, over the {ARCHIVE_MEMBERS} an archive may hold", zip.len())));
    }
    let hidden = if !zip.comment().is_empty() {
        Some("the archive carries a comment".to_owned())
    } else if let Err(err) = zip.validate_header_consistency() {
        Some(format!("its headers disagree ({err})"))
    } else if zip.has_overlapping_entries().unwrap_or(true) {
        Some("two entries share bytes".to_owned())
    } else {
        None
    };
    match hidden {
        Some(why) => Err(fail("archive.member", format!("{why}: what is in an archive is checked member by member, or not let through"))),
        None => Ok(zip),
    }
}

/// What is wrong with a member before its content is read: a name that is not a plain
/// relative path, a link, a comment, a directory that holds data (readers that ask for it by
/// name get it).
fn member_problem<R: io::Read>(member: &zip::read::ZipFile<'_, R>, name: &str) -> Option<Finding> {
    let plain = name.strip_suffix('/').filter(|_| member.is_dir()).unwrap_or(name);
    if !super::state::is_plain_path(plain) || member.is_symlink() {
        let detail = format!("member `{}` is not a plain relative path (traversal, absolute, a link, or unprintable)", name.escape_debug());
        return Some(fail("archive.path", detail));
    }
    if !member.comment().is_empty() {
        return Some(fail("archive.member", format!("member `{name}` carries a comment")));
    }
    (member.is_dir() && (member.size() > 0 || member.compressed_size() > 0))
        .then(|| fail("archive.member", format!("directory entry `{name}` holds data")))
}

/// A member's content, expanded into an unnamed temporary file, and its size; or why it was
/// stopped: past `budget` (what the members may still expand to), or past the ratio limit,
/// measured on the bytes as they come out.
fn spill(
    member: &mut impl io::Read,
    (name, stored): (&str, u64),
    budget: u64,
    policy: &Policy<'_>,
) -> io::Result<Result<(std::fs::File, u64), Finding>> {
    let mut spill = tempfile::tempfile()?;
    let (mut out, mut piece) = (0u64, vec![0u8; 1 << 16]);
    loop {
        let n = match member.read(&mut piece) {
            Ok(n) => n,
            Err(err) => return Ok(Err(fail("archive.member", format!("member `{name}` cannot be read: {err}")))),
        };
        if n == 0 {
            return Ok(Ok((spill, out)));
        }
        out += n as u64;
        if out > budget {
            let detail = format!("the members expand past {} bytes (airlock.max_file_bytes)", policy.max_file_bytes);
            return Ok(Err(fail("archive.size", detail)));
        }
        // The stored bytes are those the member's reader takes from the archive, no more.
        if out > (1 << 20) && out > stored.saturating_mul(ARCHIVE_RATIO) {
            let detail = format!("member `{name}` expands past {ARCHIVE_RATIO} times its {stored} stored bytes: a ZIP bomb");
            return Ok(Err(fail("archive.ratio", detail)));
        }
        spill.write_all(&piece[..n])?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> (Vec<String>, u64) {
        (["csv", "tsv", "text", "markdown", "json", "png", "pdf"].map(str::to_owned).to_vec(), 10)
    }

    fn run(path: &str, body: &[u8]) -> Vec<Finding> {
        let (types, threshold) = policy();
        let policy = Policy { allowed_types: &types, max_file_bytes: 1 << 20, small_count_threshold: threshold };
        check_file(path, &mut io::Cursor::new(body), None, &policy).expect("read").findings
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
        assert_eq!(kind_of("figure.txt", b"\x89PNG\r\n\x1a\nrest", false), Kind::Png);
        assert_eq!(kind_of("data.json", b"{\"a\": [1, 2]}", true), Kind::Json);
        assert!(failed(&run("data.json", b"{\"a\": [1, 2]}")).is_empty());
        assert_eq!(failed(&run("data.json", b"{\"a\": ")), ["type.allowed"]);
    }

    #[test]
    fn a_polyglot_fails() {
        let mut png = crate::airlock::png::tests::png(b"", b"", &[]);
        assert!(failed(&run("plot.png", &png)).is_empty(), "{:?}", run("plot.png", &png));
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
        let (stripped, removed) = super::super::png::strip_png_metadata(&png).expect("a PNG");
        assert_eq!(removed, ["tEXt", "eXIf"]);
        assert!(!stripped.windows(4).any(|w| w == b"p017") && stripped.windows(6).any(|w| w == b"pixels"));
        assert!(super::super::png::strip_png_metadata(b"not a png").is_none());
    }

    #[test]
    fn a_file_too_large_to_check_is_blocked() {
        let (types, _) = policy();
        let policy = Policy { allowed_types: &types, max_file_bytes: 99, small_count_threshold: 10 };
        let findings = check_file("big.csv", &mut io::Cursor::new([b'1'; 100]), None, &policy).expect("read").findings;
        assert_eq!(failed(&findings), ["size.limit"]);
    }

    fn zipped(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, body) in members {
            writer.start_file(*name, zip::write::SimpleFileOptions::default()).expect("a member");
            writer.write_all(body).expect("write");
        }
        writer.finish().expect("finish").into_inner()
    }

    fn run_zip(body: &[u8]) -> Vec<Finding> {
        let (mut types, threshold) = policy();
        types.push("zip".into());
        let policy = Policy { allowed_types: &types, max_file_bytes: 64 << 20, small_count_threshold: threshold };
        check_file("results.zip", &mut io::Cursor::new(body), None, &policy).expect("read").findings
    }

    #[test]
    fn json_rows_are_checked_as_a_table() {
        let findings = run("rows.json", br#"[{"region": "north", "count": 120}, {"region": "south", "count": 3}]"#);
        assert_eq!(failed(&findings), ["table.small-count"], "{findings:?}");
        assert!(failed(&run("config.json", br#"{"threshold": 3}"#)).is_empty());
    }

    #[test]
    fn an_archive_with_a_comment_fails() {
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        writer.start_file("a.csv", zip::write::SimpleFileOptions::default()).expect("a member");
        writer.write_all(b"region,count\nnorth,120\n").expect("write");
        writer.set_comment("rows hidden here").expect("a comment");
        let commented = writer.finish().expect("finish").into_inner();
        assert_eq!(failed(&run_zip(&commented)), ["archive.member"]);
    }

    #[test]
    fn an_archive_is_checked_member_by_member() {
        let safe = zipped(&[("tables/a.csv", b"region,count\nnorth,120\n"), ("notes.md", b"# Notes\n")]);
        let findings = run_zip(&safe);
        assert!(failed(&findings).is_empty(), "{findings:?}");
        assert!(findings.iter().any(|f| f.rule == "archive.members" && f.detail.starts_with("2 member file(s)")));
        let small = run_zip(&zipped(&[("a.csv", b"region,count\nnorth,120\nsouth,3\n")]));
        assert_eq!(failed(&small), ["table.small-count"]);
        assert!(small.iter().any(|f| f.detail.starts_with("in `a.csv`: 1 count(s)")), "{small:?}");
        assert_eq!(failed(&run_zip(&zipped(&[("../etc/passwd", b"x")]))), ["archive.path"]);
        assert_eq!(failed(&run_zip(&zipped(&[("/abs.txt", b"x")]))), ["archive.path"]);
        assert_eq!(failed(&run_zip(&zipped(&[("inner.zip", &safe)]))), ["archive.nested"]);
        assert_eq!(failed(&run_zip(&zipped(&[("tool", b"\x7fELF\x02\x01")]))), ["type.allowed"]);
        // 20 MiB of zeros deflate to about 20 KiB: stopped as soon as the ratio is passed.
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        writer.start_file("zeros.csv", zip::write::SimpleFileOptions::default()).expect("a member");
        let block = vec![b'0'; 1 << 20];
        for _ in 0..20 {
            writer.write_all(&block).expect("write");
        }
        let bomb = writer.finish().expect("finish").into_inner();
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        assert_eq!(failed(&run_zip(&bomb)), ["archive.ratio"]);
        assert_eq!(failed(&run_zip(b"PK\x03\x04 not really")), ["archive.member"]);
    }
}
