//! Where a subscription stands in its session's log: what to deliver, what is a duplicate,
//! and where to attach again after any interruption. Pure: no I/O, no time.
//!
//! The rule that makes resuming exact: a position is only trusted once everything up to it
//! has been delivered. During a replay that is true event by event. During a materialized
//! view (attach `latest`, or `history_lost`) it is not: the view's events are whole messages,
//! not a prefix of the log, so the position becomes the view's high-water only once the view
//! is complete. A view cut short is started again, after telling the subscriber to reset.

use mooring_protocol::realtime::{AttachFrom, AttachMode, AttachPoint};
use mooring_protocol::session::Event;
use mooring_protocol::Position;

/// Why a subscriber must drop what it holds: the session's materialized view follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// The position attached from belongs to another life of the log (it was lost or reset).
    HistoryLost,
    /// A materialized view was cut short by a disconnect or a pause; it is sent again whole.
    ViewInterrupted,
}

/// What to do with something the server sent about this session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Pass it to the subscriber.
    Deliver,
    /// Already delivered: drop it.
    Duplicate,
    /// It belongs to an attachment that is over (it arrived before this one's `attached`).
    Stale,
    /// Events were skipped: the session must be attached again from its position.
    Gap,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// An attach with this `from` is (to be) sent; nothing of it has arrived.
    Requested(AttachFrom),
    /// A materialized view is arriving: events up to `high_water` are whole messages, in
    /// ascending serial order; `last` is the last one delivered.
    View {
        epoch: u64,
        high_water: u64,
        last: u64,
    },
    /// Every event up to `position` has been delivered.
    Log(Position),
}

/// One subscription's place in its session.
#[derive(Clone, Debug)]
pub(crate) struct Cursor {
    phase: Phase,
    /// Something was delivered since the subscriber last started from empty.
    holds_anything: bool,
    /// A reset decided but not yet delivered.
    owed: Option<ResetReason>,
}

impl Cursor {
    pub(crate) fn new(from: AttachFrom) -> Self {
        Self {
            phase: Phase::Requested(from),
            holds_anything: false,
            owed: None,
        }
    }

    /// The `from` of the next attach.
    pub(crate) fn attach_from(&self) -> AttachFrom {
        match &self.phase {
            Phase::Requested(from) => from.clone(),
            Phase::View { .. } => AttachFrom::Named(AttachPoint::Latest),
            Phase::Log(position) => AttachFrom::Position(*position),
        }
    }

    /// The position every delivered event is at or before, once trusted.
    pub(crate) fn position(&self) -> Option<Position> {
        match self.phase {
            Phase::Log(position) => Some(position),
            _ => None,
        }
    }

    /// Whether the attach is in flight and nothing of it has arrived.
    pub(crate) fn is_requested(&self) -> bool {
        matches!(self.phase, Phase::Requested(_))
    }

    /// The attachment ended early (disconnect, pause, retryable detach): attach again.
    pub(crate) fn interrupt(&mut self) {
        if matches!(self.phase, Phase::View { .. }) && self.holds_anything {
            self.owed.get_or_insert(ResetReason::ViewInterrupted);
        }
        self.phase = Phase::Requested(self.attach_from());
    }

    /// The server's `attached`; returns the reset to deliver before anything else, if any.
    /// Call [`Cursor::reset_delivered`] once it is delivered.
    pub(crate) fn on_attached(
        &mut self,
        epoch: u64,
        mode: AttachMode,
        high_water: u64,
    ) -> Option<ResetReason> {
        let Phase::Requested(from) = &self.phase else {
            tracing::warn!(epoch, high_water, "attached without an attach in flight");
            return None;
        };
        match mode {
            AttachMode::Replay => {
                let after = match from {
                    AttachFrom::Position(p) => p.serial,
                    AttachFrom::Rewind { rewind } => high_water.saturating_sub(*rewind),
                    AttachFrom::Named(_) => 0,
                };
                self.phase = Phase::Log(Position {
                    epoch,
                    serial: after,
                });
                None
            }
            AttachMode::Latest | AttachMode::HistoryLost => {
                self.phase = Phase::View {
                    epoch,
                    high_water,
                    last: 0,
                };
                if mode == AttachMode::HistoryLost {
                    self.owed = Some(ResetReason::HistoryLost);
                } else if self.holds_anything {
                    self.owed.get_or_insert(ResetReason::ViewInterrupted);
                }
                self.owed
            }
        }
    }

    /// The reset returned by [`Cursor::on_attached`] reached the subscriber.
    pub(crate) fn reset_delivered(&mut self) {
        self.owed = None;
        self.holds_anything = false;
    }

    /// An event of this session. `Deliver` advances the cursor: call it only for an event
    /// that will be delivered, or interrupt the cursor if delivery fails.
    pub(crate) fn on_event(&mut self, epoch: u64, event: &Event) -> Verdict {
        if let Phase::View {
            epoch: view_epoch,
            high_water,
            last,
        } = &mut self.phase
        {
            if event.serial <= *high_water {
                if event.serial <= *last {
                    return Verdict::Duplicate;
                }
                *last = event.serial;
                self.holds_anything = true;
                return Verdict::Deliver;
            }
            // Past the high-water: the view is complete and the log continues.
            self.phase = Phase::Log(Position {
                epoch: *view_epoch,
                serial: *high_water,
            });
        }
        match &mut self.phase {
            Phase::Requested(_) | Phase::View { .. } => Verdict::Stale,
            Phase::Log(position) => {
                if position.serial == 0 {
                    // Nothing held yet: the first life the session shows is the one followed.
                    position.epoch = epoch;
                }
                if epoch != position.epoch {
                    Verdict::Gap
                } else if event.serial <= position.serial {
                    Verdict::Duplicate
                } else if event.serial == position.serial + 1 {
                    position.serial = event.serial;
                    self.holds_anything = true;
                    Verdict::Deliver
                } else {
                    Verdict::Gap
                }
            }
        }
    }

    /// The server's `live`: catch-up is complete up to `serial`.
    pub(crate) fn on_live(&mut self, serial: u64) -> Verdict {
        if let Phase::View {
            epoch, high_water, ..
        } = self.phase
        {
            self.phase = Phase::Log(Position {
                epoch,
                serial: high_water,
            });
        }
        match self.phase {
            Phase::Requested(_) | Phase::View { .. } => Verdict::Stale,
            Phase::Log(position) if position.serial < serial => Verdict::Gap,
            Phase::Log(_) => Verdict::Deliver,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooring_protocol::session::{Action, Extras};

    fn event(serial: u64) -> Event {
        Event {
            serial,
            action: Action::MessageAppend,
            id: None,
            name: None,
            reference: Some(1),
            client_id: None,
            data: "x".into(),
            extras: Extras::new(),
            ts: 0,
            version: None,
        }
    }

    fn view_event(serial: u64, version: u64) -> Event {
        Event {
            action: Action::MessageCreate,
            reference: None,
            version: Some(version),
            ..event(serial)
        }
    }

    fn at(epoch: u64, serial: u64) -> AttachFrom {
        AttachFrom::Position(Position { epoch, serial })
    }

    const LATEST: AttachFrom = AttachFrom::Named(AttachPoint::Latest);

    #[test]
    fn a_replay_delivers_each_serial_once_and_resumes_after_the_last() {
        let mut cursor = Cursor::new(at(0, 2));
        assert_eq!(cursor.on_attached(0, AttachMode::Replay, 5), None);
        assert_eq!(cursor.on_event(0, &event(3)), Verdict::Deliver);
        assert_eq!(cursor.on_event(0, &event(3)), Verdict::Duplicate);
        assert_eq!(cursor.on_event(0, &event(2)), Verdict::Duplicate);
        assert_eq!(cursor.on_event(0, &event(4)), Verdict::Deliver);
        cursor.interrupt();
        assert_eq!(cursor.attach_from(), at(0, 4));
        // The resumed attach replays 5; 4 arriving again is a duplicate.
        assert_eq!(cursor.on_attached(0, AttachMode::Replay, 6), None);
        assert_eq!(cursor.on_event(0, &event(4)), Verdict::Duplicate);
        assert_eq!(cursor.on_event(0, &event(5)), Verdict::Deliver);
        assert_eq!(cursor.on_event(0, &event(6)), Verdict::Deliver);
        assert_eq!(cursor.on_live(6), Verdict::Deliver);
        assert_eq!(
            cursor.position(),
            Some(Position {
                epoch: 0,
                serial: 6
            })
        );
    }

    #[test]
    fn skipped_serials_are_a_gap() {
        let mut cursor = Cursor::new(AttachFrom::Named(AttachPoint::Start));
        cursor.on_attached(3, AttachMode::Replay, 9);
        assert_eq!(cursor.on_event(3, &event(1)), Verdict::Deliver);
        assert_eq!(cursor.on_event(3, &event(3)), Verdict::Gap);
        assert_eq!(cursor.on_event(4, &event(2)), Verdict::Gap);
        assert_eq!(cursor.on_live(9), Verdict::Gap);
        assert_eq!(cursor.attach_from(), at(3, 1));
    }

    #[test]
    fn holding_nothing_follows_the_first_life_shown() {
        // Attached to a session with no log yet (epoch 0, serial 0); its first write starts a
        // life with an epoch of its own.
        let mut cursor = Cursor::new(LATEST);
        assert_eq!(cursor.on_attached(0, AttachMode::Latest, 0), None);
        assert_eq!(cursor.on_live(0), Verdict::Deliver);
        assert_eq!(cursor.on_event(7, &event(1)), Verdict::Deliver);
        assert_eq!(cursor.on_event(7, &event(2)), Verdict::Deliver);
        // Once something is held, another life is a gap, never continued silently.
        assert_eq!(cursor.on_event(8, &event(3)), Verdict::Gap);
        assert_eq!(cursor.attach_from(), at(7, 2));
    }

    #[test]
    fn events_before_attached_are_stale() {
        let mut cursor = Cursor::new(LATEST);
        assert_eq!(cursor.on_event(0, &event(1)), Verdict::Stale);
        assert_eq!(cursor.on_live(1), Verdict::Stale);
    }

    #[test]
    fn a_rewind_resumes_from_its_window() {
        let mut cursor = Cursor::new(AttachFrom::Rewind { rewind: 3 });
        cursor.on_attached(0, AttachMode::Replay, 10);
        cursor.interrupt();
        assert_eq!(cursor.attach_from(), at(0, 7));
    }

    #[test]
    fn a_complete_view_resumes_from_its_high_water() {
        let mut cursor = Cursor::new(LATEST);
        assert_eq!(cursor.on_attached(0, AttachMode::Latest, 9), None);
        assert_eq!(cursor.position(), None);
        assert_eq!(cursor.on_event(0, &view_event(1, 4)), Verdict::Deliver);
        assert_eq!(cursor.on_event(0, &view_event(5, 9)), Verdict::Deliver);
        assert_eq!(cursor.on_event(0, &view_event(5, 9)), Verdict::Duplicate);
        assert_eq!(cursor.on_live(9), Verdict::Deliver);
        assert_eq!(
            cursor.position(),
            Some(Position {
                epoch: 0,
                serial: 9
            })
        );
        assert_eq!(cursor.on_event(0, &event(10)), Verdict::Deliver);
        cursor.interrupt();
        assert_eq!(cursor.attach_from(), at(0, 10));
        assert_eq!(cursor.on_attached(0, AttachMode::Replay, 10), None);
    }

    #[test]
    fn live_events_past_the_high_water_end_the_view() {
        let mut cursor = Cursor::new(LATEST);
        cursor.on_attached(0, AttachMode::Latest, 4);
        assert_eq!(cursor.on_event(0, &view_event(2, 4)), Verdict::Deliver);
        assert_eq!(cursor.on_event(0, &event(5)), Verdict::Deliver);
        assert_eq!(cursor.on_live(4), Verdict::Deliver);
        assert_eq!(
            cursor.position(),
            Some(Position {
                epoch: 0,
                serial: 5
            })
        );
    }

    #[test]
    fn a_view_cut_short_is_sent_again_after_a_reset() {
        let mut cursor = Cursor::new(LATEST);
        cursor.on_attached(0, AttachMode::Latest, 9);
        assert_eq!(cursor.on_event(0, &view_event(1, 4)), Verdict::Deliver);
        cursor.interrupt();
        assert_eq!(cursor.attach_from(), LATEST);
        assert_eq!(
            cursor.on_attached(0, AttachMode::Latest, 12),
            Some(ResetReason::ViewInterrupted)
        );
        cursor.reset_delivered();
        assert_eq!(cursor.on_event(0, &view_event(1, 11)), Verdict::Deliver);
    }

    #[test]
    fn a_view_cut_before_any_message_needs_no_reset() {
        let mut cursor = Cursor::new(LATEST);
        cursor.on_attached(0, AttachMode::Latest, 9);
        cursor.interrupt();
        assert_eq!(cursor.on_attached(0, AttachMode::Latest, 9), None);
    }

    #[test]
    fn lost_history_resets_and_the_new_life_continues() {
        let mut cursor = Cursor::new(at(0, 7));
        assert_eq!(
            cursor.on_attached(1, AttachMode::HistoryLost, 3),
            Some(ResetReason::HistoryLost)
        );
        cursor.reset_delivered();
        assert_eq!(cursor.on_event(1, &view_event(2, 3)), Verdict::Deliver);
        assert_eq!(cursor.on_live(3), Verdict::Deliver);
        assert_eq!(cursor.attach_from(), at(1, 3));
    }

    #[test]
    fn an_undelivered_reset_stays_owed() {
        let mut cursor = Cursor::new(at(0, 7));
        cursor.on_attached(1, AttachMode::HistoryLost, 3);
        // The subscriber's buffer was full: the reset did not reach it.
        cursor.interrupt();
        assert_eq!(cursor.attach_from(), LATEST);
        assert_eq!(
            cursor.on_attached(1, AttachMode::Latest, 3),
            Some(ResetReason::HistoryLost)
        );
    }
}
