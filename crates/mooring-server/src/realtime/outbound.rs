//! The outbound queue of one connection: every frame on its way to the client waits here,
//! bounded both in frames and in bytes, so a client that reads slowly costs the node a fixed
//! amount of memory however large the events it is sent.
//!
//! Bytes are counted with a semaphore whose permits are bytes: a frame takes its length in
//! permits when queued and gives them back when the connection takes it off the queue to write
//! it. A frame larger than the whole budget takes the whole budget, so it still goes out once
//! the queue is empty rather than never.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, Semaphore};

/// Tells a connection that its client reads too slowly (its queue is full). A `Notify` keeps
/// one raised signal for the connection to take, and costs far less memory per connection than
/// a channel would.
#[derive(Clone, Debug, Default)]
pub(crate) struct SlowSignal(Arc<tokio::sync::Notify>);

impl SlowSignal {
    pub(crate) fn raise(&self) {
        self.0.notify_one();
    }

    pub(crate) async fn raised(&self) {
        self.0.notified().await;
    }
}

/// The sending side, cloned into attachments and acknowledgement tasks.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    frames: mpsc::Sender<Utf8Bytes>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

/// The receiving side, owned by the connection task.
#[derive(Debug)]
pub(crate) struct OutboundQueue {
    frames: mpsc::Receiver<Utf8Bytes>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

/// A queue of at most `max_frames` frames and `max_bytes` bytes.
pub(crate) fn channel(max_frames: usize, max_bytes: usize) -> (Outbound, OutboundQueue) {
    // A semaphore holds at most `Semaphore::MAX_PERMITS`; a budget that large is no bound.
    let max_bytes = max_bytes.clamp(1, Semaphore::MAX_PERMITS);
    let (tx, rx) = mpsc::channel(max_frames);
    let bytes = Arc::new(Semaphore::new(max_bytes));
    (
        Outbound {
            frames: tx,
            bytes: bytes.clone(),
            max_bytes,
        },
        OutboundQueue {
            frames: rx,
            bytes,
            max_bytes,
        },
    )
}

/// The permits a frame of `len` bytes takes.
fn cost(len: usize, max_bytes: usize) -> u32 {
    u32::try_from(len.clamp(1, max_bytes)).unwrap_or(u32::MAX)
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// Over the frame or byte bound: the client is a slow consumer.
    Full,
    /// The connection is gone.
    Closed,
}

impl Outbound {
    /// Queues `text` now, or fails: for frames that must not wait (live events, replies).
    pub(crate) fn try_queue(&self, text: Utf8Bytes) -> Result<(), QueueError> {
        let cost = cost(text.len(), self.max_bytes);
        let permit = match self.bytes.try_acquire_many(cost) {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(QueueError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(QueueError::Closed),
        };
        match self.frames.try_send(text) {
            Ok(()) => {
                // Given back by the receiver once the frame leaves the queue.
                permit.forget();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(QueueError::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(QueueError::Closed),
        }
    }

    /// Queues `text`, waiting for room: for history, which the client's reading paces.
    /// `Err` only if the connection is gone.
    pub(crate) async fn queue(&self, text: Utf8Bytes) -> Result<(), QueueError> {
        let cost = cost(text.len(), self.max_bytes);
        let permit = self
            .bytes
            .acquire_many(cost)
            .await
            .map_err(|_| QueueError::Closed)?;
        self.frames
            .send(text)
            .await
            .map_err(|_| QueueError::Closed)?;
        permit.forget();
        Ok(())
    }
}

impl OutboundQueue {
    /// The next frame to write; its bytes no longer count as pending.
    pub(crate) async fn recv(&mut self) -> Option<Utf8Bytes> {
        let text = self.frames.recv().await?;
        self.bytes
            .add_permits(cost(text.len(), self.max_bytes) as usize);
        Some(text)
    }
}

impl OutboundQueue {
    /// A frame already queued, if any, without waiting; its bytes no longer count as pending.
    pub(crate) fn try_recv(&mut self) -> Option<Utf8Bytes> {
        let text = self.frames.try_recv().ok()?;
        self.bytes
            .add_permits(cost(text.len(), self.max_bytes) as usize);
        Some(text)
    }
}

impl Drop for OutboundQueue {
    fn drop(&mut self) {
        // Wakes attachments waiting for byte room, so they see the connection is gone.
        self.bytes.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> Utf8Bytes {
        Utf8Bytes::from("x".repeat(len))
    }

    #[tokio::test]
    async fn try_recv_takes_what_is_queued_and_frees_its_bytes() {
        let (tx, mut rx) = channel(100, 1000);
        assert_eq!(rx.try_recv(), None);
        assert_eq!(tx.try_queue(text(600)), Ok(()));
        assert_eq!(tx.try_queue(text(400)), Ok(()));
        assert_eq!(tx.try_queue(text(1)), Err(QueueError::Full));
        assert_eq!(rx.try_recv().map(|t| t.len()), Some(600));
        assert_eq!(
            tx.try_queue(text(600)),
            Ok(()),
            "the bytes taken off are free again"
        );
        assert_eq!(rx.try_recv().map(|t| t.len()), Some(400));
        assert_eq!(rx.try_recv().map(|t| t.len()), Some(600));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn bytes_bound_the_queue_before_frames_do() {
        let (tx, mut rx) = channel(100, 1000);
        assert_eq!(tx.try_queue(text(600)), Ok(()));
        assert_eq!(tx.try_queue(text(300)), Ok(()));
        assert_eq!(
            tx.try_queue(text(200)),
            Err(QueueError::Full),
            "1,100 > 1,000"
        );
        assert_eq!(tx.try_queue(text(100)), Ok(()), "exactly 1,000 fits");
        assert_eq!(rx.recv().await.map(|t| t.len()), Some(600));
        assert_eq!(
            tx.try_queue(text(600)),
            Ok(()),
            "a written frame frees its bytes"
        );
    }

    #[tokio::test]
    async fn frames_bound_the_queue_too() {
        let (tx, _rx) = channel(2, 1 << 20);
        assert_eq!(tx.try_queue(text(1)), Ok(()));
        assert_eq!(tx.try_queue(text(1)), Ok(()));
        assert_eq!(tx.try_queue(text(1)), Err(QueueError::Full));
    }

    #[tokio::test]
    async fn a_frame_over_the_whole_budget_goes_out_alone() {
        let (tx, mut rx) = channel(10, 100);
        assert_eq!(tx.try_queue(text(5000)), Ok(()));
        assert_eq!(tx.try_queue(text(1)), Err(QueueError::Full));
        assert_eq!(rx.recv().await.map(|t| t.len()), Some(5000));
        assert_eq!(tx.try_queue(text(1)), Ok(()));
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_when_the_queue_drains() {
        let (tx, mut rx) = channel(10, 100);
        assert_eq!(tx.try_queue(text(80)), Ok(()));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.queue(text(80)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room for 80 more bytes yet");
        assert_eq!(rx.recv().await.map(|t| t.len()), Some(80));
        assert_eq!(waiting.await.ok(), Some(Ok(())));
        assert_eq!(rx.recv().await.map(|t| t.len()), Some(80));
    }

    #[tokio::test]
    async fn a_dropped_queue_releases_waiting_senders() {
        let (tx, rx) = channel(10, 100);
        assert_eq!(tx.try_queue(text(100)), Ok(()));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.queue(text(50)).await }
        });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(waiting.await.ok(), Some(Err(QueueError::Closed)));
        assert_eq!(tx.try_queue(text(1)), Err(QueueError::Closed));
    }
}
