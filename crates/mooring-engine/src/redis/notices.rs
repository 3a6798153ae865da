//! Wake-ups between nodes, and their presence changes (`presence.rs`). Every commit publishes, on one channel and inside the commit script,
//! one message per stream it wrote: `1 <commit token> <tail serial> <stream name>`. Each node
//! follows the channel on a connection of its own and hands the node a
//! [`StoreNotice::Moved`] per stream written by another node.
//!
//! The messages are wake-ups, not events: Redis pub/sub delivers at most once, so a node that
//! was woken reads the records from the stream. A message can be lost while the connection is
//! down, or if the node falls behind; each time the follower reconnects (and subscribes again)
//! or lags, it sends [`StoreNotice::Lost`], and the node then treats every stream as moved.

use std::time::Duration;

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use fred::types::Message;
use mooring_core::store::{NoticeFeed, StoreError, StoreNotice};
use tokio::sync::{broadcast, mpsc};

use super::{keys, redis_error, CONNECT_TIMEOUT};

/// Version of the message layout. A message in a layout this node cannot read is not ignored:
/// it becomes [`StoreNotice::Lost`] (see [`decode`]).
const LAYOUT: &str = "1";
/// Notices queued for the node before the follower waits (and Redis messages pile up in
/// [`MESSAGE_BUFFER`]).
const QUEUE: usize = 1024;
/// Messages the client buffers for the follower; beyond that the follower lags and says
/// [`StoreNotice::Lost`].
pub(super) const MESSAGE_BUFFER: usize = 4096;
/// The longest wait between two attempts to subscribe again.
const MAX_RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(2);

/// What a node follows: other nodes' commits, and their presence changes.
const CHANNELS: [&str; 3] = [keys::NOTICES, keys::PRESENCE, keys::INPUTS];

/// The message a commit with `token` publishes for stream `name`, whose last serial is `tail`.
pub(super) fn message(token: &str, tail: u64, name: &str) -> String {
    format!("{LAYOUT} {token} {tail} {name}")
}

/// A message read back.
#[derive(Debug, PartialEq, Eq)]
struct Parsed<'a> {
    /// The writer's part of the commit token: the store handle that committed.
    writer: &'a str,
    tail: u64,
    name: &'a str,
}

fn parse(message: &str) -> Option<Parsed<'_>> {
    let rest = message.strip_prefix(LAYOUT)?.strip_prefix(' ')?;
    let (token, rest) = rest.split_once(' ')?;
    let (tail, name) = rest.split_once(' ')?;
    let writer = token.split_once('.').map_or(token, |(writer, _)| writer);
    Some(Parsed {
        writer,
        tail: tail.parse().ok()?,
        name,
    })
}

/// The notice for a message, `None` for this node's own writes. A message in a layout this
/// node cannot read (a newer node, in a rolling upgrade) still says something moved: `Lost`.
fn decode(message: &Message, own: &str) -> Option<StoreNotice> {
    if &*message.channel == keys::PRESENCE {
        let text = message.value.as_str();
        return match text.as_deref().and_then(super::fleet::decode) {
            Some(notice) if notice.node == own => None,
            Some(notice) => Some(StoreNotice::Presence(notice)),
            None => {
                tracing::warn!(message = ?text, "unreadable presence notice from another node");
                Some(StoreNotice::Lost)
            }
        };
    }
    if &*message.channel == keys::INPUTS {
        let text = message.value.as_str();
        return match text.as_deref().and_then(super::fleet::decode_input) {
            Some(notice) if notice.node == own => None,
            Some(notice) => Some(StoreNotice::Input(Box::new(notice))),
            // Inputs are announced again while they wait: one unreadable (a newer node's)
            // costs nothing else.
            None => {
                tracing::warn!(message = ?text, "unreadable input notice from another node");
                None
            }
        };
    }
    if &*message.channel != keys::NOTICES {
        return None;
    }
    let text = message.value.as_str();
    match text.as_deref().and_then(parse) {
        Some(parsed) if parsed.writer == own => None,
        Some(parsed) => Some(StoreNotice::Moved {
            name: parsed.name.to_owned(),
            tail: parsed.tail,
        }),
        None => {
            tracing::warn!(message = ?text, "unreadable notice from another node");
            Some(StoreNotice::Lost)
        }
    }
}

/// Notices of other nodes' commits, from a follower task.
#[derive(Debug)]
pub(super) struct RedisNotices {
    queue: mpsc::Receiver<StoreNotice>,
}

#[async_trait]
impl NoticeFeed for RedisNotices {
    async fn next(&mut self) -> Option<StoreNotice> {
        self.queue.recv().await
    }
}

/// Connects `subscriber`, subscribes to the notices, and starts the task that follows them
/// until the returned feed is dropped. `own` is this store's part of its commit tokens.
pub(super) async fn follow(
    subscriber: SubscriberClient,
    own: String,
) -> Result<RedisNotices, StoreError> {
    // Taken before connecting, so that the first connection is seen too.
    let messages = subscriber.message_rx();
    let reconnects = subscriber.reconnect_rx();
    match tokio::time::timeout(CONNECT_TIMEOUT, subscriber.init()).await {
        Ok(Ok(_task)) => {}
        Ok(Err(e)) => return Err(redis_error("connecting the notice subscriber", e)),
        Err(_) => {
            return Err(StoreError::Io(format!(
                "connecting the notice subscriber: no answer within {CONNECT_TIMEOUT:?}"
            )))
        }
    }
    subscriber
        .subscribe(CHANNELS.to_vec())
        .await
        .map_err(|e| redis_error("subscribing to notices", e))?;
    let (queue, feed) = mpsc::channel(QUEUE);
    tokio::spawn(relay(subscriber, own, messages, reconnects, queue));
    Ok(RedisNotices { queue: feed })
}

/// Passes notices on until the feed is dropped or the client closes.
async fn relay(
    subscriber: SubscriberClient,
    own: String,
    mut messages: broadcast::Receiver<Message>,
    mut reconnects: broadcast::Receiver<fred::types::config::Server>,
    queue: mpsc::Sender<StoreNotice>,
) {
    loop {
        let notice = tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => match decode(&message, &own) {
                    Some(notice) => notice,
                    None => continue,
                },
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "fell behind other nodes' notices; waking every session");
                    StoreNotice::Lost
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            reconnect = reconnects.recv() => match reconnect {
                // Lagging here means several reconnections: one resubscription covers them.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if !resubscribe(&subscriber, &queue).await {
                        break;
                    }
                    // Messages published while the connection was down are gone.
                    StoreNotice::Lost
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = queue.closed() => break,
        };
        if queue.send(notice).await.is_err() {
            break;
        }
    }
    let _ = subscriber.quit().await;
}

/// Subscribes again after a reconnection, retrying until it works; `false` if the feed was
/// dropped meanwhile. The client forgets subscriptions with its connection.
async fn resubscribe(subscriber: &SubscriberClient, queue: &mpsc::Sender<StoreNotice>) -> bool {
    let mut backoff = Duration::from_millis(50);
    loop {
        match subscriber.subscribe(CHANNELS.to_vec()).await {
            Ok(()) => return true,
            Err(e) => tracing::warn!(error = %e, "subscribing to notices again failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = queue.closed() => return false,
        }
        backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_layout_is_pinned() {
        let sent = message("00000000000000ff.7", 42, "chat:1");
        assert_eq!(sent, "1 00000000000000ff.7 42 chat:1");
        let parsed = parse(&sent).expect("parsed");
        assert_eq!(
            parsed,
            Parsed {
                writer: "00000000000000ff",
                tail: 42,
                name: "chat:1",
            }
        );
    }

    #[test]
    fn a_name_may_hold_spaces_and_unreadable_messages_are_refused() {
        let sent = message("a.1", 3, "with two spaces");
        let parsed = parse(&sent).expect("parsed");
        assert_eq!(parsed.name, "with two spaces");
        assert_eq!(parse("2 a.1 3 x"), None, "a layout this node does not know");
        assert_eq!(parse("1 a.1 x y"), None, "a tail that is not a number");
        assert_eq!(parse("1 a.1"), None);
    }
}
