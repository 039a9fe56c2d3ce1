//! What instances on one database tell each other: changes announced with
//! `NOTIFY` as they commit, heard by a listener on a connection of its own,
//! and the lock that orders approval resolutions across instances.

use std::sync::Weak;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Object, Pool};
use futures_util::StreamExt as _;
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{ApprovalsLock, StateChange, StateError};

/// The channel every change is announced on.
pub(crate) const CHANNEL: &str = "mandate_changes";

/// Payloads on [`CHANNEL`].
pub(crate) const APPROVALS: &str = "approvals";
/// A task ended: its credentials are revoked.
pub(crate) const REVOCATIONS: &str = "revocations";

/// Key of the advisory lock approval resolutions run under.
const APPROVALS_LOCK: i64 = 0x6d61_6e64_6174_6502;

/// Announces `what` on [`CHANNEL`]; in a transaction, at its commit.
pub(crate) async fn announce(client: &impl GenericClient, what: &str) -> Result<(), StateError> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &what])
        .await
        .map_err(StateError::Postgres)?;
    Ok(())
}

/// A connection holding the approvals lock in an open transaction; the
/// lock goes with the transaction.
pub struct HeldLock {
    client: Option<Object>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        // Rolling back ends the transaction and with it the lock; the
        // connection goes back to the pool only once that is done. Without
        // a runtime to do it on, the connection is closed instead (which
        // ends the lock too).
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

/// Waits for the approvals lock and holds it.
pub(crate) async fn lock_approvals(pool: &Pool) -> Result<ApprovalsLock, StateError> {
    let client = pool
        .get()
        .await
        .map_err(|e| StateError::Unavailable(format!("PostgreSQL: {e}")))?;
    let held = HeldLock {
        client: Some(client),
    };
    if let Some(client) = &held.client {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(StateError::Postgres)?;
        client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&APPROVALS_LOCK])
            .await
            .map_err(StateError::Postgres)?;
    }
    Ok(ApprovalsLock { held: Some(held) })
}

/// Listens on [`CHANNEL`] and passes what it hears to `changes`, until
/// `alive` is gone (the store was dropped). A lost connection is opened
/// again (waiting longer each time, up to 5 s). [`StateChange::All`] is
/// sent each time it starts listening: whatever was announced before (at
/// start, or while the connection was down) was missed.
pub(crate) async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    changes: broadcast::Sender<StateChange>,
    alive: Weak<()>,
) {
    let mut backoff = Duration::from_millis(100);
    while alive.strong_count() > 0 {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (heard, mut hearing) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if heard.send(n.payload().to_owned()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the PostgreSQL change listener lost its connection; reconnecting");
                                return;
                            }
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    backoff = Duration::from_millis(100);
                    // Whatever changed before this LISTEN (at start, or while
                    // the connection was down) was not heard: waiters that
                    // began before it re-read.
                    let _ = changes.send(StateChange::All);
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tokio::select! {
                            payload = hearing.recv() => match payload {
                                Some(payload) => {
                                    let change = match payload.as_str() {
                                        APPROVALS => StateChange::Approvals,
                                        REVOCATIONS => StateChange::Revocations,
                                        _ => StateChange::All,
                                    };
                                    let _ = changes.send(change);
                                }
                                None => break,
                            },
                            _ = tick.tick() => if alive.strong_count() == 0 { break },
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => {
                tracing::warn!(error = %e, "the PostgreSQL change listener cannot connect; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
