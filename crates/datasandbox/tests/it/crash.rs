//! `kill -9` during a burst of writes: every acknowledged object survives with its audit
//! record, and no partial object is ever visible.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::http;
use crate::support::server::Server;
use crate::support::server::{b64, eventually, unb64};

struct Acknowledged {
    key: String,
    etag: String,
    digest: Vec<u8>,
}

#[test]
fn kill_9_during_a_put_burst_loses_no_acknowledged_object() {
    let mut server = Server::start(&[]);
    let acknowledged = Arc::new(Mutex::new(Vec::<Acknowledged>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (socket, acknowledged, stop) = (server.socket(), acknowledged.clone(), stop.clone());
        writers.push(std::thread::spawn(move || {
            let Ok(mut connection) = http::unix(&socket) else { return };
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let key = format!("burst/w{writer}/{n:05}");
                let body: Vec<u8> = (0..(4096 + (n * 977) % 60_000)).map(|i| (i * 31 + n + writer) as u8).collect();
                let input = json!({ "Bucket": "datasandbox-home", "Key": key, "Body": b64(&body) });
                let Ok(reply) = connection.call("storage:PutObject", &input, None) else { return };
                if reply.status != 200 {
                    return;
                }
                let out = reply.json();
                acknowledged.lock().expect("lock").push(Acknowledged {
                    key,
                    etag: out["ETag"].as_str().expect("etag").to_owned(),
                    digest: Sha256::digest(&body).to_vec(),
                });
            }
        }));
    }
    eventually(60, "200 acknowledged writes", || (acknowledged.lock().expect("lock").len() >= 200).then_some(()));
    server.crash_and_restart(&[]);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer thread");
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().expect("lock"));
    assert!(acknowledged.len() >= 200);

    let mut connection = http::unix(&server.socket()).expect("connect after restart");
    // Every acknowledged object is there, whole.
    for ack in &acknowledged {
        let reply = connection.call("storage:GetObject", &json!({ "Bucket": "datasandbox-home", "Key": ack.key }), None).expect("get");
        assert_eq!(reply.status, 200, "acknowledged object {} is missing after the crash", ack.key);
        let out = reply.json();
        assert_eq!(out["ETag"], ack.etag.as_str(), "{}", ack.key);
        assert_eq!(Sha256::digest(unb64(out["Body"].as_str().expect("body"))).to_vec(), ack.digest, "{}", ack.key);
    }
    // Every acknowledged object has its audit record.
    let records = server.audit(&[("EventName", "PutObject")]);
    let audited: HashSet<String> = records
        .iter()
        .filter(|r| r.get("errorCode").is_none())
        .filter_map(|r| r["requestParameters"]["Key"].as_str().map(str::to_owned))
        .collect();
    for ack in &acknowledged {
        assert!(audited.contains(&ack.key), "acknowledged object {} has no audit record", ack.key);
    }
    // Whatever is visible is whole: every listed object's body matches its ETag.
    let (mut visible, mut with_blobs) = (0, 0);
    let listing =
        connection.call("storage:ListObjectsV2", &json!({ "Bucket": "datasandbox-home", "Prefix": "burst/" }), None).expect("list").json();
    for item in listing["Contents"].as_array().expect("contents") {
        let out =
            connection.call("storage:GetObject", &json!({ "Bucket": "datasandbox-home", "Key": item["Key"] }), None).expect("get").json();
        let digest = hex::encode(Sha256::digest(unb64(out["Body"].as_str().expect("body"))));
        assert_eq!(format!("\"{}\"", &digest[..32]), out["ETag"].as_str().expect("etag"), "object {} is not whole", item["Key"]);
        visible += 1;
        // Bodies up to 32 KiB are kept in the metadata store, larger ones as blobs.
        with_blobs += usize::from(item["Size"].as_u64().expect("size") > 32 * 1024);
    }
    assert!(visible >= acknowledged.len());
    // Blobs of writes that never committed were reclaimed at start-up.
    assert!(with_blobs > 0 && with_blobs < visible, "{with_blobs} of {visible} objects have blobs: the burst should write both kinds");
    assert_eq!(server.blob_count(), with_blobs);
}
