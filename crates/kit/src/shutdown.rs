//! Graceful shutdown.
//!
//! One [`CancellationToken`] is the shutdown signal of a whole process: SIGINT or SIGTERM
//! cancels it, every server stops accepting connections when it is cancelled and finishes
//! the requests in flight before its task returns; `main` waits for all of them and exits 0.
//! Tests cancel the same token to stop a system they started.

use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// The clock of background work done every `period` until shutdown: the first tick comes at
/// once, and a late tick delays the next rather than bunching them.
pub struct Ticks(tokio::time::Interval);

impl Ticks {
    pub fn every(period: Duration) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self(interval)
    }

    /// Waits for the next tick: true when it comes, false once `shutdown` is cancelled.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            () = shutdown.cancelled() => false,
            _ = self.0.tick() => true,
        }
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received, draining in-flight requests");
        token.cancel();
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_come_every_period_until_shutdown() {
        let shutdown = CancellationToken::new();
        let mut ticks = Ticks::every(Duration::from_millis(250));
        let start = tokio::time::Instant::now();
        assert!(ticks.next(&shutdown).await);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first tick comes at once"
        );
        assert!(ticks.next(&shutdown).await);
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        shutdown.cancel();
        assert!(!ticks.next(&shutdown).await);
    }
}
