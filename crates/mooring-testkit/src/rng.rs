//! A tiny seeded random source, so a failing randomized test can be replayed from its seed.

use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64: fast, good enough for choosing delays and sizes, and fully determined by its seed.
#[derive(Clone, Debug)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `low..=high` (`low` if the range is empty).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        let span = high - low + 1;
        low + self.next_u64() % span
    }

    /// An independent generator for a sub-task (e.g. one writer), still fixed by the seed.
    pub fn fork(&mut self) -> Self {
        Self::new(self.next_u64())
    }
}

/// The seed named by environment variable `var`, or a fresh one from the clock.
/// Tests print it so a failure can be replayed by setting `var`.
pub fn seed_from_env(var: &str) -> u64 {
    if let Some(seed) = std::env::var(var).ok().and_then(|v| v.trim().parse().ok()) {
        return seed;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        for _ in 0..100 {
            let x = a.between(20, 300);
            assert_eq!(x, b.between(20, 300));
            assert!((20..=300).contains(&x));
        }
        assert_eq!(a.between(5, 5), 5);
    }
}
