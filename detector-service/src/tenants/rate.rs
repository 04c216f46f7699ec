//! Requests per minute per tenant: a token bucket per tenant holding a minute's worth, so a
//! burst up to the limit passes and a steady rate above it is refused with 429 and the
//! seconds until the next token (`Retry-After`). The map holds one entry per tenant that
//! has a key, which the operator's key list bounds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::TenantId;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

impl RateLimiter {
    /// `per_minute` 0 turns the limit off.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `tenant`'s budget, or says how many seconds until one is back.
    pub fn check(&self, tenant: &TenantId) -> Result<(), u64> {
        self.check_at(tenant, Instant::now())
    }

    fn check_at(&self, tenant: &TenantId, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(tenant.clone()).or_insert(Bucket {
            tokens: capacity,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_minute_of_budget_then_429_until_a_token_is_back_and_tenants_are_apart() {
        let limiter = RateLimiter::new(6);
        let alice = TenantId::parse("alice").unwrap();
        let bob = TenantId::parse("bob").unwrap();
        let start = Instant::now();
        for _ in 0..6 {
            assert_eq!(limiter.check_at(&alice, start), Ok(()));
        }
        assert_eq!(limiter.check_at(&alice, start), Err(10));
        assert_eq!(
            limiter.check_at(&bob, start),
            Ok(()),
            "bob has his own budget"
        );
        assert_eq!(
            limiter.check_at(&alice, start + Duration::from_secs(10)),
            Ok(())
        );
        assert!(
            limiter
                .check_at(&alice, start + Duration::from_secs(10))
                .is_err()
        );
        assert!(RateLimiter::new(0).check(&alice).is_ok());
    }
}
