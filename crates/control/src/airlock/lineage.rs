//! The lineage checks: an output table must not carry the platform's data out as it came in.
//!
//! - `lineage.row`: a row of the output equal to a row of a dataset (cells trimmed and
//!   compared without case) fails. Every dataset of the deployed spec is compared, granted to
//!   the researcher or not, so what is compared never depends on who asks.
//! - `lineage.row-count`: an output with at least 90% as many rows as a dataset file of 20 or
//!   more rows fails: a table that large is the data, not a statistic about it.
//! - `diff.overlap`: rows also in a file released earlier from the workspace are flagged (the
//!   reviewers judge whether together they reveal more than each alone).
//!
//! Only the output's row hashes are held; the datasets are read one object at a time, each in
//! pieces, up to `LINEAGE_BYTES` in all. A comparison that could not be made whole (that cap, a dataset
//! that could not be read) blocks the request: what was not compared is not passed.

use std::io::{BufReader, Read as _};

use super::checks::{Finding, Outcome, kind_of};
use super::source::BlobReader;
use super::table::{self, HASHED_ROWS, Records, row_hash};
use crate::core::error::ActionError;
use crate::core::platform::Platform;

/// How much dataset content one submission compares at most.
const LINEAGE_BYTES: u64 = 1 << 30;

/// The share of a dataset file's rows an output may not reach, and the smallest file it
/// applies to.
const ROW_COUNT_SHARE: f64 = 0.9;
const ROW_COUNT_FLOOR: usize = 20;

/// A table of the submission: its path, and its rows' hashes with the first row each came
/// from, sorted by hash: 16 bytes a row, for at most [`HASHED_ROWS`] rows.
pub(super) struct Table {
    pub path: String,
    rows: Vec<(u64, u64)>,
    count: usize,
    /// Whether some of its rows' hashes were not kept (past a table's or a submission's cap).
    cut: bool,
}

impl Table {
    /// Keeps at most `rows` of its rows' hashes.
    pub(super) fn keep_at_most(&mut self, rows: usize) {
        if self.rows.len() > rows {
            self.rows.truncate(rows);
            self.rows.shrink_to_fit();
            self.cut = true;
        }
    }

    /// How many row hashes it holds.
    pub(super) fn held(&self) -> usize {
        self.rows.len()
    }
}

impl Table {
    /// The table a pass over a file read.
    pub(super) fn new(path: String, read: table::Read) -> Table {
        let cut = read.rows.len() < read.count;
        let mut rows = read.rows;
        rows.sort_unstable();
        rows.dedup_by_key(|(hash, _)| *hash);
        rows.shrink_to_fit();
        Table { path, rows, count: read.count, cut }
    }

    /// The output row whose hash this is, if any.
    fn row_of(&self, hash: u64) -> Option<u64> {
        self.rows.binary_search_by_key(&hash, |(h, _)| *h).ok().map(|at| self.rows[at].1)
    }
}

/// A file to compare with: a dataset's, or one released earlier from the workspace.
struct Source {
    /// The dataset's name; `None` for an earlier release.
    dataset: Option<String>,
    /// The dataset file's key, or the release's `<request>/<path>`.
    key: String,
    blob: String,
    size: u64,
}

/// Compares the submission's tables with every dataset's CSV and TSV files, and with the
/// files released earlier from the workspace (`earlier`: their names and airlock keys).
pub(super) async fn check(
    plane: &Platform,
    tables: Vec<Table>,
    earlier: Vec<(String, String)>,
) -> Result<Vec<(String, Finding)>, ActionError> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let (mut sources, mut read, mut cut) = (Vec::new(), 0u64, None);
    for (name, object_key) in earlier {
        match crate::storage::blob_internal(plane, super::state::AIRLOCK_BUCKET, &object_key).await {
            Ok((blob, size)) if read + size <= LINEAGE_BYTES => {
                read += size;
                sources.push(Source { dataset: None, key: name, blob, size });
            }
            // Earlier releases are compared as far as they fit; a flag, not a gate.
            _ => {}
        }
    }
    if let Some(table) = tables.iter().find(|t| t.cut) {
        cut = Some(format!("`{}` has {} rows; the submission's first {HASHED_ROWS} rows in all were compared", table.path, table.count));
    }
    'datasets: for dataset in &plane.current().datasets {
        let keys = match crate::storage::keys_under(plane, dataset.bucket.as_str(), &dataset.prefix).await {
            Ok(keys) => keys,
            Err(err) => {
                cut = Some(format!("dataset `{}` could not be listed: {}", dataset.name, err.message));
                continue;
            }
        };
        for (key, blob, size) in keys {
            if read + size > LINEAGE_BYTES {
                cut = Some(format!("only the first {} MiB of the datasets were compared", LINEAGE_BYTES >> 20));
                break 'datasets;
            }
            read += size;
            sources.push(Source { dataset: Some(dataset.name.clone()), key, blob, size });
        }
    }
    let readers: Vec<(Source, BlobReader)> = sources
        .into_iter()
        .map(|source| {
            let reader = BlobReader::new(plane.blobs.clone(), source.blob.clone(), source.size);
            (source, reader)
        })
        .collect();
    tokio::task::spawn_blocking(move || compare(&tables, readers, cut)).await.map_err(ActionError::internal)
}

/// What the comparison found for one table.
#[derive(Default)]
struct Hits {
    rows: Vec<String>,
    large: Vec<String>,
    /// Rows also in earlier releases: how many, and of which.
    overlap: usize,
    overlapping: Vec<String>,
}

/// Reads each file once, front to back, against every table.
fn compare(tables: &[Table], readers: Vec<(Source, BlobReader)>, mut cut: Option<String>) -> Vec<(String, Finding)> {
    let mut hits: Vec<Hits> = tables.iter().map(|_| Hits::default()).collect();
    // Dataset files this check cannot read as tables (Parquet, JSON, archives): the reviewers
    // are told, since their rows were not compared.
    let (mut uncompared, mut uncompared_count) = (Vec::new(), 0usize);
    for (source, mut reader) in readers {
        let Source { dataset, key, .. } = source;
        let mut records = match records_of(&key, &mut reader) {
            Ok(Ok(records)) => records,
            Ok(Err(None)) => continue,
            Ok(Err(Some(kind))) => {
                if dataset.is_some() && uncompared.len() < 3 {
                    uncompared.push(format!("`{key}` ({kind})"));
                }
                uncompared_count += usize::from(dataset.is_some());
                continue;
            }
            Err(_) => {
                if let Some(dataset) = &dataset {
                    cut = Some(format!("`{key}` of dataset `{dataset}` could not be read"));
                }
                continue;
            }
        };
        records.next();
        let mut rows = 0usize;
        let mut shared = vec![0usize; tables.len()];
        for (index, record) in records.by_ref().enumerate() {
            rows += 1;
            let hash = row_hash(&record);
            for ((table, found), shared) in tables.iter().zip(hits.iter_mut()).zip(shared.iter_mut()) {
                let Some(at) = table.row_of(hash) else { continue };
                match &dataset {
                    Some(dataset) if found.rows.len() < 3 => {
                        found.rows.push(format!("row {at} is row {} of dataset `{dataset}` ({key})", index + 2));
                    }
                    Some(_) => {}
                    None => *shared += 1,
                }
            }
        }
        let Some(dataset) = dataset else {
            for (found, shared) in hits.iter_mut().zip(shared) {
                if shared > 0 {
                    found.overlap += shared;
                    found.overlapping.push(format!("{shared} in released {key}"));
                }
            }
            continue;
        };
        if records.error.is_some() {
            cut = Some(format!("`{key}` of dataset `{dataset}` could not be read whole"));
        }
        for (table, found) in tables.iter().zip(hits.iter_mut()) {
            if rows >= ROW_COUNT_FLOOR && table.count as f64 >= ROW_COUNT_SHARE * rows as f64 {
                found.large.push(format!("{} rows, {rows} in dataset `{dataset}` ({key})", table.count));
            }
        }
    }
    findings_of(tables, hits, cut.as_deref(), (&uncompared, uncompared_count))
}

/// Each table's lineage findings from what the comparison found.
fn findings_of(
    tables: &[Table],
    hits: Vec<Hits>,
    cut: Option<&str>,
    (uncompared, uncompared_count): (&[String], usize),
) -> Vec<(String, Finding)> {
    let mut findings = Vec::new();
    for (table, found) in tables.iter().zip(hits) {
        let path = table.path.clone();
        let mut add = |rule, outcome, detail: String| findings.push((path.clone(), Finding { rule, outcome, detail }));
        if found.rows.is_empty() {
            add("lineage.row", Outcome::Pass, "no row of a dataset".into());
        } else {
            add("lineage.row", Outcome::Fail, format!("raw rows of a dataset: {}", found.rows.join("; ")));
        }
        if !found.large.is_empty() {
            add("lineage.row-count", Outcome::Fail, format!("as many rows as a dataset: {}", found.large.join("; ")));
        }
        if found.overlap > 0 {
            let detail = format!("{} row(s) also released before: {}", found.overlap, found.overlapping.join("; "));
            add("diff.overlap", Outcome::Flag, detail);
        }
        if let Some(why) = cut {
            add("lineage.partial", Outcome::Fail, why.to_owned());
        }
        if uncompared_count > 0 {
            let detail = format!("{uncompared_count} dataset file(s) not compared, not being tables: {}", uncompared.join(", "));
            add("lineage.uncompared", Outcome::Flag, detail);
        }
    }
    findings
}

/// The records of a table file (by its name, else by its content); else `None` for prose, or
/// what kind of file it is when it could hold rows this check cannot read.
type Opened<R> = Result<Records<R>, Option<&'static str>>;

fn records_of<'a>(key: &str, reader: &'a mut BlobReader) -> std::io::Result<Opened<impl std::io::BufRead + 'a>> {
    let mut head = Vec::new();
    (&mut *reader).take(super::sniff::HEAD as u64).read_to_end(&mut head)?;
    // A start of text may end inside a character.
    let text = !head.contains(&0) && std::str::from_utf8(&head).map_or_else(|e| e.error_len().is_none(), |_| true);
    let whole_head = (head.len() as u64) < super::sniff::HEAD as u64;
    let separator = match kind_of(key, &head, text).name() {
        "csv" => table::separator_of(&head, whole_head).unwrap_or(b','),
        "tsv" => b'\t',
        "text" | "markdown" => match table::separator_of(&head, whole_head) {
            Some(separator) => separator,
            None => return Ok(Err(None)),
        },
        "png" | "pdf" => return Ok(Err(None)),
        other => return Ok(Err(Some(other))),
    };
    let whole = std::io::Cursor::new(head).chain(reader);
    Ok(Ok(Records::new(BufReader::with_capacity(1 << 16, whole), separator)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_compared_trimmed_and_without_case() {
        let read = table::check(&b"name,count\n Alice ,42\nbob,70\n"[..], b',', 10).expect("read");
        let table = Table::new("out.csv".into(), read);
        assert_eq!(table.count, 2);
        assert_eq!(table.row_of(row_hash(&["alice".into(), "42".into()])), Some(2));
        assert!(table::separator_of(b"just a note\n", true).is_none(), "prose is not a table");
    }
}
