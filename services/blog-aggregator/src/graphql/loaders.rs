//! Batch loaders: every lookup of the same kind made while resolving one request becomes
//! one internal call, whatever the page size.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use oba_proto::user::v1::{GetProfilesRequest, Profile};

use super::error::from_status;
use crate::peers::Peers;

/// Public profiles by user id, through `UserService.GetProfiles`.
pub struct ProfileLoader {
    peers: Peers,
}

impl ProfileLoader {
    pub fn new(peers: Peers) -> Self {
        Self { peers }
    }
}

impl Loader<String> for ProfileLoader {
    type Value = Profile;
    type Error = async_graphql::Error;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, Profile>, Self::Error> {
        let response = self
            .peers
            .users
            .clone()
            .get_profiles(GetProfilesRequest { ids: ids.to_vec() })
            .await
            .map_err(|s| from_status(&s))?;
        Ok(response
            .into_inner()
            .profiles
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect())
    }
}
