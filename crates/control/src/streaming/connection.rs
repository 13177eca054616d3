//! The live connection of a session's page (the gateway's WebSocket): it makes the session
//! CONNECTED while open, carries its user's input (for the idle timeout) and the session's
//! events, and records each connection and disconnection.

use std::sync::Arc;

use super::repo::{self, SessionState};
use super::sessions::{session, session_changed, session_status};
use super::state::{Live, Streaming};
use super::urls::{ENDED_SESSION_ACTION, cookie_caller};
use crate::core::error::{ActionError, ErrorCode};
use crate::core::platform::ServiceEvent;
use crate::core::store::now_millis;
use serde_json::{Value, json};

/// A live connection of a session's page (the gateway's WebSocket): it makes the session
/// CONNECTED while open, carries its input (for the idle timeout) and its events.
pub struct SessionConnection {
    pub session_id: String,
    pub events: tokio::sync::broadcast::Receiver<Value>,
    streaming: Arc<Streaming>,
    client_ip: String,
}

impl Streaming {
    /// Opens a session's live connection, by its cookie.
    pub(crate) async fn connect_session(self: &Arc<Self>, cookie: &str, client_ip: &str) -> Result<SessionConnection, ActionError> {
        let plane = &*self.pipeline.platform;
        // An ended session is refused below, with its own answer (410).
        let caller = cookie_caller(plane, cookie, ENDED_SESSION_ACTION).await?;
        let issuer = caller.identity.session_context.and_then(|c| c.session_issuer).unwrap_or_default();
        let session_id = issuer["principalId"].as_str().unwrap_or_default().to_owned();
        let row = session(plane, &session_id).await?;
        if row.state == SessionState::Expired {
            return Err(ActionError::new(410, ErrorCode::SessionEnded, "this session has ended; ask for a new streaming URL"));
        }
        // Recorded before the connection counts; refused when it cannot be recorded.
        self.connection_event("SessionConnected", &session_id, client_ip, Some(row.correlation_id.clone())).await?;
        let events = {
            let mut live = self.live.lock().expect("live lock");
            let entry = live.entry(session_id.clone()).or_insert_with(Live::new);
            entry.connections += 1;
            entry.last_input = now_millis();
            entry.events.subscribe()
        };
        let mut ips: Vec<String> = serde_json::from_str(&row.client_ips).unwrap_or_default();
        if !ips.iter().any(|ip| ip == client_ip) {
            ips.push(client_ip.to_owned());
        }
        repo::mark_connected(&plane.store, &session_id, &json!(ips).to_string()).await?;
        session_changed(plane, &session_id).await;
        Ok(SessionConnection { session_id, events, streaming: self.clone(), client_ip: client_ip.to_owned() })
    }

    async fn connection_event(
        &self,
        name: &str,
        session_id: &str,
        client_ip: &str,
        correlation_id: Option<String>,
    ) -> Result<(), ActionError> {
        let event = ServiceEvent {
            source: "streaming",
            name,
            principal: "gateway.datasandbox",
            parameters: json!({ "SessionId": session_id, "ClientIp": client_ip }),
            correlation_id,
            effect: if name == "SessionConnected" { crate::core::platform::Effect::Gated } else { crate::core::platform::Effect::Recorded },
            ..ServiceEvent::default()
        };
        self.pipeline.record_service_event(event).await
    }

    /// The session's current status, for its page.
    pub(crate) async fn session_status(&self, session_id: &str) -> Result<Value, ActionError> {
        session_status(&self.pipeline.platform, session_id).await
    }
}

impl SessionConnection {
    /// The user pressed a key or moved the pointer.
    pub fn input(&self) {
        if let Some(live) = self.streaming.live.lock().expect("live lock").get_mut(&self.session_id) {
            live.last_input = now_millis();
            live.warned.retain(|w| *w != "IDLE");
        }
    }

    /// The connection closed; with no other open, the session is NOT_CONNECTED from now.
    pub async fn close(self) {
        let plane = &*self.streaming.pipeline.platform;
        let last = {
            let mut live = self.streaming.live.lock().expect("live lock");
            match live.get_mut(&self.session_id) {
                Some(entry) => {
                    entry.connections = entry.connections.saturating_sub(1);
                    entry.connections == 0
                }
                None => true,
            }
        };
        if last {
            let _ = repo::mark_disconnected(&plane.store, &self.session_id, now_millis()).await;
            session_changed(plane, &self.session_id).await;
        }
        let correlation = session(plane, &self.session_id).await.ok().map(|row| row.correlation_id);
        let _ = self.streaming.connection_event("SessionDisconnected", &self.session_id, &self.client_ip, correlation).await;
    }
}
