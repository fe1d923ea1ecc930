//! Batch loaders: every lookup of one kind made while answering one request becomes one
//! internal call, whatever the page size. They are created per request (their clients carry
//! the viewer's credential, from which the services take `following` and `liked`), and
//! cache nothing, so a write in the same request is never hidden.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use oba_proto::comment::v1::CountCommentsRequest;
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
