//! Bounds on live subscriptions, so that one client cannot hold the edge's (and
//! notification-service's) resources: at most so many per WebSocket connection, per user
//! and in all. Each open subscription holds a [`LivePermit`]; dropping it (the subscription
//! ends) frees the slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use oba_kit::ErrorCode;
use uuid::Uuid;

use super::ApiError;

/// The configured caps.
#[derive(Debug, Clone, Copy)]
pub struct LiveCaps {
    pub per_connection: usize,
    pub per_user: usize,
    pub total: usize,
}

/// Open subscriptions of this edge, by user.
pub struct LiveLimits {
    caps: LiveCaps,
    by_user: Mutex<HashMap<Uuid, usize>>,
    total: AtomicUsize,
}

impl LiveLimits {
    pub fn new(caps: LiveCaps) -> Arc<Self> {
        Arc::new(Self {
            caps,
            by_user: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
        })
    }

    /// A slot for one more subscription of `user` on the connection counted by `connection`.
    pub fn open(
        self: &Arc<Self>,
        user: Uuid,
        connection: &Arc<AtomicUsize>,
    ) -> Result<LivePermit, ApiError> {
        let refuse = |what: &str, cap: usize| {
            let mut err = ApiError::new(
                ErrorCode::TooManyRequests,
                format!("at most {cap} live subscriptions {what}"),
            );
            err.retry_after_secs = Some(1);
            err
        };
        let mut by_user = self
            .by_user
            .lock()
            .map_err(|_| ApiError::new(ErrorCode::Internal, "internal error"))?;
        if connection.load(Ordering::SeqCst) >= self.caps.per_connection {
            return Err(refuse("per connection", self.caps.per_connection));
        }
        let mine = by_user.entry(user).or_insert(0);
        if *mine >= self.caps.per_user {
            return Err(refuse("per user", self.caps.per_user));
        }
        if self.total.load(Ordering::SeqCst) >= self.caps.total {
            return Err(refuse("on this server", self.caps.total));
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        connection.fetch_add(1, Ordering::SeqCst);
        Ok(LivePermit {
            limits: self.clone(),
            user,
            connection: connection.clone(),
        })
    }
}

/// One open subscription; frees its slot when dropped.
pub struct LivePermit {
    limits: Arc<LiveLimits>,
    user: Uuid,
    connection: Arc<AtomicUsize>,
}

impl Drop for LivePermit {
    fn drop(&mut self) {
        self.connection.fetch_sub(1, Ordering::SeqCst);
        self.limits.total.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut by_user) = self.limits.by_user.lock()
            && let Some(n) = by_user.get_mut(&self.user)
        {
            *n -= 1;
            if *n == 0 {
                by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_connection_user_and_total_and_freed_on_drop() {
        let limits = LiveLimits::new(LiveCaps {
            per_connection: 2,
            per_user: 3,
            total: 4,
        });
        let (alice, bob, carol) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (c1, c2, c3) = (Arc::default(), Arc::default(), Arc::default());
        let a1 = limits.open(alice, &c1).expect("1st");
        let _a2 = limits.open(alice, &c1).expect("2nd");
        assert!(limits.open(alice, &c1).is_err(), "per connection");
        let _a3 = limits.open(alice, &c2).expect("3rd, other connection");
        assert!(limits.open(alice, &c2).is_err(), "per user");
        let _b1 = limits.open(bob, &c3).expect("bob");
        let err = limits.open(carol, &c3).err().expect("total");
        assert_eq!(err.code, ErrorCode::TooManyRequests);
        drop(a1);
        limits.open(carol, &c3).expect("a slot was freed");
    }
}
