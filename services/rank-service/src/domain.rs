//! The trending formula, free of I/O.
//!
//! score = (3·likes + 2·comments + 0.2·views + 1) / (age_hours + 2)^1.5
//!
//! Engagement counts for more the fresher the post: the denominator is Hacker News' gravity
//! decay, so a day-old post needs (26/2)^1.5 ≈ 47× the engagement of a new one to rank
//! alike. The `+ 1` lets brand-new posts appear at all (newest first among equals). Likes
//! weigh most, comments less, views least: views are the cheapest to inflate.
//!
//! Also how a batch of events' counter changes sum up per post ([`EngagementChanges`]).

use std::collections::BTreeMap;

use uuid::Uuid;

pub const LIKE_WEIGHT: f64 = 3.0;
pub const COMMENT_WEIGHT: f64 = 2.0;
pub const VIEW_WEIGHT: f64 = 0.2;
pub const GRAVITY: f64 = 1.5;

/// Counters of one post, as projected from events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Engagement {
    pub likes: i64,
    pub comments: i64,
    pub views: i64,
}

/// Which counter an event moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Likes,
    Comments,
    Views,
}

/// Counter changes of a batch of events, summed per post, so that the batch is written as
/// one row per post. Ordered by post id: replicas writing batches in the same order of rows
/// cannot deadlock on them.
#[derive(Debug, Default)]
pub struct EngagementChanges {
    by_post: BTreeMap<Uuid, Engagement>,
}

impl EngagementChanges {
    pub fn add(&mut self, post: Uuid, counter: Counter, delta: i64) {
        let e = self.by_post.entry(post).or_default();
        match counter {
            Counter::Likes => e.likes += delta,
            Counter::Comments => e.comments += delta,
            Counter::Views => e.views += delta,
        }
    }

    /// A deleted post's row is gone: changes heard before its deletion go with it.
    pub fn forget(&mut self, post: Uuid) {
        self.by_post.remove(&post);
    }

    /// The posts whose counters change, with their changes; changes that cancel out (a like
    /// and its unlike) are left out.
    pub fn iter(&self) -> impl Iterator<Item = (Uuid, Engagement)> + '_ {
        self.by_post
            .iter()
            .filter(|(_, e)| **e != Engagement::default())
            .map(|(post, e)| (*post, *e))
    }
}

pub fn trending_score(e: Engagement, age_hours: f64) -> f64 {
    let weight = LIKE_WEIGHT * e.likes.max(0) as f64
        + COMMENT_WEIGHT * e.comments.max(0) as f64
        + VIEW_WEIGHT * e.views.max(0) as f64
        + 1.0;
    weight / (age_hours.max(0.0) + 2.0).powf(GRAVITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(likes: i64, comments: i64, views: i64) -> Engagement {
        Engagement {
            likes,
            comments,
            views,
        }
    }

    #[test]
    fn engagement_raises_the_score() {
        let base = trending_score(e(0, 0, 0), 1.0);
        assert!(trending_score(e(1, 0, 0), 1.0) > trending_score(e(0, 1, 0), 1.0));
        assert!(trending_score(e(0, 1, 0), 1.0) > trending_score(e(0, 0, 1), 1.0));
        assert!(trending_score(e(0, 0, 1), 1.0) > base);
    }

    #[test]
    fn scores_decay_with_age() {
        let fresh = trending_score(e(5, 0, 0), 0.0);
        let day_old = trending_score(e(5, 0, 0), 24.0);
        let expected = (26.0_f64 / 2.0).powf(GRAVITY);
        assert!(
            (fresh / day_old - expected).abs() < 1e-9,
            "{fresh} vs {day_old}"
        );
        assert!(expected > 46.0 && expected < 47.0);
    }

    #[test]
    fn changes_are_summed_per_post_and_counter_in_post_order() {
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        let mut changes = EngagementChanges::default();
        changes.add(second, Counter::Likes, 1);
        changes.add(first, Counter::Views, 4);
        changes.add(second, Counter::Likes, 1);
        changes.add(second, Counter::Comments, -1);
        assert_eq!(
            changes.iter().collect::<Vec<_>>(),
            [(first, e(0, 0, 4)), (second, e(2, -1, 0))]
        );
    }

    #[test]
    fn a_like_and_its_unlike_in_one_batch_change_nothing() {
        let post = Uuid::now_v7();
        let mut changes = EngagementChanges::default();
        changes.add(post, Counter::Likes, 1);
        changes.add(post, Counter::Likes, -1);
        assert_eq!(changes.iter().count(), 0);
    }

    #[test]
    fn changes_heard_before_a_post_was_deleted_are_forgotten() {
        let (deleted, kept) = (Uuid::now_v7(), Uuid::now_v7());
        let mut changes = EngagementChanges::default();
        changes.add(deleted, Counter::Likes, 1);
        changes.add(kept, Counter::Likes, 1);
        changes.forget(deleted);
        assert_eq!(changes.iter().collect::<Vec<_>>(), [(kept, e(1, 0, 0))]);
    }

    #[test]
    fn negative_counters_count_as_zero() {
        assert_eq!(
            trending_score(e(-3, -1, -2), 0.0),
            trending_score(e(0, 0, 0), 0.0)
        );
    }
}
