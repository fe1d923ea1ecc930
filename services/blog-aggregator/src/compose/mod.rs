//! API composition: the blog as one caller sees it, assembled from the internal services.
//!
//! [`BlogApi`] is created once per request with the caller's [`Viewer`]. The GraphQL and REST
//! adapters are thin layers over it, so both get the same rules and the same batching:
//! per-post facts (author, likes, comment count) go through request-scoped loaders with a
//! request-scoped cache (cleared by every write), a page fetches them up front in one call
//! per service, and independent lookups run concurrently.
//!
//! Facts are essential or optional. Posts, their authors, profiles and comments are
//! essential: without them there is no answer, and their source being down fails the
//! request with UNAVAILABLE. Like counts, liked-by-me, comment counts and trending are
//! optional: when their source is unavailable the answer goes out without them (GraphQL
//! `null`, REST defaults) and the source is recorded in [`Degraded`], which the adapters
//! report once per source (a GraphQL error naming the service, REST's `Oba-Degraded`).

pub mod error;
pub mod live;
pub mod loaders;
pub mod read_model;
pub mod views;

use std::time::Duration;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use futures::future::join_all;
use oba_kit::ErrorCode;
use oba_kit::auth::Actor;
use oba_proto::comment::v1 as comment_pb;
use oba_proto::common::v1::{Empty, IdSet};
use oba_proto::like::v1 as like_pb;
use oba_proto::notification::v1 as notification_pb;
use oba_proto::post::v1 as post_pb;
use oba_proto::rank::v1 as rank_pb;
use oba_proto::user::v1 as user_pb;
use tonic::transport::Channel;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::client::Client;
use crate::peers::{PeerChannels, Peers};
use crate::viewer::Viewer;
pub use error::{ApiError, ApiResult};
use loaders::{
    CommentCountLoader, FirstCommentsLoader, LikeLoader, LoaderContext, ModelledLoader,
    ProfileLoader, first_comments_key,
};
use read_model::{CommentPageKey, PageKey, ReadModel};

/// The username shown for an author whose account is gone; no account can have it (`[` and
/// `]` are not allowed in usernames).
pub const UNKNOWN_USERNAME: &str = "[unknown]";

/// Largest set of followed authors whose feed pages the read model keeps.
const MAX_FOLLOWED_IN_PAGE_KEY: usize = 1_000;

/// Which posts to list and which page.
#[derive(Debug, Default, Clone)]
pub struct PostQuery {
    pub first: u32,
    pub after: Option<String>,
    pub offset: u32,
    pub tag: Option<String>,
    /// Username of the author.
    pub author: Option<String>,
    /// Username of a user who liked the posts.
    pub liked_by: Option<String>,
    /// Only posts by authors the viewer follows.
    pub feed: bool,
}

/// Content of a new post, or changes to one (`None` keeps a field).
#[derive(Debug, Default, Clone)]
pub struct PostInput {
    pub title: Option<String>,
    pub description: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// Changes to the caller's own account.
#[derive(Debug, Default, Clone)]
pub struct UserChanges {
    pub username: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub bio: Option<String>,
    pub image: Option<String>,
}

/// Health and version of one service, as `systemStatus` reports it.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    pub name: String,
    pub status: String,
    pub version: Option<String>,
    /// Whether the edge's circuit breaker for it is open (calls refused at once).
    pub breaker_open: bool,
}

fn cached<L: Loader<String>>(loader: L) -> Cached<L> {
    DataLoader::with_cache(loader, tokio::spawn, HashMapCache::default())
}

/// Which per-post facts a response shows, so a page can fetch them up front.
#[derive(Debug, Default, Clone, Copy)]
pub struct PostFacts {
    pub authors: bool,
    pub likes: bool,
    pub comment_counts: bool,
    /// The first page of comments, of this size, and whether with their authors.
    pub first_comments: Option<(u32, bool)>,
}

type Cached<L> = DataLoader<L, HashMapCache>;

/// The optional sources a response went without, by service name.
#[derive(Debug, Clone, Default)]
pub struct Degraded(Arc<Mutex<BTreeSet<&'static str>>>);

impl Degraded {
    fn insert(&self, service: &'static str) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(service);
        }
    }

    fn contains(&self, service: &str) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(service))
    }

    /// The services whose facts are missing, sorted.
    pub fn services(&self) -> Vec<&'static str> {
        self.0
            .lock()
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// What one request brings besides its viewer: where it comes from, when its time budget
/// ends, and where to record the optional sources it goes without.
#[derive(Clone)]
pub struct RequestScope {
    pub client: Client,
    pub deadline: Option<Instant>,
    pub degraded: Degraded,
}

/// How long a request may take, all internal calls included.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    pub read: std::time::Duration,
    pub write: std::time::Duration,
}

impl Budgets {
    /// The deadline of a request starting now.
    pub fn deadline(&self, write: bool) -> Instant {
        Instant::now() + if write { self.write } else { self.read }
    }
}

pub const LIKE_SERVICE: &str = "like-service";
pub const COMMENT_SERVICE: &str = "comment-service";
pub const RANK_SERVICE: &str = "rank-service";

pub struct BlogApi {
    /// Clients carrying the viewer's credential.
    peers: Peers,
    channels: PeerChannels,
    viewer: Viewer,
    client: Client,
    /// Live subscriptions open on this request's connection (a WebSocket's, for its life).
    live_on_connection: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// When the request's time budget ends: no internal call outlives it.
    deadline: Option<Instant>,
    degraded: Degraded,
    profiles: ModelledLoader<ProfileLoader>,
    likes: ModelledLoader<LikeLoader>,
    comment_counts: ModelledLoader<CommentCountLoader>,
    first_comments: Cached<FirstCommentsLoader>,
    /// What the loaders share: the viewer's sets come from it too.
    context: LoaderContext,
}

impl BlogApi {
    /// The composition for one request (one WebSocket connection), whose internal calls all
    /// end by `deadline`.
    pub fn new(channels: PeerChannels, viewer: Viewer, scope: RequestScope) -> Self {
        let RequestScope {
            client,
            deadline,
            degraded,
        } = scope;
        let context = LoaderContext {
            viewer: viewer.require().ok().map(|claims| claims.sub.to_string()),
            peers: channels.acting_for(viewer.credential(), deadline),
            model: channels.read_model().clone(),
        };
        let peers = context.peers.clone();
        Self {
            profiles: ModelledLoader::new(ProfileLoader(context.clone())),
            likes: ModelledLoader::new(LikeLoader(context.clone())),
            comment_counts: ModelledLoader::new(CommentCountLoader(context.clone())),
            context,
            first_comments: cached(FirstCommentsLoader {
                peers: peers.clone(),
            }),
            peers,
            channels,
            viewer,
            client,
            live_on_connection: std::sync::Arc::default(),
            deadline,
            degraded,
        }
    }

    /// The optional sources this request went without (shared: read it after answering).
    pub fn degraded(&self) -> Degraded {
        self.degraded.clone()
    }

    /// An optional fact from `service`: None, recorded, when the service is unavailable.
    fn optional<T>(&self, service: &'static str, result: ApiResult<T>) -> ApiResult<Option<T>> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(err) if err.code == ErrorCode::Unavailable => {
                if !self.degraded.contains(service) {
                    tracing::warn!(service, error = %err, "answering without an optional source");
                    self.channels.metrics().degraded(service);
                }
                self.degraded.insert(service);
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    pub fn viewer(&self) -> &Viewer {
        &self.viewer
    }

    fn model(&self) -> &ReadModel {
        &self.context.model
    }

    /// The signed-in caller, or UNAUTHENTICATED.
    fn actor(&self) -> ApiResult<Actor> {
        Ok(Actor::from_claims(self.viewer.require()?))
    }

    /// The signed-in caller, whose account must still exist: a write is refused, not stored,
    /// when a validly signed token names an account that is gone.
    async fn author(&self) -> ApiResult<Actor> {
        let actor = self.actor()?;
        let id = actor.user_id.to_string();
        // A profile the read model holds was there moments ago (accounts are never deleted).
        if self
            .model()
            .profiles(std::slice::from_ref(&id))
            .0
            .contains_key(&id)
        {
            return Ok(actor);
        }
        match self.profiles.load_one(id).await? {
            Some(_) => Ok(actor),
            None => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "the account of this token no longer exists; sign in again",
            )),
        }
    }

    // ---- accounts and profiles ----

    pub async fn register(
        &self,
        username: String,
        email: String,
        password: String,
    ) -> ApiResult<user_pb::Session> {
        self.client.check_sign_in()?;
        let request = user_pb::RegisterRequest {
            username,
            email,
            password,
        };
        Ok(self.peers.users().register(request).await?.into_inner())
    }

    pub async fn login(&self, email: String, password: String) -> ApiResult<user_pb::Session> {
        self.client.check_sign_in()?;
        let request = user_pb::LoginRequest { email, password };
        Ok(self.peers.users().login(request).await?.into_inner())
    }

    pub async fn me(&self) -> ApiResult<user_pb::User> {
        self.actor()?;
        Ok(self
            .peers
            .users()
            .get_user(user_pb::GetUserRequest {})
            .await?
            .into_inner())
    }

    pub async fn update_me(&self, changes: UserChanges) -> ApiResult<user_pb::Session> {
        self.actor()?;
        let request = user_pb::UpdateUserRequest {
            username: changes.username,
            email: changes.email,
            password: changes.password,
            bio: changes.bio,
            image: changes.image,
        };
        let session = self.peers.users().update_user(request).await?.into_inner();
        self.profiles.clear();
        if let Some(user) = &session.user {
            self.model().profile_changed(&user.id);
        }
        Ok(session)
    }

    /// A profile by username; `following` from the viewer's set when the model serves.
    pub async fn profile(&self, username: &str) -> ApiResult<user_pb::Profile> {
        let following = match self.context.modelled_viewer() {
            Some(viewer) => Some(self.context.following(viewer).await?),
            None => None,
        };
        if (self.context.viewer.is_none() || following.is_some())
            && let Some(mut profile) = self.model().profile_by_name(username)
        {
            profile.following = following.is_some_and(|set| set.contains(&profile.id));
            return Ok(profile);
        }
        let request = user_pb::GetProfileByUsernameRequest {
            username: username.to_owned(),
        };
        let ticket = self.model().profile_by_name_ticket();
        let profile = self
            .peers
            .users()
            .get_profile_by_username(request)
            .await?
            .into_inner();
        self.model().fill_profile_by_name(ticket, &profile);
        Ok(profile)
    }

    pub async fn follow(&self, username: &str) -> ApiResult<user_pb::Profile> {
        let request = self.follow_request(username)?;
        let profile = self.peers.users().follow(request).await?.into_inner();
        if let Some(viewer) = &self.context.viewer {
            self.model().follows_changed(viewer);
        }
        self.profiles.clear();
        Ok(profile)
    }

    pub async fn unfollow(&self, username: &str) -> ApiResult<user_pb::Profile> {
        let request = self.follow_request(username)?;
        let profile = self.peers.users().unfollow(request).await?.into_inner();
        if let Some(viewer) = &self.context.viewer {
            self.model().follows_changed(viewer);
        }
        self.profiles.clear();
        Ok(profile)
    }

    fn follow_request(&self, username: &str) -> ApiResult<user_pb::FollowRequest> {
        self.actor()?;
        Ok(user_pb::FollowRequest {
            username: username.to_owned(),
        })
    }

    // ---- posts ----

    /// A post as post-service has it now; fills the read model.
    async fn post_from_source(&self, slug: &str) -> ApiResult<post_pb::Post> {
        let request = post_pb::GetPostRequest {
            slug: slug.to_owned(),
        };
        let ticket = self.model().post_ticket();
        let post = self.peers.posts().get_post(request).await?.into_inner();
        self.model().fill_post(ticket, &post);
        Ok(post)
    }

    /// A post from the read model when it has it. Writes may act on it too: comment- and
    /// like-service check with post-service that the post is still there.
    pub async fn post(&self, slug: &str) -> ApiResult<post_pb::Post> {
        match self.model().post(slug) {
            Some(post) => Ok(post),
            None => self.post_from_source(slug).await,
        }
    }

    /// A page of posts. Usernames in the query are resolved first, concurrently; an unknown
    /// one is NOT_FOUND. A page that depends on no likes comes from the read model when it
    /// has it (a feed's page by the set of authors the viewer follows, asked for first).
    pub async fn posts(&self, query: PostQuery) -> ApiResult<post_pb::PostPage> {
        if query.liked_by.is_some() {
            return self.posts_from_sources(query, None).await;
        }
        let followed = match query.feed {
            true => Some(self.following().await?),
            false => None,
        };
        let key = PageKey {
            first: query.first,
            after: query.after.clone().unwrap_or_default(),
            offset: query.offset,
            tag: query.tag.clone().unwrap_or_default(),
            author: query.author.clone().unwrap_or_default(),
            followed: followed.as_ref().map(|set| {
                let mut ids = set.ids.clone();
                ids.sort_unstable();
                ids
            }),
        };
        // Keys stay small: the pages of someone who follows thousands are not kept.
        let keep = followed
            .as_ref()
            .is_none_or(|set| set.ids.len() <= MAX_FOLLOWED_IN_PAGE_KEY);
        if keep && let Some(page) = self.model().page(&key) {
            return Ok(page);
        }
        let ticket = self.model().page_ticket();
        let page = self.posts_from_sources(query, followed).await?;
        if keep {
            self.model().fill_page(ticket, key, &page);
        }
        Ok(page)
    }

    /// Who the viewer follows.
    async fn following(&self) -> ApiResult<IdSet> {
        let actor = self.actor()?;
        let set = self.context.following(&actor.user_id.to_string()).await?;
        Ok(IdSet {
            ids: set.iter().cloned().collect(),
        })
    }

    /// A page from post-service; `followed` is the feed's authors, when already known.
    async fn posts_from_sources(
        &self,
        query: PostQuery,
        followed: Option<IdSet>,
    ) -> ApiResult<post_pb::PostPage> {
        let authors = async {
            match (&query.author, followed) {
                (_, Some(followed)) => Ok::<_, ApiError>(Some(followed)),
                (_, None) if query.feed => Ok(Some(self.following().await?)),
                (Some(author), None) => {
                    let profile = self.profile(author).await?;
                    Ok(Some(IdSet {
                        ids: vec![profile.id],
                    }))
                }
                (None, None) => Ok(None),
            }
        };
        let liked = async {
            match &query.liked_by {
                Some(username) => {
                    let profile = self.profile(username).await?;
                    let request = like_pb::ListLikedPostsRequest {
                        user_id: profile.id,
                    };
                    Ok::<_, ApiError>(Some(
                        self.peers
                            .likes()
                            .list_liked_posts(request)
                            .await?
                            .into_inner(),
                    ))
                }
                None => Ok(None),
            }
        };
        let (author_ids, post_ids) = futures::try_join!(authors, liked)?;
        let request = post_pb::ListPostsRequest {
            first: query.first,
            after: query.after.unwrap_or_default(),
            offset: query.offset,
            tag: query.tag.unwrap_or_default(),
            author_ids,
            post_ids,
        };
        Ok(self.peers.posts().list_posts(request).await?.into_inner())
    }

    pub async fn create_post(&self, input: PostInput) -> ApiResult<post_pb::Post> {
        self.author().await?;
        let request = post_pb::CreatePostRequest {
            title: input.title.unwrap_or_default(),
            description: input.description.unwrap_or_default(),
            body: input.body.unwrap_or_default(),
            tags: input.tags.unwrap_or_default(),
        };
        let post = self.peers.posts().create_post(request).await?.into_inner();
        self.model().post_created();
        Ok(post)
    }

    pub async fn update_post(&self, slug: &str, changes: PostInput) -> ApiResult<post_pb::Post> {
        self.actor()?;
        let request = post_pb::UpdatePostRequest {
            slug: slug.to_owned(),
            title: changes.title,
            description: changes.description,
            body: changes.body,
            tags: changes.tags.map(|tags| post_pb::TagList { tags }),
        };
        let post = self.peers.posts().update_post(request).await?.into_inner();
        self.model().post_changed(&post.id);
        Ok(post)
    }

    /// Deletes a post, then its comments and likes.
    ///
    /// The cleanup is an explicit call from here rather than a reaction to an event, so that
    /// it is done when the response says so. If a cleanup call fails, the post is still gone
    /// and its leftovers are unreachable (every read goes through the post); the failure is
    /// logged for an operator. The cleanup is the edge's own work, so it carries the edge's
    /// service credential: comment- and like-service refuse it from anyone else.
    pub async fn delete_post(&self, slug: &str) -> ApiResult<post_pb::Post> {
        self.actor()?;
        let request = post_pb::DeletePostRequest {
            slug: slug.to_owned(),
        };
        let post = self.peers.posts().delete_post(request).await?.into_inner();
        self.model().post_deleted(&post.id);
        self.likes.clear();
        self.comment_counts.clear();
        self.first_comments.clear::<String>();
        let service = self.channels.as_service(self.deadline);
        let (mut comments, mut likes) = (service.comments(), service.likes());
        let (comments, likes) = tokio::join!(
            comments.delete_post_comments(comment_pb::DeletePostCommentsRequest {
                post_id: post.id.clone()
            }),
            likes.delete_post_likes(like_pb::DeletePostLikesRequest {
                post_id: post.id.clone()
            }),
        );
        for (what, result) in [("comments", comments.err()), ("likes", likes.err())] {
            if let Some(status) = result {
                tracing::error!(post_id = %post.id, what, %status, "cleanup after post deletion failed");
            }
        }
        Ok(post)
    }

    pub async fn tags(&self) -> ApiResult<Vec<String>> {
        if let Some(tags) = self.model().tags() {
            return Ok(tags);
        }
        let ticket = self.model().tags_ticket();
        let tags = self
            .peers
            .posts()
            .list_tags(Empty {})
            .await?
            .into_inner()
            .tags;
        self.model().fill_tags(ticket, &tags);
        Ok(tags)
    }

    /// A post as read by a person (GraphQL `post`, REST article GET): also counts the view
    /// for trending (reported in batches, see [`views`]).
    pub async fn read_post(&self, slug: &str) -> ApiResult<post_pb::Post> {
        let post = self.post(slug).await?;
        self.channels.views().record(&post.id);
        Ok(post)
    }

    /// The `first` trending posts, best first; None when rank-service is unavailable
    /// (trending is optional).
    pub async fn trending(&self, first: u32) -> ApiResult<Option<Vec<post_pb::Post>>> {
        if let Some(posts) = self.model().trending(first) {
            return Ok(Some(posts));
        }
        let ticket = self.model().trending_ticket();
        let ranked = self
            .peers
            .ranks()
            .trending(rank_pb::TrendingRequest { first })
            .await
            .map_err(ApiError::from);
        let Some(ranked) = self.optional(RANK_SERVICE, ranked)? else {
            return Ok(None);
        };
        let ranked = ranked.into_inner().posts;
        if ranked.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let ids: Vec<String> = ranked.iter().map(|r| r.post_id.clone()).collect();
        let request = post_pb::ListPostsRequest {
            first: first.max(1),
            post_ids: Some(IdSet { ids: ids.clone() }),
            ..Default::default()
        };
        let mut by_id: std::collections::HashMap<String, post_pb::Post> = self
            .peers
            .posts()
            .list_posts(request)
            .await?
            .into_inner()
            .posts
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        // In rank order; a post deleted since it was ranked is left out.
        let posts: Vec<post_pb::Post> = ids.iter().filter_map(|id| by_id.remove(id)).collect();
        self.model().fill_trending(ticket, first, &posts);
        Ok(Some(posts))
    }

    pub async fn notifications(
        &self,
        first: u32,
        after: Option<String>,
        unread_only: bool,
    ) -> ApiResult<notification_pb::NotificationPage> {
        self.actor()?;
        let request = notification_pb::ListNotificationsRequest {
            first,
            after: after.unwrap_or_default(),
            unread_only,
        };
        Ok(self
            .peers
            .notifications()
            .list_notifications(request)
            .await?
            .into_inner())
    }

    pub async fn mark_notifications_read(&self) -> ApiResult<u64> {
        self.actor()?;
        let request = notification_pb::MarkReadRequest {};
        Ok(self
            .peers
            .notifications()
            .mark_read(request)
            .await?
            .into_inner()
            .marked)
    }

    /// The caller's new notifications as they happen (a server stream from
    /// notification-service), with the permit that holds its slot while it is open.
    pub async fn watch_notifications(
        &self,
        limits: &std::sync::Arc<live::LiveLimits>,
    ) -> ApiResult<(
        tonic::Streaming<notification_pb::Notification>,
        live::LivePermit,
    )> {
        let actor = self.actor()?;
        let permit = limits.open(actor.user_id, &self.live_on_connection)?;
        let request = notification_pb::WatchNotificationsRequest {};
        let stream = self
            .peers
            .notification_streams()
            .watch_notifications(request)
            .await?
            .into_inner();
        Ok((stream, permit))
    }

    /// One post by id (a notification's post); None when it is gone.
    pub async fn post_by_id(&self, post_id: &str) -> ApiResult<Option<post_pb::Post>> {
        let request = post_pb::ListPostsRequest {
            first: 1,
            post_ids: Some(IdSet {
                ids: vec![post_id.to_owned()],
            }),
            ..Default::default()
        };
        Ok(self
            .peers
            .posts()
            .list_posts(request)
            .await?
            .into_inner()
            .posts
            .pop())
    }

    // ---- likes ----

    pub async fn like(&self, slug: &str) -> ApiResult<post_pb::Post> {
        let (post, request) = self.like_request(slug).await?;
        let summary = self.peers.likes().like(request).await?.into_inner();
        self.like_written(&post, summary).await;
        Ok(post)
    }

    pub async fn unlike(&self, slug: &str) -> ApiResult<post_pb::Post> {
        let (post, request) = self.like_request(slug).await?;
        let summary = self.peers.likes().unlike(request).await?.into_inner();
        self.like_written(&post, summary).await;
        Ok(post)
    }

    /// After a like or unlike: what the model and this request's loader knew of the post's
    /// likes is stale, and the write's answer is the fresh count the response shows.
    async fn like_written(&self, post: &post_pb::Post, summary: like_pb::LikeSummary) {
        if let Some(viewer) = &self.context.viewer {
            self.model().likes_changed(&post.id, viewer);
        }
        self.likes.clear();
        self.likes.feed_one(post.id.clone(), summary).await;
    }

    async fn like_request(&self, slug: &str) -> ApiResult<(post_pb::Post, like_pb::LikeRequest)> {
        // The service that takes the write asks post-service about the post itself.
        let (_, post) = futures::try_join!(self.author(), self.post(slug))?;
        let request = like_pb::LikeRequest {
            post_id: post.id.clone(),
        };
        Ok((post, request))
    }

    // ---- comments ----

    pub async fn comments(
        &self,
        post_id: &str,
        first: u32,
        after: Option<String>,
    ) -> ApiResult<comment_pb::CommentPage> {
        let key = CommentPageKey {
            post_id: post_id.to_owned(),
            first,
            after: after.unwrap_or_default(),
        };
        if let Some(page) = self.model().comment_page(&key) {
            return Ok(page);
        }
        let request = comment_pb::ListCommentsRequest {
            post_id: key.post_id.clone(),
            first,
            after: key.after.clone(),
        };
        let ticket = self.model().comment_page_ticket();
        let page = self
            .peers
            .comments()
            .list_comments(request)
            .await?
            .into_inner();
        self.model().fill_comment_page(ticket, key, &page);
        Ok(page)
    }

    pub async fn add_comment(&self, slug: &str, body: String) -> ApiResult<comment_pb::Comment> {
        // The service that takes the write asks post-service about the post itself.
        let (_, post) = futures::try_join!(self.author(), self.post(slug))?;
        let request = comment_pb::AddCommentRequest {
            post_id: post.id,
            body,
        };
        let comment = self
            .peers
            .comments()
            .add_comment(request)
            .await?
            .into_inner();
        self.model().comments_changed(&comment.post_id);
        self.comment_counts.clear();
        self.first_comments.clear::<String>();
        Ok(comment)
    }

    /// Deletes a comment of the post `slug`: its author, the post's author or an admin may.
    pub async fn delete_comment(&self, slug: &str, id: &str) -> ApiResult<comment_pb::Comment> {
        self.actor()?;
        let id: i64 = id.parse().map_err(|_| ApiError::not_found("comment"))?;
        let post = self.post(slug).await?;
        let request = comment_pb::DeleteCommentRequest {
            id,
            post_id: post.id,
        };
        let comment = self
            .peers
            .comments()
            .delete_comment(request)
            .await?
            .into_inner();
        self.model().comments_changed(&comment.post_id);
        self.comment_counts.clear();
        self.first_comments.clear::<String>();
        Ok(comment)
    }

    // ---- per-post facts, batched across the page ----

    /// Fetches the facts `wants` names for every post of a page: one call per service,
    /// concurrently. Field resolvers then read the request's cache, so the cost of a page
    /// does not depend on how the resolvers happen to be scheduled.
    pub async fn prefetch(&self, posts: &[post_pb::Post], wants: PostFacts) -> ApiResult<()> {
        let post_ids = || posts.iter().map(|p| p.id.clone());
        let authors = async {
            if wants.authors {
                self.profiles
                    .load_many(posts.iter().map(|p| p.author_id.clone()))
                    .await?;
            }
            Ok::<_, ApiError>(())
        };
        // Optional facts: a page goes out without them rather than not at all.
        let likes = async {
            if wants.likes && !self.degraded.contains(LIKE_SERVICE) {
                let loaded = self.likes.load_many(post_ids()).await;
                self.optional(LIKE_SERVICE, loaded)?;
            }
            Ok(())
        };
        let comment_counts = async {
            if wants.comment_counts && !self.degraded.contains(COMMENT_SERVICE) {
                let loaded = self.comment_counts.load_many(post_ids()).await;
                self.optional(COMMENT_SERVICE, loaded)?;
            }
            Ok(())
        };
        let first_comments = async {
            if let Some((first, with_authors)) = wants.first_comments {
                let pages = self
                    .first_comments
                    .load_many(posts.iter().map(|p| first_comments_key(first, &p.id)))
                    .await?;
                if with_authors {
                    let authors: Vec<String> = pages
                        .values()
                        .flat_map(|page| &page.comments)
                        .map(|comment| comment.author_id.clone())
                        .collect();
                    self.profiles.load_many(authors).await?;
                }
            }
            Ok(())
        };
        futures::try_join!(authors, likes, comment_counts, first_comments)?;
        Ok(())
    }

    /// The first `first` comments of a post, batched across the response.
    pub async fn first_comments(
        &self,
        post_id: &str,
        first: u32,
    ) -> ApiResult<comment_pb::CommentPage> {
        Ok(self
            .first_comments
            .load_one(first_comments_key(first, post_id))
            .await?
            .unwrap_or_default())
    }

    /// Fetches the authors of a page of comments in one call.
    pub async fn prefetch_authors(
        &self,
        author_ids: impl Iterator<Item = String>,
    ) -> ApiResult<()> {
        self.profiles.load_many(author_ids).await?;
        Ok(())
    }

    /// The profile of the author of a post, comment or notification. An account that is
    /// gone shows as [`UNKNOWN_USERNAME`] (and is logged): one bad row never takes a list
    /// down.
    pub async fn profile_by_id(&self, user_id: &str) -> ApiResult<user_pb::Profile> {
        match self.profiles.load_one(user_id.to_owned()).await? {
            Some(profile) => Ok(profile),
            None => {
                tracing::warn!(%user_id, "no account for an author id; shown as unknown");
                Ok(user_pb::Profile {
                    id: user_id.to_owned(),
                    username: UNKNOWN_USERNAME.to_owned(),
                    ..Default::default()
                })
            }
        }
    }

    /// Like count and liked-by-me of a post; None when like-service is unavailable.
    pub async fn like_summary(&self, post_id: &str) -> ApiResult<Option<like_pb::LikeSummary>> {
        if self.degraded.contains(LIKE_SERVICE) {
            return Ok(None);
        }
        let loaded = self.likes.load_one(post_id.to_owned()).await;
        Ok(self
            .optional(LIKE_SERVICE, loaded)?
            .map(Option::unwrap_or_default))
    }

    /// Comment count of a post; None when comment-service is unavailable.
    pub async fn comment_count(&self, post_id: &str) -> ApiResult<Option<u64>> {
        if self.degraded.contains(COMMENT_SERVICE) {
            return Ok(None);
        }
        let loaded = self.comment_counts.load_one(post_id.to_owned()).await;
        Ok(self
            .optional(COMMENT_SERVICE, loaded)?
            .map(|count| count.unwrap_or(0)))
    }

    // ---- operations ----

    /// Every service's health and version, asked concurrently, each within two seconds.
    pub async fn system_status(&self) -> Vec<ServiceStatus> {
        let edge = ServiceStatus {
            name: crate::NAME.to_owned(),
            status: "SERVING".to_owned(),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            breaker_open: false,
        };
        let peers = join_all(
            self.channels
                .states()
                .into_iter()
                .map(|peer| peer_status(peer.name, peer.channel, peer.breaker_open)),
        )
        .await;
        std::iter::once(edge).chain(peers).collect()
    }
}

/// Health and version of one peer, each asked within two seconds.
pub(crate) async fn peer_status(name: &str, channel: Channel, breaker_open: bool) -> ServiceStatus {
    use oba_proto::common::v1::introspection_client::IntrospectionClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let limit = Duration::from_secs(2);
    let mut health = HealthClient::new(channel.clone());
    let mut info = IntrospectionClient::new(channel);
    let (health, info) = tokio::join!(
        tokio::time::timeout(
            limit,
            health.check(HealthCheckRequest {
                service: String::new()
            })
        ),
        tokio::time::timeout(limit, info.get_service_info(Empty {})),
    );
    let status = match health {
        Ok(Ok(reply)) => reply.into_inner().status().as_str_name().to_owned(),
        Ok(Err(status)) if ErrorCode::of_status(&status) == ErrorCode::Unavailable => {
            "UNREACHABLE".to_owned()
        }
        Ok(Err(_)) => "UNKNOWN".to_owned(),
        Err(_) => "TIMED_OUT".to_owned(),
    };
    ServiceStatus {
        name: name.to_owned(),
        status,
        version: info
            .ok()
            .and_then(Result::ok)
            .map(|r| r.into_inner().version),
        breaker_open,
    }
}
