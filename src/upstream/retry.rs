//! When a failed upstream call is tried again. Connect errors, 429 and 5xx are retried, up to
//! `upstream.max_retries` times, and only before anything reached the client (the caller sees
//! to that: it retries only the opening of a stream).
//!
//! The wait is exponential with full jitter: a random time between zero and
//! `retry_backoff_ms * 2^attempt`, capped at `retry_max_backoff_ms`, so many clients failing at
//! once do not come back at once. A 429 or 503 that says `Retry-After` is waited for exactly, if
//! it fits in the time left; if not, the call fails at once with the upstream's own status.
//!
//! Written here rather than with `backon`: its jitter adds to the delay instead of drawing it
//! from zero to the delay, and a `Retry-After` must replace the schedule, not follow it; what is
//! left of a crate is one multiplication.

use std::time::Duration;

use super::UpstreamError;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// The first wait's ceiling.
    pub base: Duration,
    /// No wait is longer.
    pub cap: Duration,
}

impl RetryPolicy {
    /// How long to wait before retry number `attempt` (1 for the first) after `err`, given
    /// `left` of the time budget; `None` to give up and report `err`.
    pub fn wait(&self, attempt: u32, err: &UpstreamError, left: Duration) -> Option<Duration> {
        if attempt > self.max_retries || !err.is_retryable() {
            return None;
        }
        let wait = match err.retry_after() {
            Some(asked) => asked,
            None => full_jitter(self.ceiling(attempt)),
        };
        // A wait that would outlast the budget is no retry: report the upstream's answer now.
        (wait < left).then_some(wait)
    }

    /// `base * 2^(attempt - 1)`, at most `cap`.
    fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// A random time from zero to `ceiling`.
fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// The seconds of a `Retry-After` header, or its HTTP date from now; `None` if absent or
/// unreadable.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let left = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(left.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_retries: 3,
        base: Duration::from_millis(200),
        cap: Duration::from_millis(500),
    };
    const PLENTY: Duration = Duration::from_secs(60);

    fn status(status: u16, retry_after: Option<Duration>) -> UpstreamError {
        UpstreamError::Status {
            status,
            message: String::new(),
            retry_after,
        }
    }

    #[test]
    fn waits_are_jittered_below_a_doubling_capped_ceiling() {
        let err = UpstreamError::Connect("refused".into());
        for _ in 0..200 {
            let first = POLICY.wait(1, &err, PLENTY).expect("retried");
            assert!(first <= Duration::from_millis(200), "{first:?}");
            let second = POLICY.wait(2, &err, PLENTY).expect("retried");
            assert!(second <= Duration::from_millis(400), "{second:?}");
            let third = POLICY.wait(3, &err, PLENTY).expect("retried");
            assert!(third <= Duration::from_millis(500), "capped: {third:?}");
        }
        let waits: std::collections::BTreeSet<_> =
            (0..50).map(|_| POLICY.wait(1, &err, PLENTY)).collect();
        assert!(waits.len() > 10, "full jitter spreads the waits: {waits:?}");
        assert_eq!(POLICY.wait(4, &err, PLENTY), None, "max_retries");
    }

    #[test]
    fn retry_after_is_waited_exactly_when_it_fits_and_refused_when_not() {
        let asked = status(429, Some(Duration::from_secs(1)));
        assert_eq!(POLICY.wait(1, &asked, PLENTY), Some(Duration::from_secs(1)));
        assert_eq!(
            POLICY.wait(1, &asked, Duration::from_millis(900)),
            None,
            "longer than the time left: give up with the upstream's status"
        );
        assert_eq!(
            POLICY.wait(1, &status(400, None), PLENTY),
            None,
            "not retryable"
        );
        assert!(POLICY.wait(1, &status(503, None), PLENTY).is_some());
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(30)).to_rfc2822();
        let left = parse_retry_after(&soon).expect("a date");
        assert!(
            left > Duration::from_secs(25) && left <= Duration::from_secs(30),
            "{left:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date past is no wait"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
