//! The malware check (`malware.clamav`): ClamAV's `clamscan` over the file, fed on its standard
//! input, with the signatures in `airlock.clamav_database`. It runs as `nobody` (ClamAV parses
//! what the file claims to be, and the file is untrusted), for at most [`SCAN_TIME`]. It fails
//! closed: a file ClamAV could not scan whole (over its limits, or the scanner or its
//! signatures missing) is blocked, never passed.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::finding::{Finding, Outcome};
use crate::core::blobs::Blobs;

/// How much of the file one read fetches for the scanner.
const PIECE: u64 = 1 << 20;

/// How long one scan may take.
const SCAN_TIME: Duration = Duration::from_secs(120);

const RULE: &str = "malware.clamav";

fn fail(detail: String) -> Finding {
    Finding { rule: RULE, outcome: Outcome::Fail, detail }
}

/// Scans the blob `blob` of `size` bytes with the signatures in `database`, fed to the scanner
/// a piece at a time; files up to `max_bytes` are scanned whole.
pub(super) async fn scan(database: &str, max_bytes: u64, blobs: &Blobs, blob: &str, size: u64) -> Finding {
    let limit = (max_bytes + 1).to_string();
    let mut command = tokio::process::Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "clamscan", "--no-summary", "--stdout", "--database"])
        .arg(database)
        .arg(format!("--max-filesize={limit}"))
        .arg(format!("--max-scansize={limit}"))
        // A file beyond any of ClamAV's limits (size, recursion, files in an archive) is
        // reported, not silently passed.
        .arg("--alert-exceeds-max=yes")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return fail(format!("the malware scanner could not start ({err}); install Debian's clamav")),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let (blobs, blob) = (blobs.clone(), blob.to_owned());
    // Whether the whole file went in: a scan of part of it passes nothing.
    let feed = tokio::spawn(async move {
        let mut at = 0;
        while at < size {
            let end = (at + PIECE).min(size);
            let piece = blobs.get(&blob, Some(at..end)).await.map_err(|err| err.to_string())?;
            if piece.is_empty() {
                return Err("the stored copy is shorter than its size".to_owned());
            }
            stdin.write_all(&piece).await.map_err(|err| err.to_string())?;
            at += piece.len() as u64;
        }
        Ok(())
    });
    let output = match tokio::time::timeout(SCAN_TIME, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return fail(format!("the malware scanner failed: {err}")),
        Err(_) => return fail(format!("the malware scan did not finish within {} s", SCAN_TIME.as_secs())),
    };
    match feed.await {
        Ok(Ok(())) => {}
        // The scanner stops reading once it found a signature: its verdict stands.
        Ok(Err(_)) if output.status.code() == Some(1) => {}
        Ok(Err(why)) => return fail(format!("the file could not be fed whole to the malware scanner: {why}")),
        Err(err) => return fail(format!("the malware scan's feed failed: {err}")),
    }
    let said = String::from_utf8_lossy(&output.stdout);
    let found = said.lines().filter_map(|l| l.strip_prefix("stdin: ")?.strip_suffix(" FOUND")).collect::<Vec<_>>();
    match output.status.code() {
        Some(0) => Finding { rule: RULE, outcome: Outcome::Pass, detail: "no signature matched".into() },
        Some(1) => fail(format!("ClamAV found {}", found.join(", "))),
        _ => {
            let why = String::from_utf8_lossy(&output.stderr);
            let why = why.lines().find(|l| l.contains("ERROR")).unwrap_or(why.trim());
            fail(format!(
                "the file could not be scanned ({}); a file that is not scanned is not released: put ClamAV's signatures in `{database}` (freshclam), or set airlock.malware_scan = \"off\"",
                why.trim()
            ))
        }
    }
}
