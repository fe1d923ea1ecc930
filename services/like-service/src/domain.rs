//! The rules of likes, free of I/O: how stored counts become per-post summaries.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

/// A post's like count and whether the viewer is among the likers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LikeCounts {
    pub post_id: Uuid,
    pub count: u64,
    pub liked_by_viewer: bool,
}

/// One summary per asked post, in the order asked; a post nobody liked counts zero.
pub fn summarize(
    asked: &[Uuid],
    counts: &HashMap<Uuid, u64>,
    liked: &HashSet<Uuid>,
) -> Vec<LikeCounts> {
    let mut seen = HashSet::new();
    asked
        .iter()
        .filter(|id| seen.insert(**id))
        .map(|id| LikeCounts {
            post_id: *id,
            count: counts.get(id).copied().unwrap_or(0),
            liked_by_viewer: liked.contains(id),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asked_post_gets_a_summary_once() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let counts = HashMap::from([(a, 3)]);
        let liked = HashSet::from([a]);
        let summaries = summarize(&[b, a, b], &counts, &liked);
        assert_eq!(
            summaries,
            vec![
                LikeCounts {
                    post_id: b,
                    count: 0,
                    liked_by_viewer: false
                },
                LikeCounts {
                    post_id: a,
                    count: 3,
                    liked_by_viewer: true
                },
            ]
        );
    }
}
