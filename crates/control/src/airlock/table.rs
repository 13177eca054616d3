//! Tables: the records of a CSV or TSV read from a stream, and the checks on what a table
//! says. One pass reads the whole table, holding one record at a time (fields cut at
//! [`FIELD_BYTES`], records at [`FIELDS`]) and, for the lineage check, 16 bytes a row for up to
//! [`HASHED_ROWS`] rows.
//!
//! - `table.small-count`: a count from 1 to `airlock.small_count_threshold` − 1 fails.
//! - `table.zero`: zeros are flagged.
//! - `table.identifier`: columns whose name looks like an identifier are flagged.
//! - `table.margin`: a suppressed cell (`*`, `<5`, `[c]`…) that a total recovers fails: the
//!   only hidden cell of a row with a total column, or of a column with a total row, when the
//!   totals of the table's complete rows (or columns) add up.

use std::hash::{Hash, Hasher};
use std::io::{self, BufRead};

use super::finding::{Finding, Outcome};

/// The longest field kept whole (longer ones are cut: no count is that long).
const FIELD_BYTES: usize = 64 << 10;
/// The most fields of one record kept.
const FIELDS: usize = 16 << 10;
/// The most rows whose hashes one table keeps for the lineage check (64 MiB).
pub(super) const HASHED_ROWS: usize = 4_000_000;

/// The records of a CSV or TSV (RFC 4180 quoting; CRLF, LF or a lone CR ends one), one at a
/// time. A read error ends them and is kept in `error`.
pub(super) struct Records<R> {
    input: R,
    separator: u8,
    skip_lf: bool,
    done: bool,
    pub error: Option<io::Error>,
}

impl<R: BufRead> Records<R> {
    pub(super) fn new(input: R, separator: u8) -> Records<R> {
        Records { input, separator, skip_lf: false, done: false, error: None }
    }
}

fn push(fields: &mut Vec<String>, field: Vec<u8>) {
    if fields.len() < FIELDS {
        fields.push(String::from_utf8_lossy(&field).into_owned());
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Vec<String>;

    fn next(&mut self) -> Option<Vec<String>> {
        let (mut fields, mut field, mut quoted, mut quote_seen, mut any) = (Vec::new(), Vec::new(), false, false, false);
        while !self.done {
            let buffer = match self.input.fill_buf() {
                Ok(buffer) => buffer,
                Err(err) => {
                    self.error = Some(err);
                    self.done = true;
                    break;
                }
            };
            if buffer.is_empty() {
                self.done = true;
                break;
            }
            let (mut used, mut ended) = (0, false);
            for &byte in buffer {
                used += 1;
                if std::mem::take(&mut self.skip_lf) && byte == b'\n' {
                    continue;
                }
                any = true;
                if quote_seen {
                    quote_seen = false;
                    if byte == b'"' {
                        field.push(b'"');
                        continue;
                    }
                    quoted = false;
                } else if quoted {
                    match byte {
                        b'"' => quote_seen = true,
                        _ if field.len() < FIELD_BYTES => field.push(byte),
                        _ => {}
                    }
                    continue;
                }
                match byte {
                    b'"' if field.is_empty() => quoted = true,
                    b'\r' | b'\n' => {
                        self.skip_lf = byte == b'\r';
                        ended = true;
                        break;
                    }
                    b if b == self.separator => push(&mut fields, std::mem::take(&mut field)),
                    _ if field.len() < FIELD_BYTES => field.push(byte),
                    _ => {}
                }
            }
            self.input.consume(used);
            if ended {
                break;
            }
        }
        if !any {
            return None;
        }
        push(&mut fields, field);
        Some(fields)
    }
}

/// The hash a row is compared by: its cells trimmed and without case.
pub(super) fn row_hash(fields: &[String]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for field in fields {
        field.trim().to_lowercase().hash(&mut hasher);
    }
    hasher.finish()
}

/// The separator of a text if it is a table: the first records (of `head`, the start of the
/// text; `whole` if it is all of it) all split into the same number (two or more) of fields.
pub(super) fn separator_of(head: &[u8], whole: bool) -> Option<u8> {
    let consistent = |separator: u8| {
        let mut widths: Vec<usize> =
            Records::new(head, separator).take(21).filter(|r| r.iter().any(|f| !f.trim().is_empty())).map(|r| r.len()).collect();
        if !whole || widths.len() > 20 {
            // The last record of a cut head may be cut too.
            widths.pop();
        }
        widths.len() >= 2 && widths[0] >= 2 && widths.iter().all(|w| *w == widths[0])
    };
    [b',', b'\t', b';', b'|'].into_iter().find(|s| consistent(*s))
}

/// What a pass over a table found: the findings, and its rows' hashes for the lineage check.
pub(super) struct Read {
    pub findings: Vec<Finding>,
    /// Each row's hash and its row number (the header is row 1).
    pub rows: Vec<(u64, u64)>,
    pub count: usize,
}

/// The most findings of one kind a table check lists (the count says how many there were).
const LISTED: usize = 5;

/// Reads a whole table: small counts fail, zeros and identifier-like columns are flagged.
pub(super) fn check(input: impl BufRead, separator: u8, threshold: u64) -> io::Result<Read> {
    let mut records = Records::new(input, separator);
    let header: Vec<String> = records.next().unwrap_or_default();
    let identifiers: Vec<&String> = header.iter().filter(|name| looks_like_identifier(name)).collect();
    let (mut small, mut small_count, mut zeros) = (Vec::new(), 0usize, 0usize);
    let (mut rows, mut count) = (Vec::new(), 0usize);
    let mut margins = Margins::new(&header);
    for (index, record) in records.by_ref().enumerate() {
        let row = index as u64 + 2;
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        count += 1;
        margins.row(row, &record);
        if rows.len() < HASHED_ROWS {
            rows.push((row_hash(&record), row));
        }
        for (column, cell) in record.iter().enumerate() {
            let Some(value) = count_in(cell) else { continue };
            if value == 0.0 {
                zeros += 1;
            } else if value.fract() == 0.0 && value >= 1.0 && value < threshold as f64 {
                small_count += 1;
                if small.len() < LISTED {
                    let name = header.get(column).map_or_else(|| format!("column {}", column + 1), |h| format!("`{h}`"));
                    small.push(format!("{value} at row {row}, {name}"));
                }
            }
        }
    }
    if let Some(err) = records.error.take() {
        return Err(err);
    }
    let mut findings = vec![if small_count > 0 {
        Finding {
            rule: "table.small-count",
            outcome: Outcome::Fail,
            detail: format!("{small_count} count(s) from 1 to {}: {}", threshold - 1, small.join("; ")),
        }
    } else {
        Finding { rule: "table.small-count", outcome: Outcome::Pass, detail: format!("no count below {threshold}") }
    }];
    findings.extend(margins.finding(&header));
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
    Ok(Read { findings, rows, count })
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
    // `n=3`, `n = 3`: a count named as one.
    let lower = ascii.trim().to_ascii_lowercase();
    let named = lower.strip_prefix('n').map(str::trim_start).and_then(|r| r.strip_prefix('=')).map(str::trim_start);
    let unsigned = named.unwrap_or(&lower).trim_start_matches(['-', '+']).trim_start();
    let number: String = unsigned.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    // A note may follow (`3 (2.1%)`, `3*`, `3 people`); a letter right after is not a count (`3b`).
    let rest = &unsigned[number.len()..];
    if number.is_empty() || !(rest.is_empty() || rest.starts_with(['(', '%', '*', '[', ' '])) {
        return None;
    }
    number.parse::<f64>().ok()
}

/// Whether a cell hides a value: `*`, `x`, `c`, `[c]`, `..`, `<5`, `≤ 10`, "suppressed".
fn is_suppressed(cell: &str) -> bool {
    let lower = cell.trim().to_lowercase();
    let bound = lower.strip_prefix('<').or_else(|| lower.strip_prefix('≤')).map(str::trim_start);
    ["*", "**", "x", "c", "[c]", "[x]", "..", "suppressed", "redacted", "s"].contains(&lower.as_str())
        || bound.is_some_and(|b| !b.is_empty() && b.chars().all(|c| c.is_ascii_digit()))
}

/// Whether a column holds a measure (a rate, a mean, a year), not a count.
fn is_measure(name: &str) -> bool {
    let lower = name.trim().to_ascii_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric() && c != '%').filter(|w| !w.is_empty()).collect();
    words.iter().any(|w| ["%", "percent", "pct", "rate", "mean", "median", "avg", "average", "ratio", "year", "sd", "se", "ci"].contains(w))
}

/// Whether a header or label names a total.
fn is_total(name: &str) -> bool {
    let lower = name.trim().to_lowercase();
    ["total", "totals", "all", "sum", "overall", "grand total"].contains(&lower.as_str()) || lower.starts_with("total ")
}

/// What `table.margin` keeps while a table streams past: per row, the row's arithmetic; per
/// column, its known sum, its hidden cells and the total row's value.
struct Margins {
    /// The total column, if the header has one.
    total_column: Option<usize>,
    /// Rows whose one hidden cell the total column gives: (row, column, value).
    rows_revealed: Vec<(u64, usize, f64)>,
    rows_revealed_count: usize,
    /// Complete rows that add up to their total, and that do not: the total column is judged a
    /// sum when most do.
    rows_agree: usize,
    rows_disagree: usize,
    /// Columns that hold measures (rates, means, years), not counts: never part of a sum.
    measures: Vec<bool>,
    columns: Vec<ColumnSum>,
    /// The total row: its number and its counts.
    total_row: Option<(u64, Vec<Option<f64>>)>,
}

#[derive(Clone, Default)]
struct ColumnSum {
    known: f64,
    hidden: usize,
    hidden_row: u64,
}

impl Margins {
    fn new(header: &[String]) -> Margins {
        Margins {
            total_column: header.iter().position(|name| is_total(name)),
            rows_revealed: Vec::new(),
            rows_revealed_count: 0,
            rows_agree: 0,
            rows_disagree: 0,
            measures: header.iter().map(|name| is_measure(name)).collect(),
            columns: vec![ColumnSum::default(); header.len().min(FIELDS)],
            total_row: None,
        }
    }

    fn row(&mut self, row: u64, record: &[String]) {
        let counts: Vec<Option<f64>> = record.iter().map(|cell| count_in(cell)).collect();
        if self.total_row.is_none() && record.iter().zip(&counts).any(|(cell, count)| count.is_none() && is_total(cell)) {
            self.total_row = Some((row, counts));
            return;
        }
        let is_hidden: Vec<bool> = record.iter().map(|cell| is_suppressed(cell)).collect();
        for (column, sum) in self.columns.iter_mut().enumerate() {
            match counts.get(column).copied().flatten() {
                Some(value) => sum.known += value,
                None if is_hidden.get(column).copied().unwrap_or(false) => {
                    sum.hidden += 1;
                    sum.hidden_row = row;
                }
                None => {}
            }
        }
        let Some(total_column) = self.total_column else { return };
        let Some(total) = counts.get(total_column).copied().flatten() else { return };
        let measure = |at: usize| self.measures.get(at).copied().unwrap_or(false);
        let others: f64 = counts.iter().enumerate().filter(|(at, _)| *at != total_column && !measure(*at)).filter_map(|(_, c)| *c).sum();
        let hidden: Vec<usize> = is_hidden.iter().enumerate().filter(|(at, h)| **h && !measure(*at)).map(|(at, _)| at).take(2).collect();
        match hidden.as_slice() {
            [] if (others - total).abs() > 1e-6 => self.rows_disagree += 1,
            [] => self.rows_agree += 1,
            [column] if *column != total_column => {
                self.rows_revealed_count += 1;
                if self.rows_revealed.len() < LISTED {
                    self.rows_revealed.push((row, *column, total - others));
                }
            }
            _ => {}
        }
    }

    fn finding(&self, header: &[String]) -> Option<Finding> {
        let name = |column: usize| header.get(column).map_or_else(|| format!("column {}", column + 1), |h| format!("`{h}`"));
        let mut revealed: Vec<String> = Vec::new();
        let rows_sum = self.rows_agree >= self.rows_disagree;
        if rows_sum {
            revealed.extend(
                self.rows_revealed
                    .iter()
                    .map(|(row, column, value)| format!("row {row}, {}: the total column gives {value}", name(*column))),
            );
        }
        if let Some((total_row, totals)) = &self.total_row {
            // The total row is judged a sum when most complete count columns add up to it.
            let (mut agree, mut disagree) = (0usize, 0usize);
            for (column, sum) in self.columns.iter().enumerate() {
                let measure = self.measures.get(column).copied().unwrap_or(false);
                if let (0, false, Some(total)) = (sum.hidden, measure, totals.get(column).copied().flatten()) {
                    if (total - sum.known).abs() <= 1e-6 { agree += 1 } else { disagree += 1 }
                }
            }
            if agree >= disagree {
                for (column, sum) in self.columns.iter().enumerate() {
                    if let (1, Some(total)) = (sum.hidden, totals.get(column).copied().flatten()) {
                        revealed.push(format!(
                            "row {}, {}: the total row ({total_row}) gives {}",
                            sum.hidden_row,
                            name(column),
                            total - sum.known
                        ));
                    }
                }
            }
        }
        let count = revealed.len() + if rows_sum { self.rows_revealed_count - self.rows_revealed.len() } else { 0 };
        (count > 0).then(|| Finding {
            rule: "table.margin",
            outcome: Outcome::Fail,
            detail: format!(
                "{count} suppressed cell(s) a total recovers: {}",
                revealed.into_iter().take(LISTED).collect::<Vec<_>>().join("; ")
            ),
        })
    }
}

fn looks_like_identifier(name: &str) -> bool {
    let lower = name.trim().to_ascii_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    words.iter().any(|w| ["id", "nhs", "ssn", "email", "dob", "postcode", "zip", "phone", "mrn", "name"].contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_from_a_stream_in_small_pieces_are_the_records_of_the_whole() {
        let text = b"a,\"b, \"\"c\"\"\"\r\n1,2\r3,4\n\n5,\"x\ny\"\n";
        let whole: Vec<Vec<String>> = Records::new(&text[..], b',').collect();
        assert_eq!(
            whole,
            [vec!["a", "b, \"c\""], vec!["1", "2"], vec!["3", "4"], vec![""], vec!["5", "x\ny"]]
                .map(|r| r.into_iter().map(str::to_owned).collect::<Vec<_>>())
        );
        let trickled: Vec<Vec<String>> = Records::new(io::BufReader::with_capacity(1, &text[..]), b',').collect();
        assert_eq!(trickled, whole);
    }

    fn margin(text: &str) -> Option<String> {
        let read = check(text.as_bytes(), b',', 10).expect("read");
        read.findings.into_iter().find(|f| f.rule == "table.margin").map(|f| f.detail)
    }

    #[test]
    fn a_suppressed_cell_that_a_total_recovers_fails() {
        let by_row = margin("region,male,female,total\nnorth,120,*,300\nsouth,200,150,350\n").expect("a total column");
        assert!(by_row.contains("row 2, `female`: the total column gives 180"), "{by_row}");
        let by_column = margin("region,cases\nnorth,120\nsouth,<10\neast,40\nTotal,167\n").expect("a total row");
        assert!(by_column.contains("row 3, `cases`: the total row (5) gives 7"), "{by_column}");
        // Two hidden cells in each line a total covers: neither is recovered.
        assert_eq!(margin("region,male,female,total\nnorth,*,*,300\nsouth,200,150,350\n"), None);
        assert_eq!(margin("region,cases\nnorth,*\nsouth,*\nTotal,167\n"), None);
        // A "total" that is not a sum of its row recovers nothing.
        assert_eq!(margin("region,male,female,total\nnorth,120,*,300\nsouth,200,150,999\n"), None);
        assert_eq!(margin("region,cases\nnorth,120\nsouth,45\nTotal,165\n"), None);
        // A rate beside the counts, and one row that does not add up, hide nothing.
        let rated = margin("region,cases,percent\nnorth,120,72.3\nsouth,<10,\neast,40,24.1\nTotal,167,100\n").expect("a total row");
        assert!(rated.contains("the total row (5) gives 7"), "{rated}");
        let mostly = margin("g,a,b,total\nx,1,2,3\ny,4,5,9\nz,6,*,20\nw,1,1,5\n").expect("a total column");
        assert!(mostly.contains("row 4, `b`: the total column gives 14"), "{mostly}");
    }

    #[test]
    fn counts_are_read_with_their_names_and_notes() {
        for (cell, count) in [("n=3", Some(3.0)), ("N = 12", Some(12.0)), ("3 people", Some(3.0)), ("3b", None), ("x3", None)] {
            assert_eq!(count_in(cell), count, "{cell:?}");
        }
    }

    #[test]
    fn a_long_field_is_cut_and_a_wide_record_is_capped() {
        let long = vec![b'7'; FIELD_BYTES * 2];
        let record = Records::new(&long[..], b',').next().expect("a record");
        assert_eq!(record[0].len(), FIELD_BYTES);
        let wide = vec![b','; FIELDS * 3];
        assert_eq!(Records::new(&wide[..], b',').next().expect("a record").len(), FIELDS);
    }
}
