//! The kernel protocol's wire formats, as jupyter_server reads them.
//!
//! The legacy protocol sends JSON text frames (a missing `channel` means `shell`), or binary
//! frames of a u32 BE count, that many u32 BE offsets and the JSON message in the first part;
//! `v1.kernel.websocket.jupyter.org` sends binary frames of a u64 LE count, that many u64 LE
//! offsets, then channel, header, parent header, metadata, content and buffers, each between
//! two offsets. Offsets are read with Python's slicing (a part past the end is empty), as the
//! server reads them.

use serde_json::{Value, json};

/// The most parts a v1 frame may declare (Jupyter would loop over any number).
const V1_PARTS: u64 = 1024;

/// The longest legacy frame from a kernel that is read for its session (see [`session_of`]).
const LEGACY_SESSION_READ: usize = 64 << 10;

/// A WebSocket frame's payload.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// A frame for the browser, in its socket's wire format.
#[derive(Debug)]
pub enum Answer {
    Text(String),
    Binary(Vec<u8>),
}

/// A kernel message, as much of it as the audit reads.
#[derive(Debug, PartialEq)]
pub(super) struct Message {
    pub channel: String,
    pub header: Value,
    pub msg_type: String,
    pub msg_id: String,
    pub parent_msg_id: String,
    pub metadata: Value,
    pub content: Value,
}

/// `bytes[start:end]` as Python slices it: clamped to the bytes, empty when reversed.
fn py_slice(bytes: &[u8], start: u64, end: Option<u64>) -> &[u8] {
    let len = bytes.len() as u64;
    let (start, end) = (start.min(len), end.map_or(len, |e| e.min(len)));
    if start >= end { &[] } else { &bytes[start as usize..end as usize] }
}

/// A browser's frame read as jupyter_server reads it (`v1`: the socket speaks the v1
/// protocol), or why it cannot be.
pub(super) fn parse(v1: bool, frame: Frame<'_>) -> Result<Message, String> {
    match (v1, frame) {
        (false, Frame::Text(text)) => legacy(text.as_bytes()),
        (false, Frame::Binary(bytes)) => legacy(legacy_message(bytes)?),
        (true, Frame::Text(_)) => Err("a text frame on the v1 protocol".into()),
        (true, Frame::Binary(bytes)) => {
            let part = v1_parts(bytes)?;
            let channel = std::str::from_utf8(part[0]).map_err(|_| "a channel that is not UTF-8")?;
            let json = |i: usize, what: &str| serde_json::from_slice::<Value>(part[i]).map_err(|e| format!("its {what}: {e}"));
            let (header, parent, metadata, content) =
                (json(1, "header")?, json(2, "parent header")?, json(3, "metadata")?, json(4, "content")?);
            message(channel, header, &parent, metadata, content)
        }
    }
}

/// The session a frame from the kernel names in its header, read as cheaply as its format
/// allows: a v1 frame's header part alone; a legacy frame whole, if it is no longer than
/// [`LEGACY_SESSION_READ`] (a longer one, a large output, is not read for it).
pub(super) fn session_of(v1: bool, frame: Frame<'_>) -> Option<String> {
    /// A header's session, and nothing else of it (a header of another shape has none).
    #[derive(serde::Deserialize)]
    struct Header {
        session: Option<String>,
    }
    /// A legacy message's header, and nothing else of it.
    #[derive(serde::Deserialize)]
    struct Legacy {
        header: Header,
    }
    let header = match (v1, frame) {
        (true, Frame::Binary(bytes)) => serde_json::from_slice::<Header>(v1_parts(bytes).ok()?.get(1)?).ok()?,
        (false, Frame::Text(text)) if text.len() <= LEGACY_SESSION_READ => serde_json::from_str::<Legacy>(text).ok()?.header,
        (false, Frame::Binary(bytes)) if bytes.len() <= LEGACY_SESSION_READ => {
            serde_json::from_slice::<Legacy>(legacy_message(bytes).ok()?).ok()?.header
        }
        _ => return None,
    };
    header.session.filter(|session| session.len() <= 256)
}

/// A legacy binary frame's JSON message: its first part.
pub(super) fn legacy_message(bytes: &[u8]) -> Result<&[u8], String> {
    let count = bytes.get(..4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or("a binary frame under 4 bytes")?;
    if count < 1 {
        return Err("a binary frame without parts".into());
    }
    let table = bytes.get(4..4 + 4 * count as usize).ok_or("a binary frame shorter than its offsets")?;
    let offset = |i: usize| u64::from(u32::from_be_bytes([table[4 * i], table[4 * i + 1], table[4 * i + 2], table[4 * i + 3]]));
    let end = (count > 1).then(|| offset(1));
    Ok(py_slice(bytes, offset(0), end))
}

/// A v1 frame's parts (channel, header, parent header, metadata, content, then buffers), each
/// between two of its offsets.
pub(super) fn v1_parts(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let word = |at: u64| {
        let part = py_slice(bytes, at, Some(at + 8));
        let mut le = [0u8; 8];
        le[..part.len()].copy_from_slice(part);
        u64::from_le_bytes(le)
    };
    let count = word(0);
    if !(6..=V1_PARTS).contains(&count) {
        return Err(format!("a v1 frame of {count} offsets"));
    }
    let offsets: Vec<u64> = (0..count).map(|i| word(8 * (i + 1))).collect();
    Ok((0..offsets.len() - 1).map(|i| py_slice(bytes, offsets[i], Some(offsets[i + 1]))).collect())
}

fn legacy(json: &[u8]) -> Result<Message, String> {
    let mut whole: Value = serde_json::from_slice(json).map_err(|e| format!("its JSON: {e}"))?;
    let take = |whole: &mut Value, key: &str| whole.get_mut(key).map(Value::take).unwrap_or(Value::Null);
    let (header, parent) = (take(&mut whole, "header"), take(&mut whole, "parent_header"));
    let (metadata, content) = (take(&mut whole, "metadata"), take(&mut whole, "content"));
    // jupyter_server sends a message without a channel to the shell.
    let channel = whole["channel"].as_str().unwrap_or("shell");
    message(channel, header, &parent, metadata, content)
}

fn message(channel: &str, header: Value, parent: &Value, metadata: Value, content: Value) -> Result<Message, String> {
    // Each part an object, as the kernel needs it: a `content` sent as a string would reach the
    // kernel as the object it encodes (the legacy protocol passes strings on as they are).
    for (part, what) in [(&header, "header"), (parent, "parent header"), (&metadata, "metadata"), (&content, "content")] {
        if !part.is_object() {
            return Err(format!("its {what} is not a JSON object"));
        }
    }
    let msg_type = header["msg_type"].as_str().ok_or("a header without msg_type")?.to_owned();
    Ok(Message {
        channel: channel.to_owned(),
        msg_id: header["msg_id"].as_str().unwrap_or_default().to_owned(),
        header,
        msg_type,
        parent_msg_id: parent["msg_id"].as_str().unwrap_or_default().to_owned(),
        metadata,
        content,
    })
}

/// What the proxy answers, as the kernel would, to a debug request it does not send on: a
/// `debug_reply` whose content is the Debug Adapter Protocol's failed response, then the
/// `idle` status that ends the request for the client. Both come under the kernel's session
/// (`session`, as its last frame named it: a client drops any message of another session it
/// has waiting) and in the socket's wire format. Of the request, only its header's own
/// fields, its channel, its sequence number and its command are sent back.
pub(super) fn debug_refused(v1: bool, request: &Message, session: &str, why: &str) -> Vec<Answer> {
    let date = crate::core::store::millis_to_rfc3339(crate::core::store::now_millis());
    let header = |msg_type: &str| {
        let msg_id = uuid::Uuid::new_v4().to_string();
        json!({ "msg_id": msg_id, "msg_type": msg_type, "session": session, "username": "datasandbox", "date": date, "version": "5.3" })
    };
    let parent: serde_json::Map<String, Value> = ["msg_id", "msg_type", "session", "username", "date", "version"]
        .into_iter()
        .filter_map(|key| request.header[key].as_str().map(|value| (key.to_owned(), json!(value))))
        .collect();
    let parent = Value::Object(parent);
    let channel = if ["shell", "control"].contains(&request.channel.as_str()) { request.channel.as_str() } else { "control" };
    let command: Option<String> = request.content["command"].as_str().map(|command| command.chars().take(64).collect());
    // JupyterLab reads a `debugInfo` reply's body whatever its success (the breakpoints, the
    // hash method and the file names it maps cells to) and throws on one without them: this one
    // says the debugger has not started and holds nothing.
    let body = if command.as_deref() == Some("debugInfo") {
        json!({ "isStarted": false, "breakpoints": [], "stoppedThreads": [], "hashMethod": "Murmur2", "hashSeed": 0,
            "tmpFilePrefix": "/tmp/", "tmpFileSuffix": ".py", "richRendering": false, "copyToGlobals": false, "exceptionPaths": [] })
    } else {
        json!({})
    };
    let reply = json!({
        "type": "response",
        "seq": 0,
        "request_seq": request.content["seq"].as_i64(),
        "success": false,
        "command": command,
        "message": why,
        "body": body,
    });
    let idle = json!({ "execution_state": "idle" });
    [(channel, header("debug_reply"), reply), ("iopub", header("status"), idle)]
        .into_iter()
        .map(|(channel, header, content)| {
            if v1 {
                Answer::Binary(v1_frame(channel, [&header, &parent, &json!({}), &content]))
            } else {
                let whole = json!({ "channel": channel, "header": header, "parent_header": parent, "metadata": {},
                    "content": content, "buffers": [] });
                Answer::Text(whole.to_string())
            }
        })
        .collect()
}

/// A message in the v1 wire format (for the tests and the benchmark's client).
pub fn v1_frame(channel: &str, parts: [&Value; 4]) -> Vec<u8> {
    let bodies: Vec<Vec<u8>> = parts.iter().map(|p| p.to_string().into_bytes()).collect();
    let mut all: Vec<&[u8]> = vec![channel.as_bytes()];
    all.extend(bodies.iter().map(Vec::as_slice));
    v1_frame_of(&all)
}

/// A v1 frame of these parts, as they are.
fn v1_frame_of(bodies: &[&[u8]]) -> Vec<u8> {
    let count = bodies.len() as u64 + 1;
    let mut frame = count.to_le_bytes().to_vec();
    let mut at = 8 * (count + 1);
    for body in bodies {
        frame.extend_from_slice(&at.to_le_bytes());
        at += body.len() as u64;
    }
    frame.extend_from_slice(&at.to_le_bytes());
    for body in bodies {
        frame.extend_from_slice(body);
    }
    frame
}

/// A kernel's `kernel_info_reply` that says the kernel has a debugger, said again without it
/// (`debugger: false`, and no `debugger` among its `supported_features`, as protocol 5.4
/// says it), everything else as it came; `None` for any other frame. Jupyter's clients offer
/// a debugger only to a kernel that says it has one.
pub(super) fn without_debugger(v1: bool, frame: Frame<'_>) -> Option<Answer> {
    /// A header's message type, and nothing else of it.
    #[derive(serde::Deserialize)]
    struct Header {
        msg_type: String,
    }
    /// Takes the debugger out of the content; `None` where it said none.
    fn unsay(content: &mut Value) -> Option<()> {
        let content = content.as_object_mut()?;
        let mut said = false;
        // Whatever it says: a client takes any truthy value for yes.
        if let Some(debugger) = content.get_mut("debugger")
            && *debugger != Value::Bool(false)
        {
            *debugger = Value::Bool(false);
            said = true;
        }
        if let Some(Value::Array(features)) = content.get_mut("supported_features") {
            let before = features.len();
            features.retain(|feature| feature != "debugger");
            said |= features.len() != before;
        }
        said.then_some(())
    }
    match (v1, frame) {
        (true, Frame::Binary(bytes)) => {
            let parts = v1_parts(bytes).ok()?;
            if serde_json::from_slice::<Header>(parts.get(1)?).ok()?.msg_type != "kernel_info_reply" {
                return None;
            }
            let mut content: Value = serde_json::from_slice(parts.get(4)?).ok()?;
            unsay(&mut content)?;
            let content = content.to_string().into_bytes();
            let mut rewritten = parts.clone();
            rewritten[4] = &content;
            Some(Answer::Binary(v1_frame_of(&rewritten)))
        }
        (false, Frame::Text(text)) => {
            let mut message: Value = serde_json::from_str(text).ok()?;
            if message.get("header")?.get("msg_type")? != "kernel_info_reply" {
                return None;
            }
            unsay(message.get_mut("content")?)?;
            Some(Answer::Text(message.to_string()))
        }
        // A legacy binary frame carries buffers, which the kernel's own reply has none of.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(code: &str) -> (Value, Value, Value, Value) {
        let header = json!({ "msg_id": "m1", "msg_type": "execute_request", "session": "s", "username": "u", "version": "5.3" });
        (header, json!({}), json!({ "cellId": "c1" }), json!({ "code": code, "silent": false, "user_expressions": {} }))
    }

    #[test]
    fn one_cell_reads_the_same_under_both_protocols() {
        let (header, parent, metadata, content) = request("print(6*7)");
        let legacy_text =
            json!({ "channel": "shell", "header": header, "parent_header": parent, "metadata": metadata, "content": content });
        let from_legacy = parse(false, Frame::Text(&legacy_text.to_string())).expect("legacy");
        let frame = v1_frame("shell", [&header, &parent, &metadata, &content]);
        let from_v1 = parse(true, Frame::Binary(&frame)).expect("v1");
        assert_eq!(from_legacy, from_v1);
        assert_eq!((from_v1.msg_type.as_str(), from_v1.content["code"].as_str()), ("execute_request", Some("print(6*7)")));
        // The legacy binary form (a message with buffers) too.
        let json = legacy_text.to_string();
        let mut binary = 2i32.to_be_bytes().to_vec();
        binary.extend_from_slice(&12u32.to_be_bytes());
        binary.extend_from_slice(&(12 + json.len() as u32).to_be_bytes());
        binary.extend_from_slice(json.as_bytes());
        binary.extend_from_slice(b"a buffer");
        assert_eq!(parse(false, Frame::Binary(&binary)).expect("legacy binary"), from_legacy);
    }

    #[test]
    fn what_jupyter_would_not_read_is_refused() {
        assert!(parse(true, Frame::Text("{}")).is_err());
        assert!(parse(false, Frame::Text("not json")).is_err());
        assert!(parse(false, Frame::Text("{\"header\": {}}")).is_err(), "no msg_type");
        let stringly = json!({ "header": { "msg_type": "debug_request", "msg_id": "d" }, "parent_header": {}, "metadata": {},
            "content": "{\"command\": \"evaluate\", \"arguments\": {\"expression\": \"1\"}}" });
        assert!(parse(false, Frame::Text(&stringly.to_string())).is_err(), "a content the kernel would decode from a string");
        let (header, parent, metadata, _) = request("x");
        let mut frame = v1_frame("shell", [&header, &parent, &metadata, &json!({})]);
        frame[0] = 3;
        assert!(parse(true, Frame::Binary(&frame)).is_err(), "too few parts for a content");
        frame[0] = 0xff;
        frame[1] = 0xff;
        assert!(parse(true, Frame::Binary(&frame)).is_err(), "more parts than any message has");
        assert!(parse(false, Frame::Binary(&0i32.to_be_bytes())).is_err());
    }

    #[test]
    fn a_refused_debug_request_is_answered_in_its_own_wire_format_under_the_kernels_session() {
        let header = json!({ "msg_id": "d1", "msg_type": "debug_request", "session": "s", "username": "u", "version": "5.3",
            "extra": "x".repeat(1000) });
        let content = json!({ "type": "request", "seq": 7, "command": "debugInfo", "arguments": {} });
        let legacy_text = json!({ "channel": "control", "header": header, "parent_header": {}, "metadata": {}, "content": content });
        let v1_request = v1_frame("control", [&header, &json!({}), &json!({}), &content]);
        for (v1, frame) in [(false, Frame::Text(&legacy_text.to_string())), (true, Frame::Binary(&v1_request))] {
            let request = parse(v1, frame).expect("a debug request");
            let answers: Vec<Message> = debug_refused(v1, &request, "kernel-session", "off (DEBUGGER)")
                .iter()
                .map(|answer| match answer {
                    Answer::Text(text) => parse(false, Frame::Text(text)),
                    Answer::Binary(bytes) => parse(true, Frame::Binary(bytes)),
                })
                .collect::<Result<_, _>>()
                .expect("answers Jupyter's clients read");
            let [reply, idle] = answers.as_slice() else { panic!("a reply and a status: {answers:?}") };
            assert_eq!((reply.msg_type.as_str(), reply.parent_msg_id.as_str(), reply.channel.as_str()), ("debug_reply", "d1", "control"));
            let expected = json!({ "type": "response", "seq": 0, "request_seq": 7, "success": false, "command": "debugInfo",
                "message": "off (DEBUGGER)" });
            let mut content = reply.content.clone();
            let body = content.as_object_mut().and_then(|c| c.remove("body")).expect("a body");
            assert_eq!(content, expected, "v1: {v1}");
            assert_eq!((&body["isStarted"], &body["hashMethod"], &body["breakpoints"]), (&json!(false), &json!("Murmur2"), &json!([])));
            assert_eq!((idle.msg_type.as_str(), idle.parent_msg_id.as_str(), idle.channel.as_str()), ("status", "d1", "iopub"));
            assert_eq!(idle.content, json!({ "execution_state": "idle" }));
            for answer in [reply, idle] {
                assert_eq!(answer.header["session"], "kernel-session", "a client drops a message of another session");
            }
        }
        // The session of a kernel's frame, read from its header.
        let from_kernel = json!({ "msg_id": "k1", "msg_type": "status", "session": "kernel-session", "username": "k", "version": "5.3" });
        let v1_from_kernel = v1_frame("iopub", [&from_kernel, &json!({}), &json!({}), &json!({ "execution_state": "busy" })]);
        assert_eq!(session_of(true, Frame::Binary(&v1_from_kernel)).as_deref(), Some("kernel-session"));
        let legacy_from_kernel = json!({ "channel": "iopub", "header": from_kernel, "parent_header": {}, "metadata": {}, "content": {} });
        assert_eq!(session_of(false, Frame::Text(&legacy_from_kernel.to_string())).as_deref(), Some("kernel-session"));
        for odd in ["[1]", "5", "{\"header\": [1]}", "{\"header\": {\"session\": 7}}", "not JSON"] {
            assert_eq!(session_of(false, Frame::Text(odd)), None, "{odd}");
        }
    }

    /// A kernel that says it has a debugger is said to have none, in either wire format, with
    /// everything else as it came (a v1 frame's buffers too); any other frame is left alone.
    #[test]
    fn a_kernel_info_reply_is_said_again_without_the_debugger() {
        let header = json!({ "msg_id": "r1", "msg_type": "kernel_info_reply", "session": "k", "username": "u", "version": "5.3" });
        let parent = json!({ "msg_id": "q1", "msg_type": "kernel_info_request" });
        let content = json!({ "status": "ok", "implementation": "ipython", "debugger": true, "help_links": [],
            "supported_features": ["kernel subshells", "debugger"] });
        let v1 = v1_frame("shell", [&header, &parent, &json!({ "m": 1 }), &content]);
        let mut with_buffer = v1_parts(&v1).expect("parts");
        with_buffer.push(b"a buffer");
        let with_buffer = v1_frame_of(&with_buffer);
        let Some(Answer::Binary(said)) = without_debugger(true, Frame::Binary(&with_buffer)) else { panic!("a v1 frame") };
        let parts = v1_parts(&said).expect("parts");
        let original = v1_parts(&with_buffer).expect("parts");
        assert_eq!(
            serde_json::from_slice::<Value>(parts[4]).expect("content"),
            json!({ "status": "ok", "implementation": "ipython", "debugger": false, "help_links": [],
                "supported_features": ["kernel subshells"] })
        );
        for at in [0, 1, 2, 3, 5] {
            assert_eq!(parts[at], original[at], "part {at}");
        }
        let legacy = json!({ "channel": "shell", "header": header, "parent_header": parent, "metadata": {}, "content": content });
        let Some(Answer::Text(said)) = without_debugger(false, Frame::Text(&legacy.to_string())) else { panic!("a text frame") };
        let mut expected = legacy.clone();
        expected["content"]["debugger"] = json!(false);
        expected["content"]["supported_features"] = json!(["kernel subshells"]);
        assert_eq!(serde_json::from_str::<Value>(&said).expect("JSON"), expected);
        // Protocol 5.4 says it among the features alone.
        let mut features_only = legacy.clone();
        features_only["content"].as_object_mut().expect("content").remove("debugger");
        let Some(Answer::Text(said)) = without_debugger(false, Frame::Text(&features_only.to_string())) else { panic!("5.4") };
        assert_eq!(serde_json::from_str::<Value>(&said).expect("JSON")["content"]["supported_features"], json!(["kernel subshells"]));

        // Left alone: a kernel without a debugger, another message, and what cannot be read.
        let mut without = legacy.clone();
        without["content"]["debugger"] = json!(false);
        without["content"]["supported_features"] = json!(["kernel subshells"]);
        let mut other = legacy.clone();
        other["header"]["msg_type"] = json!("execute_reply");
        for frame in [without, other] {
            assert!(without_debugger(false, Frame::Text(&frame.to_string())).is_none(), "{frame}");
        }
        for odd in ["[1]", "5", "{\"header\": [1]}", "{\"header\": {\"msg_type\": \"kernel_info_reply\"}, \"content\": [true]}", "not JSON"]
        {
            assert!(without_debugger(false, Frame::Text(odd)).is_none(), "{odd}");
        }
        assert!(without_debugger(true, Frame::Binary(&v1[..20])).is_none());
        let v1_other = v1_frame("iopub", [&json!({ "msg_type": "execute_result" }), &parent, &json!({}), &content]);
        assert!(without_debugger(true, Frame::Binary(&v1_other)).is_none(), "another message");
        let mut said_none = content.clone();
        said_none["debugger"] = json!(false);
        said_none["supported_features"] = json!([]);
        assert!(without_debugger(true, Frame::Binary(&v1_frame("shell", [&header, &parent, &json!({}), &said_none]))).is_none());
        // Any value but false is taken out: a client reads a truthy one as yes.
        let mut truthy = content.clone();
        truthy["debugger"] = json!(1);
        let Some(Answer::Binary(said)) = without_debugger(true, Frame::Binary(&v1_frame("shell", [&header, &parent, &json!({}), &truthy])))
        else {
            panic!("a truthy debugger")
        };
        assert_eq!(serde_json::from_slice::<Value>(v1_parts(&said).expect("parts")[4]).expect("content")["debugger"], false);
        // The layout jupyter_server's serialize_msg_to_ws_v1 writes, byte for byte.
        let golden = v1_frame_of(&[b"shell", b"{}", b"[]"]);
        let mut expected: Vec<u8> = Vec::new();
        for word in [4u64, 40, 45, 47, 49] {
            expected.extend_from_slice(&word.to_le_bytes());
        }
        expected.extend_from_slice(b"shell{}[]");
        assert_eq!(golden, expected);
        assert!(without_debugger(true, Frame::Text("{}")).is_none());
    }
}
