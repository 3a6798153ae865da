//! The live-read cursor that lets CDNs collapse identical long-polls.
//!
//! Time is cut into 20-second intervals counted from 2024-10-09T00:00:00Z; a live response
//! carries the current interval number. A client echoes it back; if its echo is not behind the
//! current interval, the server answers a strictly greater one, pushed forward by a jitter so
//! that retries never hit the same cached response twice.

/// Milliseconds since the Unix epoch of 2024-10-09T00:00:00Z.
pub const CURSOR_EPOCH_MS: u64 = 1_728_432_000_000;
/// Length of one cursor interval.
pub const CURSOR_INTERVAL_MS: u64 = 20_000;

/// The cursor to send at `now_ms`, given the client's echoed cursor, if any.
///
/// `jitter_secs` (1 to 3600 in practice) is supplied by the caller so this stays pure. The
/// echo is the client's text: one near `u64::MAX` gets `u64::MAX` back (saturating), never an
/// overflow.
pub fn next_cursor(now_ms: u64, client: Option<&str>, jitter_secs: u64) -> u64 {
    let current = now_ms.saturating_sub(CURSOR_EPOCH_MS) / CURSOR_INTERVAL_MS;
    match client.and_then(|c| c.parse::<u64>().ok()) {
        Some(echoed) if echoed >= current => {
            let jitter_intervals = jitter_secs
                .saturating_mul(1000)
                .div_ceil(CURSOR_INTERVAL_MS)
                .max(1);
            echoed.saturating_add(jitter_intervals)
        }
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_intervals_from_the_cursor_epoch() {
        assert_eq!(next_cursor(CURSOR_EPOCH_MS, None, 1), 0);
        assert_eq!(next_cursor(CURSOR_EPOCH_MS + 45_000, None, 1), 2);
    }

    #[test]
    fn an_echo_at_or_ahead_of_now_moves_strictly_forward() {
        let now = CURSOR_EPOCH_MS + 100 * CURSOR_INTERVAL_MS;
        assert_eq!(next_cursor(now, Some("100"), 1), 101);
        assert_eq!(next_cursor(now, Some("150"), 60), 153);
        assert_eq!(next_cursor(now, Some("99"), 60), 100);
        assert_eq!(next_cursor(now, Some("junk"), 60), 100);
    }

    /// Found by the `ds_offset` fuzz target: an echoed cursor of `u64::MAX` (here with leading
    /// zeros) overflowed the addition of the jitter (a panic in debug builds, a wrap to a
    /// cursor behind the current one in release).
    #[test]
    fn an_echo_at_the_largest_cursor_saturates_instead_of_overflowing() {
        let now = CURSOR_EPOCH_MS + 100 * CURSOR_INTERVAL_MS;
        assert_eq!(
            next_cursor(now, Some("000000018446744073709551615"), 60),
            u64::MAX
        );
        assert_eq!(
            next_cursor(now, Some("18446744073709551614"), 3600),
            u64::MAX
        );
        let huge_jitter = u64::MAX.div_ceil(CURSOR_INTERVAL_MS);
        assert_eq!(next_cursor(now, Some("100"), u64::MAX), 100 + huge_jitter);
    }
}
