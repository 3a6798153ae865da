//! Epochs: which life of a log a position belongs to.
//!
//! A log that is deleted and created again, or lost with its storage (a Redis restarted without
//! persistence) and written again, starts a new life. Its positions must not be mistaken for
//! those of an earlier life, so each life gets an epoch no earlier life of that name had. After
//! a loss nothing of the old life is left to compare with, so the epoch is drawn from time, not
//! from the old state: the creation time in milliseconds times 1,000, plus 0 to 999 drawn at
//! random, and in this process always greater than the last epoch it drew.
//!
//! - Two lives of one name get the same epoch only if they were created in the same
//!   millisecond by different processes (Redis nodes) that also drew the same random part.
//!   Within one process epochs strictly increase, whatever the clock does.
//! - The value stays below 10^16 (the 16 digits of a Durable Streams offset) until the year
//!   2286: [`MAX_EPOCH`] caps it.
//! - Epoch 0 is never drawn: it is the epoch of logs created before epochs came from time, so
//!   their positions stay valid.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// The largest epoch: 16 decimal digits.
pub const MAX_EPOCH: u64 = 9_999_999_999_999_999;

/// Epochs drawn per millisecond of creation time.
const EPOCHS_PER_MS: u64 = 1_000;

/// The last epoch this process drew.
static LAST: AtomicU64 = AtomicU64::new(0);

/// An epoch for a log created at `now_ms`, unlike any this process drew before.
pub fn new_epoch(now_ms: u64) -> u64 {
    let candidate = from_time(now_ms, random_below(EPOCHS_PER_MS));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last + 1).clamp(1, MAX_EPOCH);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// The epoch for a creation at `now_ms` with random part `random` (below 1,000).
fn from_time(now_ms: u64, random: u64) -> u64 {
    now_ms.min(MAX_EPOCH / EPOCHS_PER_MS - 1) * EPOCHS_PER_MS + random
}

/// A number in `0..n` from the standard library's per-process random keys.
fn random_below(n: u64) -> u64 {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let draw = DRAWS.fetch_add(1, Ordering::Relaxed);
    RandomState::new().hash_one(draw) % n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_of_one_millisecond_all_differ() {
        let drawn: Vec<u64> = (0..5_000).map(|_| new_epoch(1_764_000_000_000)).collect();
        let mut sorted = drawn.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), drawn.len());
    }

    #[test]
    fn an_epoch_follows_the_clock_and_fits_an_offset() {
        let e = new_epoch(4_000_000_000_000);
        assert!(e >= 4_000_000_000_000_000, "{e}");
        assert!(new_epoch(0) > 0);
        assert!(from_time(u64::MAX, EPOCHS_PER_MS - 1) <= MAX_EPOCH);
    }
}
