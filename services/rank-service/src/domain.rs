//! The trending formula, free of I/O.
//!
//! score = (3·likes + 2·comments + 0.2·views + 1) / (age_hours + 2)^1.5
//!
//! Engagement counts for more the fresher the post: the denominator is Hacker News' gravity
//! decay, so a day-old post needs (26/2)^1.5 ≈ 47× the engagement of a new one to rank
//! alike. The `+ 1` lets brand-new posts appear at all (newest first among equals). Likes
//! weigh most, comments less, views least: views are the cheapest to inflate.

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
    fn negative_counters_count_as_zero() {
        assert_eq!(
            trending_score(e(-3, -1, -2), 0.0),
            trending_score(e(0, 0, 0), 0.0)
        );
    }
}
