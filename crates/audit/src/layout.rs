//! Where the trail's files live and what they are called: CloudTrail's layout under
//! `AWSLogs/<account>/…/<region>/YYYY/MM/DD/`, with names that sort in writing order.
//!
//! Records go to `DataSandbox/` (one open `.jsonl` file, then sealed `.json.gz` files), signed
//! checkpoints to `DataSandbox-Checkpoint/`, signed hourly digests to `DataSandbox-Digest/`, and
//! the public key that checks both to `DataSandbox-PublicKey/`.
//!
//! When several nodes share one metadata store, each keeps a chain of its own (its own
//! sequence numbers, signing key and checkpoints: no node waits on another to append), so
//! the node's name is one more directory level: `…/DataSandbox/<region>/<node>/YYYY/…` and
//! `…/DataSandbox-PublicKey/<node>/`. A single embedded node has no such level.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

/// The trail's identity and root directory (the "trail bucket").
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub account_id: String,
    pub region: String,
    /// The bucket name recorded in digests (`digestS3Bucket`, `s3Bucket`).
    pub bucket: String,
    /// The node whose chain this is, in scale-out mode; `None` for the single embedded node.
    pub node: Option<String>,
}

/// The kinds of file in a trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Log,
    Checkpoint,
    Digest,
}

impl Kind {
    fn product(self) -> &'static str {
        match self {
            Kind::Log => "DataSandbox",
            Kind::Checkpoint => "DataSandbox-Checkpoint",
            Kind::Digest => "DataSandbox-Digest",
        }
    }
}

pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl Layout {
    pub fn base(&self, kind: Kind) -> PathBuf {
        let region = self.root.join("AWSLogs").join(&self.account_id).join(kind.product()).join(&self.region);
        match &self.node {
            Some(node) => region.join(node),
            None => region,
        }
    }

    pub fn public_keys(&self) -> PathBuf {
        let keys = self.root.join("AWSLogs").join(&self.account_id).join("DataSandbox-PublicKey");
        match &self.node {
            Some(node) => keys.join(node),
            None => keys,
        }
    }

    /// Every directory this node's trail writes into, whatever the kind of file.
    pub fn node_directories(&self) -> [PathBuf; 4] {
        [self.public_keys(), self.base(Kind::Log), self.base(Kind::Digest), self.base(Kind::Checkpoint)]
    }

    fn dated(&self, kind: Kind, time: &DateTime<Utc>) -> PathBuf {
        self.base(kind).join(time.format("%Y/%m/%d").to_string())
    }

    /// A new log file whose first record has `first_sequence`; `.jsonl` while open.
    pub fn log_file(&self, time: &DateTime<Utc>, first_sequence: u64) -> PathBuf {
        let name =
            format!("{}_DataSandbox_{}_{}_{first_sequence:020}.jsonl", self.account_id, self.region, time.format("%Y%m%dT%H%M%S%3fZ"));
        self.dated(Kind::Log, time).join(name)
    }

    /// The hour's checkpoint file (appended to all hour long).
    pub fn checkpoint_file(&self, time: &DateTime<Utc>) -> PathBuf {
        let name = format!("{}_DataSandbox-Checkpoint_{}_{}Z.jsonl", self.account_id, self.region, time.format("%Y%m%dT%H"));
        self.dated(Kind::Checkpoint, time).join(name)
    }

    pub fn digest_file(&self, end: &DateTime<Utc>) -> PathBuf {
        let name = format!("{}_DataSandbox-Digest_{}_{}.json.gz", self.account_id, self.region, end.format("%Y%m%dT%H%M%S%3fZ"));
        self.dated(Kind::Digest, end).join(name)
    }

    /// The object key of a file: its path relative to the root, with `/` separators.
    pub fn object_key(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).to_string_lossy().replace('\\', "/")
    }

    /// Every file of `kind` with one of the `extensions`, sorted by file name (writing order).
    pub fn files(&self, kind: Kind, extensions: &[&str]) -> std::io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        collect(&self.base(kind), extensions, &mut files)?;
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        Ok(files)
    }
}

fn collect(dir: &Path, extensions: &[&str], files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, extensions, files)?;
        } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| extensions.iter().any(|e| n.ends_with(e))) {
            files.push(path);
        }
    }
    Ok(())
}

/// The sealed (`.json.gz`) name of an open (`.jsonl`) log file.
pub fn sealed_name(open: &Path) -> PathBuf {
    let name = open.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    open.with_file_name(format!("{}.json.gz", name.trim_end_matches(".jsonl")))
}

/// Creates the directories of `path` and makes the new entries durable.
pub fn create_parent(path: &Path) -> std::io::Result<()> {
    let parent = path.parent().expect("trail files have a parent directory");
    if !parent.exists() {
        std::fs::create_dir_all(parent)?;
        if let Some(grandparent) = parent.parent() {
            std::fs::File::open(grandparent)?.sync_all()?;
        }
    }
    Ok(())
}

pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path.parent().expect("has a parent"))?.sync_all()
}
