//! What other nodes tell this one through PostgreSQL: `LISTEN` on a channel whose
//! notifications carry ids only (the store stays the truth, so a listener looks the id up).
//! Each feed has a connection of its own; when it is cut, the feed reconnects and says that
//! something may have been missed meanwhile, so its reader can look at everything again.

use std::time::Duration;

use tokio::sync::mpsc;

/// What a feed heard.
#[derive(Debug)]
pub(crate) enum Heard {
    /// A notification's payload (an id).
    Id(String),
    /// The feed (re)connected: notifications may have been missed before it.
    Missed,
}

/// How many notifications wait for their reader before the feed waits for it.
const BACKLOG: usize = 1024;

/// Listens on `channel` for as long as the reader holds the receiver (PostgreSQL only: on
/// SQLite there is no other node, and the receiver hears nothing).
pub(crate) fn subscribe(metadata_url: Option<&str>, channel: &'static str) -> mpsc::Receiver<Heard> {
    let (sender, receiver) = mpsc::channel(BACKLOG);
    let Some(url) = metadata_url.filter(|u| u.starts_with("postgres")).map(str::to_owned) else { return receiver };
    tokio::spawn(async move {
        loop {
            let mut listener = match connect(&url, channel).await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(channel, error = %err, "cannot listen for other nodes' changes; retrying");
                    if sender.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if sender.send(Heard::Missed).await.is_err() {
                return;
            }
            loop {
                let heard = match listener.try_recv().await {
                    Ok(Some(notification)) => Heard::Id(notification.payload().to_owned()),
                    // The connection was cut; the listener reconnects on the next call.
                    Ok(None) => Heard::Missed,
                    Err(err) => {
                        tracing::warn!(channel, error = %err, "a change feed failed; reconnecting");
                        break;
                    }
                };
                if sender.send(heard).await.is_err() {
                    return;
                }
            }
        }
    });
    receiver
}

async fn connect(url: &str, channel: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Tells every node listening on `channel` about `id` (PostgreSQL only; a no-op on SQLite,
/// where this is the only node).
pub(crate) async fn notify(store: &crate::core::store::Store, channel: &str, id: &str) -> Result<(), sqlx::Error> {
    if store.is_sqlite() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(id).execute(&store.pool).await.map(drop)
}
