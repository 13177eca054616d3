//! Session changes across nodes. A node that changes a session tells the others through
//! PostgreSQL (`pg_notify` on [`CHANNEL`], the session's id only: the store is the truth, so a
//! listener looks the session up, see `core::feed`). Each node passes the change to its pages;
//! when its feed was cut, it tells every page to look again, since a change may have been
//! missed meanwhile.

use std::sync::Arc;

use super::repo;
use super::state::Streaming;
use crate::core::feed::{self, Heard};

pub(crate) const CHANNEL: &str = "datasandbox_sessions";

/// Listens for other nodes' session changes, for as long as the server runs (PostgreSQL only).
pub(crate) fn listen(streaming: Arc<Streaming>) {
    let mut heard = feed::subscribe(streaming.pipeline.platform.spec.metadata_url.as_deref(), CHANNEL);
    tokio::spawn(async move {
        let plane = &*streaming.pipeline.platform;
        while let Some(change) = heard.recv().await {
            match change {
                Heard::Id(session_id) => {
                    plane.changes.advance();
                    if plane.changes.heard()
                        && let Ok(Some(row)) = repo::find_session(&plane.store, &session_id).await
                        && let Ok(user) = row.user()
                    {
                        plane.changes.user(&user);
                    }
                }
                Heard::Missed => plane.changes.everyone(),
            }
        }
    });
}
