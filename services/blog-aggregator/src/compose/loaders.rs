//! Batch loaders: every lookup of one kind made while answering one request becomes one
//! internal call, whatever the page size. They are created per request (their clients carry
//! the viewer's credential, from which the services take `following` and `liked`).
//!
//! Beneath them is the edge's [`ReadModel`]: what it holds is not asked for again, and what
//! the services answer fills it. A signed-in viewer's `following` and liked-by-viewer come
//! from the viewer's sets in the model (whom they follow, what they liked), asked for whole
//! when missing; while the model does not serve, from the services' answers as before.
//!
//! A DataLoader waits a millisecond before each batch (a timer on a thread of its own), so
//! that lookups made together are asked together. What the model already holds needs no
//! batch: [`ModelledLoader`] answers it at once, and only the rest waits for the batch.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use oba_proto::comment::v1::{CommentPage, CountCommentsRequest, ListFirstCommentsRequest};
use oba_proto::like::v1::{CountLikesRequest, LikeSummary, ListLikedPostsRequest};
use oba_proto::user::v1::{GetProfilesRequest, ListFollowingRequest, Profile};

use super::error::ApiError;
use super::read_model::{ReadModel, ViewerSet};
use crate::peers::Peers;

/// What a loader needs besides its clients: the read model, and who the viewer is.
#[derive(Clone)]
pub struct LoaderContext {
    pub peers: Peers,
    pub model: Arc<ReadModel>,
    /// The signed-in viewer's user id; None when anonymous.
    pub viewer: Option<String>,
}

impl LoaderContext {
    /// The signed-in viewer, when the model can answer for them.
    pub fn modelled_viewer(&self) -> Option<&str> {
        self.viewer.as_deref().filter(|_| self.model.serving())
    }

    /// The viewer's set (`set_of`) for answering from the model now: `Some(None)` for an
    /// anonymous viewer, `Some(Some(set))` for a signed-in one whose set the model holds;
    /// None when the model cannot answer for this viewer (no set, or it does not serve).
    fn modelled_set(
        &self,
        set_of: impl Fn(&ReadModel, &str) -> Option<ViewerSet>,
    ) -> Option<Option<ViewerSet>> {
        match (&self.viewer, self.modelled_viewer()) {
            (None, _) => Some(None),
            (Some(_), Some(viewer)) => set_of(&self.model, viewer).map(Some),
            (Some(_), None) => None,
        }
    }

    /// Whom `viewer` follows: from the model, or asked for (and kept).
    pub async fn following(&self, viewer: &str) -> Result<ViewerSet, ApiError> {
        if let Some(set) = self.model.following_of(viewer) {
            return Ok(set);
        }
        let ticket = self.model.following_ticket();
        let ids = self
            .peers
            .users()
            .list_following(ListFollowingRequest {})
            .await?
            .into_inner()
            .ids;
        let set: ViewerSet = Arc::new(ids.into_iter().collect());
        self.model.fill_following(ticket, viewer, &set);
        Ok(set)
    }

    /// Which posts `viewer` liked: from the model, or asked for (and kept).
    async fn liked(&self, viewer: &str) -> Result<ViewerSet, ApiError> {
        if let Some(set) = self.model.liked_by(viewer) {
            return Ok(set);
        }
        let ticket = self.model.liked_ticket();
        let ids = self
            .peers
            .likes()
            .list_liked_posts(ListLikedPostsRequest {
                user_id: viewer.to_owned(),
            })
            .await?
            .into_inner()
            .ids;
        let set: ViewerSet = Arc::new(ids.into_iter().collect());
        self.model.fill_liked(ticket, viewer, &set);
        Ok(set)
    }
}

/// What the read model can answer for a loader now, without a call: the keys it holds.
pub trait Modelled: Loader<String> {
    fn modelled(&self, keys: &[String]) -> HashMap<String, Self::Value>;
}

/// A per-request batch loader that answers from the read model first: only keys the model
/// does not hold wait for DataLoader's batch (and its delay), and are asked for together.
pub struct ModelledLoader<L: Modelled>(DataLoader<L, HashMapCache>);

impl<L: Modelled> ModelledLoader<L> {
    pub fn new(loader: L) -> Self {
        Self(super::cached(loader))
    }

    pub async fn load_many(
        &self,
        keys: impl IntoIterator<Item = String>,
    ) -> Result<HashMap<String, L::Value>, L::Error> {
        let keys: Vec<String> = keys.into_iter().collect();
        let known = self.0.loader().modelled(&keys);
        if keys.iter().all(|key| known.contains_key(key)) {
            return Ok(known);
        }
        // Kept for the request, so that the batch asks for the rest only.
        self.0.feed_many(known).await;
        self.0.load_many(keys).await
    }

    pub async fn load_one(&self, key: String) -> Result<Option<L::Value>, L::Error> {
        let mut found = self.load_many([key.clone()]).await?;
        Ok(found.remove(&key))
    }

    /// Answers `key` with `value` for the rest of the request (e.g. a write's own result).
    pub async fn feed_one(&self, key: String, value: L::Value) {
        self.0.feed_one(key, value).await;
    }

    /// Forgets what this request's loader was told or asked.
    pub fn clear(&self) {
        self.0.clear::<String>();
    }
}

/// Public profiles by user id, with `following` for the viewer: `UserService.GetProfiles`.
pub struct ProfileLoader(pub LoaderContext);

impl ProfileLoader {
    /// Profiles the model holds, with `following` from the viewer's set when signed in.
    fn held_in_model(
        &self,
        ids: &[String],
        following: Option<&ViewerSet>,
    ) -> (HashMap<String, Profile>, Vec<String>) {
        let (mut found, missing) = self.0.model.profiles(ids);
        if let Some(following) = following {
            for profile in found.values_mut() {
                profile.following = following.contains(&profile.id);
            }
        }
        (found, missing)
    }
}

impl Modelled for ProfileLoader {
    fn modelled(&self, ids: &[String]) -> HashMap<String, Profile> {
        match self.0.modelled_set(ReadModel::following_of) {
            Some(following) => self.held_in_model(ids, following.as_ref()).0,
            None => HashMap::new(),
        }
    }
}

impl Loader<String> for ProfileLoader {
    type Value = Profile;
    type Error = ApiError;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, Profile>, ApiError> {
        let context = &self.0;
        let following = match context.modelled_viewer() {
            Some(viewer) => Some(context.following(viewer).await?),
            None => None,
        };
        let (mut found, missing) = if context.viewer.is_none() || following.is_some() {
            self.held_in_model(ids, following.as_ref())
        } else {
            (HashMap::new(), ids.to_vec())
        };
        if !missing.is_empty() {
            let ticket = context.model.profile_ticket();
            let mut profiles = context
                .peers
                .users()
                .get_profiles(GetProfilesRequest { ids: missing })
                .await?
                .into_inner()
                .profiles;
            context.model.fill_profiles(ticket, &profiles);
            if let Some(following) = &following {
                for profile in &mut profiles {
                    profile.following = following.contains(&profile.id);
                }
            }
            found.extend(profiles.into_iter().map(|p| (p.id.clone(), p)));
        }
        Ok(found)
    }
}

/// Like count and liked-by-viewer by post id: `LikeService.CountLikes`.
pub struct LikeLoader(pub LoaderContext);

impl LikeLoader {
    /// Like counts the model holds, with liked-by-viewer from the viewer's set.
    fn held_in_model(
        &self,
        post_ids: &[String],
        liked: Option<&ViewerSet>,
    ) -> (HashMap<String, LikeSummary>, Vec<String>) {
        let (counted, missing) = self.0.model.like_counts(post_ids);
        let found = counted
            .into_iter()
            .map(|(post_id, count)| {
                let summary = LikeSummary {
                    liked_by_viewer: liked.is_some_and(|set| set.contains(&post_id)),
                    post_id: post_id.clone(),
                    count,
                };
                (post_id, summary)
            })
            .collect();
        (found, missing)
    }
}

impl Modelled for LikeLoader {
    fn modelled(&self, post_ids: &[String]) -> HashMap<String, LikeSummary> {
        match self.0.modelled_set(ReadModel::liked_by) {
            Some(liked) => self.held_in_model(post_ids, liked.as_ref()).0,
            None => HashMap::new(),
        }
    }
}

impl Loader<String> for LikeLoader {
    type Value = LikeSummary;
    type Error = ApiError;

    async fn load(&self, post_ids: &[String]) -> Result<HashMap<String, LikeSummary>, ApiError> {
        let context = &self.0;
        let liked = match context.modelled_viewer() {
            Some(viewer) => Some(context.liked(viewer).await?),
            None => None,
        };
        let (mut found, missing) = if context.viewer.is_none() || liked.is_some() {
            self.held_in_model(post_ids, liked.as_ref())
        } else {
            (HashMap::new(), post_ids.to_vec())
        };
        if missing.is_empty() {
            return Ok(found);
        }
        let ticket = context.model.like_ticket();
        let summaries = context
            .peers
            .likes()
            .count_likes(CountLikesRequest { post_ids: missing })
            .await?
            .into_inner()
            .summaries;
        context.model.fill_like_counts(
            ticket,
            summaries.iter().map(|s| (s.post_id.clone(), s.count)),
        );
        found.extend(summaries.into_iter().map(|s| (s.post_id.clone(), s)));
        Ok(found)
    }
}

/// Comment count by post id: `CommentService.CountComments`.
pub struct CommentCountLoader(pub LoaderContext);

impl Modelled for CommentCountLoader {
    fn modelled(&self, post_ids: &[String]) -> HashMap<String, u64> {
        // A count is the same for every viewer.
        self.0.model.comment_counts(post_ids).0
    }
}

impl Loader<String> for CommentCountLoader {
    type Value = u64;
    type Error = ApiError;

    async fn load(&self, post_ids: &[String]) -> Result<HashMap<String, u64>, ApiError> {
        let LoaderContext { peers, model, .. } = &self.0;
        let (mut found, missing) = model.comment_counts(post_ids);
        if missing.is_empty() {
            return Ok(found);
        }
        let ticket = model.comment_ticket();
        let mut counts = peers
            .comments()
            .count_comments(CountCommentsRequest {
                post_ids: missing.clone(),
            })
            .await?
            .into_inner()
            .counts;
        // The service leaves out posts without comments; keeping their zero saves a call.
        for id in missing {
            counts.entry(id).or_insert(0);
        }
        model.fill_comment_counts(ticket, counts.iter().map(|(id, n)| (id.clone(), *n)));
        found.extend(counts);
        Ok(found)
    }
}

/// The first page of comments of a post, by `"<first>:<post id>"`: `ListFirstComments`, one
/// call per distinct page size.
pub struct FirstCommentsLoader {
    pub peers: Peers,
}

/// The key of a post's first `first` comments.
pub fn first_comments_key(first: u32, post_id: &str) -> String {
    format!("{first}:{post_id}")
}

impl Loader<String> for FirstCommentsLoader {
    type Value = CommentPage;
    type Error = ApiError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, CommentPage>, ApiError> {
        let mut by_size: HashMap<u32, Vec<String>> = HashMap::new();
        for key in keys {
            if let Some((first, post_id)) = key.split_once(':')
                && let Ok(first) = first.parse()
            {
                by_size.entry(first).or_default().push(post_id.to_owned());
            }
        }
        let calls = by_size.into_iter().map(|(first, post_ids)| {
            let mut comments = self.peers.comments();
            async move {
                let pages = comments
                    .list_first_comments(ListFirstCommentsRequest { post_ids, first })
                    .await?
                    .into_inner()
                    .pages;
                Ok::<_, ApiError>(
                    pages
                        .into_iter()
                        .map(move |(post_id, page)| (first_comments_key(first, &post_id), page))
                        .collect::<Vec<_>>(),
                )
            }
        });
        let mut found = HashMap::new();
        for pages in futures::future::try_join_all(calls).await? {
            found.extend(pages);
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Holds even numbers; records which keys a batch asked for.
    #[derive(Default)]
    struct EvensModelled {
        asked: Arc<Mutex<Vec<Vec<String>>>>,
    }

    impl Loader<String> for EvensModelled {
        type Value = String;
        type Error = ApiError;

        async fn load(&self, keys: &[String]) -> Result<HashMap<String, String>, ApiError> {
            let mut asked = keys.to_vec();
            asked.sort();
            self.asked.lock().expect("lock").push(asked);
            Ok(keys
                .iter()
                .map(|k| (k.clone(), format!("asked {k}")))
                .collect())
        }
    }

    impl Modelled for EvensModelled {
        fn modelled(&self, keys: &[String]) -> HashMap<String, String> {
            keys.iter()
                .filter(|k| k.parse::<u32>().is_ok_and(|n| n % 2 == 0))
                .map(|k| (k.clone(), format!("modelled {k}")))
                .collect()
        }
    }

    fn keys(ns: &[u32]) -> Vec<String> {
        ns.iter().map(u32::to_string).collect()
    }

    #[tokio::test]
    async fn what_the_model_holds_is_answered_without_a_batch() {
        let asked = Arc::default();
        let loader = ModelledLoader::new(EvensModelled {
            asked: Arc::clone(&asked),
        });
        let found = loader.load_many(keys(&[2, 4])).await.expect("load");
        assert_eq!(found.get("4").map(String::as_str), Some("modelled 4"));
        assert_eq!(found.len(), 2);
        assert!(asked.lock().expect("lock").is_empty());
        assert_eq!(
            loader.load_one("6".into()).await.expect("load").as_deref(),
            Some("modelled 6")
        );
        assert!(asked.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn only_what_the_model_lacks_is_asked_for_in_one_batch() {
        let asked = Arc::default();
        let loader = ModelledLoader::new(EvensModelled {
            asked: Arc::clone(&asked),
        });
        let found = loader.load_many(keys(&[1, 2, 3, 4])).await.expect("load");
        assert_eq!(found.get("2").map(String::as_str), Some("modelled 2"));
        assert_eq!(found.get("3").map(String::as_str), Some("asked 3"));
        assert_eq!(found.len(), 4);
        assert_eq!(*asked.lock().expect("lock"), vec![keys(&[1, 3])]);
    }

    #[tokio::test]
    async fn a_fed_answer_is_kept_for_the_request() {
        let asked = Arc::default();
        let loader = ModelledLoader::new(EvensModelled {
            asked: Arc::clone(&asked),
        });
        loader.feed_one("5".into(), "written 5".into()).await;
        let found = loader.load_one("5".into()).await.expect("load");
        assert_eq!(found.as_deref(), Some("written 5"));
        loader.clear();
        let found = loader.load_one("5".into()).await.expect("load");
        assert_eq!(found.as_deref(), Some("asked 5"));
        assert_eq!(*asked.lock().expect("lock"), vec![keys(&[5])]);
    }
}
