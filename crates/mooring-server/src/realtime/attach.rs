//! One attachment: history (or the materialized view), then live events, joined by the seam.
//!
//! The feed is registered with the session task *before* history is read; live events queue in
//! the feed while history is sent; then only queued events above the history's high-water are
//! released. If the feed overflows during the replay, the attachment fails closed with a
//! resumable `seam_overflow` instead of skipping anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use mooring_core::read::ReadError;
use mooring_core::session::event_of;
use mooring_protocol::realtime::{AttachFrom, AttachMode, AttachPoint, ErrorCode, ServerFrame};
use mooring_protocol::session::Event;
use mooring_protocol::{Position, ReadFrom};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::actor::{LiveItem, Subscriber};
use super::errors::body;
use super::outbound::Outbound;
use super::sessions::Sessions;

/// Live events an attachment buffers while it replays history.
pub(crate) const SEAM_BUFFER: usize = 4096;
/// Bytes of history read per step of a replay.
const REPLAY_PAGE_BYTES: usize = 256 << 10;

/// Why an attachment ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttachmentEnd {
    /// Detached, or the connection is closing.
    Stopped,
    /// The client does not read fast enough: close the connection (resumable).
    SlowConsumer,
    /// Told the client with `detached`; the connection stays.
    Detached,
    /// The log began a new life; told the client with `detached` (`history_lost`).
    LifeEnded,
}

/// What an attachment needs from its connection.
#[derive(Debug, Clone)]
pub(crate) struct AttachmentContext {
    pub(crate) sessions: Sessions,
    pub(crate) outbound: Outbound,
    pub(crate) cancel: CancellationToken,
    pub(crate) id: u64,
    /// Who is attaching, from which connection: a reconnected agent's runs follow it here.
    pub(crate) owner: (String, String),
}

fn encode(frame: &ServerFrame) -> Option<Utf8Bytes> {
    serde_json::to_string(frame).ok().map(Utf8Bytes::from)
}

impl AttachmentContext {
    /// Sends a frame, waiting for room (history is paced by the client); false if stopped.
    async fn send(&self, frame: &ServerFrame) -> bool {
        let Some(bytes) = encode(frame) else {
            return true;
        };
        tokio::select! {
            sent = self.outbound.queue(bytes) => sent.is_ok(),
            () = self.cancel.cancelled() => false,
        }
    }
}

/// Runs an attachment of `session` from `from` until it is stopped or fails.
pub(crate) async fn run(
    ctx: AttachmentContext,
    session: String,
    from: Option<AttachFrom>,
) -> AttachmentEnd {
    metrics::gauge!(crate::metrics::ATTACHMENTS).increment(1.0);
    if matches!(from, Some(AttachFrom::Position(_))) {
        metrics::counter!(crate::metrics::RESUMES).increment(1);
    }
    let end = attach(ctx, session, from).await;
    metrics::gauge!(crate::metrics::ATTACHMENTS).decrement(1.0);
    match end {
        AttachmentEnd::SlowConsumer => {
            metrics::counter!(crate::metrics::SLOW_CONSUMERS).increment(1);
        }
        AttachmentEnd::Detached => metrics::counter!(crate::metrics::SEAM_FAILURES).increment(1),
        AttachmentEnd::Stopped | AttachmentEnd::LifeEnded => {}
    }
    end
}

async fn attach(
    ctx: AttachmentContext,
    session: String,
    from: Option<AttachFrom>,
) -> AttachmentEnd {
    let (tx, mut feed) = mpsc::channel::<LiveItem>(SEAM_BUFFER);
    let overflowed = Arc::new(AtomicBool::new(false));
    let life_ended = Arc::new(AtomicBool::new(false));
    let subscriber = Subscriber {
        owner: Some(ctx.owner.clone()),
        id: ctx.id,
        tx,
        overflowed: overflowed.clone(),
        life_ended: life_ended.clone(),
    };
    // Boxed, like the catch-up below: an attachment lives long and idles in the loop at the
    // end, and a future holds room for its largest await point for as long as it lives.
    let Ok(registered) = Box::pin(ctx.sessions.subscribe(&session, subscriber)).await else {
        return AttachmentEnd::Stopped;
    };
    let (epoch, high_water) = (registered.epoch, registered.high_water);
    let released = match Box::pin(catch_up(&ctx, &session, from, epoch, high_water)).await {
        CatchUp::Released(serial) => serial,
        CatchUp::Stopped => return AttachmentEnd::Stopped,
        CatchUp::LifeEnded => {
            // The session task has not seen the new life yet: show it, then let the client
            // attach again (by then the task follows the new life).
            ctx.sessions.poke(&session);
            return life_ended_detach(&ctx, &session).await;
        }
    };
    if life_ended.load(Ordering::SeqCst) {
        return life_ended_detach(&ctx, &session).await;
    }
    if overflowed.load(Ordering::SeqCst) {
        let frame = ServerFrame::Detached {
            session: session.clone(),
            error: Some(body(
                ErrorCode::SeamOverflow,
                "live events outran the replay of history; attach again from the last serial seen",
            )),
        };
        ctx.send(&frame).await;
        return AttachmentEnd::Detached;
    }
    // Each frame in a block of its own: a frame in the function's scope would keep its room
    // in the task for the attachment's whole life.
    let live = {
        let frame = ServerFrame::Live {
            session: session.clone(),
            serial: released,
        };
        ctx.send(&frame).await
    };
    if !live {
        return AttachmentEnd::Stopped;
    }
    // Members as of the registration (none: no frame, the list starts empty); later changes
    // are queued in the feed behind it.
    if !registered.members.is_empty() {
        let sent = {
            let snapshot = ServerFrame::PresenceSnapshot {
                session: session.clone(),
                members: registered.members,
            };
            ctx.send(&snapshot).await
        };
        if !sent {
            return AttachmentEnd::Stopped;
        }
    }
    loop {
        tokio::select! {
            item = feed.recv() => match item {
                Some((Some(serial), _)) if serial <= released => {}
                Some((_, bytes)) => {
                    if ctx.outbound.try_queue(bytes).is_err() {
                        return AttachmentEnd::SlowConsumer;
                    }
                }
                None if life_ended.load(Ordering::SeqCst) => {
                    return life_ended_detach(&ctx, &session).await;
                }
                None if overflowed.load(Ordering::SeqCst) => return AttachmentEnd::SlowConsumer,
                None => return AttachmentEnd::Stopped,
            },
            () = ctx.cancel.cancelled() => return AttachmentEnd::Stopped,
        }
    }
}

/// Tells the client the session's log began a new life: it attaches again from its position
/// and is answered `history_lost` with the view.
async fn life_ended_detach(ctx: &AttachmentContext, session: &str) -> AttachmentEnd {
    let frame = ServerFrame::Detached {
        session: session.to_owned(),
        error: Some(body(
            ErrorCode::HistoryLost,
            "the session's log began a new life (deleted, or lost by the storage); attach again \
             from the last position seen to receive the session as it is now",
        )),
    };
    ctx.send(&frame).await;
    AttachmentEnd::LifeEnded
}

/// How the catch-up of an attachment ended.
enum CatchUp {
    /// Live events are released after this serial.
    Released(u64),
    /// Detached, or the connection is closing.
    Stopped,
    /// The log is in another life than the session task said.
    LifeEnded,
}

/// Sends `attached` and the catch-up; returns the serial live events are released after.
async fn catch_up(
    ctx: &AttachmentContext,
    session: &str,
    from: Option<AttachFrom>,
    epoch: u64,
    high_water: u64,
) -> CatchUp {
    match catch_up_from(ctx, session, from, epoch, high_water).await {
        Ok(Some(serial)) => CatchUp::Released(serial),
        Ok(None) => CatchUp::Stopped,
        Err(LifeEnded) => CatchUp::LifeEnded,
    }
}

/// The log is in another life than the one being replayed.
struct LifeEnded;

async fn catch_up_from(
    ctx: &AttachmentContext,
    session: &str,
    from: Option<AttachFrom>,
    epoch: u64,
    high_water: u64,
) -> Result<Option<u64>, LifeEnded> {
    let replay_after = match from {
        None | Some(AttachFrom::Named(AttachPoint::Latest)) => None,
        Some(AttachFrom::Named(AttachPoint::Start)) => Some(0),
        Some(AttachFrom::Rewind { rewind }) => Some(high_water.saturating_sub(rewind)),
        // A position from another life, or ahead of the log (a log that lost its tail), cannot
        // be resumed: say so and send the view.
        // Serial 0 holds nothing of any life, so it is the start of this one.
        Some(AttachFrom::Position(p)) if p.serial == 0 => Some(0),
        Some(AttachFrom::Position(p)) if p.epoch != epoch || p.serial > high_water => {
            return Ok(send_view(ctx, session, AttachMode::HistoryLost).await);
        }
        Some(AttachFrom::Position(p)) => Some(p.serial),
    };
    match replay_after {
        None => Ok(send_view(ctx, session, AttachMode::Latest).await),
        Some(after) => replay(ctx, session, epoch, after, high_water).await,
    }
}

async fn send_view(ctx: &AttachmentContext, session: &str, mode: AttachMode) -> Option<u64> {
    let snapshot = ctx.sessions.store().snapshot(session).await.ok().flatten();
    let (epoch, serial, messages) = match snapshot {
        Some(s) => (s.info.tail.epoch, s.info.tail.serial, s.messages),
        None => (0, 0, Vec::new()),
    };
    let attached = ServerFrame::Attached {
        session: session.to_owned(),
        epoch,
        mode,
        serial,
    };
    if !ctx.send(&attached).await {
        return None;
    }
    for message in messages {
        if !ctx
            .send(&event_frame(session, epoch, message.as_event()))
            .await
        {
            return None;
        }
    }
    Some(serial)
}

async fn replay(
    ctx: &AttachmentContext,
    session: &str,
    epoch: u64,
    after: u64,
    high_water: u64,
) -> Result<Option<u64>, LifeEnded> {
    let attached = ServerFrame::Attached {
        session: session.to_owned(),
        epoch,
        mode: AttachMode::Replay,
        serial: high_water,
    };
    // `attached` goes once the first page is read: a replay from before the retained records
    // is answered with the view instead.
    let mut announced = false;
    let mut position = after;
    while position < high_water {
        let from = ReadFrom::After(Position {
            epoch,
            serial: position,
        });
        let batch = match ctx
            .sessions
            .store()
            .read(session, from, REPLAY_PAGE_BYTES)
            .await
        {
            Ok(batch) if batch.start.epoch == epoch => batch,
            Err(ReadError::BeforeRetained { .. }) if !announced => {
                return Ok(send_view(ctx, session, AttachMode::HistoryLost).await);
            }
            // Trimmed while replaying: what was announced cannot be kept, so the client
            // re-syncs as from a life that ended.
            Ok(_)
            | Err(
                ReadError::EpochMismatch { .. }
                | ReadError::BeyondTail { .. }
                | ReadError::BeforeRetained { .. },
            ) => return Err(LifeEnded),
            Err(ReadError::NotFound | ReadError::Gone) => return Err(LifeEnded),
            Err(ReadError::Store(_)) => return Ok(None),
        };
        if !announced {
            if !ctx.send(&attached).await {
                return Ok(None);
            }
            announced = true;
        }
        if batch.records.is_empty() {
            break;
        }
        for record in batch.records.iter().filter(|r| r.serial <= high_water) {
            if !ctx
                .send(&event_frame(session, epoch, event_of(record)))
                .await
            {
                return Ok(None);
            }
            position = record.serial;
        }
        if batch.records.last().is_some_and(|r| r.serial >= high_water) {
            break;
        }
    }
    if !announced && !ctx.send(&attached).await {
        return Ok(None);
    }
    Ok(Some(high_water))
}

fn event_frame(session: &str, epoch: u64, event: Event) -> ServerFrame {
    ServerFrame::Event {
        session: session.to_owned(),
        epoch,
        event,
    }
}
