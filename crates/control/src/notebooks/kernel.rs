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
//! - `notebooks:KernelInput`: a password `input()` read, as its length and SHA-256 only: the
//!   answer to the kernel's last prompt on this socket's stdin channel (read at any size) that
//!   asked for a password, while it waits. Only that prompt's answer (naming it, or naming
//!   none) goes on, once; any other is dropped unsent and recorded as refused, its value as its
//!   length and hash only.
//!
//! Fail closed: a frame that cannot be read as Jupyter reads it, an `apply_request` (it runs a
//! pickled function the audit cannot show), a message on the stdin channel that is no
//! `input_reply` (the kernel takes any there for its prompt's answer) or an `input_reply` on
//! another, or a record that cannot be written stops the frame and closes the socket (1008 for
//! the frame, 1011 for the trail). A debug request where the
//! session's stack does not enable `DEBUGGER` is refused too, but answered as the kernel would
//! (a failed `debug_reply`, then `idle`) with the socket left open. Such a session is told its
//! kernel has no debugger (every kernel has one once any stack enables it), so JupyterLab does
//! not ask; a client that asks anyway must not have its notebook broken by a closed socket.
//!
//! The two wire formats of kernel messages are read and written in `wire`.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::state::NotebookTarget;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Pipeline;
use crate::core::platform::ServiceEvent;

mod stdin;
mod wire;
use stdin::{Ending, Stdin, ending_of, stdin_of};
pub use wire::{Answer, Frame, v1_frame};
use wire::{Message, debug_refused, parse, session_of, without_debugger};

/// The longest frame from a kernel read for what it says (a `kernel_info_reply`, an
/// `execute_reply`, a status): a real one is a few KiB.
const READ_FROM_KERNEL: usize = 64 << 10;

/// The session the proxy answers under before the kernel's first frame has named its own.
const BEFORE_THE_KERNEL_SPOKE: &str = "datasandbox-notebook-proxy";

/// The subprotocol of the binary kernel protocol.
pub const V1_PROTOCOL: &str = "v1.kernel.websocket.jupyter.org";

/// How much of a cell's code a record keeps (its hash covers all of it).
const CODE_KEPT: usize = 64 << 10;

/// How many audited executions wait for their reply at most (older ones are not joined).
const PENDING: usize = 4096;

/// A kernel's prompt on a socket, waiting for its answer.
#[derive(Debug)]
struct Asked {
    /// The prompt's message id, which its answer names as its parent.
    msg_id: String,
    /// The request it is part of: the prompt waits no more once that request is answered.
    parent: String,
    password: bool,
}

/// Why a browser's frame was not forwarded: the socket closes with `code` and `reason`.
#[derive(Debug)]
pub struct Refusal {
    pub code: u16,
    pub reason: String,
}

/// What becomes of a browser's frame the audit lets pass.
#[derive(Debug)]
pub enum Passage {
    /// On to the kernel.
    Forward,
    /// Not to the kernel: these go back to the browser instead, the answer that refuses it.
    Answer(Vec<Answer>),
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
    /// The kernel's prompt to this socket still waiting for its answer (ipykernel sends a
    /// prompt only to the connection whose request asked): the one answer let through.
    prompt: Mutex<Option<Asked>>,
    /// A Jupyter terminal's socket instead of a kernel's: what was typed since the last line.
    terminal: Option<Mutex<String>>,
    /// The session the kernel's last frame named ([`BEFORE_THE_KERNEL_SPOKE`] before its
    /// first): what the proxy answers for the kernel comes under it.
    kernel_session: Mutex<String>,
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
            prompt: Mutex::new(None),
            terminal: None,
            kernel_session: Mutex::new(BEFORE_THE_KERNEL_SPOKE.to_owned()),
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

    /// A frame from the browser: to forward once what it runs is recorded, or to answer.
    pub async fn from_browser(&self, frame: Frame<'_>) -> Result<Passage, Refusal> {
        if let Some(typed) = &self.terminal {
            return self.typed_in_terminal(frame, typed).await.map(|()| Passage::Forward);
        }
        let message = match parse(self.v1, frame) {
            Ok(message) => message,
            Err(why) => return Err(self.refuse(&format!("a kernel message the proxy cannot read as Jupyter does: {why}")).await),
        };
        // The kernel takes the next message on its stdin channel, of whatever type, for the
        // answer its prompt waits for (ipykernel reads its `content.value`), and ignores an
        // input_reply anywhere else: either, passed on, would run a pdb command unrecorded or
        // spend the prompt's one answer on nothing.
        if (message.channel == "stdin") != (message.msg_type == "input_reply") {
            let said = json!({ "MessageId": message.msg_id, "MsgType": short(&json!(message.msg_type)), "Channel": short(&json!(message.channel)) });
            return Err(self.refuse_with("on the stdin channel only an input_reply, and an input_reply only there", said).await);
        }
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
            "debug_request" if !self.target.debugger => return Ok(self.debugger_off(&message).await),
            "debug_request" => {
                let (parameters, rest) = code_parameters(&format!("debug:{}", debug_command(content)), &content.to_string());
                ("ExecuteCode", parameters, rest)
            }
            "input_reply" => match self.judged_answer(&message).await? {
                Some(judged) => judged,
                None => return Ok(Passage::Answer(Vec::new())),
            },
            "apply_request" => return Err(self.refuse("apply_request runs a pickled function the audit cannot show").await),
            _ => return Ok(Passage::Forward),
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
            self.await_reply(message.msg_id);
        }
        Ok(Passage::Forward)
    }

    /// The prompt waiting on this socket waits no more once the request it is part of is
    /// answered (an interrupt answers it too) or the kernel restarts: a box JupyterLab still
    /// shows for it must not answer a prompt sent elsewhere later (the kernel takes any answer).
    fn prompt_ended(&self, frame: Frame<'_>) {
        let mut prompt = self.prompt.lock().expect("prompt lock");
        let Some(asked) = prompt.as_ref() else { return };
        let ended = match ending_of(self.v1, frame) {
            Some(Ending::Reply { parent }) => parent == asked.parent,
            Some(Ending::Restart) => true,
            None => false,
        };
        if ended {
            *prompt = None;
        }
    }

    /// What `input()` read: a password only as its length and hash; anything else (a pdb
    /// command runs Python) as code. Only the answer to this socket's prompt (naming it, or
    /// naming none) goes on, once (the kernel takes any answer, whatever it names): a second
    /// one, one to an older prompt or one when no prompt waits is dropped unsent (`None`) and
    /// recorded as refused, its value kept as its hash only; the socket stays open.
    async fn judged_answer(&self, message: &Message) -> Result<Option<(&'static str, Value, Vec<Value>)>, Refusal> {
        let value = message.content["value"].as_str().unwrap_or_default();
        let hashed = json!({ "InputBytes": value.len(), "InputSha256": hex::encode(Sha256::digest(value.as_bytes())) });
        let asked = {
            let mut prompt = self.prompt.lock().expect("prompt lock");
            // An answer that names no prompt (jupyter_client's `input`, older JupyterLab) is the
            // answer to this socket's: the kernel takes it for the prompt it waits on, which is
            // this socket's while one waits here (one request runs at a time).
            let names = |asked: &Asked| message.parent_msg_id.is_empty() || asked.msg_id == message.parent_msg_id;
            if prompt.as_ref().is_some_and(names) { prompt.take() } else { None }
        };
        match asked {
            None => {
                let mut parameters = hashed;
                parameters["MessageId"] = json!(message.msg_id);
                let why = "an input_reply to no prompt waiting on this socket: dropped";
                let error = ActionError::new(400, ErrorCode::ValidationException, why.to_owned());
                if self.record("KernelMessageRefused", parameters, Some(&error)).await.is_err() {
                    return Err(Refusal { code: 1011, reason: "the audit trail cannot be written".into() });
                }
                Ok(None)
            }
            Some(Asked { password: true, .. }) => Ok(Some(("KernelInput", hashed, Vec::new()))),
            Some(Asked { password: false, .. }) => {
                let (parameters, rest) = code_parameters("input_reply", value);
                Ok(Some(("ExecuteCode", parameters, rest)))
            }
        }
    }

    /// A debug request where the stack does not enable the debugger: recorded as refused (as
    /// far as the trail takes it), not sent on, and answered as the kernel would answer.
    async fn debugger_off(&self, request: &Message) -> Passage {
        let why = "the debugger is off for this stack (DEBUGGER)";
        let _ = self.refuse_with(why, json!({ "MessageId": request.msg_id, "Command": debug_command(&request.content) })).await;
        let session = self.kernel_session.lock().expect("session lock").clone();
        Passage::Answer(debug_refused(self.v1, request, &session, why))
    }

    /// Keeps an audited execution's message id until its reply joins its record.
    fn await_reply(&self, msg_id: String) {
        let mut pending = self.pending.lock().expect("pending lock");
        if pending.0.insert(msg_id.clone()) {
            pending.1.push_back(msg_id);
        }
        while pending.1.len() > PENDING {
            let oldest = pending.1.pop_front().expect("not empty");
            pending.0.remove(&oldest);
        }
    }

    /// A frame from the kernel, before the browser has it: the session it names, and whether
    /// the answer an `input_request` waits for is a password. What the browser gets instead,
    /// if anything: where the session's stack does not enable `DEBUGGER`, a kernel that says
    /// it has a debugger (every kernel does once a stack enables it) is said to have none, so
    /// that JupyterLab offers no debugger it would be refused.
    pub fn before_browser(&self, frame: Frame<'_>) -> Option<Answer> {
        if self.terminal.is_some() {
            return None;
        }
        let bytes = match frame {
            Frame::Text(text) => text.as_bytes(),
            Frame::Binary(bytes) => bytes,
        };
        // Read for what it says only if it could be the message sought, and no longer than
        // such a message is: the kernel's code can print the words in any output, of any size.
        let could_be = |name: &[u8]| bytes.len() <= READ_FROM_KERNEL && memchr::memmem::find(bytes, name).is_some();
        let mut instead = None;
        if !self.target.debugger {
            // Only a session whose debug requests are answered needs the kernel's session.
            if let Some(session) = session_of(self.v1, frame) {
                *self.kernel_session.lock().expect("session lock") = session;
            }
            if could_be(b"kernel_info_reply") {
                instead = without_debugger(self.v1, frame);
            }
        }
        match stdin_of(self.v1, frame) {
            Some(Stdin::Prompt { msg_id, parent, password }) => {
                *self.prompt.lock().expect("prompt lock") = Some(Asked { msg_id, parent, password });
            }
            // A prompt the proxy cannot read: no answer goes on until one it can.
            Some(Stdin::Unreadable) => *self.prompt.lock().expect("prompt lock") = None,
            None => self.prompt_ended(frame),
        }
        instead
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
        self.refuse_with(why, json!({})).await
    }

    /// The same, with what the record says of the frame.
    async fn refuse_with(&self, why: &str, parameters: Value) -> Refusal {
        let error = ActionError::new(400, ErrorCode::ValidationException, why.to_owned());
        let _ = self.record("KernelMessageRefused", parameters, Some(&error)).await;
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

/// A debug request's command as records name it: 64 characters at most.
fn debug_command(content: &Value) -> String {
    content["command"].as_str().unwrap_or("(none)").chars().take(64).collect()
}

/// A member the client claims, bounded: a short string as it is, anything else as its hash.
fn short(value: &Value) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::String(s) if s.len() <= 128 => json!(s),
        other => json!({ "Sha256": hex::encode(Sha256::digest(other.to_string().as_bytes())) }),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

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
