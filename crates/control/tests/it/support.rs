//! A control plane on a temporary data directory, calls to it, and its records read back from
//! the trail's files (the open `.jsonl` file and sealed `.json.gz` files alike).

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use control::{ControlPlane, Credentials, Request, Response};
use serde_json::Value;

/// What the pipeline writes in place of a hidden value.
pub const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// A running control plane and the directory it owns; shut down by [`Plane::stop`].
pub struct Plane {
    pub control: ControlPlane,
    /// The uid the control socket would belong to: peer credentials with it are the operator.
    pub operator_uid: u32,
    data_dir: tempfile::TempDir,
    _image_cache: tempfile::TempDir,
}

impl Plane {
    /// Starts a control plane with the embedded default spec (its least-privilege policies)
    /// on a fresh data directory, owned by the user running the test.
    pub async fn start() -> Plane {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let image_cache = tempfile::tempdir().expect("temp dir");
        let spec = model::spec::Spec::parse(&model::spec::default_spec_text(), &[]).expect("the default spec parses");
        let operator_uid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
        let control = ControlPlane::start(spec, data_dir.path(), operator_uid, image_cache.path()).await.expect("start the control plane");
        Plane { control, operator_uid, data_dir, _image_cache: image_cache }
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Seals the trail, as a clean stop does; the files stay to be read.
    pub async fn stop(&self) {
        self.control.shutdown().await;
    }

    /// One call with these credentials and this raw body.
    pub async fn call_raw(&self, credentials: Credentials, action: &str, body: &[u8]) -> Response {
        let request = Request {
            credentials,
            source_ip: "192.0.2.7".into(),
            user_agent: "control-it".into(),
            action: action.to_owned(),
            body: Ok(Bytes::copy_from_slice(body)),
        };
        self.control.call(request).await
    }

    /// One call as the operator (peer credentials of the socket's owner).
    pub async fn operator(&self, action: &str, input: &Value) -> Response {
        self.call_raw(self.operator_credentials(), action, input.to_string().as_bytes()).await
    }

    /// One call as the operator that must succeed; its answer.
    pub async fn operator_ok(&self, action: &str, input: &Value) -> Value {
        let response = self.operator(action, input).await;
        response.result.unwrap_or_else(|err| panic!("{action}: {err}"))
    }

    pub fn operator_credentials(&self) -> Credentials {
        Credentials::Peer { uid: self.operator_uid }
    }

    /// The record of `request_id`, as the trail's file holds it. A call returns once its record
    /// is acknowledged, so it is there; the short wait only absorbs a file being sealed.
    pub fn record(&self, request_id: &str) -> Value {
        let needle = format!("\"requestID\":\"{request_id}\"");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = trail_lines(self.data_dir()).into_iter().find(|l| l.contains(&needle)) {
                return serde_json::from_str(&line).expect("a record is JSON");
            }
            assert!(Instant::now() < deadline, "no record of request {request_id} in the trail");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every byte the trail holds, decompressed, to search for what must never be in it.
    pub fn whole_trail(&self) -> String {
        trail_lines(self.data_dir()).join("\n")
    }
}

/// The answer's error, for a call that must fail.
pub fn refused(response: &Response) -> &control::ActionError {
    response.result.as_ref().err().unwrap_or_else(|| panic!("the call succeeded: {:?}", response.result))
}

/// Every record line of the trail under `data_dir`, in no particular order.
fn trail_lines(data_dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for path in walk(&data_dir.join("trail")) {
        let name = path.to_string_lossy().into_owned();
        if !name.contains("/DataSandbox/") {
            continue;
        }
        let text = if name.ends_with(".jsonl") {
            std::fs::read_to_string(&path).unwrap_or_default()
        } else if name.ends_with(".json.gz") {
            let mut out = String::new();
            let bytes = std::fs::read(&path).unwrap_or_default();
            let _ = flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_string(&mut out);
            out
        } else {
            continue;
        };
        lines.extend(text.lines().map(|l| l.trim_end_matches(',').to_owned()).filter(|l| l.starts_with("{\"sequenceNumber\"")));
    }
    lines
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
