//! The event bus behind one trait, [`EventBus`], with two backends chosen by configuration:
//!
//! - [`InProcessBus`] (the `oba up` default): per-consumer queues in memory; no server.
//! - [`NatsBus`]: NATS JetStream with one durable stream (`<namespace>` over
//!   `<namespace>.>`), durable pull consumers, explicit acks and redelivery.
//!
//! Publishing is only ever done by the outbox relay (`crate::outbox`), so a bus that is down
//! delays events but loses none. On NATS a relay round's events of one type travel as one
//! message, an [`EventPack`] (header [`PACK_HEADER`]): the stream, its deliveries and acks
//! are per message, and they were most of NATS's cost per event. Consumers and listeners
//! get the pack's events one by one; a pack is acked when all its events are, and nak'd
//! (every event of it comes again, the applied ones as duplicates) as soon as one is.
//!
//! Subscribing never fails: a consumer whose bus is down keeps retrying in the background,
//! and deliveries arrive on its channel once the bus is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use oba_proto::event::v1::EventPack;
use prost::Message;

use crate::config::{ConfigError, Setting};

/// The header that marks a NATS message as an [`EventPack`]; its value is the event count.
pub const PACK_HEADER: &str = "Oba-Pack";

#[derive(Debug, thiserror::Error)]
#[error("event bus: {0}")]
pub struct BusError(pub String);

/// One message handed to a consumer; it must be acked (done) or nacked (try again later).
pub struct Delivery {
    pub subject: String,
    pub payload: Bytes,
    /// Whether this message was delivered before (and not acked).
    pub redelivered: bool,
    ack: Ack,
}

enum Ack {
    InProcess {
        queue: mpsc::UnboundedSender<Delivery>,
        /// The consumer's count of events handed to it and not yet acked.
        pending: Arc<AtomicU64>,
    },
    Nats(Arc<NatsAck>),
}

/// A JetStream message and how many of the events it carries are not acked yet: one, or
/// a pack's count. Acked once all are; nak'd as soon as one is (the rest's acks are moot).
struct NatsAck {
    message: Mutex<Option<async_nats::jetstream::Message>>,
    unacked: std::sync::atomic::AtomicUsize,
}

impl NatsAck {
    fn new(message: async_nats::jetstream::Message, events: usize) -> Arc<Self> {
        Arc::new(Self {
            message: Mutex::new(Some(message)),
            unacked: events.into(),
        })
    }

    /// The message, unless it was nak'd already (or acked: its last event is).
    fn take(&self) -> Option<async_nats::jetstream::Message> {
        self.message.lock().ok().and_then(|mut m| m.take())
    }

    async fn ack(&self) -> Result<(), BusError> {
        if self.unacked.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(());
        }
        match self.take() {
            Some(message) => message.ack().await.map_err(|e| BusError(e.to_string())),
            None => Ok(()),
        }
    }

    async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        match self.take() {
            Some(message) => message
                .ack_with(async_nats::jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| BusError(e.to_string())),
            None => Ok(()),
        }
    }
}

/// The events a NATS message carries: the pack's when its headers mark it as one, else the
/// message itself. A pack that does not decode is handed on whole, for the consumer to
/// report and drop like any other undecodable event.
fn events_of(headers: Option<&async_nats::HeaderMap>, payload: &Bytes) -> Vec<Bytes> {
    if headers.and_then(|h| h.get(PACK_HEADER)).is_none() {
        return vec![payload.clone()];
    }
    match EventPack::decode(payload.clone()) {
        Ok(pack) if !pack.envelopes.is_empty() => {
            pack.envelopes.into_iter().map(Bytes::from).collect()
        }
        _ => vec![payload.clone()],
    }
}

impl Delivery {
    pub async fn ack(self) -> Result<(), BusError> {
        match self.ack {
            Ack::InProcess { pending, .. } => {
                pending.fetch_sub(1, Ordering::Relaxed);
                Ok(())
            }
            Ack::Nats(message) => message.ack().await,
        }
    }

    /// Hands the message back for redelivery after `delay`.
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        match self.ack {
            Ack::InProcess { queue, pending } => {
                // Still pending: it comes again.
                let again = Delivery {
                    subject: self.subject,
                    payload: self.payload,
                    redelivered: true,
                    ack: Ack::InProcess {
                        queue: queue.clone(),
                        pending,
                    },
                };
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = queue.send(again);
                });
                Ok(())
            }
            Ack::Nats(message) => message.nak(delay).await,
        }
    }
}

#[tonic::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes and waits until the bus has stored the message. `id` (the event id) makes
    /// a repeated publish of the same event a no-op on a bus that remembers ids.
    async fn publish(&self, subject: &str, id: &str, payload: Bytes) -> Result<(), BusError> {
        self.send(subject, id, payload).await?.await
    }
    /// Hands the message to the bus and returns at once; [`Stored`] resolves once the bus
    /// has stored it. Messages sent one after another are stored in that order, so a relay
    /// sends a batch and then waits once, not a round trip per message.
    async fn send(&self, subject: &str, id: &str, payload: Bytes) -> Result<Stored, BusError>;
    /// [`EventBus::send`] for several events of one subject, `(id, payload)` each, in one
    /// message where the bus packs them (`id` then names the pack; consumers still get the
    /// events one by one); by default a message each.
    async fn send_pack(
        &self,
        subject: &str,
        id: &str,
        events: Vec<(String, Bytes)>,
    ) -> Result<Stored, BusError> {
        let _ = id;
        send_each(self, subject, events).await
    }
    /// A durable subscription of `consumer` to `subjects` (NATS wildcards allowed).
    fn subscribe(&self, consumer: &str, subjects: Vec<String>)
    -> mpsc::UnboundedReceiver<Delivery>;
    /// Messages stored for `consumer` (subscribed to `subjects`) and not yet acked: waiting
    /// to be delivered, or delivered and not done. A projection's lag, in messages (a pack,
    /// see the module docs, counts once).
    async fn pending(&self, consumer: &str, subjects: &[String]) -> Result<u64, BusError>;
    /// Whether the bus answers right now (for readiness).
    fn is_connected(&self) -> bool;
    /// Tells every current listener of `subject` (every replica), at most once and not
    /// stored: for live pushes, whose durable record is elsewhere.
    async fn announce(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;
    /// What is announced or published on `subject` (NATS wildcards allowed) from now on, in
    /// this process: at most once, nothing stored, nothing to ack.
    fn listen(&self, subject: &str) -> mpsc::UnboundedReceiver<Bytes>;
}

pub type Bus = Arc<dyn EventBus>;

/// Sends `events` of `subject` a message each; stored once all are.
async fn send_each<B: EventBus + ?Sized>(
    bus: &B,
    subject: &str,
    events: Vec<(String, Bytes)>,
) -> Result<Stored, BusError> {
    let mut stored = Vec::with_capacity(events.len());
    for (id, payload) in events {
        stored.push(bus.send(subject, &id, payload).await?);
    }
    Ok(Box::pin(async move {
        for one in stored {
            one.await?;
        }
        Ok(())
    }))
}

/// A message handed to the bus ([`EventBus::send`]): resolves once the bus has stored it.
pub type Stored = futures::future::BoxFuture<'static, Result<(), BusError>>;

/// `OBA_BUS_URL` (`nats://host:4222`; unset: in-process), `OBA_BUS_NAMESPACE` and
/// `OBA_BUS_PACKS` (whether a relay round's events of one type go as one NATS message).
#[derive(Debug, Clone)]
pub struct BusConfig {
    pub url: Option<Setting<String>>,
    pub namespace: Setting<String>,
    pub packs: Setting<bool>,
}

impl BusConfig {
    pub fn from_env(env: &mut crate::config::Env) -> Self {
        Self {
            url: env.optional("OBA_BUS_URL"),
            namespace: env.parsed("OBA_BUS_NAMESPACE", "oba".to_owned()),
            packs: env.parsed("OBA_BUS_PACKS", true),
        }
    }

    /// The configured bus; `in_process` is used when no URL is set (`oba up`).
    pub async fn connect(&self, in_process: Option<Bus>) -> Result<Bus, ConfigError> {
        match (&self.url, in_process) {
            (Some(url), _) => Ok(Arc::new(
                NatsBus::connect(url, &self.namespace.value)
                    .await?
                    .packing(self.packs.value),
            )),
            (None, Some(bus)) => Ok(bus),
            (None, None) => Err(ConfigError::single(
                "OBA_BUS_URL",
                "is required when a service runs alone (e.g. nats://nats:4222)",
            )),
        }
    }
}

/// NATS-style subject matching: `*` is one token, `>` the rest.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Queues in memory, one per consumer, filled by publish. Consumers subscribe when their
/// service is built, before any outbox relay runs, so nothing is published into the void.
#[derive(Default)]
pub struct InProcessBus {
    consumers: Mutex<HashMap<String, ConsumerQueue>>,
    listeners: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<Bytes>>>>,
}

/// A consumer's subject patterns, its queue, and its count of events not yet acked.
type ConsumerQueue = (Vec<String>, mpsc::UnboundedSender<Delivery>, Arc<AtomicU64>);

impl InProcessBus {
    /// Hands `payload` to every listener whose pattern matches `subject`.
    fn tell_listeners(&self, subject: &str, payload: &Bytes) -> Result<(), BusError> {
        let mut listeners = self
            .listeners
            .lock()
            .map_err(|_| BusError("poisoned".into()))?;
        for (pattern, queues) in listeners.iter_mut() {
            if subject_matches(pattern, subject) {
                queues.retain(|queue| queue.send(payload.clone()).is_ok());
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl EventBus for InProcessBus {
    async fn send(&self, subject: &str, _id: &str, payload: Bytes) -> Result<Stored, BusError> {
        // One process, one relay per outbox: nothing is published twice to deduplicate.
        let consumers = self
            .consumers
            .lock()
            .map_err(|_| BusError("poisoned".into()))?;
        for (patterns, queue, pending) in consumers.values() {
            if patterns.iter().any(|p| subject_matches(p, subject)) {
                let delivery = Delivery {
                    subject: subject.to_owned(),
                    payload: payload.clone(),
                    redelivered: false,
                    ack: Ack::InProcess {
                        queue: queue.clone(),
                        pending: pending.clone(),
                    },
                };
                // Counted before it can be acked; a consumer that has stopped has nothing
                // left to miss.
                pending.fetch_add(1, Ordering::Relaxed);
                if queue.send(delivery).is_err() {
                    pending.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        drop(consumers);
        // As on NATS, where a core subscriber of a subject also gets what JetStream stores.
        self.tell_listeners(subject, &payload)?;
        // Handed over is stored: the queues are in this process.
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    fn subscribe(
        &self,
        consumer: &str,
        subjects: Vec<String>,
    ) -> mpsc::UnboundedReceiver<Delivery> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut consumers) = self.consumers.lock() {
            consumers.insert(consumer.to_owned(), (subjects, tx, Default::default()));
        }
        rx
    }

    async fn pending(&self, consumer: &str, _subjects: &[String]) -> Result<u64, BusError> {
        let consumers = self
            .consumers
            .lock()
            .map_err(|_| BusError("poisoned".into()))?;
        Ok(consumers
            .get(consumer)
            .map_or(0, |(_, _, pending)| pending.load(Ordering::Relaxed)))
    }

    fn is_connected(&self) -> bool {
        true
    }

    async fn announce(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.tell_listeners(subject, &payload)
    }

    fn listen(&self, subject: &str) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.entry(subject.to_owned()).or_default().push(tx);
        }
        rx
    }
}

/// The oldest NATS server oba supports (JetStream, durable pull consumers; on 2.9 each
/// subject of a multi-subject consumer gets a consumer of its own).
pub const MIN_NATS_VERSION: (u64, u64, u64) = (2, 9, 0);

/// The connected server's version, once known.
fn server_version(client: &async_nats::Client) -> Option<(u64, u64, u64)> {
    parse_version(&client.server_info().version)
}

/// `2.9.10` (or `v2.10.1-beta`) as numbers.
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim_start_matches('v').split(['.', '-']);
    let mut next = || parts.next()?.parse::<u64>().ok();
    Some((next()?, next()?, next().unwrap_or(0)))
}

/// How long the stream keeps an event after storing it; until then it may deliver it again.
pub const EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long JetStream waits for an ack before redelivering.
pub const ACK_WAIT: Duration = Duration::from_secs(10);

/// NATS JetStream.
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    namespace: String,
    /// Whether the stream is known to exist: made sure of once, not on every publish (a
    /// round trip to the server each), and again after a publish failed.
    stream_ready: Arc<std::sync::atomic::AtomicBool>,
    /// Whether several events go as one [`EventPack`] (`OBA_BUS_PACKS`).
    packs: bool,
}

impl NatsBus {
    /// Connects in the background: start-up does not wait for (or fail on) a bus that is down.
    pub async fn connect(url: &Setting<String>, namespace: &str) -> Result<Self, ConfigError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(url.value.as_str())
            .await
            .map_err(|e| url.problem(format!("not a usable NATS address: {e}")))?;
        let mut jetstream = async_nats::jetstream::new(client.clone());
        jetstream.set_timeout(Duration::from_secs(5));
        Ok(Self {
            client,
            jetstream,
            namespace: namespace.to_owned(),
            stream_ready: Default::default(),
            packs: true,
        })
    }

    /// With `packs` false, every event goes as a message of its own, as before packs: for
    /// a rollout while consumers of an older version still run.
    pub fn packing(self, packs: bool) -> Self {
        Self { packs, ..self }
    }

    /// Hands a message (a pack of `pack` events, or one event) to JetStream.
    async fn store(
        &self,
        subject: &str,
        id: &str,
        pack: Option<usize>,
        payload: Bytes,
    ) -> Result<Stored, BusError> {
        if !self.stream_ready.load(Ordering::Relaxed) {
            Self::stream(&self.jetstream, &self.namespace).await?;
            self.stream_ready.store(true, Ordering::Relaxed);
        }
        // JetStream drops a message whose id it stored within its duplicate window (2 min):
        // an event published again after a relay crashed before marking it sent.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        if let Some(count) = pack {
            headers.insert(PACK_HEADER, count.to_string().as_str());
        }
        // The stream may be gone (a server that lost its store): make sure of it next time.
        let stream_ready = self.stream_ready.clone();
        let failed = move |e: String| {
            stream_ready.store(false, Ordering::Relaxed);
            BusError(e)
        };
        let ack = self
            .jetstream
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Box::pin(async move {
            ack.await.map(drop).map_err(|e| failed(e.to_string()))
        }))
    }

    async fn stream(
        jetstream: &async_nats::jetstream::Context,
        namespace: &str,
    ) -> Result<async_nats::jetstream::stream::Stream, BusError> {
        jetstream
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: namespace.to_owned(),
                subjects: vec![format!("{namespace}.>")],
                max_age: EVENT_RETENTION,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError(e.to_string()))
    }

    /// The durable consumers that deliver `subjects` to `consumer`, on a server of
    /// `version`: one filtering on all of them (2.10 and later, stream order kept), or one
    /// per subject (2.9, which ignores `filter_subjects` and would deliver everything).
    pub fn consumers_for(
        version: (u64, u64, u64),
        consumer: &str,
        subjects: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, BusError> {
        if version < MIN_NATS_VERSION {
            return Err(BusError(format!(
                "NATS {}.{}.{} is older than {}.{}.{}, the oldest oba supports",
                version.0,
                version.1,
                version.2,
                MIN_NATS_VERSION.0,
                MIN_NATS_VERSION.1,
                MIN_NATS_VERSION.2
            )));
        }
        if version >= (2, 10, 0) || subjects.len() == 1 {
            return Ok(vec![(consumer.to_owned(), subjects.to_vec())]);
        }
        Ok(subjects
            .iter()
            .map(|subject| {
                let name = format!("{consumer}--{}", subject.replace(['.', '*', '>'], "_"));
                (name, vec![subject.clone()])
            })
            .collect())
    }

    async fn pull(
        jetstream: &async_nats::jetstream::Context,
        namespace: &str,
        consumer: &str,
        subjects: &[String],
        queue: &mpsc::UnboundedSender<Delivery>,
    ) -> Result<(), BusError> {
        use async_nats::jetstream::consumer::{AckPolicy, pull};
        let stream = Self::stream(jetstream, namespace).await?;
        let (filter_subject, filter_subjects) = match subjects {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        let consumer = stream
            .get_or_create_consumer(
                consumer,
                pull::Config {
                    durable_name: Some(consumer.to_owned()),
                    filter_subject,
                    filter_subjects,
                    ack_policy: AckPolicy::Explicit,
                    // Unacked deliveries (a consumer that died mid-batch) come again after
                    // this; a slow handler seeing a redelivery is harmless (idempotent).
                    ack_wait: ACK_WAIT,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BusError(e.to_string()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| BusError(e.to_string()))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| BusError(e.to_string()))?;
            let redelivered = message.info().map(|i| i.delivered > 1).unwrap_or(false);
            let subject = message.subject.to_string();
            let events = events_of(message.headers.as_ref(), &message.payload);
            let ack = NatsAck::new(message, events.len());
            for payload in events {
                let delivery = Delivery {
                    subject: subject.clone(),
                    payload,
                    redelivered,
                    ack: Ack::Nats(ack.clone()),
                };
                if queue.send(delivery).is_err() {
                    return Ok(());
                }
            }
        }
        Err(BusError("message stream ended".into()))
    }
}

#[tonic::async_trait]
impl EventBus for NatsBus {
    async fn send(&self, subject: &str, id: &str, payload: Bytes) -> Result<Stored, BusError> {
        self.store(subject, id, None, payload).await
    }

    async fn send_pack(
        &self,
        subject: &str,
        id: &str,
        events: Vec<(String, Bytes)>,
    ) -> Result<Stored, BusError> {
        if !self.packs {
            return send_each(self, subject, events).await;
        }
        let count = events.len();
        let pack = EventPack {
            envelopes: events.into_iter().map(|(_, e)| e.to_vec()).collect(),
        };
        self.store(subject, id, Some(count), pack.encode_to_vec().into())
            .await
    }

    fn subscribe(
        &self,
        consumer: &str,
        subjects: Vec<String>,
    ) -> mpsc::UnboundedReceiver<Delivery> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (jetstream, namespace, consumer) = (
            self.jetstream.clone(),
            self.namespace.clone(),
            consumer.to_owned(),
        );
        let client = self.client.clone();
        tokio::spawn(async move {
            // The server's version decides the consumers; it is known once connected.
            let version = loop {
                if let Some(version) = server_version(&client) {
                    break version;
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let consumers = match Self::consumers_for(version, &consumer, &subjects) {
                Ok(consumers) => consumers,
                Err(e) => {
                    tracing::error!(consumer, error = %e, "cannot consume events");
                    return;
                }
            };
            for (name, subjects) in consumers {
                let (jetstream, namespace, tx) = (jetstream.clone(), namespace.clone(), tx.clone());
                tokio::spawn(async move {
                    // Until the consumer goes away: pull, and on any failure wait and pull again.
                    while !tx.is_closed() {
                        if let Err(e) =
                            Self::pull(&jetstream, &namespace, &name, &subjects, &tx).await
                        {
                            tracing::warn!(consumer = name, error = %e, "event subscription interrupted; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                });
            }
        });
        rx
    }

    async fn pending(&self, consumer: &str, subjects: &[String]) -> Result<u64, BusError> {
        let version = server_version(&self.client)
            .ok_or_else(|| BusError("not connected to the server yet".into()))?;
        let stream = self
            .jetstream
            .get_stream_no_info(&self.namespace)
            .await
            .map_err(|e| BusError(e.to_string()))?;
        let mut pending = 0;
        for (name, _) in Self::consumers_for(version, consumer, subjects)? {
            let info = stream
                .consumer_info(&name)
                .await
                .map_err(|e| BusError(e.to_string()))?;
            pending += info.num_pending + info.num_ack_pending as u64;
        }
        Ok(pending)
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn announce(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(subject.to_owned(), payload)
            .await
            .map_err(|e| BusError(e.to_string()))
    }

    fn listen(&self, subject: &str) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (client, subject) = (self.client.clone(), subject.to_owned());
        tokio::spawn(async move {
            // Core NATS: the client subscribes again by itself after a reconnect.
            while !tx.is_closed() {
                match client.subscribe(subject.clone()).await {
                    Ok(mut messages) => {
                        while let Some(message) = messages.next().await {
                            for event in events_of(message.headers.as_ref(), &message.payload) {
                                if tx.send(event).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(subject, error = %e, "cannot listen; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        rx
    }
}

/// Readiness of a bus: ready while connected.
pub fn readiness(bus: Bus) -> crate::server::ReadinessCheck {
    Arc::new(move || {
        let connected = bus.is_connected();
        Box::pin(async move {
            if connected {
                Ok(())
            } else {
                Err("event bus: not connected".to_owned())
            }
        })
    })
}

/// Under load, the shortest time between two rounds of work that each end in a commit: a
/// consumer's applying (the outbox relay has its own, `outbox::RELAY_GATHER`). A round then
/// carries what arrived in those milliseconds, in one transaction, instead of a commit per
/// event (on PostgreSQL a commit is round trips and a WAL flush). It is also the most an
/// event waits for it.
pub const GATHER: Duration = Duration::from_millis(5);

/// Paces rounds to one per [`GATHER`]: a round right after another waits out the rest of it;
/// the first round after a pause starts at once.
#[derive(Debug)]
pub struct Pace {
    every: Duration,
    last: Option<tokio::time::Instant>,
}

impl Pace {
    pub fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Waits until `every` has passed since the previous round began, then begins one.
    pub async fn next_round(&mut self) {
        if let Some(last) = self.last {
            tokio::time::sleep_until(last + self.every).await;
        }
        self.last = Some(tokio::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(start_paused = true)]
    async fn a_round_right_after_another_waits_out_the_gather() {
        let mut pace = Pace::new(GATHER);
        let start = tokio::time::Instant::now();
        pace.next_round().await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first round goes at once"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        pace.next_round().await;
        assert_eq!(start.elapsed(), GATHER);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_round_after_a_pause_goes_at_once() {
        let mut pace = Pace::new(GATHER);
        pace.next_round().await;
        tokio::time::advance(GATHER * 3).await;
        let resumed = tokio::time::Instant::now();
        pace.next_round().await;
        assert_eq!(resumed.elapsed(), Duration::ZERO);
    }

    use super::*;

    #[test]
    fn on_nats_2_9_each_subject_gets_its_own_consumer() {
        let subjects = vec!["oba.post.liked".to_owned(), "oba.user.*".to_owned()];
        assert_eq!(parse_version("2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version("v2.10.1-beta"), Some((2, 10, 1)));
        assert_eq!(parse_version(""), None);
        let old = NatsBus::consumers_for((2, 9, 10), "notify", &subjects).expect("2.9");
        assert_eq!(
            old,
            vec![
                (
                    "notify--oba_post_liked".to_owned(),
                    vec![subjects[0].clone()]
                ),
                ("notify--oba_user__".to_owned(), vec![subjects[1].clone()]),
            ]
        );
        let new = NatsBus::consumers_for((2, 10, 0), "notify", &subjects).expect("2.10");
        assert_eq!(new, vec![("notify".to_owned(), subjects.clone())]);
        let refused = NatsBus::consumers_for((2, 8, 4), "notify", &subjects).expect_err("2.8");
        assert!(
            refused.to_string().contains("2.8.4 is older than 2.9.0"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_consumers_lag_counts_events_until_they_are_acked() {
        let bus = InProcessBus::default();
        let subjects = vec!["t.post.*".to_owned()];
        let mut deliveries = bus.subscribe("rank", subjects.clone());
        for subject in ["t.post.liked", "t.user.followed", "t.post.viewed"] {
            bus.publish(subject, "id", Bytes::from_static(b"x"))
                .await
                .expect("publish");
        }
        assert_eq!(bus.pending("rank", &subjects).await.expect("lag"), 2);
        let first = deliveries.recv().await.expect("first");
        let second = deliveries.recv().await.expect("second");
        // Delivered is not applied: still pending until acked; a nak keeps it pending.
        assert_eq!(bus.pending("rank", &subjects).await.expect("lag"), 2);
        first.ack().await.expect("ack");
        second.nak(Duration::ZERO).await.expect("nak");
        assert_eq!(bus.pending("rank", &subjects).await.expect("lag"), 1);
        let again = deliveries.recv().await.expect("redelivered");
        assert!(again.redelivered);
        again.ack().await.expect("ack");
        assert_eq!(bus.pending("rank", &subjects).await.expect("lag"), 0);
        assert_eq!(bus.pending("nobody", &subjects).await.expect("lag"), 0);
    }

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches("oba.post.*", "oba.post.created"));
        assert!(subject_matches("oba.>", "oba.post.created"));
        assert!(!subject_matches("oba.post.*", "oba.post.created.x"));
        assert!(!subject_matches("oba.post.*", "oba.comment.added"));
        assert!(subject_matches("oba.user.followed", "oba.user.followed"));
        assert!(!subject_matches("oba.>", "oba"));
    }

    #[tokio::test]
    async fn in_process_delivers_to_matching_consumers_and_redelivers_on_nak() {
        let bus = InProcessBus::default();
        let mut posts = bus.subscribe("rank", vec!["oba.post.*".into()]);
        let mut users = bus.subscribe("other", vec!["oba.user.*".into()]);
        bus.publish("oba.post.liked", "id-1", Bytes::from_static(b"x"))
            .await
            .expect("publish");
        let first = posts.recv().await.expect("delivered");
        assert!(!first.redelivered);
        first.nak(Duration::from_millis(1)).await.expect("nak");
        let again = posts.recv().await.expect("redelivered");
        assert!(again.redelivered);
        assert_eq!(again.payload, Bytes::from_static(b"x"));
        assert!(users.try_recv().is_err(), "not subscribed to posts");
    }

    #[tokio::test]
    async fn in_process_announcements_reach_every_listener_of_the_subject() {
        let bus = InProcessBus::default();
        let (mut a, mut b) = (bus.listen("live"), bus.listen("live"));
        let mut other = bus.listen("elsewhere");
        bus.announce("live", Bytes::from_static(b"n1"))
            .await
            .expect("announce");
        assert_eq!(a.recv().await.as_deref(), Some(&b"n1"[..]));
        assert_eq!(b.recv().await.as_deref(), Some(&b"n1"[..]));
        assert!(other.try_recv().is_err());
    }
}
