//! `audit validate`: checks a trail offline, given only its files and the public key, and
//! reports in the format of `aws cloudtrail validate-logs`: one line per file (invalid ones
//! always, valid ones with `verbose`), then counts; invalid if anything is.
//!
//! Three layers are checked: the digest chain (signed, hourly, listing sealed log files with
//! their hashes), the checkpoint chain (signed, within a second of any record), and the
//! per-record hash chain across every log file, sealed or still open. Every record must be
//! covered by a signature (a checkpoint or digest at or after it): records no signature
//! covers are invalid, except the last few seconds' worth that a crash, or a trail still
//! being written, leaves unsigned. What no file of the trail can show — its whole tail
//! deleted along with the signatures over it — a witness shows: copies of the checkpoints
//! and digests on another file system (`audit.witness`), checked against the trail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use crate::files::{self, DigestFile};
use crate::layout::{self, Kind, Layout};
use crate::signing;

mod checkpoints;
mod digests;
mod records;
mod report;
mod scan;
mod witness;

pub use report::{BAD_HASH, BAD_SIGNATURE, INVALID_FORMAT, MOVED, NOT_FOUND, Report, VALID, ValidateOptions};

/// Validates the trail in `layout` against `key`. The witness is read first, so that a trail
/// still being written never looks shorter than its witness; then the checkpoint chain, the
/// digest chain, the record chain and its coverage by signatures, each reporting as it goes.
pub fn validate(layout: &Layout, key: &VerifyingKey, options: &ValidateOptions) -> Report {
    let fingerprint = signing::fingerprint(key);
    let mut reporter = report::Reporter::new(options);
    let witnessed = options.witness.as_ref().map(|w| witness::read_witness(layout, w, key, &fingerprint, &mut reporter));
    let all_logs = layout.files(Kind::Log, &[".jsonl", ".json.gz"]).unwrap_or_default();
    let logs: Vec<PathBuf> =
        all_logs.iter().filter(|p| !(p.extension().is_some_and(|e| e == "jsonl") && layout::sealed_name(p).exists())).cloned().collect();
    let signed_checkpoints = checkpoints::check_checkpoints(layout, key, &fingerprint, &mut reporter);
    // Every log file is read, decompressed and hashed once, in parallel.
    let scans = scan::scan_logs(&logs);
    let digest_chain = digests::check_digests(layout, key, &fingerprint, &scans, &all_logs, &mut reporter);
    if let Some(named) = signed_checkpoints.newest.as_ref().and_then(|c| c.last_digest_s3_object.clone())
        && !digest_chain.objects.contains(&named)
    {
        reporter.file("Digest file", &format!("s3://{}/{named}", layout.bucket), None, &[NOT_FOUND.to_owned()]);
    }
    let record_chain = records::check_records(layout, &scans, &signed_checkpoints, &mut reporter);
    records::check_coverage(&scans, &signed_checkpoints, digest_chain.signed_through, &record_chain, &mut reporter);
    if let Some(witnessed) = &witnessed {
        witness::check_witness(layout, witnessed, &scans, record_chain.last_sequence, &digest_chain.objects, &mut reporter);
    }
    reporter.finish(layout, record_chain.gaps, record_chain.bytes_checked)
}

/// The newest public key the trail holds (`DataSandbox-PublicKey/`), for validating it when
/// no key is given from elsewhere.
pub fn newest_public_key(layout: &Layout) -> Result<VerifyingKey, String> {
    let mut keys: Vec<PathBuf> = std::fs::read_dir(layout.public_keys())
        .map_err(|e| format!("no public key in `{}` ({e}); pass --public-key", layout.public_keys().display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    keys.sort();
    let path = keys.pop().ok_or_else(|| "the trail holds no public key; pass --public-key".to_owned())?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read the public key `{}`: {e}", path.display()))?;
    crate::signing::parse_public_key(&text).map_err(|e| format!("`{}`: {e}", path.display()))
}

/// Every record in `layout`'s log files (open or sealed) whose line contains `needle`, in
/// order, for files anchored in the trail (a recording's segments). It checks nothing: the
/// trail itself is checked by [`validate`].
pub fn records_containing(layout: &Layout, needle: &str) -> Vec<serde_json::Value> {
    let logs = layout.files(Kind::Log, &[".jsonl", ".json.gz"]).unwrap_or_default();
    let mut records = Vec::new();
    for path in logs.iter().filter(|p| !(p.extension().is_some_and(|e| e == "jsonl") && layout::sealed_name(p).exists())) {
        let Ok(bytes) = std::fs::read(path) else { continue };
        let bytes = if path.extension().is_some_and(|e| e == "gz") { files::gunzip(&bytes).unwrap_or_default() } else { bytes };
        let text = String::from_utf8_lossy(&bytes);
        // A sealed file's lines are the open file's, each but the last followed by a comma.
        let lines = text.lines().filter(|line| line.contains(needle)).map(|line| line.strip_suffix(',').unwrap_or(line));
        records.extend(lines.filter_map(|line| serde_json::from_str(line).ok()));
    }
    records
}

/// The trail bucket named by the newest digest, if there is one.
pub fn bucket_of(layout: &Layout) -> Option<String> {
    let newest = layout.files(Kind::Digest, &[".json.gz"]).ok()?.pop()?;
    let bytes = files::gunzip(&std::fs::read(newest).ok()?).ok()?;
    serde_json::from_slice::<DigestFile>(&bytes).ok().map(|d| d.digest_s3_bucket)
}

/// The trails under `root`, found from their `AWSLogs/<account>/DataSandbox…/<region>`
/// directories: one per node when nodes keep chains of their own (a `<node>/` level under
/// the region and under `DataSandbox-PublicKey/`), else the single embedded node's. A node is
/// found from any of its directories, so deleting its public key or its logs still leaves
/// it to report on.
pub fn discover_layouts(root: &Path) -> Result<Vec<Layout>, String> {
    let logs = root.join("AWSLogs");
    let account = subdirectories(&logs)
        .into_iter()
        .next()
        .ok_or_else(|| format!("`{}` is not a DataSandbox trail (no AWSLogs/<account>)", root.display()))?;
    let account_dir = logs.join(&account);
    let products = ["DataSandbox", "DataSandbox-Checkpoint", "DataSandbox-Digest"];
    let region = products
        .iter()
        .find_map(|product| subdirectories(&account_dir.join(product)).into_iter().next())
        .ok_or_else(|| format!("`{}` has no log or checkpoint files", root.display()))?;
    let mut nodes: BTreeSet<String> = subdirectories(&account_dir.join("DataSandbox-PublicKey")).into_iter().collect();
    let mut under_regions = BTreeSet::new();
    for product in products {
        under_regions.extend(subdirectories(&account_dir.join(product).join(&region)));
    }
    let is_year = |name: &String| name.len() == 4 && name.bytes().all(|b| b.is_ascii_digit());
    if !nodes.is_empty() || under_regions.iter().any(|name| !is_year(name)) {
        nodes.extend(under_regions);
    }
    let single = Layout { root: root.to_owned(), account_id: account, region, bucket: String::new(), node: None };
    let mut layouts: Vec<Layout> =
        if nodes.is_empty() { vec![single] } else { nodes.into_iter().map(|node| Layout { node: Some(node), ..single.clone() }).collect() };
    for layout in &mut layouts {
        layout.bucket = bucket_of(layout).unwrap_or_else(|| "datasandbox-trail".to_owned());
    }
    Ok(layouts)
}

/// The names of the directories in `dir`, sorted; none if it cannot be read.
fn subdirectories(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter(|e| e.path().is_dir()).filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Validates every node's chain under `root` (or only node `only`), each with its own newest
/// public key unless `key` is given (which checks one chain only), and reports them in one:
/// each node's lines under `Node <name>:`, then one `Node <name>: valid|INVALID` line per
/// node; valid only if every node is. A node whose public key is gone is invalid, since
/// nothing of its chain can be trusted. A single embedded node's trail reports as always.
pub fn validate_nodes(root: &Path, key: Option<&VerifyingKey>, only: Option<&str>, options: &ValidateOptions) -> Result<Report, String> {
    let mut layouts = discover_layouts(root)?;
    if let Some(node) = only {
        layouts.retain(|l| l.node.as_deref() == Some(node));
        if layouts.is_empty() {
            return Err(format!("the trail holds no chain of node `{node}`"));
        }
    }
    if key.is_some() && layouts.len() > 1 {
        return Err(format!("a public key checks one chain, and the trail holds {} nodes' chains; choose one node", layouts.len()));
    }
    let mut combined = Report { lines: Vec::new(), valid: true, bytes_checked: 0 };
    let mut verdicts = Vec::new();
    for layout in &layouts {
        let newest = match key {
            Some(key) => Ok(*key),
            None => newest_public_key(layout),
        };
        let Some(node) = &layout.node else {
            return Ok(validate(layout, &newest?, options));
        };
        combined.lines.push(format!("Node {node}:"));
        let valid = match newest {
            Ok(key) => {
                let report = validate(layout, &key, options);
                combined.lines.extend(report.lines);
                combined.bytes_checked += report.bytes_checked;
                report.valid
            }
            Err(message) => {
                combined.lines.push(format!("INVALID: {message}"));
                false
            }
        };
        combined.valid &= valid;
        verdicts.push(format!("Node {node}: {}", if valid { "valid" } else { "INVALID" }));
    }
    combined.lines.extend(verdicts);
    Ok(combined)
}
