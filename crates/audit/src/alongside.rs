//! The trail's records written alongside their callers' work (`Trail::append_alongside`):
//! durable when a caller waits, when a record whose caller already waits follows them, or on
//! their own within moments; chained with the rest, and never signed, sealed or closed before
//! they are durable.

use std::time::{Duration, Instant};

use crate::fixtures::{layout, record};
use crate::signing::Signer;
use crate::validate::{ValidateOptions, newest_public_key, validate};
use crate::writer::{Trail, TrailOptions};

fn open(root: &std::path::Path) -> Trail {
    open_with(root, TrailOptions::default())
}

fn open_with(root: &std::path::Path, options: TrailOptions) -> Trail {
    Trail::open(layout(root, "a"), Signer::from_bytes(&[7; 32]), options, None).expect("trail opens")
}

/// How many lines the trail's log files under `root` hold now.
fn lines_written(root: &std::path::Path) -> usize {
    let logs = layout(root, "a").files(crate::layout::Kind::Log, &[".jsonl"]).expect("log files");
    logs.iter().map(|path| std::fs::read(path).expect("log").iter().filter(|&&b| b == b'\n').count()).sum()
}

/// Closes the trail and says whether `audit validate` finds it whole, with how many records.
async fn closed_and_validated(trail: Trail, root: &std::path::Path) -> (bool, Vec<String>) {
    tokio::task::spawn_blocking(move || trail.close()).await.expect("join").expect("close");
    let layout = layout(root, "a");
    let report = validate(&layout, &newest_public_key(&layout).expect("key"), &ValidateOptions::default());
    (report.valid, report.lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_caller_waits_makes_those_written_alongside_durable_with_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = open(dir.path());
    let handed: Vec<_> = (0..20).map(|n| trail.append_alongside(&record("a", n)).expect("handed")).collect();
    trail.append(&record("a", 20)).await.expect("append");
    assert_eq!(trail.last_sequence(), 21, "the waiting record's fsync covers the ones written alongside before it");
    for durable in handed {
        durable.wait().await.expect("durable");
    }
    let waited = trail.append_alongside(&record("a", 21)).expect("handed");
    waited.wait().await.expect("durable");
    assert_eq!(trail.last_sequence(), 22);
    let (valid, lines) = closed_and_validated(trail, dir.path()).await;
    assert!(valid, "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_written_alongside_waits_for_its_fsync_until_its_caller_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = TrailOptions {
        unsynced_at_most: Duration::from_secs(600),
        checkpoint_interval: Duration::from_secs(600),
        digest_interval: Duration::from_secs(86_400),
        ..TrailOptions::default()
    };
    let trail = open_with(dir.path(), options);
    let first = trail.append_alongside(&record("a", 0)).expect("handed");
    let second = trail.append_alongside(&record("a", 1)).expect("handed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(trail.last_sequence(), 0, "a record nobody waits for yet was made durable at once");
    assert_eq!(lines_written(dir.path()), 0, "records nobody waits for yet are held, unwritten");
    second.wait().await.expect("durable");
    assert_eq!(trail.last_sequence(), 2, "one fsync, for both");
    assert_eq!(lines_written(dir.path()), 2, "one write, for both");
    first.wait().await.expect("durable");
    let (valid, lines) = closed_and_validated(trail, dir.path()).await;
    assert!(valid, "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_written_alongside_is_durable_on_its_own_within_moments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = open(dir.path());
    let handed = trail.append_alongside(&record("a", 0)).expect("handed");
    let started = Instant::now();
    while trail.last_sequence() < 1 {
        assert!(started.elapsed() < Duration::from_secs(2), "a record nobody waits for stayed unsynced");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    handed.wait().await.expect("durable");
    // A handle dropped unwaited loses nothing either.
    drop(trail.append_alongside(&record("a", 1)).expect("handed"));
    let (valid, lines) = closed_and_validated(trail.clone(), dir.path()).await;
    assert!(valid, "{lines:#?}");
    assert_eq!(trail.last_sequence(), 2, "the record whose handle was dropped is durable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_whose_fsync_failed_are_refused_and_left_out_of_the_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = open(dir.path());
    for n in 0..3 {
        trail.append(&record("a", n)).await.expect("append");
    }
    *crate::reserve::FAILING_SYNCS.lock().expect("lock") = Some(dir.path().to_owned());
    let handed = trail.append_alongside(&record("a", 3)).expect("handed");
    assert!(handed.wait().await.is_err(), "a record whose fsync failed was answered as durable");
    assert!(trail.append(&record("a", 4)).await.is_err(), "a record whose fsync failed was answered as durable");
    *crate::reserve::FAILING_SYNCS.lock().expect("lock") = None;
    trail.append(&record("a", 5)).await.expect("append once the disk takes writes again");
    assert_eq!(trail.last_sequence(), 4, "the failed records hold no place in the chain");
    let (valid, lines) = closed_and_validated(trail, dir.path()).await;
    assert!(valid, "the chain goes on from the last durable record: {lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_still_unsynced_at_close_are_made_durable_and_signed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = open(dir.path());
    let handed: Vec<_> = (0..50).map(|n| trail.append_alongside(&record("a", n)).expect("handed")).collect();
    let (valid, lines) = closed_and_validated(trail, dir.path()).await;
    assert!(valid, "{lines:#?}");
    for durable in handed {
        durable.wait().await.expect("answered durable by the close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_handed_after_close_is_refused_not_left_waiting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = open(dir.path());
    let before = trail.append_alongside(&record("a", 0)).expect("handed");
    let (valid, lines) = closed_and_validated(trail.clone(), dir.path()).await;
    assert!(valid, "{lines:#?}");
    before.wait().await.expect("handed before the close: durable");
    assert!(
        matches!(trail.append_alongside(&record("a", 1)), Err(crate::error::TrailError::Stopped)),
        "a record handed to a closed trail was taken"
    );
    assert_eq!(trail.last_sequence(), 1);
}

/// The hour's digest waits for the sealer to seal the file just closed (up to `rotate_bytes`
/// to read and compress): appends go on meanwhile, and a checkpoint names the digest once it is
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_go_on_while_the_sealer_works_on_the_hours_digest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = TrailOptions { digest_interval: Duration::from_millis(100), ..TrailOptions::default() };
    *crate::sealer::HELD_SEALERS.lock().expect("lock") = Some(dir.path().to_owned());
    let trail = open_with(dir.path(), options);
    trail.append(&record("a", 0)).await.expect("append");
    let digests = || layout(dir.path(), "a").files(crate::layout::Kind::Digest, &[".json.gz"]).expect("digests").len();
    // Past a digest's time: the writer has rotated and asked for the digest.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let appended = tokio::time::timeout(Duration::from_secs(5), trail.append(&record("a", 1))).await;
    let digests_while_held = digests();
    *crate::sealer::HELD_SEALERS.lock().expect("lock") = None;
    appended.expect("an append waited for the sealer").expect("append");
    assert_eq!(digests_while_held, 0, "the sealer wrote a digest while it was held");
    // The newest checkpoint names a digest (the newest) without another append or a close.
    let named = || {
        let files = layout(dir.path(), "a").files(crate::layout::Kind::Checkpoint, &[".jsonl"]).expect("checkpoint files");
        let text = files.last().map(|path| std::fs::read_to_string(path).expect("checkpoints")).unwrap_or_default();
        text.lines().last().is_some_and(|line| line.contains("\"lastDigestS3Object\":\""))
    };
    let started = Instant::now();
    while digests() == 0 || !named() {
        assert!(started.elapsed() < Duration::from_secs(5), "no digest, or none named, once the sealer went on");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (valid, lines) = closed_and_validated(trail, dir.path()).await;
    assert!(valid, "{lines:#?}");
}
