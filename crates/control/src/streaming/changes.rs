//! Session changes across nodes. A node that changes a session tells the others through
//! PostgreSQL (`pg_notify` on [`CHANNEL`], the session's id only: the store is the truth, so a
//! listener looks the session up). Each node listens on its own connection and passes the
//! change to its pages; when that connection is cut, it reconnects and tells every page to
//! look again, since a change may have been missed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use super::repo;
use super::state::Streaming;

pub(crate) const CHANNEL: &str = "datasandbox_sessions";

/// Listens for other nodes' session changes, for as long as the server runs (PostgreSQL only).
pub(crate) fn listen(streaming: Arc<Streaming>) {
    let Some(url) = streaming.pipeline.platform.spec.metadata_url.clone().filter(|u| u.starts_with("postgres")) else { return };
    tokio::spawn(async move {
        let plane = &*streaming.pipeline.platform;
        loop {
            let mut listener = match connect(&url).await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for other nodes' session changes; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Whatever was missed while not listening: every page looks again.
            plane.changes.everyone();
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        if plane.changes.heard()
                            && let Ok(Some(row)) = repo::find_session(&plane.store, notification.payload()).await
                            && let Ok(user) = row.user()
                        {
                            plane.changes.user(&user);
                        }
                    }
                    // The connection was cut; the listener reconnects on the next call.
                    Ok(None) => plane.changes.everyone(),
                    Err(err) => {
                        tracing::warn!(error = %err, "the session change feed failed; reconnecting");
                        break;
                    }
                }
            }
        }
    });
}

async fn connect(url: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
