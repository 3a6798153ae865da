//! Delays between reconnect attempts: exponential, capped, with full jitter.

use std::time::Duration;

use rand::Rng;

use crate::options::ReconnectPolicy;

/// A connection that stayed up this long resets the backoff; one that failed sooner keeps
/// backing off, so a server that accepts and at once drops a client is not hammered.
pub(crate) const STABLE_CONNECTION: Duration = Duration::from_secs(5);

/// The backoff state of one client's reconnect loop.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: ReconnectPolicy,
    /// Failed attempts since the last stable connection.
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(policy: ReconnectPolicy) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// Whether another attempt is allowed.
    pub(crate) fn may_retry(&self) -> bool {
        self.policy
            .max_attempts
            .is_none_or(|max| self.failures < max)
    }

    /// Records a failed (or short-lived) connection and returns how long to wait before the
    /// next attempt, drawing jitter from `rng`.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = ceiling(&self.policy, self.failures);
        self.failures = self.failures.saturating_add(1);
        if self.policy.jitter && !ceiling.is_zero() {
            rng.gen_range(Duration::ZERO..=ceiling)
        } else {
            ceiling
        }
    }

    /// Records a connection that lasted `lived`; a stable one resets the backoff.
    pub(crate) fn connection_ended(&mut self, lived: Duration) {
        if lived >= STABLE_CONNECTION {
            self.failures = 0;
        }
    }

    /// Attempts made since the last stable connection.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

/// `initial * 2^failures`, capped at `max`.
fn ceiling(policy: &ReconnectPolicy, failures: u32) -> Duration {
    let factor = 2u32.checked_pow(failures.min(31)).unwrap_or(u32::MAX);
    policy
        .initial
        .checked_mul(factor)
        .map_or(policy.max, |d| d.min(policy.max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn policy(jitter: bool) -> ReconnectPolicy {
        ReconnectPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            jitter,
            max_attempts: Some(8),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut backoff = Backoff::new(policy(false));
        let delays: Vec<u128> = (0..7)
            .map(|_| backoff.next_delay(&mut rng).as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_backoff() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut spread = Vec::new();
        for _ in 0..200 {
            let mut backoff = Backoff::new(policy(true));
            for failures in 0..6 {
                let delay = backoff.next_delay(&mut rng);
                assert!(delay <= ceiling(&policy(true), failures));
                if failures == 5 {
                    spread.push(delay);
                }
            }
        }
        let min = spread.iter().min().copied().unwrap_or_default();
        let max = spread.iter().max().copied().unwrap_or_default();
        assert!(
            min < Duration::from_millis(500),
            "jitter reaches low delays"
        );
        assert!(
            max > Duration::from_millis(1500),
            "jitter reaches high delays"
        );
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut policy = policy(false);
        policy.max = Duration::MAX;
        assert_eq!(
            ceiling(&policy, 200),
            Duration::from_millis(100) * (1 << 31)
        );
    }

    #[test]
    fn only_a_stable_connection_resets_the_backoff() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut backoff = Backoff::new(policy(false));
        backoff.next_delay(&mut rng);
        backoff.next_delay(&mut rng);
        backoff.connection_ended(Duration::from_millis(10));
        assert_eq!(backoff.next_delay(&mut rng), Duration::from_millis(400));
        backoff.connection_ended(STABLE_CONNECTION);
        assert_eq!(backoff.next_delay(&mut rng), Duration::from_millis(100));
    }

    #[test]
    fn attempts_stop_at_the_limit() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut backoff = Backoff::new(ReconnectPolicy {
            max_attempts: Some(2),
            ..policy(false)
        });
        assert!(backoff.may_retry());
        backoff.next_delay(&mut rng);
        backoff.next_delay(&mut rng);
        assert!(!backoff.may_retry());
        assert!(!Backoff::new(ReconnectPolicy::never()).may_retry());
        assert_eq!(backoff.failures(), 2);
    }
}
