//! Counts gaps and duplicates in the serials one subscriber receives from one session.
//!
//! Serials are contiguous from 1 in a session's log, so a subscriber that resumes correctly
//! sees each serial exactly once and in order. A serial above the next one expected is a gap
//! (the serials in between were lost); one at or below the last seen is a duplicate.

use serde::Serialize;

/// The state of one subscriber's stream.
#[derive(Debug, Clone, Default)]
pub struct SerialCheck {
    last: Option<u64>,
    /// Events received (duplicates included).
    pub received: u64,
    /// Serials missing between consecutive events.
    pub missing: u64,
    /// Places where serials were missing (one gap may lose many serials).
    pub gaps: u64,
    /// Events at or below a serial already received.
    pub duplicates: u64,
}

/// Totals over many subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckTotals {
    /// Events received.
    pub received: u64,
    /// Gaps seen.
    pub gaps: u64,
    /// Serials lost in those gaps.
    pub missing: u64,
    /// Duplicates seen.
    pub duplicates: u64,
}

impl SerialCheck {
    /// A stream expected to start right after `after` (0: from the first event).
    pub fn after(after: u64) -> Self {
        Self {
            last: Some(after),
            ..Self::default()
        }
    }

    /// The last serial received (or the starting point).
    pub fn last(&self) -> Option<u64> {
        self.last
    }

    /// Takes one event's serial.
    pub fn observe(&mut self, serial: u64) {
        self.received += 1;
        match self.last {
            Some(last) if serial <= last => self.duplicates += 1,
            Some(last) if serial > last + 1 => {
                self.gaps += 1;
                self.missing += serial - last - 1;
                self.last = Some(serial);
            }
            _ => self.last = Some(serial),
        }
    }

    /// Whether everything up to `high_water` arrived, once each.
    pub fn complete_to(&self, high_water: u64) -> bool {
        self.gaps == 0 && self.duplicates == 0 && self.last.unwrap_or(0) >= high_water
    }

    /// Adds this stream's counts to `totals`.
    pub fn add_to(&self, totals: &mut CheckTotals) {
        totals.received += self.received;
        totals.gaps += self.gaps;
        totals.missing += self.missing;
        totals.duplicates += self.duplicates;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contiguous_stream_is_clean() {
        let mut c = SerialCheck::after(0);
        (1..=100).for_each(|s| c.observe(s));
        assert_eq!((c.gaps, c.duplicates, c.received), (0, 0, 100));
        assert!(c.complete_to(100));
        assert!(!c.complete_to(101));
    }

    #[test]
    fn a_resume_that_skips_serials_counts_a_gap() {
        let mut c = SerialCheck::after(10);
        [11, 12, 15, 16].into_iter().for_each(|s| c.observe(s));
        assert_eq!((c.gaps, c.missing, c.duplicates), (1, 2, 0));
        assert!(!c.complete_to(16));
    }

    #[test]
    fn a_resume_that_repeats_serials_counts_duplicates() {
        let mut c = SerialCheck::after(0);
        [1, 2, 3, 2, 3, 4].into_iter().for_each(|s| c.observe(s));
        assert_eq!((c.gaps, c.duplicates), (0, 2));
        assert_eq!(c.last(), Some(4));
        let mut totals = CheckTotals::default();
        c.add_to(&mut totals);
        assert_eq!(totals.duplicates, 2);
        assert_eq!(totals.received, 6);
    }

    #[test]
    fn a_first_event_after_the_start_point_is_a_gap() {
        let mut c = SerialCheck::after(0);
        c.observe(3);
        assert_eq!((c.gaps, c.missing), (1, 2));
    }
}
