//! The validation report: the verdict strings of `aws cloudtrail validate-logs`, the options
//! that choose which files are reported, and the reporter that collects one line per file and
//! the counts under them. Every check of [`super`] reports through it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::layout::Layout;

pub const VALID: &str = "valid";
pub const NOT_FOUND: &str = "INVALID: not found";
pub const MOVED: &str = "INVALID: has been moved from its original location";
pub const INVALID_FORMAT: &str = "INVALID: invalid format";
pub const BAD_SIGNATURE: &str = "INVALID: signature verification failed";
pub const BAD_HASH: &str = "INVALID: hash value doesn't match";

#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub verbose: bool,
    /// The trail's witness directory, if it has one.
    pub witness: Option<PathBuf>,
}

/// The report, line by line as it is printed, and the verdict.
#[derive(Debug, Clone)]
pub struct Report {
    pub lines: Vec<String>,
    pub valid: bool,
    /// Uncompressed bytes of log content checked, for throughput figures.
    pub bytes_checked: u64,
}

#[derive(Default)]
struct Tally {
    total: usize,
    invalid: usize,
}

/// Collects the per-file lines in the order the checks find them, and counts valid and
/// invalid files of each kind for the summary.
pub(crate) struct Reporter<'a> {
    options: &'a ValidateOptions,
    lines: Vec<String>,
    digests: Tally,
    logs: Tally,
    checkpoints: Tally,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(options: &'a ValidateOptions) -> Reporter<'a> {
        Reporter { options, lines: Vec::new(), digests: Tally::default(), logs: Tally::default(), checkpoints: Tally::default() }
    }

    fn in_window(&self, time: Option<DateTime<Utc>>) -> bool {
        let Some(time) = time else { return true };
        self.options.start.is_none_or(|s| time >= s) && self.options.end.is_none_or(|e| time <= e)
    }

    /// One file's verdict: its problems, or valid.
    pub(crate) fn file(&mut self, kind: &str, location: &str, time: Option<DateTime<Utc>>, problems: &[String]) {
        if !self.in_window(time) {
            return;
        }
        let tally = match kind {
            "Digest file" => &mut self.digests,
            "Checkpoint file" => &mut self.checkpoints,
            _ => &mut self.logs,
        };
        tally.total += 1;
        if problems.is_empty() {
            if self.options.verbose {
                self.lines.push(format!("{kind}\t{location}\t{VALID}"));
            }
        } else {
            tally.invalid += 1;
            for problem in problems {
                self.lines.push(format!("{kind}\t{location}\t{problem}"));
            }
        }
    }

    pub(crate) fn note(&mut self, kind: &str, location: &str, note: &str) {
        self.lines.push(format!("{kind}\t{location}\t{note}"));
    }

    /// The printed report: a heading naming the trail and the window, the per-file lines, the
    /// gaps in auditing, then one count line per kind of file.
    pub(crate) fn finish(self, layout: &Layout, gaps: Vec<String>, bytes_checked: u64) -> Report {
        let mut lines = Vec::new();
        let start = self.options.start.map_or_else(|| "the beginning".to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let end = self.options.end.unwrap_or_else(Utc::now).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        lines.push(format!(
            "Validating log files for trail arn:datasandbox:audit:{}:{}:trail/DataSandbox between {start} and {end}",
            layout.region, layout.account_id
        ));
        lines.push(String::new());
        lines.extend(self.lines);
        lines.extend(gaps);
        lines.push(String::new());
        let mut valid = true;
        for (name, tally) in [("digest", &self.digests), ("log", &self.logs), ("checkpoint", &self.checkpoints)] {
            let good = tally.total - tally.invalid;
            if tally.invalid > 0 {
                valid = false;
                lines.push(format!("{good}/{} {name} files valid, {}/{} {name} files INVALID", tally.total, tally.invalid, tally.total));
            } else {
                lines.push(format!("{good}/{} {name} files valid", tally.total));
            }
        }
        Report { lines, valid, bytes_checked }
    }
}

/// Where the report says a trail file is: its S3-style location.
pub(crate) fn location(layout: &Layout, path: &Path) -> String {
    format!("s3://{}/{}", layout.bucket, layout.object_key(path))
}

/// The time in a trail file's name (`…_20261129T041500123Z_…` or `…_20261129T04Z…`).
pub(crate) fn parse_name_time(path: &Path) -> Option<DateTime<Utc>> {
    let name = path.file_name()?.to_str()?;
    name.split('_').find_map(|part| {
        let stamp = part.split('.').next()?.strip_suffix('Z')?;
        if stamp.len() < 11 || stamp.as_bytes()[8] != b'T' {
            return None;
        }
        let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
        if digits.len() + 1 != stamp.len() {
            return None;
        }
        let padded = format!("{digits:0<17}");
        let number = |range: std::ops::Range<usize>| padded.get(range).and_then(|d| d.parse::<u32>().ok());
        let date = chrono::NaiveDate::from_ymd_opt(number(0..4)? as i32, number(4..6)?, number(6..8)?)?;
        let time = chrono::NaiveTime::from_hms_milli_opt(number(8..10)?, number(10..12)?, number(12..14)?, number(14..17)?)?;
        Some(NaiveDateTime::new(date, time).and_utc())
    })
}
