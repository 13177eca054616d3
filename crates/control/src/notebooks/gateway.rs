//! What the gateway asks of the notebook service: where a request with a notebook cookie goes,
//! if anywhere, and the audit record of each proxied request.

use std::path::PathBuf;

use super::repo;
use super::state::{Notebooks, notebook_dir};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::store::now_millis;
use crate::streaming::repo::SessionState;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What the gateway needs to reach a running notebook's Jupyter.
#[derive(Debug, Clone)]
pub struct NotebookTarget {
    pub socket: PathBuf,
    pub token: String,
    pub session_id: String,
    pub user_id: String,
    pub correlation_id: String,
    /// The session's `FILE_DOWNLOAD` and `FILE_UPLOAD` permissions.
    pub download: bool,
    pub upload: bool,
    /// Where the request came from: the user's browser, or the instance of a pixel session.
    pub source_ip: String,
}

impl Notebooks {
    /// Where a notebook request goes, if its cookie still grants access: the cookie is the
    /// notebook's, unexpired, its streaming session is still ACTIVE, and, for a pixel session,
    /// the request comes from that session's instance (`source_ip`).
    pub(crate) async fn notebook_target(&self, name: &str, cookie: &str, source_ip: &str) -> Result<NotebookTarget, ActionError> {
        let plane = &*self.pipeline.platform;
        let denied = |why: &str| ActionError::new(403, ErrorCode::AccessDeniedException, why.to_owned());
        let access = repo::find_access(plane, &hex::encode(Sha256::digest(cookie.as_bytes())), name)
            .await?
            .ok_or_else(|| denied("no access to this notebook; open it from your session"))?;
        if access.expires <= now_millis() {
            return Err(denied("your notebook access has expired; open it again from your session"));
        }
        if access.instance_address.is_some_and(|address| address != source_ip) {
            return Err(denied("this notebook opens only in the browser of its session's workspace"));
        }
        let session_id = access.session_id;
        let session = crate::streaming::sessions::session(plane, &session_id).await?;
        if session.state != SessionState::Active {
            return Err(denied("your streaming session has ended, and notebook access with it"));
        }
        let token = self.tokens.lock().expect("tokens lock").get(name).cloned().ok_or_else(|| denied("the notebook is not running"))?;
        let settings: Value = serde_json::from_str(&session.settings).map_err(ActionError::internal)?;
        let enabled = |action: &str| {
            settings["UserSettings"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["Action"] == action)
                .is_none_or(|s| s["Permission"] != "DISABLED")
        };
        Ok(NotebookTarget {
            socket: notebook_dir(plane, name).join("run/jupyter.sock"),
            token,
            session_id,
            user_id: session.user_id,
            correlation_id: session.correlation_id,
            download: enabled("FILE_DOWNLOAD"),
            upload: enabled("FILE_UPLOAD"),
            source_ip: source_ip.to_owned(),
        })
    }

    /// One audit record per proxied notebook request or kernel connection, under the
    /// session's correlation id; refusals carry their reason. A request is forwarded only
    /// once its record is durable: on an error, refuse it with that error.
    pub(crate) async fn record_notebook_access(
        &self,
        target: &NotebookTarget,
        name: &str,
        method: &str,
        path: &str,
        refused: Option<&str>,
    ) -> Result<(), ActionError> {
        let error = refused.map(|why| ActionError::new(403, ErrorCode::AccessDeniedException, why.to_owned()));
        let event = crate::core::platform::ServiceEvent {
            source: "notebooks",
            name: "NotebookRequest",
            principal: "gateway.datasandbox",
            parameters: json!({ "NotebookInstanceName": name, "UserId": target.user_id, "SessionId": target.session_id, "Method": method, "Path": path }),
            error: error.as_ref(),
            correlation_id: Some(target.correlation_id.clone()),
            source_ip: Some(target.source_ip.clone()),
            ..crate::core::platform::ServiceEvent::default()
        };
        self.pipeline.record_service_event(event).await
    }
}
