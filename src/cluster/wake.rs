//! Hears of freed permits: a pub/sub subscription to the pool's wake channel, on its own
//! connection, opened again whenever it drops. A message names the instances whose tickets are
//! first in line; one naming this instance (and each new subscription, which may have missed
//! some) pokes the pool's dispatcher.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the listener pokes: `wakes` counts every poke, so a caller can tell whether one came
/// while it was not yet listening.
#[derive(Default)]
pub struct Wakes {
    pub notify: Notify,
    pub count: AtomicU64,
}

impl Wakes {
    pub fn poke(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }

    pub fn seen(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

/// Listens until `stop`; between attempts it waits `retry`.
pub async fn listen(
    client: redis::Client,
    channel: String,
    instance: String,
    wakes: Arc<Wakes>,
    retry: Duration,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(retry, subscribed).await {
            Ok(Ok(pubsub)) => {
                // Whatever was announced while no one listened is looked at now.
                wakes.poke();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => {
                                let named: String = message.get_payload().unwrap_or_default();
                                if named.split(' ').any(|name| name == instance) {
                                    wakes.poke();
                                }
                            }
                            None => break,
                        },
                    }
                }
                tracing::debug!("the wake subscription dropped; subscribing again");
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "cannot subscribe to the wake channel"),
            Err(_) => tracing::debug!("subscribing to the wake channel timed out"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retry) => {}
        }
    }
}
