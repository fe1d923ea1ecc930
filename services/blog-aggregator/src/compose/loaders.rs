//! Batch loaders: every lookup of one kind made while answering one request becomes one
//! internal call, whatever the page size. They are created per request (their clients carry
//! the viewer's credential, from which the services take `following` and `liked`).
//!
//! Beneath them is the edge's [`ReadModel`]: what it holds is not asked for again, and what
//! the services answer fills it. A signed-in viewer's `following` and liked-by-viewer come
//! from the viewer's sets in the model (whom they follow, what they liked), asked for whole
//! when missing; while the model does not serve, from the services' answers as before.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
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

    /// Whom `viewer` follows: from the model, or asked for (and kept).
    pub async fn following(&self, viewer: &str) -> Result<ViewerSet, ApiError> {
        if let Some(set) = self.model.following_of(viewer) {
            return Ok(set);
        }
        let ticket = self.model.following_ticket();
        let ids = self
            .peers
            .users
            .clone()
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
            .likes
            .clone()
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

/// Public profiles by user id, with `following` for the viewer: `UserService.GetProfiles`.
pub struct ProfileLoader(pub LoaderContext);

impl Loader<String> for ProfileLoader {
    type Value = Profile;
    type Error = ApiError;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, Profile>, ApiError> {
        let context = &self.0;
        let modelled = context.modelled_viewer();
        let following = match modelled {
            Some(viewer) => Some(context.following(viewer).await?),
            None => None,
        };
        let (mut found, missing) = if context.viewer.is_none() || following.is_some() {
            context.model.profiles(ids)
        } else {
            (HashMap::new(), ids.to_vec())
        };
        if !missing.is_empty() {
            let ticket = context.model.profile_ticket();
            let profiles = context
                .peers
                .users
                .clone()
                .get_profiles(GetProfilesRequest { ids: missing })
                .await?
                .into_inner()
                .profiles;
            context.model.fill_profiles(ticket, &profiles);
            found.extend(profiles.into_iter().map(|p| (p.id.clone(), p)));
        }
        if let Some(following) = following {
            for profile in found.values_mut() {
                profile.following = following.contains(&profile.id);
            }
        }
        Ok(found)
    }
}

/// Like count and liked-by-viewer by post id: `LikeService.CountLikes`.
pub struct LikeLoader(pub LoaderContext);

impl Loader<String> for LikeLoader {
    type Value = LikeSummary;
    type Error = ApiError;

    async fn load(&self, post_ids: &[String]) -> Result<HashMap<String, LikeSummary>, ApiError> {
        let context = &self.0;
        let liked = match context.modelled_viewer() {
            Some(viewer) => Some(context.liked(viewer).await?),
            None => None,
        };
        let (counted, missing) = if context.viewer.is_none() || liked.is_some() {
            context.model.like_counts(post_ids)
        } else {
            (HashMap::new(), post_ids.to_vec())
        };
        let mut found: HashMap<String, LikeSummary> = counted
            .into_iter()
            .map(|(post_id, count)| {
                let summary = LikeSummary {
                    liked_by_viewer: liked.as_ref().is_some_and(|set| set.contains(&post_id)),
                    post_id: post_id.clone(),
                    count,
                };
                (post_id, summary)
            })
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let ticket = context.model.like_ticket();
        let summaries = context
            .peers
            .likes
            .clone()
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

impl Loader<String> for CommentCountLoader {
    type Value = u64;
    type Error = ApiError;

    async fn load(&self, post_ids: &[String]) -> Result<HashMap<String, u64>, ApiError> {
        let LoaderContext { peers, model, .. } = &self.0;
        // A count is the same for every viewer.
        let (mut found, missing) = model.comment_counts(post_ids);
        if missing.is_empty() {
            return Ok(found);
        }
        let ticket = model.comment_ticket();
        let mut counts = peers
            .comments
            .clone()
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
            let mut comments = self.peers.comments.clone();
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
