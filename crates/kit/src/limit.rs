//! Rate limits keyed by who asks (a client address, an account): a thin layer over
//! `governor`'s GCRA limiter that answers in oba's error and bounds its own memory.

use std::hash::Hash;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ServiceError;

/// Keys remembered before idle ones are forgotten: a flood of new keys costs bounded memory.
const MAX_KEYS: usize = 100_000;

/// At most `per_minute` events per key and minute, all of them allowed at once.
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    what: &'static str,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `what` names the limited thing in the refusal, e.g. "sign-in attempts from this address".
    pub fn per_minute(per_minute: NonZeroU32, what: &'static str) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            what,
        }
    }

    /// Counts one event of `key`; TOO_MANY_REQUESTS (with when to retry) over the limit.
    pub fn check(&self, key: &K) -> Result<(), ServiceError> {
        if self.limiter.len() > MAX_KEYS {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ServiceError::TooManyRequests {
                message: format!("too many {}; try again later", self.what),
                retry_after_secs: wait.as_secs().max(1),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_limit_is_refused_and_others_are_not() {
        let limit = KeyedLimit::per_minute(NonZeroU32::new(3).expect("3"), "attempts");
        for _ in 0..3 {
            assert!(limit.check(&"alice").is_ok());
        }
        match limit.check(&"alice") {
            Err(ServiceError::TooManyRequests {
                retry_after_secs, ..
            }) => assert!((1..=60).contains(&retry_after_secs)),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(limit.check(&"bob").is_ok());
    }
}
