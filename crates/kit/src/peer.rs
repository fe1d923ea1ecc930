//! Calling peer services: lazily connected channels, and the interceptor that carries the
//! caller's credential and trace context on every call.
//!
//! A service takes the actor of a call from the credential it verifies, never from the
//! request body, so whoever calls a peer forwards a credential: the user's own token for
//! work done for a user, or a service credential for work done on nobody's behalf.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_graphql::dataloader::{DataLoader, Loader};
use axum::http;
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

use crate::auth::Credential;
use crate::config::{ConfigError, Setting};
use crate::error::{ErrorCode, ServiceError};
use crate::metrics::Metrics;
use crate::trace;

/// The longest any call may take, whatever its caller's budget.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a balanced peer's name is resolved again and its addresses health-checked.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(2);
/// The least time between two rounds when callers ask for an early one.
const RECHECK_PAUSE: Duration = Duration::from_millis(50);

/// A lazily connected channel to a peer service; calls fail fast with UNAVAILABLE while the
/// peer is down instead of hanging, and succeed again once it is back. Every call on it has
/// a deadline. See [`PeerTargets`] for how a URL with several addresses is balanced.
pub fn peer_channel(url: &Setting<String>) -> Result<PeerTransport, ConfigError> {
    PeerTargets::parse(url)?.channel(Some(CALL_TIMEOUT))
}

/// As [`peer_channel`], without a per-request timeout: for server streams that stay open.
/// Kept apart from the unary channel, so that many open streams never delay a unary call.
pub fn peer_channel_for_streams(url: &Setting<String>) -> Result<PeerTransport, ConfigError> {
    PeerTargets::parse(url)?.channel(None)
}

/// A channel to a peer, and the way to ask for its addresses to be checked again now.
#[derive(Clone)]
pub struct PeerTransport {
    pub channel: Channel,
    pub recheck: Recheck,
}

/// Wakes a balanced channel's discovery before its interval is up: a caller that could not
/// reach an address asks, so that a dead replica is ejected in milliseconds rather than at
/// the next round. Does nothing for a single-address channel.
#[derive(Clone, Default)]
pub struct Recheck(Option<Arc<tokio::sync::Notify>>);

impl Recheck {
    pub fn now(&self) {
        if let Some(wake) = &self.0 {
            // One stored permit: a burst of failures is one extra round.
            wake.notify_one();
        }
    }
}

/// Where a peer is: `http://10.0.0.7:8080` (one address), `http://post-service:8080` (every
/// address the name resolves to: a Kubernetes headless Service has one per ready pod), or
/// `http://a:8080,b:8080` (each listed address, each resolved).
///
/// One IP address is one lazily connected HTTP/2 connection. Anything else is balanced on
/// the client, because one long-lived HTTP/2 connection behind a Kubernetes ClusterIP
/// sticks to one pod: tonic balances calls over a connection per address (power of two
/// choices), and a task resolves the names again every [`RESOLVE_INTERVAL`] and
/// health-checks each address (gRPC health protocol), adding new and recovered addresses
/// and ejecting gone and failing ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTargets {
    scheme: String,
    /// `host:port` entries.
    entries: Vec<String>,
}

impl PeerTargets {
    pub fn parse(url: &Setting<String>) -> Result<Self, ConfigError> {
        let (scheme, rest) = url
            .value
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
            .ok_or_else(|| url.problem("not a valid URL: expected http://host:port"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let entries: Vec<String> = authority
            .split(',')
            .map(str::trim)
            .map(str::to_owned)
            .collect();
        for entry in &entries {
            let port = entry.rsplit_once(':').map(|(_, p)| p);
            if entry.is_empty() || port.is_none_or(|p| p.parse::<u16>().is_err()) {
                return Err(url.problem(format!("{entry:?} is not host:port")));
            }
        }
        Ok(Self {
            scheme: scheme.to_owned(),
            entries,
        })
    }

    /// The one address of a single-IP URL; None when the URL is to be balanced.
    fn single_address(&self) -> Option<std::net::SocketAddr> {
        match self.entries.as_slice() {
            [one] => one.parse().ok(),
            _ => None,
        }
    }

    fn endpoint(&self, authority: &str, timeout: Option<Duration>) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(format!("{}://{authority}", self.scheme))
            .map_err(|e| format!("not a valid URL: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30));
        Ok(match timeout {
            Some(timeout) => endpoint.timeout(timeout),
            None => endpoint,
        })
    }

    fn channel(self, timeout: Option<Duration>) -> Result<PeerTransport, ConfigError> {
        if let Some(addr) = self.single_address() {
            let endpoint = self
                .endpoint(&addr.to_string(), timeout)
                .map_err(|e| ConfigError::single("peer URL", e))?;
            return Ok(PeerTransport {
                channel: endpoint.connect_lazy(),
                recheck: Recheck::default(),
            });
        }
        let (channel, changes) = Channel::balance_channel(64);
        let wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(self.discover(changes, timeout, wake.clone()));
        Ok(PeerTransport {
            channel,
            recheck: Recheck(Some(wake)),
        })
    }

    /// Every address the entries resolve to now (an entry that does not resolve adds none).
    pub async fn resolve(&self) -> std::collections::BTreeSet<std::net::SocketAddr> {
        let lookups = self
            .entries
            .iter()
            .map(|entry| tokio::net::lookup_host(entry.clone()));
        futures::future::join_all(lookups)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .flatten()
            .collect()
    }

    /// Keeps the balanced channel's addresses current until the channel is dropped.
    async fn discover(
        self,
        changes: tokio::sync::mpsc::Sender<
            tonic::transport::channel::Change<std::net::SocketAddr, Endpoint>,
        >,
        timeout: Option<Duration>,
        wake: Arc<tokio::sync::Notify>,
    ) {
        use std::collections::{BTreeSet, HashMap};
        use tonic::transport::channel::Change;
        let mut in_use: BTreeSet<std::net::SocketAddr> = BTreeSet::new();
        let mut probes: HashMap<std::net::SocketAddr, Channel> = HashMap::new();
        while !changes.is_closed() {
            let resolved = self.resolve().await;
            probes.retain(|addr, _| resolved.contains(addr));
            for addr in &resolved {
                if !probes.contains_key(addr)
                    && let Ok(endpoint) = self.endpoint(&addr.to_string(), None)
                {
                    probes.insert(*addr, endpoint.connect_lazy());
                }
            }
            let checks = probes.iter().map(|(addr, channel)| {
                let channel = channel.clone();
                async move { (*addr, is_serving(channel).await) }
            });
            let mut healthy: BTreeSet<_> = futures::future::join_all(checks)
                .await
                .into_iter()
                .filter_map(|(addr, serving)| serving.then_some(addr))
                .collect();
            if healthy.is_empty() {
                // Ejecting every address would fail every call. When none passes its check
                // (an overloaded host, a slow start) calls still go to all that resolve:
                // they may succeed where a check timed out, and fail fast where nothing
                // listens (the breaker takes it from there).
                healthy = probes.keys().copied().collect();
            }
            for addr in healthy.difference(&in_use) {
                if let Ok(endpoint) = self.endpoint(&addr.to_string(), timeout) {
                    tracing::info!(peer = ?self.entries, %addr, "peer address in use");
                    let _ = changes.send(Change::Insert(*addr, endpoint)).await;
                }
            }
            for addr in in_use.difference(&healthy) {
                tracing::warn!(peer = ?self.entries, %addr, "peer address ejected: gone or failing");
                let _ = changes.send(Change::Remove(*addr)).await;
            }
            in_use = healthy;
            tokio::select! {
                () = tokio::time::sleep(RESOLVE_INTERVAL) => {}
                () = wake.notified() => {
                    // A caller failed to reach an address: check again soon, not at once,
                    // so that a storm of failures is a few rounds, not a busy loop.
                    tokio::time::sleep(RECHECK_PAUSE).await;
                }
            }
        }
    }
}

/// Whether the service at `channel` answers the gRPC health check as serving, within 1 s.
async fn is_serving(channel: Channel) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(reply)) if reply.get_ref().status() == ServingStatus::Serving
    )
}

/// Adds the credential (`authorization`), the current `traceparent` and the deadline
/// (`grpc-timeout`) to outgoing calls.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    credential: Option<Credential>,
    deadline: Option<Instant>,
}

impl Outgoing {
    /// Calls made with `credential`, or anonymously with None.
    pub fn new(credential: Option<Credential>) -> Self {
        Self {
            credential,
            deadline: None,
        }
    }

    /// No call outlives `deadline` (the inbound request's budget): each is sent with the
    /// time left as its gRPC deadline, and one made after it fails at once.
    pub fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

impl tonic::service::Interceptor for Outgoing {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = trace::current().and_then(|t| t.parse().ok()) {
            request.metadata_mut().insert(trace::HEADER, value);
        }
        if let Some(credential) = &self.credential {
            request
                .metadata_mut()
                .insert("authorization", credential.header_value().clone());
        }
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(tonic::Status::deadline_exceeded(
                    "the request's time budget is spent",
                ));
            }
            request.set_timeout(left);
        }
        Ok(request)
    }
}

/// Facts about posts from their owner, post-service, for services that must not take them
/// from their caller: whether a post exists and who wrote it (whom a comment or a like
/// notifies, who may delete a post's comments).
///
/// A post's author never changes, so answers are remembered ([`AUTHORS_REMEMBERED`] posts,
/// least recently used forgotten first): a like or a comment costs no call to post-service
/// once its post is known. What can change is whether the post exists: a remembered post is
/// forgotten when its `post.deleted` event passes ([`PostDirectory::forget_deleted`], heard
/// by every replica), and after [`AUTHOR_REMEMBERED_FOR`] in case that event was missed (it
/// is listened to at most once, not consumed durably).
///
/// Posts not remembered are asked for together: those missed within a millisecond go in
/// one `ListPosts` call (`AuthorsOfPosts`). Answers learnt together expire together, so a
/// busy service that paused for a minute misses every post at once; asked one call each,
/// hundreds of calls queued at post-service and halved favorites for a second or two.
#[derive(Clone)]
pub struct PostDirectory {
    asked: Arc<DataLoader<AuthorsOfPosts>>,
    authors: Arc<std::sync::Mutex<lru::LruCache<uuid::Uuid, (uuid::Uuid, Instant)>>>,
}

/// How many posts' authors a [`PostDirectory`] remembers.
pub const AUTHORS_REMEMBERED: usize = 10_000;
/// The longest a post's author is remembered (the bound on trusting a post still exists
/// when its deletion was not heard).
pub const AUTHOR_REMEMBERED_FOR: Duration = Duration::from_secs(60);

impl PostDirectory {
    /// Reaches post-service at `url` (`OBA_POST_SERVICE_URL`).
    pub fn connect(url: &Setting<String>) -> Result<Self, ConfigError> {
        let channel = peer_channel(url)?.channel;
        let capacity =
            std::num::NonZeroUsize::new(AUTHORS_REMEMBERED).unwrap_or(std::num::NonZeroUsize::MIN);
        let posts = oba_proto::post::v1::post_service_client::PostServiceClient::with_interceptor(
            channel,
            Outgoing::default(),
        );
        // A batch is one page of post-service's listing.
        let asked = DataLoader::new(AuthorsOfPosts { posts }, tokio::spawn)
            .max_batch_size(crate::page::PAGE_MAX as usize);
        Ok(Self {
            asked: Arc::new(asked),
            authors: Arc::new(std::sync::Mutex::new(lru::LruCache::new(capacity))),
        })
    }

    /// Forgets the posts whose `post.deleted` envelopes arrive on `deleted`, until shutdown.
    pub async fn forget_deleted(
        self,
        mut deleted: tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        use prost::Message;
        loop {
            let payload = tokio::select! {
                () = shutdown.cancelled() => return,
                next = deleted.recv() => match next { Some(payload) => payload, None => return },
            };
            let post = oba_proto::event::v1::Envelope::decode(payload)
                .ok()
                .and_then(|envelope| envelope.aggregate_id.parse::<uuid::Uuid>().ok());
            if let (Some(post), Ok(mut authors)) = (post, self.authors.lock()) {
                authors.pop(&post);
            }
        }
    }

    /// The author of `post_id`; NOT_FOUND when there is no such post.
    pub async fn author_of(&self, post_id: uuid::Uuid) -> Result<uuid::Uuid, ServiceError> {
        let remembered = self.authors.lock().ok().and_then(|mut authors| {
            let (author, since) = *authors.get(&post_id)?;
            if since.elapsed() < AUTHOR_REMEMBERED_FOR {
                return Some(author);
            }
            authors.pop(&post_id);
            None
        });
        if let Some(author) = remembered {
            return Ok(author);
        }
        let author = self
            .asked
            .load_one(post_id)
            .await
            .map_err(ServiceError::from)?
            .ok_or(ServiceError::NotFound("post"))?;
        if let Ok(mut authors) = self.authors.lock() {
            authors.put(post_id, (author, Instant::now()));
        }
        Ok(author)
    }
}

/// Who wrote which posts, in one call to post-service; posts it does not list do not exist.
pub(crate) struct AuthorsOfPosts {
    posts: oba_proto::post::v1::post_service_client::PostServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Outgoing>,
    >,
}

/// Why post-service gave no answer, told to every lookup that waited for it.
#[derive(Debug, Clone)]
pub(crate) enum AskFailed {
    Unavailable,
    Internal(String),
}

impl From<AskFailed> for ServiceError {
    fn from(failed: AskFailed) -> Self {
        match failed {
            AskFailed::Unavailable => ServiceError::Unavailable("post-service".into()),
            AskFailed::Internal(message) => ServiceError::Internal(message),
        }
    }
}

impl Loader<uuid::Uuid> for AuthorsOfPosts {
    type Value = uuid::Uuid;
    type Error = AskFailed;

    async fn load(
        &self,
        post_ids: &[uuid::Uuid],
    ) -> Result<HashMap<uuid::Uuid, uuid::Uuid>, Self::Error> {
        use oba_proto::common::v1::IdSet;
        use oba_proto::post::v1::ListPostsRequest;
        use tracing::Instrument;
        let request = ListPostsRequest {
            first: u32::try_from(post_ids.len()).unwrap_or(crate::page::PAGE_MAX),
            post_ids: Some(IdSet {
                ids: post_ids.iter().map(uuid::Uuid::to_string).collect(),
            }),
            ..Default::default()
        };
        let page = self
            .posts
            .clone()
            .list_posts(request)
            .instrument(trace::client_span(
                "post-service",
                "/oba.post.v1.PostService/ListPosts",
            ))
            .await
            .map_err(|status| match ErrorCode::of_status(&status) {
                ErrorCode::Unavailable => AskFailed::Unavailable,
                _ => AskFailed::Internal(format!("post-service: {status:?}")),
            })?
            .into_inner();
        page.posts
            .iter()
            .map(|post| {
                let id = crate::error::parse_id("id", &post.id)?;
                Ok((id, crate::error::parse_id("author_id", &post.author_id)?))
            })
            .collect::<Result<_, ServiceError>>()
            .map_err(|e| AskFailed::Internal(format!("post-service's answer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(url: &str) -> Result<PeerTargets, ConfigError> {
        PeerTargets::parse(&Setting::new("OBA_POST_SERVICE_URL", url.to_owned()))
    }

    fn breaker_rule() -> SilentPeer {
        SilentPeer::new(&PeerPolicy::default())
    }

    #[test]
    fn calls_failing_together_while_other_replicas_answer_do_not_open_the_breaker() {
        let mut rule = breaker_rule();
        let start = Instant::now();
        rule.answered_at(start);
        // A replica dies with eight calls in flight: all fail within milliseconds.
        let opened = (1..=8).any(|ms| rule.opens_at(start + Duration::from_millis(ms)));
        assert!(!opened);
        // Another replica answers; the count starts again.
        rule.answered_at(start + Duration::from_millis(20));
        let later = start + Duration::from_secs(1);
        assert!(!(0..4).any(|ms| rule.opens_at(later + Duration::from_millis(ms))));
    }

    #[test]
    fn failures_from_a_silent_peer_open_the_breaker() {
        let mut rule = breaker_rule();
        let start = Instant::now();
        rule.answered_at(start);
        let failures: Vec<bool> = (1..=6)
            .map(|n| rule.opens_at(start + Duration::from_millis(150 * n)))
            .collect();
        // The fifth failure in a row comes 750 ms after the last answer: silent long enough.
        assert_eq!(failures, [false, false, false, false, true, true]);
    }

    #[test]
    fn a_peer_that_never_answered_is_failing_after_the_failures_alone() {
        let mut rule = breaker_rule();
        let now = Instant::now();
        let failures: Vec<bool> = (0..5).map(|_| rule.opens_at(now)).collect();
        assert_eq!(failures, [false, false, false, false, true]);
    }

    #[test]
    fn a_peer_url_names_one_address_a_host_or_a_list() {
        let one = targets("http://127.0.0.1:8082").expect("one");
        assert_eq!(one.single_address(), Some(([127, 0, 0, 1], 8082).into()));
        let name = targets("http://post-service:8080").expect("name");
        assert_eq!(name.single_address(), None);
        let list = targets("http://127.0.0.1:9001, 127.0.0.2:9001/").expect("list");
        assert_eq!(list.entries, ["127.0.0.1:9001", "127.0.0.2:9001"]);
        for bad in [
            "post-service:8080",
            "ftp://x:1",
            "http://x",
            "http://a:1,,b:2",
        ] {
            assert!(targets(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn names_resolve_through_the_system_resolver() {
        // The path a Kubernetes headless Service name takes: the system's resolver.
        let resolved = targets("http://localhost:8080,127.0.0.2:8080")
            .expect("targets")
            .resolve()
            .await;
        assert!(
            resolved.contains(&([127, 0, 0, 1], 8080).into()),
            "{resolved:?}"
        );
        assert!(
            resolved.contains(&([127, 0, 0, 2], 8080).into()),
            "{resolved:?}"
        );
        let nothing = targets("http://no-such-host.invalid:80")
            .expect("targets")
            .resolve()
            .await;
        assert!(nothing.is_empty());
    }
}

/// Settings of how the edge treats its peers (`OBA_PEER_*`).
#[derive(Debug, Clone, Copy)]
pub struct PeerPolicy {
    /// Calls in flight to one peer at most; more are refused at once (a bulkhead).
    pub max_in_flight: usize,
    /// Transport failures or timeouts, with no answer between them, that open the breaker.
    pub breaker_failures: u32,
    /// How long the peer must have answered nothing before those failures open it: calls
    /// failing together on one dead replica while the others answer are not a failing peer.
    pub breaker_silence: Duration,
    /// How long an open breaker refuses calls before one probe call may pass.
    pub breaker_open_for: Duration,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            breaker_failures: 5,
            breaker_silence: Duration::from_millis(500),
            breaker_open_for: Duration::from_secs(2),
        }
    }
}

/// The breaker's rule: open after `failures` failed calls in a row *and* no answer from the
/// peer for `silence`. Counting failures in a row alone would open a balanced peer's breaker
/// when one replica dies: every call in flight on its connection fails at the same instant,
/// although the other replicas go on answering.
#[derive(Debug, Clone)]
struct SilentPeer {
    failures: u32,
    silence: Duration,
    open_for: Duration,
    in_a_row: u32,
    last_answer: Option<Instant>,
}

impl SilentPeer {
    fn new(policy: &PeerPolicy) -> Self {
        Self {
            failures: policy.breaker_failures.max(1),
            silence: policy.breaker_silence,
            open_for: policy.breaker_open_for,
            in_a_row: 0,
            last_answer: None,
        }
    }

    fn answered_at(&mut self, now: Instant) {
        self.in_a_row = 0;
        self.last_answer = Some(now);
    }

    /// Whether the failure of a call at `now` opens the breaker.
    fn opens_at(&mut self, now: Instant) -> bool {
        self.in_a_row = self.in_a_row.saturating_add(1);
        let silent = self
            .last_answer
            .is_none_or(|answer| now.saturating_duration_since(answer) >= self.silence);
        self.in_a_row >= self.failures && silent
    }
}

impl failsafe::failure_policy::FailurePolicy for SilentPeer {
    fn record_success(&mut self) {
        self.answered_at(Instant::now());
    }

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        self.opens_at(Instant::now()).then_some(self.open_for)
    }

    fn revived(&mut self) {
        self.in_a_row = 0;
    }
}

/// Why a call to a peer did not get an answer; a closed set, for metric labels.
#[derive(
    Debug, Clone, Copy, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue,
)]
pub enum CallFailure {
    /// No answer within the call's deadline.
    Timeout,
    /// Refused, reset, or no connection.
    Unreachable,
    /// Not made: the peer's breaker is open.
    BreakerOpen,
    /// Not made: too many calls to the peer are in flight.
    Busy,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct FailureLabels {
    peer: &'static str,
    reason: CallFailure,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct PeerLabel {
    peer: &'static str,
}

/// Per-peer call metrics: failures by reason, breaker state, degraded answers.
#[derive(Clone, Default)]
pub struct PeerMetrics {
    failures: Family<FailureLabels, Counter>,
    breaker_open: Family<PeerLabel, Gauge>,
    degraded: Family<PeerLabel, Counter>,
}

impl PeerMetrics {
    /// Registers the metrics with `metrics` (the calling service's registry).
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self::default();
        metrics.register(
            "peer_call_failures",
            "Calls to a peer that got no answer, by peer and reason",
            this.failures.clone(),
        );
        metrics.register(
            "peer_breaker_open",
            "1 while the circuit breaker of a peer is open (calls refused at once)",
            this.breaker_open.clone(),
        );
        metrics.register(
            "degraded_responses",
            "Responses served without the facts of a peer that was unavailable",
            this.degraded.clone(),
        );
        this
    }

    /// Counts a response served without `peer`'s facts.
    pub fn degraded(&self, peer: &'static str) {
        self.degraded.get_or_create(&PeerLabel { peer }).inc();
    }

    fn failed(&self, peer: &'static str, reason: CallFailure) {
        self.failures
            .get_or_create(&FailureLabels { peer, reason })
            .inc();
    }
}

/// Keeps the breaker's state in the `peer_breaker_open` gauge, and whether it is probing.
#[derive(Clone)]
struct BreakerGauge {
    gauge: Gauge,
    peer: &'static str,
    half_open: Arc<AtomicBool>,
}

impl failsafe::Instrument for BreakerGauge {
    fn on_call_rejected(&self) {}
    fn on_open(&self) {
        tracing::warn!(
            peer = self.peer,
            "peer failing: breaker open, calls refused"
        );
        self.half_open.store(false, Ordering::SeqCst);
        self.gauge.set(1);
    }
    fn on_half_open(&self) {
        self.half_open.store(true, Ordering::SeqCst);
    }
    fn on_closed(&self) {
        tracing::info!(peer = self.peer, "peer answering again: breaker closed");
        self.half_open.store(false, Ordering::SeqCst);
        self.gauge.set(0);
    }
}

/// Lets one call at a time through a half-open breaker: failsafe lets every call through
/// while half-open, and with a hung peer each would wait out its whole deadline.
#[derive(Clone, Default)]
struct Probe {
    half_open: Arc<AtomicBool>,
    in_flight: Arc<AtomicBool>,
}

impl Probe {
    /// Whether this call may go (closed breaker, or the one probe of a half-open one); the
    /// probe slot is freed when the returned guard drops.
    fn admit(&self) -> Option<ProbeGuard> {
        if !self.half_open.load(Ordering::SeqCst) {
            return Some(ProbeGuard(None));
        }
        self.in_flight
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| ProbeGuard(Some(self.in_flight.clone())))
    }
}

struct ProbeGuard(Option<Arc<AtomicBool>>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(false, Ordering::SeqCst);
        }
    }
}

type Breaker = failsafe::StateMachine<SilentPeer, BreakerGauge>;

/// A channel to one peer that fails fast when the peer is sick: at most
/// `max_in_flight` calls at once (more are refused, so a slow peer cannot tie up every
/// caller), and a circuit breaker that opens after consecutive transport failures or
/// timeouts with the peer silent (see [`SilentPeer`]), refuses calls at once while open,
/// and lets one probe through after a while.
/// Every failure is a `tonic::Status` UNAVAILABLE or DEADLINE_EXCEEDED, never UNKNOWN.
/// A clone is a channel handle and one shared [`Guard`]: a call clones it, so it stays cheap.
#[derive(Clone)]
pub struct GuardedChannel {
    inner: Channel,
    guard: Arc<Guard>,
}

/// What every clone of one peer's guarded channel shares.
struct Guard {
    recheck: Recheck,
    peer: &'static str,
    in_flight: Arc<Semaphore>,
    breaker: Breaker,
    /// The breaker's state as its instrument records it (1 while open).
    breaker_open: Gauge,
    probe: Probe,
    metrics: PeerMetrics,
}

impl GuardedChannel {
    pub fn new(
        inner: PeerTransport,
        peer: &'static str,
        policy: PeerPolicy,
        metrics: &PeerMetrics,
    ) -> Self {
        let gauge = metrics
            .breaker_open
            .get_or_create(&PeerLabel { peer })
            .clone();
        let probe = Probe::default();
        let breaker = failsafe::Config::new()
            .failure_policy(SilentPeer::new(&policy))
            .instrument(BreakerGauge {
                gauge: gauge.clone(),
                peer,
                half_open: probe.half_open.clone(),
            })
            .build();
        Self {
            inner: inner.channel,
            guard: Arc::new(Guard {
                recheck: inner.recheck,
                peer,
                in_flight: Arc::new(Semaphore::new(policy.max_in_flight)),
                breaker,
                breaker_open: gauge,
                probe,
                metrics: metrics.clone(),
            }),
        }
    }

    /// Whether the breaker is open. Read from the recorded state: asking the breaker
    /// itself would move it to half-open, so a status page would start probes.
    pub fn is_open(&self) -> bool {
        self.guard.breaker_open.get() == 1
    }
}

/// What a transport error of a call was: a timeout, or the peer not being reachable.
fn transport_failure(error: &(dyn std::error::Error + 'static)) -> CallFailure {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<tonic::TimeoutExpired>() || e.is::<tokio::time::error::Elapsed>() {
            return CallFailure::Timeout;
        }
        source = e.source();
    }
    CallFailure::Unreachable
}

impl tower::Service<http::Request<tonic::body::Body>> for GuardedChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        use failsafe::futures::CircuitBreaker;
        use tracing::Instrument;
        let guard = &self.guard;
        let peer = guard.peer;
        let span = trace::client_span(peer, request.uri().path());
        // The callee's span is this call's child, not its caller's.
        if let Some(value) = span.in_scope(trace::current).and_then(|t| t.parse().ok()) {
            request.headers_mut().insert(trace::HEADER, value);
        }
        let refuse = |reason: CallFailure, message: String| {
            guard.metrics.failed(peer, reason);
            let status: tower::BoxError = Box::new(tonic::Status::unavailable(message));
            Box::pin(std::future::ready(Err(status))) as Self::Future
        };
        let Ok(permit) = guard.in_flight.clone().try_acquire_owned() else {
            return refuse(
                CallFailure::Busy,
                format!("too many calls in flight to {peer}"),
            );
        };
        let probe = if guard.breaker.is_call_permitted() {
            guard.probe.admit()
        } else {
            None
        };
        let Some(probe) = probe else {
            return refuse(
                CallFailure::BreakerOpen,
                format!("{peer} is failing; calls are paused"),
            );
        };
        // The ready channel serves this call; a fresh clone waits for the next one.
        let ready = self.inner.clone();
        let mut channel = std::mem::replace(&mut self.inner, ready);
        let call = channel.call(request);
        let guard = guard.clone();
        let failed = span.clone();
        let answer = async move {
            let (_permit, _probe) = (permit, probe);
            match guard.breaker.call(call).await {
                Ok(response) => Ok(response),
                Err(failsafe::Error::Rejected) => {
                    guard.metrics.failed(peer, CallFailure::BreakerOpen);
                    Err(Box::new(tonic::Status::unavailable(format!(
                        "{peer} is failing; calls are paused"
                    ))) as tower::BoxError)
                }
                Err(failsafe::Error::Inner(error)) => {
                    let reason = transport_failure(&error);
                    guard.metrics.failed(peer, reason);
                    if reason == CallFailure::Unreachable {
                        guard.recheck.now();
                    }
                    let status = match reason {
                        CallFailure::Timeout => tonic::Status::deadline_exceeded(format!(
                            "{peer} did not answer in time"
                        )),
                        _ => tonic::Status::unavailable(format!("{peer} is unreachable")),
                    };
                    Err(Box::new(status) as tower::BoxError)
                }
            }
        };
        Box::pin(
            async move {
                let answer = answer.await;
                if answer.is_err() {
                    failed.record("otel.status_code", "ERROR");
                }
                answer
            }
            .instrument(span),
        )
    }
}
