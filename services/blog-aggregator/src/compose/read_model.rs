//! The edge's read model: the facts of post cards (pages of posts, posts by slug, public
//! profiles by id and by username, like and comment counts, pages of comments, the tag list)
//! kept in memory, so that a hot read is a lookup here instead of a call to each of four
//! services.
//!
//! It is a projection, never a source of truth. An entry is filled from the owning service
//! on a miss and forgotten when an event says it changed (`post.*`, `comment.*`,
//! `post.liked`/`unliked`, `user.updated`), which every edge replica hears on the bus.
//! Forgetting, unlike patching, is right whatever the order or the number of deliveries:
//! the next read asks the source again. Each table has a generation, bumped by every
//! change it hears; a fill carries the generation it started under and is dropped if a
//! change came in between, so a slow read can never put back what an event removed.
//!
//! The replica that serves a write forgets what it changed before it answers, so the writer's
//! next read through it shows the write. Other replicas learn it from the event (outbox relay,
//! then bus): the staleness window is the event's delivery time.
//!
//! Facts of a viewer (`following`, liked-by-viewer) come from the viewer's sets: whom they
//! follow and what they liked, each kept whole (up to [`MAX_VIEWER_SET`] ids; a larger set is
//! asked for again by each request) and forgotten on `user.followed`/`unfollowed` and
//! `post.liked`/`unliked` of that viewer, like every other entry.
//!
//! The model serves only while it hears every event: not before the bus is connected and
//! subscribed, and not while it is disconnected (then everything is forgotten, and it serves
//! again a moment after the bus is back). Entries also expire after a configured age, a
//! bound on staleness should an event be lost anyway. Every table is an LRU of bounded size.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use oba_kit::bus::Bus;
use oba_kit::metrics::Metrics;
use oba_kit::shutdown::CancellationToken;
use oba_proto::comment::v1 as comment_pb;
use oba_proto::event::v1 as event_pb;
use oba_proto::post::v1 as post_pb;
use oba_proto::user::v1 as user_pb;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prost::Message;

/// How the read model is bounded (`OBA_READ_MODEL_ENTRIES`, `OBA_READ_MODEL_MAX_MIB`,
/// `OBA_READ_MODEL_MAX_AGE_MS`).
#[derive(Debug, Clone, Copy)]
pub struct ReadModelLimits {
    /// Entries per table at most; the least recently used go first.
    pub entries: NonZeroUsize,
    /// Bytes of keys and values in all tables at most (a page of posts can be megabytes).
    pub max_bytes: usize,
    /// Age after which an entry is asked for again even if no event said it changed.
    pub max_age: Duration,
}

/// Largest set of followed users or liked posts kept for one viewer.
pub const MAX_VIEWER_SET: usize = 1_000;

/// A viewer's set of ids (followed users, liked posts).
pub type ViewerSet = Arc<HashSet<String>>;

/// How long the model waits after the bus (re)connects before serving: the time for its
/// subscriptions to be in place, so that no event of an entry it fills goes unheard.
const SETTLE: Duration = Duration::from_secs(1);
/// How often the bus connection is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Which page of posts: a listing whose posts depend on no likes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub first: u32,
    pub after: String,
    pub offset: u32,
    pub tag: String,
    /// Username of the author (a rename forgets every page).
    pub author: String,
    /// A feed's authors (the ids the viewer follows, sorted).
    pub followed: Option<Vec<String>>,
}

/// Which page of a post's comments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommentPageKey {
    pub post_id: String,
    pub first: u32,
    pub after: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    table: &'static str,
    outcome: &'static str,
}

/// The approximate memory an entry's key or value holds, for the byte bound.
pub trait Weight {
    fn weight(&self) -> usize;
}

macro_rules! weight_of_messages {
    ($($message:ty),*) => {$(
        impl Weight for $message {
            fn weight(&self) -> usize {
                prost::Message::encoded_len(self)
            }
        }
    )*};
}

weight_of_messages!(
    post_pb::PostPage,
    post_pb::Post,
    user_pb::Profile,
    comment_pb::CommentPage
);

impl Weight for String {
    fn weight(&self) -> usize {
        std::mem::size_of::<String>() + self.len()
    }
}

impl Weight for u64 {
    fn weight(&self) -> usize {
        8
    }
}

impl Weight for () {
    fn weight(&self) -> usize {
        0
    }
}

impl Weight for Vec<String> {
    fn weight(&self) -> usize {
        self.iter().map(Weight::weight).sum()
    }
}

impl Weight for Vec<post_pb::Post> {
    fn weight(&self) -> usize {
        self.iter().map(Weight::weight).sum()
    }
}

impl Weight for u32 {
    fn weight(&self) -> usize {
        4
    }
}

impl Weight for ViewerSet {
    fn weight(&self) -> usize {
        self.iter().map(Weight::weight).sum()
    }
}

impl Weight for PageKey {
    fn weight(&self) -> usize {
        self.after.weight()
            + self.tag.weight()
            + self.author.weight()
            + self.followed.as_ref().map_or(0, Weight::weight)
    }
}

impl Weight for CommentPageKey {
    fn weight(&self) -> usize {
        self.post_id.weight() + self.after.weight()
    }
}

/// One table: an LRU bounded in entries and bytes, with a generation that every change bumps.
struct Table<K: Hash + Eq, V> {
    name: &'static str,
    max_bytes: usize,
    state: Mutex<TableState<K, V>>,
}

struct TableState<K: Hash + Eq, V> {
    generation: u64,
    /// Each value with when it was filled and the weight of the entry.
    entries: LruCache<K, (V, Instant, usize)>,
    bytes: usize,
}

impl<K: Hash + Eq, V> TableState<K, V> {
    fn pop(&mut self, key: &K) {
        if let Some((_, _, weight)) = self.entries.pop(key) {
            self.bytes -= weight;
        }
    }
}

/// The generation a fill started under.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl<K: Hash + Eq + Clone + Weight, V: Clone + Weight> Table<K, V> {
    fn new(name: &'static str, entries: NonZeroUsize, max_bytes: usize) -> Self {
        Self {
            name,
            max_bytes,
            state: Mutex::new(TableState {
                generation: 0,
                entries: LruCache::new(entries),
                bytes: 0,
            }),
        }
    }

    fn get(&self, key: &K, max_age: Duration) -> Option<V> {
        let mut state = self.state.lock().ok()?;
        match state.entries.get(key) {
            Some((value, filled, _)) if filled.elapsed() <= max_age => Some(value.clone()),
            Some(_) => {
                state.pop(key);
                None
            }
            None => None,
        }
    }

    fn ticket(&self) -> Ticket {
        Ticket(self.state.lock().map_or(u64::MAX, |state| state.generation))
    }

    /// Stores what was read under `ticket`, unless something changed since.
    fn fill(&self, ticket: Ticket, entries: impl IntoIterator<Item = (K, V)>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.generation != ticket.0 {
            return;
        }
        let now = Instant::now();
        for (key, value) in entries {
            let weight = key.weight() + value.weight();
            if weight > self.max_bytes {
                continue;
            }
            // push hands back the entry it replaced or evicted.
            if let Some((_, (_, _, evicted))) = state.entries.push(key, (value, now, weight)) {
                state.bytes -= evicted;
            }
            state.bytes += weight;
            while state.bytes > self.max_bytes {
                match state.entries.pop_lru() {
                    Some((_, (_, _, evicted))) => state.bytes -= evicted,
                    None => break,
                }
            }
        }
    }

    fn forget(&self, key: &K) {
        if let Ok(mut state) = self.state.lock() {
            state.generation += 1;
            state.pop(key);
        }
    }

    fn forget_where(&self, stale: impl Fn(&K, &V) -> bool) {
        if let Ok(mut state) = self.state.lock() {
            state.generation += 1;
            let keys: Vec<K> = state
                .entries
                .iter()
                .filter(|(key, (value, _, _))| stale(key, value))
                .map(|(key, _)| key.clone())
                .collect();
            for key in keys {
                state.pop(&key);
            }
        }
    }

    fn clear(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.generation += 1;
            state.entries.clear();
            state.bytes = 0;
        }
    }
}

/// The longest the trending list is kept: the ranking moves with every like, comment and
/// view, and nothing tells this model when rank-service has applied them.
pub const TRENDING_MAX_AGE: Duration = Duration::from_secs(1);

/// The post cards' facts, shared by every request of one edge replica.
pub struct ReadModel {
    serving: AtomicBool,
    max_age: Duration,
    pages: Table<PageKey, post_pb::PostPage>,
    posts: Table<String, post_pb::Post>,
    profiles: Table<String, user_pb::Profile>,
    profiles_by_name: Table<String, user_pb::Profile>,
    comment_pages: Table<CommentPageKey, comment_pb::CommentPage>,
    /// The tag list (one entry).
    tags: Table<(), Vec<String>>,
    /// The trending posts, by how many were asked for; kept [`TRENDING_MAX_AGE`] at most.
    trending: Table<u32, Vec<post_pb::Post>>,
    like_counts: Table<String, u64>,
    comment_counts: Table<String, u64>,
    /// Whom each viewer follows, by viewer id.
    following: Table<String, ViewerSet>,
    /// Which posts each viewer liked, by viewer id.
    liked: Table<String, ViewerSet>,
    lookups: Family<LookupLabels, Counter>,
    events: Counter,
}

impl ReadModel {
    /// An empty model that serves nothing until [`ReadModel::follow`] hears the bus.
    pub fn new(limits: ReadModelLimits) -> Self {
        let entries = limits.entries;
        // A viewer's set is up to MAX_VIEWER_SET ids: fewer of them fit the same memory.
        let viewers = NonZeroUsize::new(entries.get() / 10).unwrap_or(NonZeroUsize::MIN);
        // Pages, posts and comment pages hold bodies: a fifth of the bytes each; the other
        // seven tables share the last two fifths.
        let large = limits.max_bytes / 5;
        let small = limits.max_bytes * 2 / 5 / 7;
        Self {
            serving: AtomicBool::new(false),
            max_age: limits.max_age,
            pages: Table::new("pages", entries, large),
            posts: Table::new("posts", entries, large),
            profiles: Table::new("profiles", entries, small),
            profiles_by_name: Table::new("profiles_by_name", entries, small),
            comment_pages: Table::new("comment_pages", entries, large),
            tags: Table::new("tags", NonZeroUsize::MIN, small),
            trending: Table::new(
                "trending",
                NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
                small,
            ),
            like_counts: Table::new("like_counts", entries, small),
            comment_counts: Table::new("comment_counts", entries, small),
            following: Table::new("following", viewers, small),
            liked: Table::new("liked", viewers, small),
            lookups: Family::default(),
            events: Counter::default(),
        }
    }

    /// Registers the model's metrics with the edge's registry.
    pub fn register(&self, metrics: &Metrics) {
        metrics.register(
            "read_model_lookups",
            "Lookups in the edge's read model, by table and outcome (hit or miss)",
            self.lookups.clone(),
        );
        metrics.register(
            "read_model_events",
            "Events the edge's read model applied",
            self.events.clone(),
        );
    }

    /// Whether lookups may be answered from memory right now.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    fn count<T>(&self, table: &'static str, found: Option<T>) -> Option<T> {
        let outcome = if found.is_some() { "hit" } else { "miss" };
        self.lookups
            .get_or_create(&LookupLabels { table, outcome })
            .inc();
        found
    }

    fn lookup<K: Hash + Eq + Clone + Weight, V: Clone + Weight>(
        &self,
        table: &Table<K, V>,
        key: &K,
    ) -> Option<V> {
        if !self.serving() {
            return None;
        }
        let found = table.get(key, self.max_age);
        self.count(table.name, found)
    }

    /// Looks up each of `keys`; what is not here is left for the source.
    fn lookup_many<V: Clone + Weight>(
        &self,
        table: &Table<String, V>,
        keys: &[String],
    ) -> (HashMap<String, V>, Vec<String>) {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for key in keys {
            match self.lookup(table, key) {
                Some(value) => {
                    found.insert(key.clone(), value);
                }
                None => missing.push(key.clone()),
            }
        }
        (found, missing)
    }

    pub fn page(&self, key: &PageKey) -> Option<post_pb::PostPage> {
        self.lookup(&self.pages, key)
    }

    pub fn page_ticket(&self) -> Ticket {
        self.pages.ticket()
    }

    pub fn fill_page(&self, ticket: Ticket, key: PageKey, page: &post_pb::PostPage) {
        self.pages.fill(ticket, [(key, page.clone())]);
    }

    pub fn post(&self, slug: &str) -> Option<post_pb::Post> {
        self.lookup(&self.posts, &slug.to_owned())
    }

    pub fn post_ticket(&self) -> Ticket {
        self.posts.ticket()
    }

    pub fn fill_post(&self, ticket: Ticket, post: &post_pb::Post) {
        self.posts.fill(ticket, [(post.slug.clone(), post.clone())]);
    }

    /// Public profiles among `ids` (`following` false), and the ids left for the source.
    pub fn profiles(&self, ids: &[String]) -> (HashMap<String, user_pb::Profile>, Vec<String>) {
        self.lookup_many(&self.profiles, ids)
    }

    pub fn profile_ticket(&self) -> Ticket {
        self.profiles.ticket()
    }

    /// Stores profiles as anyone sees them: `following` belongs to the viewer who asked.
    pub fn fill_profiles<'a>(
        &self,
        ticket: Ticket,
        profiles: impl IntoIterator<Item = &'a user_pb::Profile>,
    ) {
        self.profiles.fill(
            ticket,
            profiles.into_iter().map(|profile| {
                let public = user_pb::Profile {
                    following: false,
                    ..profile.clone()
                };
                (profile.id.clone(), public)
            }),
        );
    }

    /// A public profile by username (`following` false).
    pub fn profile_by_name(&self, username: &str) -> Option<user_pb::Profile> {
        self.lookup(&self.profiles_by_name, &username.to_owned())
    }

    pub fn profile_by_name_ticket(&self) -> Ticket {
        self.profiles_by_name.ticket()
    }

    pub fn fill_profile_by_name(&self, ticket: Ticket, profile: &user_pb::Profile) {
        let public = user_pb::Profile {
            following: false,
            ..profile.clone()
        };
        self.profiles_by_name
            .fill(ticket, [(profile.username.clone(), public)]);
    }

    pub fn comment_page(&self, key: &CommentPageKey) -> Option<comment_pb::CommentPage> {
        self.lookup(&self.comment_pages, key)
    }

    pub fn comment_page_ticket(&self) -> Ticket {
        self.comment_pages.ticket()
    }

    pub fn fill_comment_page(
        &self,
        ticket: Ticket,
        key: CommentPageKey,
        page: &comment_pb::CommentPage,
    ) {
        self.comment_pages.fill(ticket, [(key, page.clone())]);
    }

    /// The `first` trending posts as ranked at most [`TRENDING_MAX_AGE`] ago. The ranking is
    /// rank-service's projection, which changes with every like, comment and view it applies
    /// after this model hears of them: only time bounds its staleness, not events.
    pub fn trending(&self, first: u32) -> Option<Vec<post_pb::Post>> {
        if !self.serving() {
            return None;
        }
        let found = self
            .trending
            .get(&first, TRENDING_MAX_AGE.min(self.max_age));
        self.count(self.trending.name, found)
    }

    pub fn trending_ticket(&self) -> Ticket {
        self.trending.ticket()
    }

    pub fn fill_trending(&self, ticket: Ticket, first: u32, posts: &[post_pb::Post]) {
        self.trending.fill(ticket, [(first, posts.to_vec())]);
    }

    pub fn tags(&self) -> Option<Vec<String>> {
        self.lookup(&self.tags, &())
    }

    pub fn tags_ticket(&self) -> Ticket {
        self.tags.ticket()
    }

    pub fn fill_tags(&self, ticket: Ticket, tags: &[String]) {
        self.tags.fill(ticket, [((), tags.to_vec())]);
    }

    pub fn like_counts(&self, post_ids: &[String]) -> (HashMap<String, u64>, Vec<String>) {
        self.lookup_many(&self.like_counts, post_ids)
    }

    pub fn like_ticket(&self) -> Ticket {
        self.like_counts.ticket()
    }

    pub fn fill_like_counts(
        &self,
        ticket: Ticket,
        counts: impl IntoIterator<Item = (String, u64)>,
    ) {
        self.like_counts.fill(ticket, counts);
    }

    pub fn comment_counts(&self, post_ids: &[String]) -> (HashMap<String, u64>, Vec<String>) {
        self.lookup_many(&self.comment_counts, post_ids)
    }

    pub fn comment_ticket(&self) -> Ticket {
        self.comment_counts.ticket()
    }

    pub fn fill_comment_counts(
        &self,
        ticket: Ticket,
        counts: impl IntoIterator<Item = (String, u64)>,
    ) {
        self.comment_counts.fill(ticket, counts);
    }

    pub fn following_of(&self, viewer: &str) -> Option<ViewerSet> {
        self.lookup(&self.following, &viewer.to_owned())
    }

    pub fn following_ticket(&self) -> Ticket {
        self.following.ticket()
    }

    pub fn fill_following(&self, ticket: Ticket, viewer: &str, ids: &ViewerSet) {
        if ids.len() <= MAX_VIEWER_SET {
            self.following
                .fill(ticket, [(viewer.to_owned(), ids.clone())]);
        }
    }

    pub fn liked_by(&self, viewer: &str) -> Option<ViewerSet> {
        self.lookup(&self.liked, &viewer.to_owned())
    }

    pub fn liked_ticket(&self) -> Ticket {
        self.liked.ticket()
    }

    pub fn fill_liked(&self, ticket: Ticket, viewer: &str, ids: &ViewerSet) {
        if ids.len() <= MAX_VIEWER_SET {
            self.liked.fill(ticket, [(viewer.to_owned(), ids.clone())]);
        }
    }

    // ---- changes: from this replica's own writes and from events ----

    /// A post was created: every listing may now include it.
    pub fn post_created(&self) {
        self.pages.clear();
        self.tags.clear();
    }

    /// A post changed (title, body, slug, tags) or is gone.
    pub fn post_changed(&self, post_id: &str) {
        self.pages.clear();
        self.posts.forget_where(|_, post| post.id == post_id);
        self.tags.clear();
        // Its title or slug, or itself, may be among them.
        self.trending.clear();
    }

    pub fn post_deleted(&self, post_id: &str) {
        self.post_changed(post_id);
        self.like_counts.forget(&post_id.to_owned());
        self.comments_changed(post_id);
    }

    /// `user_id` liked or unliked `post_id`.
    pub fn likes_changed(&self, post_id: &str, user_id: &str) {
        self.like_counts.forget(&post_id.to_owned());
        self.liked.forget(&user_id.to_owned());
    }

    /// `follower_id` followed or unfollowed someone.
    pub fn follows_changed(&self, follower_id: &str) {
        self.following.forget(&follower_id.to_owned());
    }

    pub fn comments_changed(&self, post_id: &str) {
        self.comment_counts.forget(&post_id.to_owned());
        self.comment_pages
            .forget_where(|key, _| key.post_id == post_id);
    }

    /// A profile changed; a new username also changes which pages its author filter names.
    pub fn profile_changed(&self, user_id: &str) {
        self.profiles.forget(&user_id.to_owned());
        // The event names the new username only: the old one may be anywhere.
        self.profiles_by_name.clear();
        self.pages.clear();
    }

    fn forget_everything(&self) {
        self.pages.clear();
        self.posts.clear();
        self.profiles.clear();
        self.profiles_by_name.clear();
        self.comment_pages.clear();
        self.tags.clear();
        self.trending.clear();
        self.like_counts.clear();
        self.comment_counts.clear();
        self.following.clear();
        self.liked.clear();
    }

    /// Applies one event envelope as published on the bus; what it cannot read, or does not
    /// care about, changes nothing.
    pub fn apply(&self, envelope: &[u8]) {
        let Ok(envelope) = event_pb::Envelope::decode(envelope) else {
            tracing::warn!("read model: an event that is not an envelope; ignored");
            return;
        };
        let payload = envelope.payload.as_slice();
        match envelope.r#type.as_str() {
            "post.created" => self.post_created(),
            "post.updated" => {
                if let Ok(event) = event_pb::PostChanged::decode(payload) {
                    self.post_changed(&event.post_id);
                }
            }
            "post.deleted" => {
                if let Ok(event) = event_pb::PostDeleted::decode(payload) {
                    self.post_deleted(&event.post_id);
                }
            }
            "post.liked" | "post.unliked" => {
                if let Ok(event) = event_pb::PostLiked::decode(payload) {
                    self.likes_changed(&event.post_id, &event.user_id);
                }
            }
            "comment.added" | "comment.deleted" => {
                if let Ok(event) = event_pb::CommentChanged::decode(payload) {
                    self.comments_changed(&event.post_id);
                }
            }
            "user.followed" | "user.unfollowed" => {
                if let Ok(event) = event_pb::UserFollowed::decode(payload) {
                    self.follows_changed(&event.follower_id);
                }
            }
            "user.updated" => {
                if let Ok(event) = event_pb::UserUpdated::decode(payload) {
                    self.profile_changed(&event.user_id);
                }
            }
            _ => return,
        }
        self.events.inc();
    }

    fn stop_serving(&self) {
        if self.serving.swap(false, Ordering::AcqRel) {
            tracing::warn!("read model: event bus lost; reading from the services");
        }
        self.forget_everything();
    }

    fn start_serving(&self) {
        // Whatever was filled before now may have missed an event.
        self.forget_everything();
        self.serving.store(true, Ordering::Release);
        tracing::info!("read model: serving");
    }

    /// Applies the events published under `namespace` until `shutdown`, and serves only
    /// while the bus is connected (see the module docs).
    pub async fn follow(
        self: std::sync::Arc<Self>,
        bus: Bus,
        namespace: String,
        shutdown: CancellationToken,
    ) {
        for subjects in ["post", "comment", "user"] {
            let mut events = bus.listen(&format!("{namespace}.{subjects}.*"));
            let model = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        event = events.recv() => match event {
                            Some(event) => model.apply(&event),
                            None => {
                                model.stop_serving();
                                return;
                            }
                        },
                    }
                }
            });
        }
        let mut connected_since: Option<Instant> = None;
        loop {
            if bus.is_connected() {
                let since = *connected_since.get_or_insert_with(Instant::now);
                if !self.serving() && since.elapsed() >= SETTLE {
                    self.start_serving();
                }
            } else {
                connected_since = None;
                self.stop_serving();
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ReadModel {
        let model = ReadModel::new(ReadModelLimits {
            entries: NonZeroUsize::new(100).expect("non-zero"),
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
        });
        model.serving.store(true, Ordering::Release);
        model
    }

    fn envelope(kind: &str, payload: impl Message) -> Vec<u8> {
        event_pb::Envelope {
            id: "01".into(),
            r#type: kind.into(),
            payload: payload.encode_to_vec(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn liked(post_id: &str) -> Vec<u8> {
        envelope(
            "post.liked",
            event_pb::PostLiked {
                post_id: post_id.into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_filled_count_is_served_until_its_event_comes() {
        let model = model();
        let ticket = model.like_ticket();
        model.fill_like_counts(ticket, [("p1".to_owned(), 3)]);
        assert_eq!(model.like_counts(&["p1".into()]).0.get("p1"), Some(&3));
        model.apply(&liked("p1"));
        let (found, missing) = model.like_counts(&["p1".into()]);
        assert!(found.is_empty());
        assert_eq!(missing, vec!["p1".to_owned()]);
    }

    #[test]
    fn trending_is_kept_a_second_at_most_and_forgotten_when_a_post_goes() {
        let model = model();
        let post = post_pb::Post {
            id: "p1".into(),
            ..Default::default()
        };
        let ticket = model.trending_ticket();
        model.fill_trending(ticket, 5, std::slice::from_ref(&post));
        assert_eq!(model.trending(5), Some(vec![post.clone()]));
        assert_eq!(model.trending(10), None);
        // A like does not forget it (rank-service applies it later; time bounds that) ...
        model.apply(&liked("p1"));
        assert_eq!(model.trending(5), Some(vec![post.clone()]));
        // ... a deletion does, and after a second it is asked for again anyway.
        model.apply(&envelope(
            "post.deleted",
            event_pb::PostDeleted {
                post_id: "p1".into(),
                ..Default::default()
            },
        ));
        assert_eq!(model.trending(5), None);
        let ticket = model.trending_ticket();
        model.fill_trending(ticket, 5, &[post]);
        std::thread::sleep(TRENDING_MAX_AGE + Duration::from_millis(50));
        assert_eq!(model.trending(5), None);
    }

    #[test]
    fn a_fill_that_started_before_a_change_is_dropped() {
        let model = model();
        let ticket = model.like_ticket();
        // The event arrives while the (now stale) count is on its way from like-service.
        model.apply(&liked("p1"));
        model.fill_like_counts(ticket, [("p1".to_owned(), 3)]);
        assert!(model.like_counts(&["p1".into()]).0.is_empty());
    }

    #[test]
    fn a_redelivered_or_reordered_event_only_forgets_again() {
        let model = model();
        model.apply(&liked("p1"));
        let ticket = model.like_ticket();
        model.fill_like_counts(ticket, [("p1".to_owned(), 4)]);
        model.apply(&liked("p1"));
        // Forgotten again, and filled afresh from the source: still right.
        assert!(model.like_counts(&["p1".into()]).0.is_empty());
        let ticket = model.like_ticket();
        model.fill_like_counts(ticket, [("p1".to_owned(), 4)]);
        assert_eq!(model.like_counts(&["p1".into()]).0.get("p1"), Some(&4));
    }

    #[test]
    fn an_update_forgets_the_post_under_its_old_slug_and_every_page() {
        let model = model();
        let post = post_pb::Post {
            id: "p1".into(),
            slug: "old-title".into(),
            ..Default::default()
        };
        let ticket = model.post_ticket();
        model.fill_post(ticket, &post);
        let key = PageKey {
            first: 20,
            after: String::new(),
            offset: 0,
            tag: String::new(),
            author: String::new(),
            followed: None,
        };
        let ticket = model.page_ticket();
        model.fill_page(ticket, key.clone(), &post_pb::PostPage::default());
        assert!(model.post("old-title").is_some());
        model.apply(&envelope(
            "post.updated",
            event_pb::PostChanged {
                post_id: "p1".into(),
                slug: "new-title".into(),
                ..Default::default()
            },
        ));
        assert!(model.post("old-title").is_none());
        assert!(model.page(&key).is_none());
    }

    #[test]
    fn profiles_are_kept_without_the_viewers_following() {
        let model = model();
        let ticket = model.profile_ticket();
        let profile = user_pb::Profile {
            id: "u1".into(),
            username: "alice".into(),
            following: true,
            ..Default::default()
        };
        model.fill_profiles(ticket, [&profile]);
        let (found, _) = model.profiles(&["u1".into()]);
        assert!(!found["u1"].following);
        model.apply(&envelope(
            "user.updated",
            event_pb::UserUpdated {
                user_id: "u1".into(),
                username: "alice2".into(),
            },
        ));
        assert!(model.profiles(&["u1".into()]).0.is_empty());
    }

    #[test]
    fn nothing_is_served_while_the_bus_is_not_heard() {
        let model = model();
        let ticket = model.comment_ticket();
        model.fill_comment_counts(ticket, [("p1".to_owned(), 2)]);
        model.stop_serving();
        assert!(model.comment_counts(&["p1".into()]).0.is_empty());
        model.start_serving();
        // What was filled before the gap is gone, not served again.
        assert!(model.comment_counts(&["p1".into()]).0.is_empty());
    }

    #[test]
    fn entries_expire_after_the_configured_age() {
        let model = ReadModel::new(ReadModelLimits {
            entries: NonZeroUsize::new(10).expect("non-zero"),
            max_bytes: 1 << 20,
            max_age: Duration::from_millis(1),
        });
        model.serving.store(true, Ordering::Release);
        let ticket = model.comment_ticket();
        model.fill_comment_counts(ticket, [("p1".to_owned(), 2)]);
        std::thread::sleep(Duration::from_millis(5));
        assert!(model.comment_counts(&["p1".into()]).0.is_empty());
    }

    fn set(ids: &[&str]) -> ViewerSet {
        Arc::new(ids.iter().map(|id| (*id).to_owned()).collect())
    }

    #[test]
    fn a_viewers_sets_are_forgotten_on_their_own_follows_and_likes_only() {
        let model = model();
        for viewer in ["alice", "bob"] {
            let ticket = model.following_ticket();
            model.fill_following(ticket, viewer, &set(&["carol"]));
            let ticket = model.liked_ticket();
            model.fill_liked(ticket, viewer, &set(&["p1"]));
        }
        model.apply(&envelope(
            "user.followed",
            event_pb::UserFollowed {
                follower_id: "alice".into(),
                followee_id: "dave".into(),
            },
        ));
        model.apply(&envelope(
            "post.liked",
            event_pb::PostLiked {
                post_id: "p2".into(),
                user_id: "bob".into(),
                ..Default::default()
            },
        ));
        assert!(model.following_of("alice").is_none());
        assert!(model.following_of("bob").is_some());
        assert!(model.liked_by("bob").is_none());
        assert!(model.liked_by("alice").is_some());
    }

    #[test]
    fn a_set_too_large_to_keep_is_asked_for_each_time() {
        let model = model();
        let ids: Vec<String> = (0..=MAX_VIEWER_SET).map(|i| format!("u{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let ticket = model.following_ticket();
        model.fill_following(ticket, "alice", &set(&refs));
        assert!(model.following_of("alice").is_none());
    }

    #[test]
    fn a_comment_forgets_the_pages_of_its_post_only_and_a_rename_every_name() {
        let model = model();
        let key = |post_id: &str| CommentPageKey {
            post_id: post_id.into(),
            first: 20,
            after: String::new(),
        };
        for post_id in ["p1", "p2"] {
            let ticket = model.comment_page_ticket();
            model.fill_comment_page(ticket, key(post_id), &comment_pb::CommentPage::default());
        }
        let ticket = model.profile_by_name_ticket();
        let alice = user_pb::Profile {
            id: "u1".into(),
            username: "alice".into(),
            ..Default::default()
        };
        model.fill_profile_by_name(ticket, &alice);
        model.apply(&envelope(
            "comment.added",
            event_pb::CommentChanged {
                post_id: "p1".into(),
                ..Default::default()
            },
        ));
        assert!(model.comment_page(&key("p1")).is_none());
        assert!(model.comment_page(&key("p2")).is_some());
        assert!(model.profile_by_name("alice").is_some());
        model.apply(&envelope(
            "user.updated",
            event_pb::UserUpdated {
                user_id: "u1".into(),
                username: "alicia".into(),
            },
        ));
        assert!(model.profile_by_name("alice").is_none());
    }

    #[test]
    fn large_pages_are_bounded_by_bytes_not_only_by_entries() {
        let model = ReadModel::new(ReadModelLimits {
            entries: NonZeroUsize::new(1_000).expect("non-zero"),
            max_bytes: 5 * 100_000,
            max_age: Duration::from_secs(60),
        });
        model.serving.store(true, Ordering::Release);
        // Pages of one post with a 60 kB body: a fifth of 500 kB holds one of them.
        let page = post_pb::PostPage {
            posts: vec![post_pb::Post {
                body: "b".repeat(60_000),
                ..Default::default()
            }],
            ..Default::default()
        };
        let key = |offset| PageKey {
            first: 1,
            after: String::new(),
            offset,
            tag: String::new(),
            author: String::new(),
            followed: None,
        };
        for offset in 0..50 {
            let ticket = model.page_ticket();
            model.fill_page(ticket, key(offset), &page);
        }
        let kept = (0..50).filter(|o| model.page(&key(*o)).is_some()).count();
        assert_eq!(kept, 1);
        // The most recent one.
        assert!(model.page(&key(49)).is_some());
        let bytes = model
            .pages
            .state
            .lock()
            .map(|s| s.bytes)
            .unwrap_or(usize::MAX);
        assert!(bytes <= 100_000, "{bytes}");
    }

    #[test]
    fn garbage_on_the_bus_changes_nothing() {
        let model = model();
        let ticket = model.like_ticket();
        model.fill_like_counts(ticket, [("p1".to_owned(), 1)]);
        model.apply(b"\xff\xfe not protobuf");
        model.apply(&envelope("post.viewed", event_pb::PostViewed::default()));
        assert_eq!(model.like_counts(&["p1".into()]).0.get("p1"), Some(&1));
    }

    #[test]
    fn each_table_holds_at_most_its_configured_entries() {
        let model = ReadModel::new(ReadModelLimits {
            entries: NonZeroUsize::new(2).expect("non-zero"),
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
        });
        model.serving.store(true, Ordering::Release);
        let ticket = model.like_ticket();
        model.fill_like_counts(ticket, (0..5).map(|i| (format!("p{i}"), i)));
        let ids: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        assert_eq!(model.like_counts(&ids).0.len(), 2);
    }
}
