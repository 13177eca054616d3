//! The executed-code audit: every message a browser sends a kernel through the notebook proxy
//! is read as Jupyter will read it, and what runs code is recorded before it is forwarded.
//!
//! - `notebooks:ExecuteCode`: an `execute_request` on any channel (ipykernel runs one that
//!   arrives on `control` too): user, session, notebook, kernel, message id, the code up to
//!   [`CODE_KEPT`] bytes (in pieces the trail keeps whole: the first here, the rest in
//!   `notebooks:ExecuteCodeText` records that follow it) with the SHA-256 and length of the
//!   whole, `silent`, `store_history`, `user_expressions` (refused past 2,000 bytes: it is code
//!   too), and the cell id the client claims (client-asserted: JupyterLab sets it, anyone can).
//!   Every member the client sets is bounded, so the trail never has to summarize the record
//!   and lose its code. Every debugger request (`debug:<command>`), whole: several carry code,
//!   and the kernel hands the commands it does not know to debugpy. An `input_reply`, unless
//!   the kernel asked for a password (a pdb command runs Python).
//! - `notebooks:ExecuteCodeResult`: the kernel's `execute_reply` to an audited request, by its
//!   message id: status and execution count. The trail is append-only, so the result joins the
//!   request by id rather than by rewriting its record. Outputs are never recorded.
//! - `notebooks:KernelInput`: a password `input()` read, as its length and SHA-256 only.
//!
//! Fail closed: a frame that cannot be read as Jupyter reads it, an `apply_request` (it runs a
//! pickled function the audit cannot show), or a record that cannot be written stops the frame
//! and closes the socket (1008 for the frame, 1011 for the trail).
//!
//! Wire formats (jupyter_server): the legacy protocol sends JSON text frames (a missing
//! `channel` means `shell`), or binary frames of a u32 BE count, that many u32 BE offsets and
//! the JSON message in the first part; `v1.kernel.websocket.jupyter.org` sends binary frames of
//! a u64 LE count, that many u64 LE offsets, then channel, header, parent header, metadata,
//! content and buffers, each between two offsets. Offsets are read with Python's slicing (a
//! part past the end is empty), as the server reads them.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::state::NotebookTarget;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Pipeline;
use crate::core::platform::ServiceEvent;

/// The subprotocol of the binary kernel protocol.
pub const V1_PROTOCOL: &str = "v1.kernel.websocket.jupyter.org";

/// How much of a cell's code a record keeps (its hash covers all of it).
const CODE_KEPT: usize = 64 << 10;

/// How many audited executions wait for their reply at most (older ones are not joined).
const PENDING: usize = 4096;

/// The most parts a v1 frame may declare (Jupyter would loop over any number).
const V1_PARTS: u64 = 1024;

/// A WebSocket frame's payload.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// Why a browser's frame was not forwarded: the socket closes with `code` and `reason`.
#[derive(Debug)]
pub struct Refusal {
    pub code: u16,
    pub reason: String,
}

/// A kernel message, as much of it as the audit reads.
#[derive(Debug, PartialEq)]
struct Message {
    msg_type: String,
    msg_id: String,
    parent_msg_id: String,
    metadata: Value,
    content: Value,
}

/// The audit of one kernel WebSocket.
pub struct KernelAudit {
    pipeline: Pipeline,
    target: NotebookTarget,
    name: String,
    kernel_id: String,
    v1: bool,
    /// Audited executions waiting for their reply, oldest first.
    pending: Mutex<(HashSet<String>, VecDeque<String>)>,
    /// Whether the kernel's last `input_request` asked for a password.
    password_asked: Mutex<bool>,
    /// A Jupyter terminal's socket instead of a kernel's: what was typed since the last line.
    terminal: Option<Mutex<String>>,
}

impl KernelAudit {
    pub(crate) fn new(pipeline: Pipeline, target: NotebookTarget, name: &str, kernel_id: &str, protocol: Option<&str>) -> KernelAudit {
        KernelAudit {
            pipeline,
            target,
            name: name.to_owned(),
            kernel_id: kernel_id.to_owned(),
            v1: protocol == Some(V1_PROTOCOL),
            pending: Mutex::new((HashSet::new(), VecDeque::new())),
            password_asked: Mutex::new(false),
            terminal: None,
        }
    }

    /// The audit of a Jupyter terminal's socket (terminado's `["stdin", text]` messages): each
    /// line typed is recorded (`notebooks:TerminalInput`) before the frame that ends it reaches
    /// the shell; a frame the proxy cannot read is refused.
    pub(crate) fn terminal(pipeline: Pipeline, target: NotebookTarget, name: &str, terminal: &str) -> KernelAudit {
        KernelAudit { terminal: Some(Mutex::new(String::new())), ..KernelAudit::new(pipeline, target, name, terminal, Some("terminal")) }
    }

    async fn typed_in_terminal(&self, frame: Frame<'_>, typed: &Mutex<String>) -> Result<(), Refusal> {
        let Frame::Text(text) = frame else { return Err(self.refuse("a binary frame on a terminal").await) };
        let message = match serde_json::from_str::<Value>(text) {
            Ok(message) if message.as_array().and_then(|m| m.first()).is_some_and(Value::is_string) => message,
            _ => return Err(self.refuse("a terminal message the proxy cannot read as terminado does").await),
        };
        if message[0] != "stdin" {
            return Ok(());
        }
        let Some(input) = message[1].as_str() else { return Err(self.refuse("terminal input that is not text").await) };
        // Every line this frame ends, and what is typed before a line grows past what a record
        // keeps. A shell runs a line on Enter (CR), a newline pasted, Ctrl-O (readline's
        // operate-and-get-next); Ctrl-D hands a program what was typed, and Ctrl-C drops it.
        let lines = {
            let mut typed = typed.lock().expect("terminal lock");
            let mut lines = Vec::new();
            for c in input.chars() {
                typed.push(c);
                if matches!(c, '\r' | '\n' | '\u{0f}' | '\u{04}' | '\u{03}') || typed.len() >= CODE_KEPT {
                    lines.push(std::mem::take(&mut *typed));
                }
            }
            lines
        };
        for line in lines {
            let (mut parameters, rest) = code_parameters("terminal", &line);
            parameters["TerminalName"] = json!(self.kernel_id);
            let mut records = vec![("TerminalInput", parameters)];
            records.extend(rest.into_iter().map(|text| ("ExecuteCodeText", text)));
            for (event, parameters) in records {
                if let Err(err) = self.record(event, parameters, None).await {
                    tracing::error!(terminal = %self.kernel_id, error = %err.message, "terminal input not recorded: the frame is dropped");
                    return Err(Refusal { code: 1011, reason: "the audit trail cannot be written".into() });
                }
            }
        }
        Ok(())
    }

    /// A frame from the browser: `Ok` to forward it, once what it runs is recorded.
    pub async fn from_browser(&self, frame: Frame<'_>) -> Result<(), Refusal> {
        if let Some(typed) = &self.terminal {
            return self.typed_in_terminal(frame, typed).await;
        }
        let message = match parse(self.v1, frame) {
            Ok(message) => message,
            Err(why) => return Err(self.refuse(&format!("a kernel message the proxy cannot read as Jupyter does: {why}")).await),
        };
        let content = &message.content;
        let (event, mut parameters, continued) = match message.msg_type.as_str() {
            "execute_request" => {
                let Some(code) = content["code"].as_str() else {
                    return Err(self.refuse("an execute_request without code").await);
                };
                // `user_expressions` is code too: kept whole, or the request does not run.
                let expressions =
                    if content["user_expressions"].is_null() { String::new() } else { content["user_expressions"].to_string() };
                if expressions.len() > PIECE_BYTES {
                    return Err(self
                        .refuse(&format!("user_expressions over {PIECE_BYTES} bytes: what runs is recorded whole or not run"))
                        .await);
                }
                let (mut parameters, rest) = code_parameters("execute_request", code);
                // Every member the client sets is bounded: a record the trail would have to
                // summarize would lose its code.
                parameters["Silent"] = json!(truthy(&content["silent"]));
                parameters["StoreHistory"] = json!(truthy(&content["store_history"]));
                parameters["UserExpressions"] = json!(expressions);
                parameters["CellId"] = short(&message.metadata["cellId"]);
                ("ExecuteCode", parameters, rest)
            }
            // Every debugger request, whole: several carry code (evaluate, setExpression,
            // setVariable, breakpoint conditions and log messages, dumpCell, copyToGlobals),
            // and the kernel hands the commands it does not know to debugpy.
            "debug_request" if !self.target.debugger => return Err(self.refuse("the debugger is off for this stack (DEBUGGER)").await),
            "debug_request" => {
                let command: String = content["command"].as_str().unwrap_or("(none)").chars().take(64).collect();
                let (parameters, rest) = code_parameters(&format!("debug:{command}"), &content.to_string());
                ("ExecuteCode", parameters, rest)
            }
            // What `input()` read: a password only as its length and hash; anything else (a
            // pdb command runs Python) as code.
            "input_reply" => {
                let value = content["value"].as_str().unwrap_or_default();
                if *self.password_asked.lock().expect("password lock") {
                    let parameters = json!({ "InputBytes": value.len(), "InputSha256": hex::encode(Sha256::digest(value.as_bytes())) });
                    ("KernelInput", parameters, Vec::new())
                } else {
                    let (parameters, rest) = code_parameters("input_reply", value);
                    ("ExecuteCode", parameters, rest)
                }
            }
            "apply_request" => return Err(self.refuse("apply_request runs a pickled function the audit cannot show").await),
            _ => return Ok(()),
        };
        parameters["MessageId"] = json!(message.msg_id);
        let mut records = vec![(event, parameters)];
        records.extend(continued.into_iter().map(|mut text| {
            text["MessageId"] = json!(message.msg_id);
            ("ExecuteCodeText", text)
        }));
        for (event, parameters) in records {
            if let Err(err) = self.record(event, parameters, None).await {
                tracing::error!(kernel = %self.kernel_id, error = %err.message, "executed code not recorded: the frame is dropped");
                return Err(Refusal { code: 1011, reason: "the audit trail cannot be written".into() });
            }
        }
        if message.msg_type == "execute_request" {
            let mut pending = self.pending.lock().expect("pending lock");
            if pending.0.insert(message.msg_id.clone()) {
                pending.1.push_back(message.msg_id);
            }
            while pending.1.len() > PENDING {
                let oldest = pending.1.pop_front().expect("not empty");
                pending.0.remove(&oldest);
            }
        }
        Ok(())
    }

    /// A frame from the kernel, before the browser has it: an `input_request` says whether the
    /// answer it waits for is a password.
    pub fn before_browser(&self, frame: Frame<'_>) {
        if self.terminal.is_some() {
            return;
        }
        let bytes = match frame {
            Frame::Text(text) => text.as_bytes(),
            Frame::Binary(bytes) => bytes,
        };
        if memchr::memmem::find(bytes, b"input_request").is_none() {
            return;
        }
        if let Ok(message) = parse(self.v1, frame)
            && message.msg_type == "input_request"
        {
            *self.password_asked.lock().expect("password lock") = truthy(&message.content["password"]);
        }
    }

    /// A frame from the kernel: the reply to an audited execution joins its record.
    pub async fn from_kernel(&self, frame: Frame<'_>) {
        if self.terminal.is_some() {
            return;
        }
        let bytes = match frame {
            Frame::Text(text) => text.as_bytes(),
            Frame::Binary(bytes) => bytes,
        };
        if self.pending.lock().expect("pending lock").0.is_empty() || memchr::memmem::find(bytes, b"execute_reply").is_none() {
            return;
        }
        let Ok(message) = parse(self.v1, frame) else { return };
        if message.msg_type != "execute_reply" {
            return;
        }
        {
            let mut pending = self.pending.lock().expect("pending lock");
            if !pending.0.remove(&message.parent_msg_id) {
                return;
            }
            pending.1.retain(|id| id != &message.parent_msg_id);
        }
        let parameters = json!({
            "MessageId": message.parent_msg_id,
            "Status": message.content["status"],
            "ExecutionCount": message.content["execution_count"],
        });
        if let Err(err) = self.record("ExecuteCodeResult", parameters, None).await {
            tracing::warn!(kernel = %self.kernel_id, error = %err.message, "an execution's result was not recorded");
        }
    }

    /// Records why a frame was refused (as far as the trail takes it), and the refusal.
    async fn refuse(&self, why: &str) -> Refusal {
        let error = ActionError::new(400, ErrorCode::ValidationException, why.to_owned());
        let _ = self.record("KernelMessageRefused", json!({}), Some(&error)).await;
        Refusal { code: 1008, reason: why.chars().take(120).collect() }
    }

    async fn record(&self, name: &'static str, mut parameters: Value, error: Option<&ActionError>) -> Result<(), ActionError> {
        parameters["NotebookInstanceName"] = json!(self.name);
        parameters["KernelId"] = json!(self.kernel_id);
        parameters["UserId"] = json!(self.target.user_id);
        parameters["SessionId"] = json!(self.target.session_id);
        let protocol = if self.terminal.is_some() {
            "terminal"
        } else if self.v1 {
            V1_PROTOCOL
        } else {
            "legacy"
        };
        parameters["Protocol"] = json!(protocol);
        let event = ServiceEvent {
            source: "notebooks",
            name,
            principal: "gateway.datasandbox",
            parameters,
            error,
            management_event: false,
            correlation_id: Some(self.target.correlation_id.clone()),
            source_ip: Some(self.target.source_ip.clone()),
            ..ServiceEvent::default()
        };
        self.pipeline.record_service_event(event).await
    }
}

/// The code's record: what kind of request ran it, its length and hash, and the code up to
/// [`CODE_KEPT`] bytes in pieces the trail keeps whole (it cuts longer strings): the first in
/// `Code`, the others, if any, in `ExecuteCodeText` records that follow (`CodeParts` says how
/// many pieces there are in all).
fn code_parameters(kind: &str, code: &str) -> (Value, Vec<Value>) {
    let pieces = pieces(code, CODE_KEPT);
    let kept: usize = pieces.iter().map(|p| p.len()).sum();
    let parameters = json!({
        "Kind": kind,
        "Code": pieces.first().copied().unwrap_or_default(),
        "CodeParts": pieces.len().max(1),
        "CodeBytes": code.len(),
        "CodeSha256": hex::encode(Sha256::digest(code.as_bytes())),
        "CodeTruncated": kept < code.len(),
    });
    let rest: Vec<Value> = pieces
        .get(1..)
        .unwrap_or_default()
        .chunks(PIECES_A_RECORD)
        .enumerate()
        .map(|(index, chunk)| json!({ "From": 1 + index * PIECES_A_RECORD, "Parts": chunk }))
        .collect();
    (parameters, rest)
}

/// The longest piece of code one string of a record holds (the trail keeps 2048 bytes).
const PIECE_BYTES: usize = 2000;
/// How many pieces one continuation record holds (its parameters stay under the trail's cap).
const PIECES_A_RECORD: usize = 6;

/// The first `limit` bytes of `code` in pieces of at most [`PIECE_BYTES`], on character
/// boundaries.
fn pieces(code: &str, limit: usize) -> Vec<&str> {
    let (mut pieces, mut at) = (Vec::new(), 0);
    while at < code.len() && at < limit {
        let mut end = (at + PIECE_BYTES).min(code.len()).min(limit);
        while !code.is_char_boundary(end) {
            end -= 1;
        }
        pieces.push(&code[at..end]);
        at = end;
    }
    pieces
}

/// A JSON value's truth as Python judges it (what the kernel does with `silent`).
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A member the client claims, bounded: a short string as it is, anything else as its hash.
fn short(value: &Value) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::String(s) if s.len() <= 128 => json!(s),
        other => json!({ "Sha256": hex::encode(Sha256::digest(other.to_string().as_bytes())) }),
    }
}

/// `bytes[start:end]` as Python slices it: clamped to the bytes, empty when reversed.
fn py_slice(bytes: &[u8], start: u64, end: Option<u64>) -> &[u8] {
    let len = bytes.len() as u64;
    let (start, end) = (start.min(len), end.map_or(len, |e| e.min(len)));
    if start >= end { &[] } else { &bytes[start as usize..end as usize] }
}

fn parse(v1: bool, frame: Frame<'_>) -> Result<Message, String> {
    match (v1, frame) {
        (false, Frame::Text(text)) => legacy(text.as_bytes()),
        (false, Frame::Binary(bytes)) => {
            let count = bytes.get(..4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok_or("a binary frame under 4 bytes")?;
            if count < 1 {
                return Err("a binary frame without parts".into());
            }
            let table = bytes.get(4..4 + 4 * count as usize).ok_or("a binary frame shorter than its offsets")?;
            let offset = |i: usize| u64::from(u32::from_be_bytes([table[4 * i], table[4 * i + 1], table[4 * i + 2], table[4 * i + 3]]));
            let end = (count > 1).then(|| offset(1));
            legacy(py_slice(bytes, offset(0), end))
        }
        (true, Frame::Text(_)) => Err("a text frame on the v1 protocol".into()),
        (true, Frame::Binary(bytes)) => {
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
            let part = |i: usize| py_slice(bytes, offsets[i], offsets.get(i + 1).copied());
            std::str::from_utf8(part(0)).map_err(|_| "a channel that is not UTF-8")?;
            let json = |i: usize, what: &str| serde_json::from_slice::<Value>(part(i)).map_err(|e| format!("its {what}: {e}"));
            let (header, parent, metadata, content) =
                (json(1, "header")?, json(2, "parent header")?, json(3, "metadata")?, json(4, "content")?);
            message(&header, &parent, metadata, content)
        }
    }
}

fn legacy(json: &[u8]) -> Result<Message, String> {
    let mut whole: Value = serde_json::from_slice(json).map_err(|e| format!("its JSON: {e}"))?;
    let take = |whole: &mut Value, key: &str| whole.get_mut(key).map(Value::take).unwrap_or(Value::Null);
    let (header, parent) = (take(&mut whole, "header"), take(&mut whole, "parent_header"));
    let (metadata, content) = (take(&mut whole, "metadata"), take(&mut whole, "content"));
    message(&header, &parent, metadata, content)
}

fn message(header: &Value, parent: &Value, metadata: Value, content: Value) -> Result<Message, String> {
    // Each part an object, as the kernel needs it: a `content` sent as a string would reach the
    // kernel as the object it encodes (the legacy protocol passes strings on as they are).
    for (part, what) in [(header, "header"), (parent, "parent header"), (&metadata, "metadata"), (&content, "content")] {
        if !part.is_object() {
            return Err(format!("its {what} is not a JSON object"));
        }
    }
    let msg_type = header["msg_type"].as_str().ok_or("a header without msg_type")?.to_owned();
    Ok(Message {
        msg_type,
        msg_id: header["msg_id"].as_str().unwrap_or_default().to_owned(),
        parent_msg_id: parent["msg_id"].as_str().unwrap_or_default().to_owned(),
        metadata,
        content,
    })
}

/// A message in the v1 wire format (for the tests and the benchmark's client).
pub fn v1_frame(channel: &str, parts: [&Value; 4]) -> Vec<u8> {
    let mut bodies: Vec<Vec<u8>> = vec![channel.as_bytes().to_vec()];
    bodies.extend(parts.iter().map(|p| p.to_string().into_bytes()));
    let count = bodies.len() as u64 + 1;
    let mut frame = count.to_le_bytes().to_vec();
    let mut at = 8 * (count + 1);
    for body in &bodies {
        frame.extend_from_slice(&at.to_le_bytes());
        at += body.len() as u64;
    }
    frame.extend_from_slice(&at.to_le_bytes());
    for body in bodies {
        frame.extend_from_slice(&body);
    }
    frame
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
    fn code_is_kept_to_its_limit_in_whole_pieces_and_hashed_whole() {
        let code = "é".repeat(CODE_KEPT);
        let (parameters, rest) = code_parameters("execute_request", &code);
        assert_eq!(parameters["CodeBytes"], 2 * CODE_KEPT);
        assert_eq!(parameters["CodeSha256"], hex::encode(Sha256::digest(code.as_bytes())));
        assert_eq!(parameters["CodeTruncated"], true);
        let mut kept = parameters["Code"].as_str().expect("code").to_owned();
        for text in &rest {
            for part in text["Parts"].as_array().expect("parts") {
                let part = part.as_str().expect("a piece");
                assert!(part.len() <= PIECE_BYTES);
                kept.push_str(part);
            }
            assert!(text.to_string().len() < 16 << 10, "a continuation under the trail's section cap");
        }
        assert_eq!(kept.len(), CODE_KEPT);
        assert!(code.starts_with(&kept));
        assert_eq!(parameters["CodeParts"], 1 + rest.iter().map(|t| t["Parts"].as_array().map_or(0, Vec::len)).sum::<usize>());
        let (short, none) = code_parameters("execute_request", "6*7");
        assert_eq!((short["Code"].as_str(), short["CodeParts"].as_u64(), none.len()), (Some("6*7"), Some(1), 0));
    }
}
