//! What the notebook proxy reads of a body before Jupyter does: uploads and downloads where a
//! session's transfer settings forbid them, and what a request asks Jupyter to start.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use bytes::Bytes;
use serde_json::Value;

/// Why a body is refused, if it is.
pub(super) type Judge = fn(&[u8]) -> Option<&'static str>;

/// Bodies the proxy reads to judge them (contents-API requests and answers when a transfer
/// setting is disabled): larger ones are refused. Everything else streams through.
pub(super) const INSPECT_LIMIT: usize = 16 * 1024 * 1024;

pub(super) const UPLOAD_DISABLED: &str = "file upload is disabled for this session (FILE_UPLOAD)";
pub(super) const DOWNLOAD_DISABLED: &str = "file download is disabled for this session (FILE_DOWNLOAD)";
pub(super) const UNREADABLE: &str = "the body cannot be judged (not JSON this proxy reads), and file transfer is disabled for this session";
pub(super) const TOO_LARGE: &str = "the body is too large to judge (16 MiB), and file transfer is disabled for this session";

/// Why a contents-API write is refused when uploads are disabled, if it is: a file (by type or
/// base64 format), or anything that is not a JSON object this proxy reads (Jupyter's parser
/// accepts more than serde's: `NaN`, lone surrogates, deep nesting).
pub(super) fn judge_upload(body: &[u8]) -> Option<&'static str> {
    let Ok(Value::Object(model)) = serde_json::from_slice::<Value>(body) else { return Some(UNREADABLE) };
    (model.get("type").is_some_and(|t| t == "file") || model.get("format").is_some_and(|f| f == "base64")).then_some(UPLOAD_DISABLED)
}

/// What a contents-API error answer says instead of Jupyter's message when downloads are
/// disabled.
pub(super) const MESSAGE_WITHHELD: &str = "the notebook server could not answer this read; its message, which can quote a file, is withheld: file download is disabled for this session (FILE_DOWNLOAD)";

/// A contents-API answer's body when downloads are disabled: an error keeps its status and
/// loses Jupyter's message, which can quote the file read (a file read as a notebook that does
/// not parse as one answers a 400 quoting its first characters). Anything else is unchanged.
pub(super) fn error_withheld(status: StatusCode, body: Bytes) -> Bytes {
    if withholds(status) { Bytes::from(serde_json::json!({ "message": MESSAGE_WITHHELD, "reason": null }).to_string()) } else { body }
}

/// Whether a contents-API answer of `status` is an error, whose message is withheld.
pub(super) fn withholds(status: StatusCode) -> bool {
    status.is_client_error() || status.is_server_error()
}

/// Why a contents-API answer is refused when downloads are disabled, if it is: a file's
/// content, or anything that is not JSON this proxy reads.
pub(super) fn judge_download(body: &[u8]) -> Option<&'static str> {
    let Ok(model) = serde_json::from_slice::<Value>(body) else { return Some(UNREADABLE) };
    (model["type"] == "file" && !model["content"].is_null()).then_some(DOWNLOAD_DISABLED)
}

const LAUNCH_REFUSED: &str =
    "a request that chooses what Jupyter starts (another kernel, a kernel id, a terminal's command or environment) is refused";

/// The judge of a request that starts something, if it does: Jupyter takes the kernel, the
/// kernel's id, and a terminal's command and environment from the body, and only the
/// platform's kernel and the terminal's own shell may start (what else started would run in
/// the server's group, around this proxy).
pub(super) fn launch_judge(method: &Method, rest: &str) -> Option<Judge> {
    const SESSION: &[&str] = &["id", "path", "name", "type", "kernel"];
    let route = rest.trim_end_matches('/');
    match (method.as_str(), route) {
        ("POST", "api/terminals") => Some(|body| judge_fields(body, &["name", "cwd"], Kernel::Unnamed)),
        ("POST", "api/kernels") => Some(|body| judge_fields(body, &["name", "path"], Kernel::Named)),
        ("POST", "api/sessions") => Some(|body| judge_fields(body, SESSION, Kernel::Within)),
        ("PATCH", session) if session.starts_with("api/sessions/") => Some(|body| judge_fields(body, SESSION, Kernel::Within)),
        _ => None,
    }
}

/// Where a body names its kernel.
#[derive(Clone, Copy)]
enum Kernel {
    /// Nowhere (a terminal's `name` is the terminal's).
    Unnamed,
    /// Its `name`.
    Named,
    /// Its `kernel` member, an object of `name` and `id`.
    Within,
}

/// Refuses a body that is not a JSON object of `allowed` members (each a string or null, but a
/// session's `kernel`), or that names a kernel other than `python3`. An empty body is Jupyter's
/// defaults.
fn judge_fields(body: &[u8], allowed: &[&str], kernel: Kernel) -> Option<&'static str> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let Ok(Value::Object(model)) = serde_json::from_slice::<Value>(body) else { return Some(LAUNCH_REFUSED) };
    let plain = |value: &Value| value.is_string() || value.is_null();
    let platforms = |name: Option<&Value>| name.is_none_or(|n| n.is_null() || n == "python3");
    let members = model
        .iter()
        .all(|(key, value)| allowed.contains(&key.as_str()) && (plain(value) || (matches!(kernel, Kernel::Within) && key == "kernel")));
    let named = match kernel {
        Kernel::Unnamed => true,
        Kernel::Named => platforms(model.get("name")),
        Kernel::Within => match model.get("kernel") {
            None | Some(Value::Null) => true,
            Some(Value::Object(inner)) => {
                inner.iter().all(|(key, value)| (key == "name" || key == "id") && plain(value)) && platforms(inner.get("name"))
            }
            Some(_) => false,
        },
    };
    (!(members && named)).then_some(LAUNCH_REFUSED)
}

/// Reads a body whole (up to [`INSPECT_LIMIT`]) so that `judge` sees all of it before any of
/// it passes; a body too large to read is refused as [`TOO_LARGE`].
pub(super) async fn read_and_judge(body: Body, judge: Judge) -> (Bytes, Option<&'static str>) {
    match axum::body::to_bytes(body, INSPECT_LIMIT).await {
        Ok(bytes) => {
            let why = judge(&bytes);
            (bytes, why)
        }
        Err(_) => (Bytes::new(), Some(TOO_LARGE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_platforms_kernel_and_the_terminals_shell_start() {
        let judge = |method: &str, rest: &str, body: &str| {
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            launch_judge(&method, rest).expect("judged")(body.as_bytes())
        };
        for (method, rest, body) in [
            ("POST", "api/terminals", ""),
            ("POST", "api/terminals", r#"{"name":"1","cwd":"work"}"#),
            ("POST", "api/kernels", r#"{"name":"python3","path":"a.ipynb"}"#),
            ("POST", "api/sessions", r#"{"path":"a.ipynb","type":"notebook","name":"a","kernel":{"name":"python3","id":null}}"#),
            ("PATCH", "api/sessions/x", r#"{"kernel":{"id":"0f3c"}}"#),
        ] {
            assert_eq!(judge(method, rest, body), None, "{method} {rest} {body}");
        }
        for (method, rest, body) in [
            ("POST", "api/terminals", r#"{"shell_command":["/bin/sh","-p"]}"#),
            ("POST", "api/terminals/", r#"{"extra_env":{"A":"1"}}"#),
            ("POST", "api/kernels", r#"{"name":"ir"}"#),
            ("POST", "api/kernels", r#"{"name":"python3","kernel_id":"../x"}"#),
            ("POST", "api/sessions", r#"{"path":"a","kernel":{"name":"ir"}}"#),
            ("POST", "api/sessions", r#"{"path":"a","kernel":"python3"}"#),
            ("PATCH", "api/sessions/x", r#"{"kernel":{"name":"python3","env":{}}}"#),
            ("POST", "api/kernels", "NaN"),
        ] {
            assert_eq!(judge(method, rest, body), Some(LAUNCH_REFUSED), "{method} {rest} {body}");
        }
        assert!(launch_judge(&Method::GET, "api/kernels").is_none());
    }

    /// With downloads disabled, Jupyter's error message does not reach the browser: reading a
    /// file that is not a notebook as one answers a 400 quoting the file's first characters
    /// (review finding). A file's answer itself is judged apart; a 304 has no message.
    #[test]
    fn an_error_answer_loses_its_message_when_downloads_are_disabled() {
        let quoted = br#"{"message": "Unreadable Notebook: /home/user/work/data.csv NotJSONError('Notebook does not appear to be JSON: \'SECRET-ROW,42\\nother\'')", "reason": null}"#;
        for status in [StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND, StatusCode::INTERNAL_SERVER_ERROR] {
            let body = error_withheld(status, Bytes::from_static(quoted));
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains("SECRET-ROW"), "{status}: {text}");
            let model: Value = serde_json::from_slice(&body).expect("JSON, as JupyterLab reads an error");
            assert_eq!(model["message"], MESSAGE_WITHHELD);
        }
        for status in [StatusCode::OK, StatusCode::NOT_MODIFIED] {
            assert_eq!(error_withheld(status, Bytes::from_static(quoted)), Bytes::from_static(quoted), "{status}");
        }
    }
}
