//! Sign-in attempts per account, counted in user-service's database so that every replica
//! shares one limit (an in-memory count would give an attacker N× the tries with N
//! replicas behind a balancing edge).
//!
//! A fixed one-minute window per email: the first attempt opens it, each one counts, and
//! the first attempt after it closed opens a new one. Expired windows are deleted about once
//! a minute, so the table holds at most the emails tried in the last minute or two.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use oba_kit::ServiceError;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection};

/// The length of one counting window.
const WINDOW_SECS: i64 = 60;

#[derive(Clone)]
pub struct SignInAttempts {
    db: DatabaseConnection,
    per_window: NonZeroU32,
    /// When this replica last deleted expired windows (Unix seconds).
    last_purge: Arc<AtomicI64>,
}

impl SignInAttempts {
    pub fn new(db: DatabaseConnection, per_minute: NonZeroU32) -> Self {
        Self {
            db,
            per_window: per_minute,
            last_purge: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Counts one attempt for `email`; TOO_MANY_REQUESTS (with when to retry) over the limit.
    pub async fn count(&self, email: &str) -> Result<(), ServiceError> {
        let now = chrono::Utc::now().timestamp();
        self.purge_expired(now).await?;
        let table = Alias::new("sign_in_attempts");
        let (email_col, started_col, attempts_col) = (
            Alias::new("email"),
            Alias::new("window_started_at"),
            Alias::new("attempts"),
        );
        let started = Expr::col((table.clone(), started_col.clone()));
        let expired = started.clone().lte(now - WINDOW_SECS);
        // One statement, so that concurrent attempts on any replica each count exactly once.
        let upsert = Query::insert()
            .into_table(table.clone())
            .columns([email_col.clone(), started_col.clone(), attempts_col.clone()])
            .values_panic([email.into(), now.into(), 1i32.into()])
            .on_conflict(
                OnConflict::column(email_col)
                    .value(
                        attempts_col.clone(),
                        Expr::case(expired.clone(), 1i32)
                            .finally(Expr::col((table.clone(), attempts_col.clone())).add(1i32)),
                    )
                    .value(
                        started_col.clone(),
                        Expr::case(expired, now).finally(started),
                    )
                    .to_owned(),
            )
            .returning(Query::returning().columns([started_col, attempts_col]))
            .to_owned();
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(backend.build(&upsert))
            .await?
            .ok_or_else(|| ServiceError::Internal("sign-in count returned no row".into()))?;
        let attempts: i32 = row.try_get("", "attempts")?;
        let started: i64 = row.try_get("", "window_started_at")?;
        if u32::try_from(attempts).unwrap_or(u32::MAX) > self.per_window.get() {
            return Err(ServiceError::TooManyRequests {
                message: "too many sign-in attempts for this account; try again later".into(),
                retry_after_secs: Ord::max(
                    u64::try_from(started + WINDOW_SECS - now).unwrap_or(1),
                    1,
                ),
            });
        }
        Ok(())
    }

    /// Deletes windows that closed, at most once per window on this replica.
    async fn purge_expired(&self, now: i64) -> Result<(), ServiceError> {
        let last = self.last_purge.load(Ordering::Relaxed);
        if now - last < WINDOW_SECS
            || self
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        let delete = Query::delete()
            .from_table(Alias::new("sign_in_attempts"))
            .and_where(Expr::col(Alias::new("window_started_at")).lte(now - WINDOW_SECS))
            .to_owned();
        let backend = self.db.get_database_backend();
        self.db.execute_raw(backend.build(&delete)).await?;
        Ok(())
    }
}
