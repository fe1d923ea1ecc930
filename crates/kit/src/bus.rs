//! The event bus behind one trait, [`EventBus`], with two backends chosen by configuration:
//!
//! - [`InProcessBus`] (the `oba up` default): per-consumer queues in memory; no server.
//! - [`NatsBus`]: NATS JetStream with one durable stream (`<namespace>` over
//!   `<namespace>.>`), durable pull consumers, explicit acks and redelivery.
//!
//! Publishing is only ever done by the outbox relay (`crate::outbox`), so a bus that is down
//! delays events but loses none. Subscribing never fails: a consumer whose bus is down keeps
//! retrying in the background, and deliveries arrive on its channel once the bus is back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::config::{ConfigError, Setting};

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
    },
    Nats(Box<async_nats::jetstream::Message>),
}

impl Delivery {
    pub async fn ack(self) -> Result<(), BusError> {
        match self.ack {
            Ack::InProcess { .. } => Ok(()),
            Ack::Nats(message) => message.ack().await.map_err(|e| BusError(e.to_string())),
        }
    }

    /// Hands the message back for redelivery after `delay`.
    pub async fn nak(self, delay: Duration) -> Result<(), BusError> {
        match self.ack {
            Ack::InProcess { queue } => {
                let again = Delivery {
                    subject: self.subject,
                    payload: self.payload,
                    redelivered: true,
                    ack: Ack::InProcess {
                        queue: queue.clone(),
                    },
                };
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = queue.send(again);
                });
                Ok(())
            }
            Ack::Nats(message) => message
                .ack_with(async_nats::jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| BusError(e.to_string())),
        }
    }
}

#[tonic::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes and waits until the bus has stored the message.
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;
    /// A durable subscription of `consumer` to `subjects` (NATS wildcards allowed).
    fn subscribe(&self, consumer: &str, subjects: Vec<String>)
    -> mpsc::UnboundedReceiver<Delivery>;
    /// Whether the bus answers right now (for readiness).
    fn is_connected(&self) -> bool;
}

pub type Bus = Arc<dyn EventBus>;

/// `OBA_BUS_URL` (`nats://host:4222`; unset: in-process) and `OBA_BUS_NAMESPACE`.
#[derive(Debug, Clone)]
pub struct BusConfig {
    pub url: Option<Setting<String>>,
    pub namespace: Setting<String>,
}

impl BusConfig {
    pub fn from_env(env: &mut crate::config::Env) -> Self {
        Self {
            url: env.optional("OBA_BUS_URL"),
            namespace: env.parsed("OBA_BUS_NAMESPACE", "oba".to_owned()),
        }
    }

    /// The configured bus; `in_process` is used when no URL is set (`oba up`).
    pub async fn connect(&self, in_process: Option<Bus>) -> Result<Bus, ConfigError> {
        match (&self.url, in_process) {
            (Some(url), _) => Ok(Arc::new(
                NatsBus::connect(url, &self.namespace.value).await?,
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
}

/// A consumer's subject patterns and its queue.
type ConsumerQueue = (Vec<String>, mpsc::UnboundedSender<Delivery>);

#[tonic::async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        let consumers = self
            .consumers
            .lock()
            .map_err(|_| BusError("poisoned".into()))?;
        for (patterns, queue) in consumers.values() {
            if patterns.iter().any(|p| subject_matches(p, subject)) {
                let delivery = Delivery {
                    subject: subject.to_owned(),
                    payload: payload.clone(),
                    redelivered: false,
                    ack: Ack::InProcess {
                        queue: queue.clone(),
                    },
                };
                // A consumer that has stopped has nothing left to miss.
                let _ = queue.send(delivery);
            }
        }
        Ok(())
    }

    fn subscribe(
        &self,
        consumer: &str,
        subjects: Vec<String>,
    ) -> mpsc::UnboundedReceiver<Delivery> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut consumers) = self.consumers.lock() {
            consumers.insert(consumer.to_owned(), (subjects, tx));
        }
        rx
    }

    fn is_connected(&self) -> bool {
        true
    }
}

/// How long JetStream waits for an ack before redelivering.
pub const ACK_WAIT: Duration = Duration::from_secs(10);

/// NATS JetStream.
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    namespace: String,
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
        })
    }

    async fn stream(
        jetstream: &async_nats::jetstream::Context,
        namespace: &str,
    ) -> Result<async_nats::jetstream::stream::Stream, BusError> {
        jetstream
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: namespace.to_owned(),
                subjects: vec![format!("{namespace}.>")],
                max_age: Duration::from_secs(7 * 24 * 3600),
                ..Default::default()
            })
            .await
            .map_err(|e| BusError(e.to_string()))
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
        let consumer = stream
            .get_or_create_consumer(
                consumer,
                pull::Config {
                    durable_name: Some(consumer.to_owned()),
                    filter_subjects: subjects.to_vec(),
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
            let delivery = Delivery {
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
                redelivered,
                ack: Ack::Nats(Box::new(message)),
            };
            if queue.send(delivery).is_err() {
                return Ok(());
            }
        }
        Err(BusError("message stream ended".into()))
    }
}

#[tonic::async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        Self::stream(&self.jetstream, &self.namespace).await?;
        self.jetstream
            .publish(subject.to_owned(), payload)
            .await
            .map_err(|e| BusError(e.to_string()))?
            .await
            .map_err(|e| BusError(e.to_string()))?;
        Ok(())
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
        tokio::spawn(async move {
            // Until the consumer goes away: pull, and on any failure wait and pull again.
            while !tx.is_closed() {
                if let Err(e) = Self::pull(&jetstream, &namespace, &consumer, &subjects, &tx).await
                {
                    tracing::warn!(consumer, error = %e, "event subscription interrupted; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        rx
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
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

#[cfg(test)]
mod tests {
    use super::*;

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
        bus.publish("oba.post.liked", Bytes::from_static(b"x"))
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
}
