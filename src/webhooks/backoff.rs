//! The retry schedule: exponential backoff with "equal jitter".

/// The delay in ms before retrying after the `attempt`-th failed attempt
/// (1-based): `delay = min(max_ms, base_ms × 2^(attempt−1))`, then half of
/// it fixed and half drawn by `rand` (any u64, reduced here):
/// `delay/2 + rand mod (delay/2 + 1)`. Jitter keeps many subscriptions
/// failing at once from retrying in lockstep; the fixed half keeps the
/// delays growing. With the defaults (base 10 s, max 1 h, 12 attempts) the
/// retries wait about 10 s, 20 s, 40 s, … 1 h: ≈ 3.5 h before an event is
/// dead-lettered, half to all of that with the jitter.
pub fn backoff(attempt: u32, base_ms: u64, max_ms: u64, rand: u64) -> u64 {
    let doublings = attempt.saturating_sub(1).min(63);
    let delay = base_ms.saturating_mul(1u64 << doublings).min(max_ms);
    let half = delay / 2;
    (delay - half) + rand % (half + 1)
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn delays_double_up_to_the_cap_with_half_jittered() {
        assert_eq!(backoff(1, 10_000, 3_600_000, 0), 5_000);
        assert_eq!(backoff(1, 10_000, 3_600_000, 5_000), 10_000);
        assert_eq!(backoff(1, 10_000, 3_600_000, 5_001), 5_000, "rand wraps into the jitter");
        assert_eq!(backoff(2, 10_000, 3_600_000, u64::MAX), 10_000 + u64::MAX % 10_001);
        assert_eq!(backoff(4, 10_000, 3_600_000, 0), 40_000);
        assert_eq!(backoff(12, 10_000, 3_600_000, 0), 1_800_000, "capped at the max");
        assert_eq!(backoff(50, 10_000, 3_600_000, 1_800_000), 3_600_000);
        assert_eq!(
            backoff(u32::MAX, u64::MAX, u64::MAX, u64::MAX),
            u64::MAX - u64::MAX / 2 + u64::MAX % (u64::MAX / 2 + 1)
        );
        assert_eq!(backoff(0, 10, 100, 0), 5, "attempt 0 is treated as the first");
        assert_eq!(backoff(1, 1, 1, 7), 1, "an odd delay keeps its larger half fixed");
        // Every delay lies in [delay/2, delay] and never decreases in its lower bound.
        let mut lower = 0;
        for attempt in 1..=12 {
            let lo = backoff(attempt, 10_000, 3_600_000, 0);
            let hi = backoff(attempt, 10_000, 3_600_000, u64::MAX - (u64::MAX % 3_600_001));
            assert!(lo >= lower && hi >= lo, "attempt {attempt}: {lo}..{hi}");
            lower = lo;
        }
        let total: u64 = (1..12).map(|a| 2 * backoff(a, 10_000, 3_600_000, 0)).sum();
        assert!((3 * 3_600_000..4 * 3_600_000).contains(&total), "the default schedule spans ≈ 3.5 h: {total}");
    }
}
