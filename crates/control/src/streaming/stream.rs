//! The pixel stream of a session (`StreamView` DESKTOP or APP): which display the gateway may
//! bridge to, with which clipboard settings, and the records of what crossed or was stopped.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::connection::SessionConnection;
use super::repo::SessionState;
use super::sessions::session;
use super::state::Streaming;
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::ServiceEvent;

/// AWS's largest `MaximumLength`, the limit when a clipboard setting names none.
const CLIPBOARD_LIMIT: u32 = 20_971_520;

/// A session's display, ready to bridge.
pub struct StreamTarget {
    /// The session's live connection: its presence is the session's CONNECTED state, its
    /// events say when the session ends.
    pub connection: SessionConnection,
    /// The display's RFB socket (host side of the instance's `/run/display`).
    pub socket: PathBuf,
    /// `CLIPBOARD_COPY_FROM_LOCAL_DEVICE`: `None` when disabled, else its `MaximumLength`.
    pub paste: Option<u32>,
    /// `CLIPBOARD_COPY_TO_LOCAL_DEVICE`, likewise.
    pub copy: Option<u32>,
    pub correlation_id: Option<String>,
    /// Whether the session's stack records its display (`SessionRecording`).
    pub recorded: bool,
}

/// The limit a user setting allows, from the session's snapshot of its stack's settings
/// (unlisted actions are enabled, as in AWS).
fn allowed(settings: &Value, action: &str) -> Option<u32> {
    let setting = settings["UserSettings"].as_array().into_iter().flatten().find(|s| s["Action"] == action);
    match setting {
        Some(s) if s["Permission"] != "ENABLED" => None,
        Some(s) => Some(s["MaximumLength"].as_u64().map_or(CLIPBOARD_LIMIT, |m| m.min(u64::from(CLIPBOARD_LIMIT)) as u32)),
        None => Some(CLIPBOARD_LIMIT),
    }
}

impl Streaming {
    /// Opens the stream of `session_id` for the browser holding its cookie.
    pub(crate) async fn connect_stream(
        self: &std::sync::Arc<Self>,
        cookie: &str,
        session_id: &str,
        client_ip: &str,
    ) -> Result<StreamTarget, ActionError> {
        let connection = self.connect_session(cookie, client_ip).await?;
        let refuse = |status: u16, code: ErrorCode, message: String| ActionError::new(status, code, message);
        let checked = async {
            if connection.session_id != session_id {
                return Err(refuse(403, ErrorCode::AccessDeniedException, "the session cookie is for another session".into()));
            }
            let row = session(&self.pipeline.platform, session_id).await?;
            if row.state != SessionState::Active {
                let state = row.state.as_str();
                return Err(refuse(
                    409,
                    ErrorCode::SessionNotActive,
                    format!("the session is {state}; its display opens once it is ACTIVE"),
                ));
            }
            let settings: Value = serde_json::from_str(&row.settings).map_err(ActionError::internal)?;
            if settings["StreamView"] == "DIRECT" {
                return Err(refuse(
                    409,
                    ErrorCode::NoDisplay,
                    "this stack hands the notebook to the browser (StreamView DIRECT); it streams no display".into(),
                ));
            }
            let instance: String = row.instance_id.clone().unwrap_or_default();
            let socket = crate::instances::display_socket(&self.pipeline.platform, &instance);
            let correlation_id: Option<String> = Some(row.correlation_id);
            Ok((socket, settings, instance, correlation_id))
        }
        .await;
        let (socket, settings, instance, correlation_id) = match checked {
            Ok(found) => found,
            Err(err) => {
                connection.close().await;
                return Err(err);
            }
        };
        let (paste, copy) = (allowed(&settings, "CLIPBOARD_COPY_FROM_LOCAL_DEVICE"), allowed(&settings, "CLIPBOARD_COPY_TO_LOCAL_DEVICE"));
        let recorded = settings["SessionRecording"] == "ENABLED";
        let event = self
            .stream_event(
                "StreamConnected",
                json!({ "SessionId": session_id, "InstanceId": instance, "ClientIp": client_ip, "Paste": paste, "Copy": copy, "Recorded": recorded }),
                None,
                correlation_id.clone(),
            )
            .await;
        if let Err(err) = event {
            connection.close().await;
            return Err(err);
        }
        Ok(StreamTarget { connection, socket, paste, copy, correlation_id, recorded })
    }

    /// Records a clipboard text that crosses, or was stopped, by size and direction (never
    /// its content). A transfer whose record cannot be written must not cross: the error
    /// says why.
    pub(crate) async fn record_clipboard(
        &self,
        target: &StreamTarget,
        direction: &str,
        bytes: u64,
        blocked: Option<&str>,
    ) -> Result<(), ActionError> {
        let parameters = json!({ "SessionId": target.connection.session_id, "Direction": direction, "Bytes": bytes, "Reason": blocked });
        let error = blocked.map(|reason| {
            ActionError::new(403, ErrorCode::ClipboardBlocked, format!("the stack's settings stop this clipboard transfer ({reason})"))
        });
        let name = if blocked.is_some() { "ClipboardBlocked" } else { "ClipboardTransferred" };
        self.stream_event(name, parameters, error.as_ref(), target.correlation_id.clone()).await
    }

    async fn stream_event(
        &self,
        name: &str,
        parameters: Value,
        error: Option<&ActionError>,
        correlation_id: Option<String>,
    ) -> Result<(), ActionError> {
        let event = ServiceEvent {
            source: "streaming",
            name,
            principal: "gateway.datasandbox",
            parameters,
            error,
            correlation_id,
            ..ServiceEvent::default()
        };
        self.pipeline.record_service_event(event).await
    }
}
