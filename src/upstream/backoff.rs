//! Reconnect delays: exponential with full jitter.
//!
//! The n-th consecutive failure waits a uniformly random time in
//! `[0, min(max, base · 2ⁿ)]`. Full jitter spreads the reconnects of many gateways
//! after an upstream restart instead of having them arrive in waves. The base is
//! `upstream.backoff.initial` until the upstream sends `retry:`, which replaces it.

use std::time::Duration;

#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            base: initial.min(max),
            max,
            attempt: 0,
        }
    }

    /// The upper bound of the next delay.
    pub(crate) fn ceiling(&self) -> Duration {
        // 2^20 × even 1 ms is past any sane max; stop doubling there.
        let factor = 1u32 << self.attempt.min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The upstream's `retry:` becomes the base, still bounded by `max`.
    pub(crate) fn set_base(&mut self, base: Duration) {
        self.base = base.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn every_delay_lies_within_the_exponential_bound(
            initial_ms in 0u64..5_000,
            max_ms in 0u64..120_000,
            attempts in 1usize..40,
        ) {
            let (initial, max) = (Duration::from_millis(initial_ms), Duration::from_millis(max_ms));
            let mut b = Backoff::new(initial, max);
            for n in 0..attempts {
                let bound = initial.min(max).saturating_mul(1 << n.min(20)).min(max);
                let d = b.next_delay();
                prop_assert!(d <= bound, "attempt {n}: {d:?} > {bound:?}");
            }
        }
    }

    #[test]
    fn ceiling_doubles_up_to_max_and_reset_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let ceilings: Vec<_> = (0..4)
            .map(|_| {
                let c = b.ceiling();
                b.next_delay();
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, [250, 500, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(250));
    }

    #[test]
    fn upstream_retry_replaces_the_base_within_max() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        b.set_base(Duration::from_secs(3));
        assert_eq!(b.ceiling(), Duration::from_secs(3));
        b.set_base(Duration::from_secs(60));
        assert_eq!(b.ceiling(), Duration::from_secs(10));
    }

    #[test]
    fn delays_are_jittered_not_constant() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10);
    }
}
