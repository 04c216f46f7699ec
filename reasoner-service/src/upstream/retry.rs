//! When to try a call again and how long to wait: exponential backoff with jitter, replaced by
//! the upstream's `Retry-After` when it sends one (RFC 9110 section 10.2.3), as TGI's and
//! vLLM's OpenAI clients do.

use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;

use super::classify::AttemptError;

/// Retry and timeout settings for every call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Limit of one HTTP attempt.
    pub attempt_timeout: Duration,
    /// Limit of one logical call, retries and backoff included.
    pub call_deadline: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// The backoff between attempts; `None` from it means the retries are spent.
    pub(super) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

/// The wait before the next attempt: the upstream's `Retry-After` when it sent one (cut to
/// `max_retry_after`), else the backoff's delay.
pub(super) fn retry_delay(
    error: &AttemptError,
    backoff: Duration,
    max_retry_after: Duration,
) -> Duration {
    match error {
        AttemptError::Status {
            retry_after: Some(wait),
            ..
        } => (*wait).min(max_retry_after),
        _ => backoff,
    }
}

/// `Retry-After` in either form of RFC 9110 section 10.2.3: delta-seconds (integer, or decimal
/// as some proxies send), or an HTTP-date (IMF-fixdate, and the obsolete RFC 850 and asctime
/// forms). A date in the past means "now". Anything else is `None`: the exponential backoff
/// applies. The caller cuts long waits to its maximum.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

/// [`parse_retry_after`] against a given clock, for tests.
pub fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            // Far beyond any sane wait; the caller's maximum applies anyway.
            .then(|| Duration::from_secs_f64(seconds.min(1e9)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_delta_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn retry_after_takes_all_three_http_date_forms() {
        // RFC 9110's example instant, 1994-11-06 08:49:37 UTC, and a clock 90 s before it.
        let instant = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = instant - Duration::from_secs(90);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",  // IMF-fixdate
            "Sunday, 06-Nov-94 08:49:37 GMT", // obsolete RFC 850
            "Sun Nov  6 08:49:37 1994",       // obsolete asctime
        ] {
            assert_eq!(
                parse_retry_after_at(form, now),
                Some(Duration::from_secs(90)),
                "{form}"
            );
        }
    }

    #[test]
    fn a_retry_after_date_in_the_past_means_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777 + 3600);
        assert_eq!(
            parse_retry_after_at("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_malformed_date_falls_back_to_the_backoff() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(parse_retry_after_at("Sun, 06 Nov 1994 08:49", now), None);
        assert_eq!(
            parse_retry_after_at("Sun, 32 Nov 1994 08:49:37 GMT", now),
            None
        );
    }

    #[test]
    fn retry_after_replaces_the_backoff_and_is_cut_to_the_maximum() {
        let backoff = Duration::from_millis(40);
        let max = Duration::from_secs(30);
        let status = |retry_after| AttemptError::Status {
            status: 503,
            retry_after,
            message: String::new(),
        };
        assert_eq!(retry_delay(&status(None), backoff, max), backoff);
        assert_eq!(
            retry_delay(&status(Some(Duration::from_secs(2))), backoff, max),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(&status(Some(Duration::ZERO)), backoff, max),
            Duration::ZERO
        );
        // A date a year ahead waits the maximum, not a year.
        let next_year = parse_retry_after_at(
            "Mon, 06 Nov 1995 08:49:37 GMT",
            SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777),
        );
        assert_eq!(retry_delay(&status(next_year), backoff, max), max);
        assert_eq!(retry_delay(&AttemptError::Timeout, backoff, max), backoff);
    }
}
