//! The lineage checks: an output table must not carry the platform's data out as it came in.
//!
//! - `lineage.row`: a row of the output equal to a row of a dataset (cells trimmed and
//!   compared without case) fails. Every dataset of the deployed spec is compared, granted to
//!   the researcher or not, so what is compared never depends on who asks.
//! - `lineage.row-count`: an output with at least 90% as many rows as a dataset file of 20 or
//!   more rows fails: a table that large is the data, not a statistic about it.
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
}

impl Table {
    /// The table a pass over a file read.
    pub(super) fn new(path: String, read: table::Read) -> Table {
        let mut rows = read.rows;
        rows.sort_unstable();
        rows.dedup_by_key(|(hash, _)| *hash);
        rows.shrink_to_fit();
        Table { path, rows, count: read.count }
    }

    /// The output row whose hash this is, if any.
    fn row_of(&self, hash: u64) -> Option<u64> {
        self.rows.binary_search_by_key(&hash, |(h, _)| *h).ok().map(|at| self.rows[at].1)
    }
}

/// A dataset file to compare with.
struct Source {
    dataset: String,
    key: String,
    blob: String,
    size: u64,
}

/// Compares the submission's tables with every dataset's CSV and TSV files.
pub(super) async fn check(plane: &Platform, tables: Vec<Table>) -> Result<Vec<(String, Finding)>, ActionError> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let (mut sources, mut read, mut cut) = (Vec::new(), 0u64, None);
    if let Some(table) = tables.iter().find(|t| t.count > HASHED_ROWS) {
        cut = Some(format!("`{}` has {} rows; only the first {HASHED_ROWS} were compared", table.path, table.count));
    }
    'datasets: for dataset in &plane.current().datasets {
        let keys = match crate::storage::keys_under(plane, dataset.bucket.as_str(), &dataset.prefix).await {
            Ok(keys) => keys,
            Err(err) => {
                cut = Some(format!("dataset `{}` could not be listed: {}", dataset.name, err.message));
                continue;
            }
        };
        for (key, size) in keys {
            if read + size > LINEAGE_BYTES {
                cut = Some(format!("only the first {} MiB of the datasets were compared", LINEAGE_BYTES >> 20));
                break 'datasets;
            }
            read += size;
            match crate::storage::blob_internal(plane, dataset.bucket.as_str(), &key).await {
                Ok((blob, size)) => sources.push(Source { dataset: dataset.name.clone(), key, blob, size }),
                Err(_) => cut = Some(format!("`{}/{key}` could not be read", dataset.bucket)),
            }
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

/// Reads each dataset file once, front to back, against every table.
fn compare(tables: &[Table], readers: Vec<(Source, BlobReader)>, mut cut: Option<String>) -> Vec<(String, Finding)> {
    let mut found: Vec<Vec<String>> = vec![Vec::new(); tables.len()];
    let mut large: Vec<Vec<String>> = vec![Vec::new(); tables.len()];
    for (source, mut reader) in readers {
        let Source { dataset, key, .. } = source;
        let mut head = Vec::new();
        if (&mut reader).take(super::sniff::HEAD as u64).read_to_end(&mut head).is_err() {
            cut = Some(format!("`{key}` of dataset `{dataset}` could not be read"));
            continue;
        }
        // By its name, else by its content (a start of text may end inside a character).
        let text = !head.contains(&0) && std::str::from_utf8(&head).map_or_else(|e| e.error_len().is_none(), |_| true);
        let separator = match kind_of(&key, &head, text).name() {
            "csv" => Some(b','),
            "tsv" => Some(b'\t'),
            "text" | "markdown" => table::separator_of(&head, (head.len() as u64) < super::sniff::HEAD as u64),
            _ => None,
        };
        let Some(separator) = separator else { continue };
        let whole = std::io::Cursor::new(head).chain(reader);
        let mut records = Records::new(BufReader::with_capacity(1 << 16, whole), separator);
        records.next();
        let mut rows = 0usize;
        for (index, record) in records.by_ref().enumerate() {
            rows += 1;
            let hash = row_hash(&record);
            for (table, hits) in tables.iter().zip(found.iter_mut()) {
                if let Some(at) = table.row_of(hash)
                    && hits.len() < 3
                {
                    hits.push(format!("row {at} is row {} of dataset `{dataset}` ({key})", index + 2));
                }
            }
        }
        if records.error.is_some() {
            cut = Some(format!("`{key}` of dataset `{dataset}` could not be read whole"));
        }
        for (table, hits) in tables.iter().zip(large.iter_mut()) {
            if rows >= ROW_COUNT_FLOOR && table.count as f64 >= ROW_COUNT_SHARE * rows as f64 {
                hits.push(format!("{} rows, {rows} in dataset `{dataset}` ({key})", table.count));
            }
        }
    }
    let mut findings = Vec::new();
    for ((table, hits), large) in tables.iter().zip(found).zip(large) {
        let path = table.path.clone();
        findings.push((
            path.clone(),
            if hits.is_empty() {
                Finding { rule: "lineage.row", outcome: Outcome::Pass, detail: "no row of a dataset".into() }
            } else {
                Finding { rule: "lineage.row", outcome: Outcome::Fail, detail: format!("raw rows of a dataset: {}", hits.join("; ")) }
            },
        ));
        if !large.is_empty() {
            findings.push((
                path.clone(),
                Finding {
                    rule: "lineage.row-count",
                    outcome: Outcome::Fail,
                    detail: format!("as many rows as a dataset: {}", large.join("; ")),
                },
            ));
        }
        if let Some(why) = &cut {
            findings.push((path, Finding { rule: "lineage.partial", outcome: Outcome::Fail, detail: why.clone() }));
        }
    }
    findings
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
