//! Batch loaders: every lookup of one kind made while answering one request becomes one
//! internal call, whatever the page size. They are created per request (their clients carry
//! the viewer's credential, from which the services take `following` and `liked`), and
//! cache nothing, so a write in the same request is never hidden.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use oba_proto::comment::v1::{CommentPage, CountCommentsRequest, ListFirstCommentsRequest};
use oba_proto::like::v1::{CountLikesRequest, LikeSummary};
use oba_proto::user::v1::{GetProfilesRequest, Profile};

use super::error::ApiError;
use crate::peers::Peers;

/// Public profiles by user id, with `following` for the viewer: `UserService.GetProfiles`.
pub struct ProfileLoader {
    pub peers: Peers,
}

impl Loader<String> for ProfileLoader {
    type Value = Profile;
    type Error = ApiError;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, Profile>, ApiError> {
        let response = self
            .peers
            .users
            .clone()
            .get_profiles(GetProfilesRequest { ids: ids.to_vec() })
            .await?;
        Ok(response
            .into_inner()
            .profiles
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect())
    }
}

/// Like count and liked-by-viewer by post id: `LikeService.CountLikes`.
pub struct LikeLoader {
    pub peers: Peers,
}

impl Loader<String> for LikeLoader {
    type Value = LikeSummary;
    type Error = ApiError;

    async fn load(&self, post_ids: &[String]) -> Result<HashMap<String, LikeSummary>, ApiError> {
        let response = self
            .peers
            .likes
            .clone()
            .count_likes(CountLikesRequest {
                post_ids: post_ids.to_vec(),
            })
            .await?;
        Ok(response
            .into_inner()
            .summaries
            .into_iter()
            .map(|s| (s.post_id.clone(), s))
            .collect())
    }
}

/// Comment count by post id: `CommentService.CountComments`.
pub struct CommentCountLoader {
    pub peers: Peers,
}

impl Loader<String> for CommentCountLoader {
    type Value = u64;
    type Error = ApiError;

    async fn load(&self, post_ids: &[String]) -> Result<HashMap<String, u64>, ApiError> {
        let response = self
            .peers
            .comments
            .clone()
            .count_comments(CountCommentsRequest {
                post_ids: post_ids.to_vec(),
            })
            .await?;
        let mut counts = response.into_inner().counts;
        // The service leaves out posts without comments; caching their zero saves a call.
        for id in post_ids {
            counts.entry(id.clone()).or_insert(0);
        }
        Ok(counts)
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
