//! The lineage checks: an output table must not carry the platform's data out as it came in.
//!
//! - `lineage.row`: a row of the output equal to a row of a dataset (cells trimmed and
//!   compared without case) fails. Every dataset of the deployed spec is compared, granted to
//!   the researcher or not, so what is compared never depends on who asks.
//! - `lineage.row-count`: an output with at least 90% as many rows as a dataset file of 20 or
//!   more rows fails: a table that large is the data, not a statistic about it.
//!
//! Only the output's row hashes are held; the datasets are read one object at a time, up to
//! `LINEAGE_BYTES` in all. A comparison that could not be made whole (that cap, a dataset
//! that could not be read) blocks the request: what was not compared is not passed.

use std::hash::{Hash, Hasher};

use super::checks::{Finding, Outcome, Records, kind_of, table_separator};
use crate::core::platform::Platform;

/// How much dataset content one submission compares at most.
const LINEAGE_BYTES: u64 = 1 << 30;

/// The share of a dataset file's rows an output may not reach, and the smallest file it
/// applies to.
const ROW_COUNT_SHARE: f64 = 0.9;
const ROW_COUNT_FLOOR: usize = 20;

/// A table of the submission: its path, and its rows' hashes with the first row each came
/// from (without the header), sorted by hash: 16 bytes a row.
pub(super) struct Table {
    pub path: String,
    rows: Vec<(u64, u64)>,
    count: usize,
}

/// The separator of a dataset file: by its name, else by its content.
fn separator(path: &str, body: &[u8]) -> Option<u8> {
    table_separator(kind_of(path, body), body)
}

fn row_hash(fields: &[String]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for field in fields {
        field.trim().to_lowercase().hash(&mut hasher);
    }
    hasher.finish()
}

impl Table {
    /// The table `body` holds, if it is one (by content, whatever its name).
    pub(super) fn of(path: &str, body: &[u8]) -> Option<Table> {
        let mut records = Records::new(body, separator(path, body)?);
        records.next();
        let mut rows = Vec::new();
        for (index, record) in records.enumerate() {
            if record.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            rows.push((row_hash(&record), index as u64 + 2));
        }
        let count = rows.len();
        rows.sort_unstable();
        rows.dedup_by_key(|(hash, _)| *hash);
        rows.shrink_to_fit();
        Some(Table { path: path.to_owned(), rows, count })
    }

    /// The output row whose hash this is, if any.
    fn row_of(&self, hash: u64) -> Option<u64> {
        self.rows.binary_search_by_key(&hash, |(h, _)| *h).ok().map(|at| self.rows[at].1)
    }
}

/// Compares the submission's tables with every dataset's CSV and TSV files.
pub(super) async fn check(plane: &Platform, tables: &[Table]) -> Vec<(String, Finding)> {
    if tables.is_empty() {
        return Vec::new();
    }
    let mut found: Vec<Vec<String>> = vec![Vec::new(); tables.len()];
    let mut large: Vec<Vec<String>> = vec![Vec::new(); tables.len()];
    let (mut read, mut cut) = (0u64, None);
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
            let Ok(body) = crate::storage::read_internal(plane, dataset.bucket.as_str(), &key).await else {
                cut = Some(format!("`{}/{key}` could not be read", dataset.bucket));
                continue;
            };
            let Some(sep) = separator(&key, &body) else { continue };
            let mut records = Records::new(&body, sep);
            records.next();
            let mut rows = 0usize;
            for (index, record) in records.enumerate() {
                rows += 1;
                let hash = row_hash(&record);
                for (table, hits) in tables.iter().zip(found.iter_mut()) {
                    if let Some(at) = table.row_of(hash)
                        && hits.len() < 3
                    {
                        hits.push(format!("row {at} is row {} of dataset `{}` ({key})", index + 2, dataset.name));
                    }
                }
            }
            for (table, hits) in tables.iter().zip(large.iter_mut()) {
                if rows >= ROW_COUNT_FLOOR && table.count as f64 >= ROW_COUNT_SHARE * rows as f64 {
                    hits.push(format!("{} rows, {} in dataset `{}` ({key})", table.count, rows, dataset.name));
                }
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
        let table = Table::of("out.csv", b"name,count\n Alice ,42\nbob,7\n").expect("a table");
        assert_eq!(table.count, 2);
        assert_eq!(table.row_of(row_hash(&["alice".into(), "42".into()])), Some(2));
        assert!(Table::of("out.txt", b"just a note\n").is_none(), "prose is not a table");
    }
}
