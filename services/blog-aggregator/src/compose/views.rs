//! Reads of posts, counted in memory and reported to post-service in one `RecordViews` call
//! per interval, so that a read is never a write: one view per read used to cost a call, a
//! transaction, an outbox row and an event.
//!
//! Views only feed trending. Counts of the current interval wait here while post-service is
//! unavailable (merged into the next report) and are reported once more when the edge
//! drains; a process killed outright loses at most one interval of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oba_kit::shutdown::CancellationToken;
use oba_proto::post::v1 as post_pb;

use crate::peers::PeerChannels;

/// Posts counted per interval at most: reads of further posts in the same interval are not
/// counted (memory stays bounded whatever is read).
const MAX_POSTS_PER_INTERVAL: usize = 10_000;
/// Posts per call (post-service's own limit).
const POSTS_PER_CALL: usize = 1_000;
/// How long one report may take.
const REPORT_BUDGET: Duration = Duration::from_secs(5);

/// Views counted since the last report, by post id.
#[derive(Clone, Default)]
pub struct ViewCounts {
    pending: Arc<Mutex<HashMap<String, u32>>>,
}

impl ViewCounts {
    /// Counts one read of `post_id`.
    pub fn record(&self, post_id: &str) {
        self.add(post_id, 1);
    }

    fn add(&self, post_id: &str, count: u32) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if let Some(counted) = pending.get_mut(post_id) {
            *counted = counted.saturating_add(count);
        } else if pending.len() < MAX_POSTS_PER_INTERVAL {
            pending.insert(post_id.to_owned(), count);
        }
    }

    fn take(&self) -> HashMap<String, u32> {
        self.pending
            .lock()
            .map(|mut pending| std::mem::take(&mut *pending))
            .unwrap_or_default()
    }

    /// Sends what was counted; what post-service could not take waits for the next report.
    async fn report(&self, peers: &PeerChannels) {
        let counted: Vec<post_pb::PostViews> = self
            .take()
            .into_iter()
            .map(|(post_id, count)| post_pb::PostViews { post_id, count })
            .collect();
        for chunk in counted.chunks(POSTS_PER_CALL) {
            let request = post_pb::RecordViewsRequest {
                posts: chunk.to_vec(),
            };
            let mut posts = peers
                .as_service(Some(Instant::now() + REPORT_BUDGET))
                .posts();
            if let Err(status) = posts.record_views(request).await {
                tracing::warn!(%status, posts = chunk.len(), "views not reported; kept for the next report");
                for views in chunk {
                    self.add(&views.post_id, views.count);
                }
            }
        }
    }
}

/// Reports the views `peers` counted every `interval` until `shutdown`, then once more.
pub async fn report_every(peers: PeerChannels, interval: Duration, shutdown: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            () = shutdown.cancelled() => true,
        };
        peers.views().report(&peers).await;
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_of_a_post_add_up_and_a_report_takes_them_all() {
        let views = ViewCounts::default();
        for _ in 0..3 {
            views.record("a");
        }
        views.record("b");
        let taken = views.take();
        assert_eq!(taken.get("a"), Some(&3));
        assert_eq!(taken.get("b"), Some(&1));
        assert!(views.take().is_empty(), "each read reported once");
    }

    #[test]
    fn an_interval_counts_a_bounded_number_of_posts() {
        let views = ViewCounts::default();
        for i in 0..MAX_POSTS_PER_INTERVAL + 10 {
            views.record(&i.to_string());
        }
        views.record("0");
        let taken = views.take();
        assert_eq!(taken.len(), MAX_POSTS_PER_INTERVAL);
        assert_eq!(
            taken.get("0"),
            Some(&2),
            "posts already counted still count"
        );
    }
}
