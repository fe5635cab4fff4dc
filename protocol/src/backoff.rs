//! The one backoff policy of the project's own retries: the browser's
//! reconnects, an agent's retries before its first token, DynamoDB's
//! unprocessed items. (Calls through the AWS SDK use the SDK's own retry.)
//! Pure: the caller brings the random number, so the browser and the server
//! share it and tests are exact.

use std::time::Duration;

/// A first delay doubling with each retry up to a cap, spread by ±`jitter`
/// so that many clients do not retry in step, for at most `retries` retries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// How many retries follow the first attempt.
    pub retries: u32,
    /// The spread, as a fraction of the delay: 0.2 is ±20 %.
    pub jitter: f64,
}

impl Backoff {
    /// The wait before retry `retry` (1-based), spread by `rand01` (a random
    /// number in 0..1; 0.5 is the middle). None once the retries are used up.
    pub fn delay(&self, retry: u32, rand01: f64) -> Option<Duration> {
        if retry == 0 || retry > self.retries {
            return None;
        }
        let base = self
            .first
            .saturating_mul(1u32 << (retry - 1).min(31))
            .min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let spread = 1.0 - jitter + 2.0 * jitter * rand01.clamp(0.0, 1.0);
        // Whole nanoseconds, rounded: 0.8 × 500 ms is 400 ms, not 399.999….
        let nanos = (base.as_nanos() as f64 * spread).round();
        Some(Duration::from_nanos(nanos.min(u64::MAX as f64) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(8),
        retries: 6,
        jitter: 0.2,
    };

    #[test]
    fn doubles_up_to_the_cap_then_stops() {
        let mid: Vec<u128> = (1..=6)
            .map(|r| B.delay(r, 0.5).unwrap().as_millis())
            .collect();
        assert_eq!(mid, vec![500, 1000, 2000, 4000, 8000, 8000]);
        assert_eq!(B.delay(7, 0.5), None);
        assert_eq!(B.delay(0, 0.5), None);
    }

    #[test]
    fn jitter_spreads_both_ways() {
        assert_eq!(B.delay(1, 0.0), Some(Duration::from_millis(400)));
        assert_eq!(B.delay(1, 1.0), Some(Duration::from_millis(600)));
        let none = Backoff { jitter: 0.0, ..B };
        assert_eq!(none.delay(2, 0.9), Some(Duration::from_secs(1)));
    }

    #[test]
    fn huge_retry_counts_do_not_overflow() {
        let many = Backoff {
            retries: u32::MAX,
            ..B
        };
        assert_eq!(many.delay(u32::MAX, 0.5), Some(Duration::from_secs(8)));
    }
}
