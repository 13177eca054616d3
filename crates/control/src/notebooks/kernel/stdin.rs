//! What a kernel says on its stdin channel: a prompt for input, read at any size for its id,
//! its parent's and whether it asks for a password, and for nothing else; and the frames that
//! end a prompt's wait, read at any size too.

use super::wire::{Frame, legacy_message, v1_parts};

/// A message's parent header, read for its id alone.
#[derive(serde::Deserialize)]
struct Parent {
    #[serde(default)]
    msg_id: String,
}

/// What a kernel's frame on the stdin channel says to the audit (see [`stdin_of`]).
#[derive(Debug, PartialEq)]
pub(super) enum Stdin {
    /// A prompt for input: its message id, the request it is part of (its parent), and whether
    /// it asks for a password (its `password` member as JavaScript, and so JupyterLab, reads it).
    Prompt { msg_id: String, parent: String, password: bool },
    /// A frame on stdin the proxy cannot read as a prompt.
    Unreadable,
}

/// A JSON value read only for whether JavaScript takes it for true (a non-empty string, a
/// number other than 0, `true`, any array or object), without keeping any of it: a kernel's
/// frame can hold 64 MiB of it.
struct Truthy(bool);

impl<'de> serde::Deserialize<'de> for Truthy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Truthy, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Truthy;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Truthy, E> {
                Ok(Truthy(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Truthy, E> {
                Ok(Truthy(v != 0))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Truthy, E> {
                Ok(Truthy(v != 0))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Truthy, E> {
                Ok(Truthy(v != 0.0 && !v.is_nan()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Truthy, E> {
                Ok(Truthy(!v.is_empty()))
            }
            fn visit_unit<E>(self) -> Result<Truthy, E> {
                Ok(Truthy(false))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Truthy, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Truthy(true))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Truthy, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Truthy(true))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A kernel's prompt for input: an `input_request` on the stdin channel, read at any size (the
/// user's code writes the prompt) for its id, its parent's and whether it asks for a password,
/// and for nothing else. A v1 frame is read only if its channel is stdin (its parts as
/// jupyter_client wrote them, not always UTF-8: read with U+FFFD for what is not); a legacy
/// frame only if it names the type (jupyter_server writes each legacy message out anew,
/// plainly). Anything else, an output that prints the words or a message the user's code
/// sends on another channel, is none of stdin's.
pub(super) fn stdin_of(v1: bool, frame: Frame<'_>) -> Option<Stdin> {
    #[derive(serde::Deserialize)]
    struct Header {
        msg_type: String,
        #[serde(default)]
        msg_id: String,
    }
    #[derive(serde::Deserialize)]
    struct Content {
        password: Option<Truthy>,
    }
    #[derive(serde::Deserialize)]
    struct Legacy {
        channel: Option<String>,
        header: Header,
        parent_header: Parent,
        content: Content,
    }
    let prompt = |header: Header, parent: Parent, content: Content| {
        (header.msg_type == "input_request").then(|| Stdin::Prompt {
            msg_id: header.msg_id,
            parent: parent.msg_id,
            password: content.password.is_some_and(|p| p.0),
        })
    };
    match (v1, frame) {
        (true, Frame::Binary(bytes)) => {
            let part = v1_parts(bytes).ok()?;
            if part[0] != b"stdin" {
                return None;
            }
            let read = |i: usize| String::from_utf8_lossy(part[i]);
            let Ok(header) = serde_json::from_str::<Header>(&read(1)) else { return Some(Stdin::Unreadable) };
            if header.msg_type != "input_request" {
                return None;
            }
            match (serde_json::from_str::<Parent>(&read(2)), serde_json::from_str::<Content>(&read(4))) {
                (Ok(parent), Ok(content)) => prompt(header, parent, content),
                _ => Some(Stdin::Unreadable),
            }
        }
        (false, frame) => {
            let json = match frame {
                Frame::Text(text) => text.as_bytes(),
                Frame::Binary(bytes) => legacy_message(bytes).ok()?,
            };
            memchr::memmem::find(json, b"input_request")?;
            let message: Legacy = serde_json::from_slice(json).ok()?;
            if message.channel.as_deref() != Some("stdin") {
                return None;
            }
            prompt(message.header, message.parent_header, message.content)
        }
        (true, Frame::Text(_)) => None,
    }
}

/// What ends a prompt's wait, as a kernel's frame says it (see [`ending_of`]).
#[derive(Debug, PartialEq)]
pub(super) enum Ending {
    /// An `execute_reply`, to the request whose id this is (an interrupted one's too).
    Reply { parent: String },
    /// A restart: status `starting`, `restarting`, `autorestarting` or `dead`.
    Restart,
}

/// Whether a kernel's frame ends a prompt's wait, read at any size for its type, its parent's
/// id and its execution state, and for nothing else: the reply to the request a prompt is part
/// of carries whatever error the user's code raised, of any length, and a reply not read would
/// leave the prompt waiting for an answer the kernel no longer wants (review finding: a reply
/// over 64 KiB was not read).
pub(super) fn ending_of(v1: bool, frame: Frame<'_>) -> Option<Ending> {
    #[derive(serde::Deserialize)]
    struct Header {
        msg_type: String,
    }
    #[derive(serde::Deserialize)]
    struct Content {
        execution_state: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Legacy {
        header: Header,
        parent_header: Option<Parent>,
        content: Option<Content>,
    }
    const RESTARTS: [&str; 4] = ["starting", "restarting", "autorestarting", "dead"];
    let ended = |header: Header, parent: Option<Parent>, content: Option<Content>| match header.msg_type.as_str() {
        "execute_reply" => parent.map(|p| Ending::Reply { parent: p.msg_id }),
        "status" => content.and_then(|c| c.execution_state).filter(|s| RESTARTS.contains(&s.as_str())).map(|_| Ending::Restart),
        _ => None,
    };
    match (v1, frame) {
        (true, Frame::Binary(bytes)) => {
            let part = v1_parts(bytes).ok()?;
            let read = |i: usize| String::from_utf8_lossy(part[i]);
            let header: Header = serde_json::from_str(&read(1)).ok()?;
            match header.msg_type.as_str() {
                "execute_reply" => ended(header, serde_json::from_str(&read(2)).ok(), None),
                "status" => ended(header, None, serde_json::from_str(&read(4)).ok()),
                _ => None,
            }
        }
        (false, frame) => {
            let json = match frame {
                Frame::Text(text) => text.as_bytes(),
                Frame::Binary(bytes) => legacy_message(bytes).ok()?,
            };
            if memchr::memmem::find(json, b"execute_reply").is_none() && memchr::memmem::find(json, b"execution_state").is_none() {
                return None;
            }
            let message: Legacy = serde_json::from_slice(json).ok()?;
            ended(message.header, message.parent_header, message.content)
        }
        (true, Frame::Text(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::notebooks::kernel::wire::v1_frame;

    /// A prompt is a stdin `input_request`, read at any size in either format (a v1 part that
    /// is not UTF-8 too); the words in an output, or a prompt the user's code sends on iopub,
    /// are none of stdin's.
    #[test]
    fn a_prompt_is_read_only_from_the_stdin_channel_at_any_size() {
        let header = json!({ "msg_id": "p1", "msg_type": "input_request", "session": "k", "username": "u", "version": "5.3" });
        let content = |password: bool| json!({ "prompt": "P".repeat(100_000), "password": password });
        let legacy = |channel: &str, password: bool| {
            json!({ "channel": channel, "header": header, "parent_header": {}, "metadata": {}, "content": content(password) }).to_string()
        };
        let v1 = |channel: &str, password: bool| v1_frame(channel, [&header, &json!({}), &json!({}), &content(password)]);
        let asked = |password: bool| Some(Stdin::Prompt { msg_id: "p1".into(), parent: String::new(), password });
        assert_eq!(stdin_of(false, Frame::Text(&legacy("stdin", true))), asked(true));
        assert_eq!(stdin_of(false, Frame::Text(&legacy("stdin", false))), asked(false));
        assert_eq!(stdin_of(true, Frame::Binary(&v1("stdin", true))), asked(true));
        assert_eq!(stdin_of(false, Frame::Text(&legacy("iopub", true))), None);
        assert_eq!(stdin_of(true, Frame::Binary(&v1("iopub", true))), None);
        let printed = json!({ "channel": "iopub", "header": { "msg_type": "stream" }, "parent_header": {}, "metadata": {},
            "content": { "name": "stdout", "text": "input_request".repeat(10_000) } });
        assert_eq!(stdin_of(false, Frame::Text(&printed.to_string())), None);
        let unnamed = json!({ "header": header, "parent_header": {}, "metadata": {}, "content": content(true) });
        assert_eq!(stdin_of(false, Frame::Text(&unnamed.to_string())), None, "a message without a channel is the shell's");
        // A prompt jupyter_client wrote with a byte that is not UTF-8 is still read.
        let mut raw = v1("stdin", true);
        let at = memchr::memmem::find(&raw, b"PPPP").expect("the prompt");
        raw[at] = 0xff;
        assert_eq!(stdin_of(true, Frame::Binary(&raw)), asked(true));
        // `password` as JavaScript reads it (JupyterLab masks the box for any array or object),
        // and never kept: a 64 MiB array of it costs no memory.
        for (password, masked) in
            [(json!([]), true), (json!({}), true), (json!(0), false), (json!(""), false), (Value::Null, false), (json!("x"), true)]
        {
            let frame = json!({ "channel": "stdin", "header": header, "parent_header": { "msg_id": "e1" }, "metadata": {},
                "content": { "prompt": "", "password": password } });
            let read = stdin_of(false, Frame::Text(&frame.to_string()));
            assert_eq!(read, Some(Stdin::Prompt { msg_id: "p1".into(), parent: "e1".into(), password: masked }), "{password}");
        }
        let zeros = format!(
            "{{\"channel\": \"stdin\", \"header\": {header}, \"parent_header\": {{}}, \"content\": {{\"password\": [{}0]}}}}",
            "0,".repeat(4 << 20)
        );
        assert!(matches!(stdin_of(false, Frame::Text(&zeros)), Some(Stdin::Prompt { password: true, .. })));
        // A stdin frame that is no JSON is unreadable: no answer to it goes on.
        let whole = v1_frame("stdin", [&header, &json!({}), &json!({}), &json!({})]);
        let broken = [&whole[..whole.len() - 1], b"[".as_slice()].concat();
        assert_eq!(stdin_of(true, Frame::Binary(&broken)), Some(Stdin::Unreadable));
    }

    /// The reply that ends a prompt's wait is read at any size, in either format: a user's code
    /// can raise an error of any length after an interrupt ends its `getpass`.
    #[test]
    fn a_reply_ends_a_prompt_at_any_size() {
        let reply = json!({ "msg_id": "r1", "msg_type": "execute_reply" });
        let content = json!({ "status": "error", "ename": "ValueError", "evalue": "x".repeat(100_000), "traceback": [] });
        let parent = json!({ "msg_id": "e1" });
        let legacy = json!({ "channel": "shell", "header": reply, "parent_header": parent, "metadata": {}, "content": content });
        let ended = Some(Ending::Reply { parent: "e1".into() });
        assert_eq!(ending_of(false, Frame::Text(&legacy.to_string())), ended);
        assert_eq!(ending_of(true, Frame::Binary(&v1_frame("shell", [&reply, &parent, &json!({}), &content]))), ended);
        let status = |state: &str| json!({ "msg_id": "s1", "msg_type": "status", "execution_state": state });
        for (state, restart) in [("restarting", true), ("dead", true), ("busy", false), ("idle", false)] {
            let content = json!({ "execution_state": state });
            let frame = json!({ "channel": "iopub", "header": status(state), "parent_header": {}, "metadata": {}, "content": content });
            let read = ending_of(false, Frame::Text(&frame.to_string()));
            assert_eq!(read == Some(Ending::Restart), restart, "{state}");
            let read = ending_of(true, Frame::Binary(&v1_frame("iopub", [&status(state), &json!({}), &json!({}), &content])));
            assert_eq!(read == Some(Ending::Restart), restart, "{state}");
        }
        let printed = json!({ "channel": "iopub", "header": { "msg_type": "stream" }, "parent_header": parent, "metadata": {},
            "content": { "name": "stdout", "text": "execute_reply" } });
        assert_eq!(ending_of(false, Frame::Text(&printed.to_string())), None);
    }
}
