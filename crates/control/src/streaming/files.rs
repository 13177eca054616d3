//! My Files: the session page's view of the user's home folder and of the session's
//! printouts. Uploads and downloads go through the storage actions as the session's user (so
//! the policies decide and the trail records them, under the session's correlation id) and
//! only where the session's stack enables `FILE_UPLOAD` / `FILE_DOWNLOAD`. Printouts are the
//! PDFs the instance's printer put in its print folder; one reaches the user's device only
//! if the stack enables `PRINTING_TO_LOCAL_DEVICE` (audited as `PrintoutDownloaded`). A
//! refused transfer is audited as `FileTransferBlocked`, by name and size, never its content.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::repo::{self, SessionState};
use super::state::Streaming;
use crate::core::caller::Credentials;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::pipeline::Request;
use crate::core::platform::ServiceEvent;

/// The browser asking: its session cookie and where it speaks from.
pub struct FileClient<'a> {
    pub cookie: &'a str,
    pub source_ip: &'a str,
    pub user_agent: &'a str,
}

/// A transfer between the home folder and the user's device.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Upload,
    Download,
    Print,
}

impl Direction {
    fn setting(self) -> &'static str {
        match self {
            Direction::Upload => "FILE_UPLOAD",
            Direction::Download => "FILE_DOWNLOAD",
            Direction::Print => "PRINTING_TO_LOCAL_DEVICE",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Direction::Upload => "uploads",
            Direction::Download => "downloads",
            Direction::Print => "printing to your device",
        }
    }
}

/// The launcher's exchange with the session validator lives in the home folder too; it is
/// the platform's, not the user's, and My Files does not show it.
const PLATFORM_FILES: &[&str] = &[model::session_file::SESSION_FILE, model::session_file::URL_FILE, model::session_file::ERROR_FILE];

/// The session behind a cookie, as My Files needs it.
struct FilesSession {
    session_id: String,
    stack: String,
    bucket: String,
    prefix: String,
    settings: Value,
    correlation_id: Option<String>,
    instance_id: Option<String>,
}

impl FilesSession {
    fn enabled(&self, direction: Direction) -> bool {
        self.settings["UserSettings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["Action"] == direction.setting())
            .is_none_or(|s| s["Permission"] == "ENABLED")
    }
}

/// A name inside the home folder: relative, no `.` or `..` segments, no control characters.
fn check_name(name: &str) -> Result<(), ActionError> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..")
        && !name.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(ActionError::validation(format!("`{name}` is not a file name inside your home folder"))) }
}

impl Streaming {
    /// The home folder's files (name, size, time) and what the session's stack allows.
    pub(crate) async fn session_files(&self, client: &FileClient<'_>) -> Result<Value, ActionError> {
        let session = self.files_session(client).await?;
        let listed = self
            .as_session_user(
                client,
                "storage:ListObjectsV2",
                json!({ "Bucket": session.bucket, "Prefix": session.prefix, "MaxKeys": 1000 }),
            )
            .await?;
        let files: Vec<Value> = listed["Contents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|object| {
                let name = object["Key"].as_str()?.strip_prefix(&session.prefix)?;
                (!PLATFORM_FILES.contains(&name))
                    .then(|| json!({ "Name": name, "Size": object["Size"], "LastModified": object["LastModified"] }))
            })
            .collect();
        Ok(json!({
            "Files": files,
            "Printouts": self.printouts(&session),
            "Upload": session.enabled(Direction::Upload),
            "Download": session.enabled(Direction::Download),
            "Print": session.enabled(Direction::Print),
        }))
    }

    /// My Files' "Request export": an airlock request for one file of the home folder, from this
    /// session's workspace, with why; created, filled and submitted as the session's user, so
    /// the airlock's checks and reviewers decide whether it leaves. Its answer is the
    /// submission's (the request, its state, what failed).
    pub(crate) async fn request_export(&self, client: &FileClient<'_>, name: &str, justification: &str) -> Result<Value, ActionError> {
        let session = self.files_session(client).await?;
        check_name(name)?;
        let input = json!({ "Direction": "EXPORT", "Workspace": session.stack, "Justification": justification });
        let created = self.as_session_user(client, "airlock:CreateRequest", input).await?;
        let id = created["RequestId"].clone();
        let source = json!({ "Bucket": session.bucket, "Key": format!("{}{name}", session.prefix) });
        self.as_session_user(client, "airlock:AddFile", json!({ "RequestId": id, "Source": source })).await?;
        self.as_session_user(client, "airlock:SubmitRequest", json!({ "RequestId": id })).await
    }

    /// A printout of the session (`job-<n>.pdf` in its print folder), if the stack enables
    /// `PRINTING_TO_LOCAL_DEVICE`. The folder is the instance's to write: links are never
    /// followed and only regular files are read.
    pub(crate) async fn download_printout(&self, client: &FileClient<'_>, name: &str) -> Result<Bytes, ActionError> {
        let session = self.files_session(client).await?;
        if !printout_name(name) {
            return Err(ActionError::validation(format!("`{name}` is not a printout of this session (job-<number>.pdf)")));
        }
        self.require(&session, client, Direction::Print, name, 0).await?;
        let dir = crate::instances::print_dir(&self.pipeline.platform, session.instance_id.as_deref().unwrap_or_default());
        let limit = self.pipeline.platform.spec.max_object_size;
        let path = dir.join(name);
        let body = tokio::task::spawn_blocking(move || read_regular_file(&path, limit)).await.map_err(ActionError::internal)??;
        let event = ServiceEvent {
            source: "streaming",
            name: "PrintoutDownloaded",
            principal: "gateway.datasandbox",
            parameters: json!({ "SessionId": session.session_id, "Name": name, "Bytes": body.len() }),
            correlation_id: session.correlation_id.clone(),
            source_ip: Some(client.source_ip.to_owned()),
            ..ServiceEvent::default()
        };
        // The printout leaves only once its record is durable.
        self.pipeline.record_service_event(event).await?;
        Ok(Bytes::from(body))
    }

    fn printouts(&self, session: &FilesSession) -> Vec<Value> {
        let Some(instance) = &session.instance_id else { return Vec::new() };
        let entries = std::fs::read_dir(crate::instances::print_dir(&self.pipeline.platform, instance)).into_iter().flatten().flatten();
        let mut printouts: Vec<Value> = entries
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok().filter(|n| printout_name(n))?;
                // `DirEntry::metadata` does not follow links: a link is not a printout.
                let metadata = entry.metadata().ok().filter(std::fs::Metadata::is_file)?;
                let time = metadata.modified().ok().map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
                Some(json!({ "Name": name, "Size": metadata.len(), "LastModified": time }))
            })
            .collect();
        printouts.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
        printouts
    }

    /// Puts `body` into the home folder as `name`, if the stack enables `FILE_UPLOAD`.
    pub(crate) async fn upload_session_file(&self, client: &FileClient<'_>, name: &str, body: Bytes) -> Result<Value, ActionError> {
        let session = self.files_session(client).await?;
        check_name(name)?;
        self.require(&session, client, Direction::Upload, name, body.len()).await?;
        // The action's JSON is written once, with the body's base64 encoded straight into it,
        // and the raw body is let go before the call: one large buffer here, not three.
        let key = format!("{}{name}", session.prefix);
        let mut input = json!({ "Bucket": session.bucket, "Key": key }).to_string();
        input.pop();
        input.reserve(body.len() / 3 * 4 + 16);
        input.push_str(r#","Body":""#);
        base64::engine::general_purpose::STANDARD.encode_string(&body, &mut input);
        input.push_str(r#""}"#);
        drop(body);
        self.as_session_user_with(client, "storage:PutObject", Bytes::from(input)).await?;
        Ok(json!({ "Name": name }))
    }

    /// The content of the home folder's `name`, if the stack enables `FILE_DOWNLOAD`.
    pub(crate) async fn download_session_file(&self, client: &FileClient<'_>, name: &str) -> Result<Bytes, ActionError> {
        let session = self.files_session(client).await?;
        check_name(name)?;
        self.require(&session, client, Direction::Download, name, 0).await?;
        let key = format!("{}{name}", session.prefix);
        let object = self.as_session_user(client, "storage:GetObject", json!({ "Bucket": session.bucket, "Key": key })).await?;
        let body = base64::engine::general_purpose::STANDARD
            .decode(object["Body"].as_str().unwrap_or_default())
            .map_err(|err| ActionError::internal(format_args!("an object body is not base64: {err}")))?;
        Ok(Bytes::from(body))
    }

    async fn files_session(&self, client: &FileClient<'_>) -> Result<FilesSession, ActionError> {
        let row = repo::find_session_by_cookie(&self.pipeline.platform.store, &hex::encode(Sha256::digest(client.cookie.as_bytes())))
            .await?
            .ok_or_else(|| ActionError::unauthenticated("the session cookie is not valid; open your streaming URL again"))?;
        if row.state != SessionState::Active {
            let state = row.state.as_str();
            return Err(ActionError::new(
                409,
                ErrorCode::SessionNotActive,
                format!("the session is {state}; My Files opens while it is ACTIVE"),
            ));
        }
        let settings: Value = serde_json::from_str(&row.settings).map_err(ActionError::internal)?;
        let bucket = settings["HomeFoldersBucket"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ActionError::new(409, ErrorCode::NoHomeFolder, "this session's stack has no home folders"))?;
        let user = row.user()?;
        Ok(FilesSession {
            stack: row.stack.clone(),
            session_id: row.session_id,
            bucket,
            prefix: user.home().prefix(),
            settings,
            correlation_id: Some(row.correlation_id),
            instance_id: row.instance_id,
        })
    }

    /// Refuses, and records, a transfer the stack does not enable.
    async fn require(
        &self,
        session: &FilesSession,
        client: &FileClient<'_>,
        direction: Direction,
        name: &str,
        bytes: usize,
    ) -> Result<(), ActionError> {
        if session.enabled(direction) {
            return Ok(());
        }
        let error = ActionError::new(
            403,
            ErrorCode::FileTransferDisabled,
            format!("this session's stack does not allow {} ({})", direction.what(), direction.setting()),
        );
        let event = ServiceEvent {
            source: "streaming",
            name: "FileTransferBlocked",
            principal: "gateway.datasandbox",
            parameters: json!({ "SessionId": session.session_id, "Setting": direction.setting(), "Name": name, "Bytes": bytes }),
            error: Some(&error),
            correlation_id: session.correlation_id.clone(),
            source_ip: Some(client.source_ip.to_owned()),
            ..ServiceEvent::default()
        };
        let _ = self.pipeline.record_service_event(event).await;
        Err(error)
    }

    /// One action through the pipeline as the session's user (the cookie's caller).
    async fn as_session_user(&self, client: &FileClient<'_>, action: &str, input: Value) -> Result<Value, ActionError> {
        self.as_session_user_with(client, action, Bytes::from(input.to_string())).await
    }

    /// An action as the session's user, with its input already written as JSON.
    async fn as_session_user_with(&self, client: &FileClient<'_>, action: &str, input: Bytes) -> Result<Value, ActionError> {
        self.pipeline
            .call(Request {
                credentials: Credentials::SessionCookie(client.cookie.to_owned()),
                source_ip: client.source_ip.to_owned(),
                user_agent: client.user_agent.to_owned(),
                action: action.to_owned(),
                body: Ok(input),
            })
            .await
            .result
    }
}

/// The printer's file names: `job-<number>.pdf`.
fn printout_name(name: &str) -> bool {
    name.strip_prefix("job-")
        .and_then(|rest| rest.strip_suffix(".pdf"))
        .is_some_and(|n| !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads a regular file without following a link at its name, up to `limit` bytes.
fn read_regular_file(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, ActionError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let missing = || ActionError::not_found(ErrorCode::NoSuchKey, format!("no printout `{name}`"));
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|_| missing())?;
    let metadata = file.metadata().map_err(ActionError::internal)?;
    if !metadata.is_file() {
        return Err(missing());
    }
    if metadata.len() > limit {
        return Err(ActionError::too_large(format!("the printout is larger than {limit} bytes")));
    }
    let mut body = Vec::new();
    file.take(limit).read_to_end(&mut body).map_err(ActionError::internal)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::{check_name, printout_name};

    #[test]
    fn printouts_are_named_by_job_number_only() {
        for good in ["job-1.pdf", "job-1234567890.pdf"] {
            assert!(printout_name(good), "{good}");
        }
        for bad in ["job-.pdf", "job-1.pdf.part", "job-12345678901.pdf", "../job-1.pdf", "job-1a.pdf", "notes.pdf"] {
            assert!(!printout_name(bad), "{bad}");
        }
    }

    #[test]
    fn names_stay_inside_the_home_folder() {
        for good in ["report.csv", "analysis/plot.png", "a b.txt", "ünïcode.txt"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "/etc/passwd", "../bob/x", "a/../../b", "./x", "dir/", "a//b", "tab\there", &"x".repeat(513)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
