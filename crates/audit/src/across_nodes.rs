//! Several nodes' trails: their chains in one bucket, validated per node, and their records
//! in one index. On real parts: the bucket is an object store on a
//! directory (object_store's own local backend, as the embedded mode's), the index SQLite, or
//! PostgreSQL when `DATASANDBOX_TEST_POSTGRES` names a server (a fresh database each run).

use std::path::Path;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use serde_json::json;

use crate::bucket::TrailBucket;
use crate::fixtures::{layout, record};
use crate::index::{Index, IndexError, IndexTarget, LookupCursor, LookupFilter, TraceSelector};
use crate::signing::Signer;
use crate::validate::{ValidateOptions, discover_layouts, newest_public_key, validate};
use crate::writer::{Trail, TrailOptions};

fn bucket_on(dir: &Path) -> TrailBucket {
    std::fs::create_dir_all(dir).expect("bucket dir");
    TrailBucket::new(Arc::new(LocalFileSystem::new_with_prefix(dir).expect("local store")), "trail")
}

/// Opens node `node`'s trail in `root` with the bucket, appends `count` records and closes it.
async fn write_records(root: &Path, node: &str, bucket: &TrailBucket, secret: &[u8; 32], count: usize) {
    let options = TrailOptions { bucket: Some(bucket.clone()), rotate_bytes: 2048, ..TrailOptions::default() };
    let trail = Trail::open(layout(root, node), Signer::from_bytes(secret), options, None).expect("trail opens");
    for n in 0..count {
        trail.append(&record(node, n)).await.expect("append");
    }
    let closing = trail.clone();
    tokio::task::spawn_blocking(move || closing.close()).await.expect("join").expect("close");
}

/// Node `a`'s trail in `root`, holding `records`, closed.
async fn trail_holding(root: &Path, records: impl IntoIterator<Item = crate::record::Record>) {
    let trail = Trail::open(layout(root, "a"), Signer::from_bytes(&[1; 32]), TrailOptions::default(), None).expect("trail opens");
    for record in records {
        trail.append(&record).await.expect("append");
    }
    tokio::task::spawn_blocking(move || trail.close()).await.expect("join").expect("close");
}

/// What `audit validate` says of the bucket's copy, node by node.
async fn validate_bucket(bucket: &TrailBucket, scratch: &Path) -> Vec<(String, bool, Vec<String>)> {
    let _ = std::fs::remove_dir_all(scratch);
    bucket.download(scratch).await.expect("download");
    discover_layouts(scratch)
        .expect("layouts")
        .into_iter()
        .map(|layout| {
            let key = newest_public_key(&layout).expect("a public key per node");
            let report = validate(&layout, &key, &ValidateOptions::default());
            (layout.node.clone().expect("node layout"), report.valid, report.lines)
        })
        .collect()
}

fn objects_under(bucket_dir: &Path, part: &str, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![bucket_dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().contains(part) && path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_chains_in_one_bucket_validate_per_node_and_a_restart_uploads_what_the_bucket_lacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket_dir = dir.path().join("bucket");
    let bucket = bucket_on(&bucket_dir);
    write_records(&dir.path().join("a"), "a", &bucket, &[1; 32], 40).await;
    write_records(&dir.path().join("b"), "b", &bucket, &[2; 32], 40).await;

    let sealed_b = objects_under(&bucket_dir, "/DataSandbox/local/b/", ".json.gz");
    assert!(sealed_b.len() >= 2, "node b's sealed logs are objects: {sealed_b:?}");
    assert!(objects_under(&bucket_dir, "/DataSandbox/", ".jsonl").is_empty(), "no open-log snapshot outlives its sealing");
    assert_eq!(objects_under(&bucket_dir, "/DataSandbox-PublicKey/a/", ".pub").len(), 1);
    assert_ne!(
        objects_under(&bucket_dir, "/DataSandbox-PublicKey/a/", ".pub")[0].file_name(),
        objects_under(&bucket_dir, "/DataSandbox-PublicKey/b/", ".pub")[0].file_name(),
        "each node publishes its own key"
    );
    let verdicts = validate_bucket(&bucket, &dir.path().join("copy")).await;
    assert_eq!(verdicts.iter().map(|(n, v, _)| (n.as_str(), *v)).collect::<Vec<_>>(), [("a", true), ("b", true)], "{verdicts:?}");

    // While a node runs, the bucket holds only its closed files, and what it holds validates
    // at any moment: checkpoints reach only as far as the sealed files.
    let options = TrailOptions { bucket: Some(bucket.clone()), rotate_bytes: 2048, ..TrailOptions::default() };
    let live = Trail::open(layout(&dir.path().join("c"), "c"), Signer::from_bytes(&[3; 32]), options, None).expect("trail opens");
    for round in 0..4 {
        for n in 0..15 {
            live.append(&record("c", round * 100 + n)).await.expect("append");
        }
        let flushing = live.clone();
        tokio::task::spawn_blocking(move || flushing.flush_uploads(std::time::Duration::from_secs(5))).await.expect("join").expect("flush");
        let verdicts = validate_bucket(&bucket, &dir.path().join("copy")).await;
        assert!(verdicts.iter().all(|(_, v, _)| *v), "round {round}: {verdicts:?}");
    }
    assert!(!objects_under(&bucket_dir, "/DataSandbox/local/c/", ".json.gz").is_empty(), "node c's closed logs are in the bucket");
    assert!(objects_under(&bucket_dir, "/DataSandbox/", ".jsonl").is_empty(), "no open log is in the bucket");
    let local_open = objects_under(&dir.path().join("c"), "/DataSandbox/", ".jsonl");
    assert_eq!(local_open.len(), 1, "the open log stays local: {local_open:?}");
    let closing = live.clone();
    tokio::task::spawn_blocking(move || closing.close()).await.expect("join").expect("close");

    // Objects lost from the bucket (an upload that never happened, or a wiped prefix) come
    // back when the node starts again: its directory still holds every file.
    let lost = sealed_b[0].clone();
    std::fs::remove_file(&lost).expect("delete an object");
    for checkpoint in objects_under(&bucket_dir, "/DataSandbox-Checkpoint/local/b/", ".jsonl") {
        std::fs::remove_file(checkpoint).expect("delete an object");
    }
    let verdicts = validate_bucket(&bucket, &dir.path().join("copy")).await;
    let b = verdicts.iter().find(|(n, _, _)| n == "b").expect("node b still found");
    assert!(!b.1, "a deleted object of node b is detected: {:?}", b.2);
    assert!(verdicts.iter().any(|(n, v, _)| n == "a" && *v), "node a is untouched");
    write_records(&dir.path().join("b"), "b", &bucket, &[2; 32], 3).await;
    assert!(lost.exists(), "the restarted node uploaded the object the bucket lacked");
    let verdicts = validate_bucket(&bucket, &dir.path().join("copy")).await;
    assert!(verdicts.iter().all(|(_, v, _)| *v), "{verdicts:?}");
}

/// A fresh index target: a SQLite file, or a new PostgreSQL database when the run has one.
fn index_target(dir: &Path) -> IndexTarget {
    match std::env::var("DATASANDBOX_TEST_POSTGRES") {
        Ok(server) => {
            let database = format!("audit_index_{}", uuid::Uuid::new_v4().simple());
            let out = std::process::Command::new("psql")
                .args([&format!("{}/postgres", server.trim_end_matches('/')), "-c", &format!("CREATE DATABASE {database}")])
                .output()
                .expect("psql");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            IndexTarget::Database(format!("{}/{database}", server.trim_end_matches('/')))
        }
        Err(_) => IndexTarget::File(dir.join("index.db")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_index_serves_every_nodes_records_and_each_day_is_claimed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = bucket_on(&dir.path().join("bucket"));
    write_records(&dir.path().join("a"), "a", &bucket, &[1; 32], 7).await;
    write_records(&dir.path().join("b"), "b", &bucket, &[2; 32], 5).await;
    let target = index_target(dir.path());
    let index_a = Index::open(&target, "a").await.expect("index a");
    let index_b = Index::open(&target, "b").await.expect("index b");
    // Each node catches up from its own chain only.
    assert_eq!(index_a.catch_up(&layout(&dir.path().join("a"), "a")).await.expect("catch up"), 7);
    assert_eq!(index_b.catch_up(&layout(&dir.path().join("b"), "b")).await.expect("catch up"), 5);
    assert_eq!(index_b.catch_up(&layout(&dir.path().join("b"), "b")).await.expect("catch up"), 0, "nothing twice");

    let puts = LookupFilter { event_name: Some("PutObject".into()), ..LookupFilter::default() };
    let (all, _) = index_a.lookup(&puts, 100, None).await.expect("lookup");
    assert_eq!(all.len(), 12, "node a's lookup sees node b's records too");
    // Paging one record at a time visits every record of both nodes exactly once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = index_b.lookup(&puts, 1, cursor.as_ref()).await.expect("page");
        seen.extend(page.iter().map(|r| r["requestID"].as_str().unwrap_or_default().to_owned()));
        match next {
            Some(next) => cursor = Some(LookupCursor::decode(&next.encode()).expect("the cursor survives its token")),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 12, "{seen:?}");
    let by_resource = LookupFilter { resource_name: Some("home/b/4.csv".into()), ..LookupFilter::default() };
    assert_eq!(index_a.lookup(&by_resource, 10, None).await.expect("lookup").0.len(), 1);
    // A name's end is matched as written, alike on both backends: no wildcard, no escape, and
    // its case (SQLite's LIKE ignored ASCII case).
    let ends = [("%", 0), ("_.csv", 0), ("b/4.csv", 1), ("4.csv\\", 0), ("\\", 0), ("b\\_4.csv", 0), ("!", 0), ("b!/4.csv", 0)];
    for (end, found) in ends.into_iter().chain([("B/4.CSV", 0), ("4.csv", 2), ("home/b/4.csv/", 0), ("xhome/b/4.csv", 0)]) {
        let by_end = LookupFilter { resource_name: Some(end.into()), ..LookupFilter::default() };
        assert_eq!(index_a.lookup(&by_end, 100, None).await.expect("a lookup by a name's end").0.len(), found, "{end}");
    }
    let trace = index_a.trace(&TraceSelector::CorrelationId("corr-b".into()), None, None, 100).await.expect("trace");
    assert_eq!(trace.len(), 5);
    assert!(trace.iter().all(|e| e["node"] == "b"));
    let (columns, rows) =
        index_b.query("SELECT node, COUNT(*) AS records FROM events GROUP BY node ORDER BY node", 10).await.expect("query");
    assert_eq!(columns, ["node", "records"]);
    assert_eq!(rows, [[json!("a"), json!(7)], [json!("b"), json!(5)]]);

    // A query writes nothing, and in PostgreSQL reads nothing but the index tables: the
    // metadata store's tables (keys, secrets) share the database.
    let write = index_a.query("WITH gone AS (DELETE FROM events RETURNING node) SELECT COUNT(*) FROM gone", 10).await;
    assert!(matches!(write, Err(IndexError::Query(_))), "{write:?}");
    if let IndexTarget::Database(url) = &target {
        let out = std::process::Command::new("psql")
            .args([url.as_str(), "-c", "CREATE TABLE key_material (secret TEXT); INSERT INTO key_material VALUES ('wrapped')"])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let read = index_a.query("SELECT secret FROM key_material", 10).await;
        assert!(matches!(&read, Err(IndexError::Query(m)) if m.contains("permission denied")), "{read:?}");
    }
    assert_eq!(index_a.lookup(&puts, 100, None).await.expect("lookup").0.len(), 12, "the attempts changed nothing");

    // Rebuilding one node's part leaves the other's alone.
    assert_eq!(index_b.rebuild(&layout(&dir.path().join("b"), "b")).await.expect("rebuild"), 5);
    assert_eq!(index_a.lookup(&LookupFilter::default(), 100, None).await.expect("lookup").0.len(), 12);

    assert!(index_a.claim_report_day("2026-12-01").await.expect("claim"));
    assert!(!index_b.claim_report_day("2026-12-01").await.expect("claim"), "a day already claimed is not written twice");
    index_a.release_report_day("2026-12-01").await.expect("release");
    assert!(index_b.claim_report_day("2026-12-01").await.expect("claim"), "a day given back can be claimed again");
}

/// `audit reindex` while records stream in: the feeder waits for the rebuild, so a batch it
/// committed meanwhile cannot set the indexed mark past records the rebuild must put back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_during_a_stream_of_records_leaves_none_out_and_none_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("a");
    let index = Index::open(&index_target(dir.path()), "a").await.expect("index");
    let (feed, batches) = tokio::sync::mpsc::unbounded_channel();
    index.spawn_feeder(batches);
    let trail = Trail::open(layout(&root, "a"), Signer::from_bytes(&[1; 32]), TrailOptions::default(), Some(feed)).expect("trail");
    let writing = {
        let trail = trail.clone();
        tokio::spawn(async move {
            for n in 0..3000 {
                trail.append(&record("a", n)).await.expect("append");
            }
        })
    };
    while !writing.is_finished() {
        index.rebuild(&layout(&root, "a")).await.expect("rebuild");
    }
    writing.await.expect("writer");
    assert!(index.wait_for(3000, std::time::Duration::from_secs(30)).await, "every record indexed");
    let (_, rows) = index
        .query("SELECT (SELECT COUNT(*) FROM events WHERE node = 'a'), (SELECT COUNT(*) FROM event_resources WHERE node = 'a')", 1)
        .await
        .expect("query");
    assert_eq!(rows, [[json!(3000), json!(3000)]], "each record and its resource once");
    tokio::task::spawn_blocking(move || trail.close()).await.expect("join").expect("close");
}

/// A record whose strings a caller filled (a NUL is three bytes once replaced, and PostgreSQL
/// gives up compressing a value whose first kilobyte does not compress) is indexed, and so are
/// the records after it: one row too long for a PostgreSQL B-tree entry (2,704 bytes) failed
/// its whole batch, at every retry, and stopped the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_the_longest_strings_a_caller_can_send_is_indexed_with_those_after_it() {
    use rand::Rng as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("a");
    let noise = |length: usize| -> String {
        rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(length).map(char::from).collect()
    };
    // About 1 KB of noise, then NULs: about 4 KB once replaced, and no compression.
    let filled_text = format!("{}{}", noise(1040), "\0".repeat(1000));
    let mut filled = record("a", 0);
    filled.resources[0].arn = format!("arn:key/{filled_text}");
    filled.error_message = Some(filled_text.clone());
    let long_noise = noise(4096);
    filled.request_parameters = json!({ "SessionId": long_noise });
    let mut nul_session = record("a", 1);
    nul_session.request_parameters = json!({ "SessionId": filled_text });
    trail_holding(&root, [filled, nul_session, record("a", 2)]).await;
    let index = Index::open(&index_target(dir.path()), "a").await.expect("index");
    assert_eq!(index.catch_up(&layout(&root, "a")).await.expect("catch up"), 3);
    // By the ARN as the record keeps it (cut); a suffix as long as a column is not matched.
    let arn = crate::bound::cut(&format!("arn:key/{filled_text}"), crate::bound::MAX_STRING_BYTES).into_owned();
    let by_resource = LookupFilter { resource_name: Some(arn), ..LookupFilter::default() };
    let (found, _) = index.lookup(&by_resource, 10, None).await.expect("lookup");
    assert_eq!(found.len(), 1, "found by its ARN");
    assert_eq!(found[0]["requestID"], "a-0");
    let cut_noise = crate::bound::cut(&long_noise, crate::bound::MAX_STRING_BYTES).into_owned();
    let trace = index.trace(&TraceSelector::Session(cut_noise), None, None, 10).await.expect("trace");
    // The session's record found, and with it the records sharing its correlation id.
    assert_eq!(trace.len(), 3, "{trace:?}");
}

/// A row the index's store refuses (here a trigger refuses a user's rows, and rows with a
/// message, for a cause not foreseen) is indexed by a stand-in that says where the record is,
/// and the records around it are indexed as they are: one such row failed its whole batch at
/// every retry, and the node's index took nothing after it, nor could `audit reindex` rebuild
/// it. The stand-in keeps who made the record unless that is what the store refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_store_refuses_stands_in_the_index_and_the_records_around_it_are_indexed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = index_target(dir.path());
    let index = Index::open(&target, "a").await.expect("index");
    refuse_rows(&target, "NEW.user_name = 'mallory' OR NEW.error_message = 'refused'");
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    index.spawn_feeder(receiver);
    let root = dir.path().join("a");
    let trail = Trail::open(layout(&root, "a"), Signer::from_bytes(&[1; 32]), TrailOptions::default(), Some(sender)).expect("trail");
    for n in 0..6 {
        let mut record = record("a", n);
        match n {
            2 => record.user_identity.user_name = Some("mallory".into()),
            4 => record.error_message = Some("refused".into()),
            _ => {}
        }
        trail.append(&record).await.expect("append");
    }
    assert!(index.wait_for(6, std::time::Duration::from_secs(20)).await, "every record indexed");
    let indexed = |index: Index| async move {
        let (found, _) = index.lookup(&LookupFilter::default(), 100, None).await.expect("lookup");
        let mut found: Vec<(String, String, String)> = found
            .iter()
            .map(|r| {
                let as_text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                (as_text(&r["requestID"]), as_text(&r["userIdentity"]["userName"]), as_text(&r["errorCode"]))
            })
            .collect();
        found.sort();
        found
    };
    let expected: Vec<(String, String, String)> = (0..6)
        .map(|n| match n {
            2 => (format!("a-{n}"), String::new(), "RecordNotIndexed".to_owned()),
            4 => (format!("a-{n}"), "ana".to_owned(), "RecordNotIndexed".to_owned()),
            _ => (format!("a-{n}"), "ana".to_owned(), String::new()),
        })
        .collect();
    assert_eq!(indexed(index.clone()).await, expected);
    let (stand_in, _) = index
        .lookup(&LookupFilter { request_id: Some("a-4".into()), ..LookupFilter::default() }, 10, None)
        .await
        .expect("the stand-in found by the record's request id");
    let message = stand_in[0]["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("refused this record's row (") && message.contains("sequence number 5"), "{message}");
    assert!(!message.contains("a row this store refuses"), "the store's own message stays out: {message}");
    // `audit reindex` rebuilds the same, past the same rows.
    assert_eq!(index.rebuild(&layout(&root, "a")).await.expect("rebuilt"), 6);
    assert_eq!(indexed(index.clone()).await, expected);
    tokio::task::spawn_blocking(move || trail.close()).await.expect("join").expect("close");
}

/// Makes the index's store refuse every row of `events` for which `when` (SQL on `NEW`) holds,
/// as a store may refuse a row for a cause the index did not foresee.
fn refuse_rows(target: &IndexTarget, when: &str) {
    match target {
        IndexTarget::File(path) => {
            let connection = rusqlite::Connection::open(path).expect("the index file");
            connection
                .execute_batch(&format!(
                    "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN {} \
                     BEGIN SELECT RAISE(ABORT, 'a row this store refuses'); END;",
                    when
                ))
                .expect("trigger");
        }
        IndexTarget::Database(url) => {
            let sql = format!(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF {} THEN RAISE EXCEPTION 'a row this store refuses'; END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse();",
                when
            );
            let out = std::process::Command::new("psql").args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-c", &sql]).output().expect("psql");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// A PostgreSQL database that cannot hold every character a record may (LATIN1 here) is refused
/// when the index opens, with what to do: there, a record's row with any other character would
/// be refused, and the record would stand in the index without its text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_database_that_cannot_hold_every_character_is_refused_at_open() {
    let Ok(server) = std::env::var("DATASANDBOX_TEST_POSTGRES") else {
        eprintln!("SKIPPED: needs PostgreSQL (DATASANDBOX_TEST_POSTGRES; the test script's scale-out pass sets it)");
        return;
    };
    let server = server.trim_end_matches('/');
    let database = format!("audit_latin1_{}", uuid::Uuid::new_v4().simple());
    let create = format!("CREATE DATABASE {database} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
    let out = std::process::Command::new("psql").args([&format!("{server}/postgres"), "-c", &create]).output().expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused = Index::open(&IndexTarget::Database(format!("{server}/{database}")), "a").await.err().expect("refused");
    assert!(matches!(&refused, IndexError::Encoding { encoding, .. } if encoding == "LATIN1"), "{refused}");
    assert!(refused.to_string().contains("ENCODING 'UTF8'"), "{refused}");
}

/// Two handles on one node's records (a reindex beside the server) that both index the same
/// records leave one row per record and one per resource: the second's inserts of rows already
/// there left the rows, but added their resources again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_indexed_twice_keep_one_row_per_resource() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("a");
    trail_holding(&root, (0..4).map(|n| record("a", n))).await;
    let target = index_target(dir.path());
    let (first, second) = (Index::open(&target, "a").await.expect("index"), Index::open(&target, "a").await.expect("index"));
    assert_eq!(first.catch_up(&layout(&root, "a")).await.expect("catch up"), 4);
    second.catch_up(&layout(&root, "a")).await.expect("the same records again");
    let (_, rows) = first
        .query("SELECT (SELECT COUNT(*) FROM events WHERE node = 'a'), (SELECT COUNT(*) FROM event_resources WHERE node = 'a')", 1)
        .await
        .expect("query");
    assert_eq!(rows, [[json!(4), json!(4)]], "each record and its resource once");
}

/// `audit trace` lists each resource of a record whole, whatever it holds: an object's key may
/// hold a space, and the resources were joined with spaces and split on them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_lists_each_resource_whole_spaces_and_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("a");
    let mut spaced = record("a", 0);
    spaced.resources[0].arn = "arn:datasandbox:storage:::home/ana/my \"final\" results.csv".into();
    let mut second = spaced.resources[0].clone();
    second.arn = "arn:datasandbox:storage:::home/ana/b, c.csv".into();
    spaced.resources.push(second);
    let mut none = record("a", 1);
    none.resources.clear();
    trail_holding(&root, [spaced, none]).await;
    let index = Index::open(&index_target(dir.path()), "a").await.expect("index");
    assert_eq!(index.catch_up(&layout(&root, "a")).await.expect("catch up"), 2);
    let trace = index.trace(&TraceSelector::User("ana".into()), None, None, 10).await.expect("trace");
    let mut first: Vec<String> = serde_json::from_value(trace[0]["resources"].clone()).expect("a list");
    first.sort();
    assert_eq!(first, ["arn:datasandbox:storage:::home/ana/b, c.csv", "arn:datasandbox:storage:::home/ana/my \"final\" results.csv"]);
    assert_eq!(trace[1]["resources"], json!([]), "a record without resources");
}
