//! The bus on NATS JetStream: one file-storage stream, a durable pull consumer per topic.

use crate::envelope::AckHandle;
use crate::error::network_hint;
use crate::{redact_url, BusError, Consumer, Delivery, Envelope, Publisher, Result, Topic};
use async_nats::connection::State;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context, ContextBuilder};
use async_nats::Client;
use async_trait::async_trait;
use futures_util::StreamExt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const BROKER: &str = "NATS";

/// Settings of a [`NatsBus`].
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:4222` (user and password or token in the URL if needed).
    pub url: String,
    /// Prefix of the subjects (`<prefix>.events`, `<prefix>.cdrs`); the stream is named after
    /// it in capitals (`.` and `-` become `_`). Default `outcall`.
    pub prefix: String,
    /// Prefix of the durable consumers' names (`<durable_prefix>-events`,
    /// `<durable_prefix>-cdrs`). Default `ingest`.
    pub durable_prefix: String,
    /// How long a publish waits for JetStream's acknowledgements. Default 5 s.
    pub confirm_timeout: Duration,
    /// How long opening the connection may take. Default 5 s.
    pub connect_timeout: Duration,
    /// A delivery not acknowledged within this time goes to a consumer again. Default 30 s;
    /// keep it above the time an ingest batch may take to write.
    pub ack_wait: Duration,
    /// Unacknowledged messages a durable consumer may have out (all its clients together).
    /// Default 20,000.
    pub max_ack_pending: i64,
    /// Messages older than this leave the stream even if unconsumed. Default 7 days.
    pub max_age: Duration,
    /// JetStream drops a message whose id it saw within this window. Default 2 min.
    pub duplicate_window: Duration,
}

impl NatsConfig {
    /// Default settings for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            prefix: "outcall".to_string(),
            durable_prefix: "ingest".to_string(),
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
        }
    }

    /// The stream's name: the prefix in capitals, `.` and `-` as `_` (`OUTCALL`).
    pub fn stream_name(&self) -> String {
        self.prefix.to_uppercase().replace(['.', '-'], "_")
    }

    /// The subject of `topic`.
    pub fn subject(&self, topic: Topic) -> String {
        topic.subject_with(&self.prefix)
    }

    /// The durable consumer of `topic`.
    pub fn durable(&self, topic: Topic) -> String {
        format!("{}-{}", self.durable_prefix, topic.suffix())
    }

    fn validate(&self) -> Result<()> {
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 200
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        };
        if !self.prefix.split('.').all(token) {
            return Err(BusError::Invalid {
                what: "NATS prefix",
                message: format!(
                    "{:?}: use letters, digits, '-' or '_', in tokens separated by '.'",
                    self.prefix
                ),
            });
        }
        if !token(&self.durable_prefix) {
            return Err(BusError::Invalid {
                what: "NATS durable prefix",
                message: format!("{:?}: use letters, digits, '-' or '_'", self.durable_prefix),
            });
        }
        if self.ack_wait.is_zero() || self.max_ack_pending < 1 {
            return Err(BusError::Invalid {
                what: "NATS consumer setting",
                message: "ack_wait and max_ack_pending must be above zero".to_string(),
            });
        }
        Ok(())
    }

    fn error(&self, message: String) -> BusError {
        BusError::Broker {
            broker: BROKER,
            url: redact_url(&self.url),
            message,
        }
    }

    fn nats_error(&self, doing: &str, e: impl std::fmt::Display) -> BusError {
        let detail = e.to_string();
        let hint = if detail.contains("no responders") || detail.contains("JetStream not enabled") {
            "JetStream does not answer: check that the server runs with JetStream enabled (-js) \
             and that the stream exists"
                .to_string()
        } else {
            network_hint(BROKER, &detail)
        };
        if hint.is_empty() {
            self.error(format!("{doing}: {detail}"))
        } else {
            self.error(format!("{doing}: {hint} ({detail})"))
        }
    }
}

/// The bus on NATS JetStream. One client connection, opened on first use (again and again
/// until the server answers); once connected the client reconnects by itself. See the crate
/// documentation for the stream and consumers.
pub struct NatsBus {
    cfg: Arc<NatsConfig>,
    link: tokio::sync::Mutex<Option<Link>>,
}

struct Link {
    client: Client,
    js: Context,
    stream_ready: bool,
}

impl NatsBus {
    /// A bus that connects on first use (so it can be created while the server is down).
    pub fn new(cfg: NatsConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(NatsBus {
            cfg: Arc::new(cfg),
            link: tokio::sync::Mutex::new(None),
        })
    }

    /// A bus connected now, with its stream created or checked.
    pub async fn connect(cfg: NatsConfig) -> Result<Self> {
        let bus = NatsBus::new(cfg)?;
        bus.context().await?;
        Ok(bus)
    }

    /// The settings.
    pub fn config(&self) -> &NatsConfig {
        &self.cfg
    }

    /// A client of the durable consumer of `topic` (created if missing). Consumers of the
    /// same topic share the durable and compete for its messages.
    pub async fn consumer(&self, topic: Topic) -> Result<NatsConsumer> {
        let js = self.context().await?;
        let name = self.cfg.durable(topic);
        let created = async {
            let stream = js
                .get_stream(self.cfg.stream_name())
                .await
                .map_err(|e| self.cfg.nats_error("opening the stream", e))?;
            stream
                .get_or_create_consumer::<pull::Config>(
                    &name,
                    pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: self.cfg.subject(topic),
                        ack_policy: AckPolicy::Explicit,
                        deliver_policy: DeliverPolicy::All,
                        ack_wait: self.cfg.ack_wait,
                        max_ack_pending: self.cfg.max_ack_pending,
                        max_deliver: -1,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| {
                    self.cfg
                        .nats_error(&format!("creating the durable consumer {name}"), e)
                })
        };
        let consumer = tokio::time::timeout(self.cfg.connect_timeout, created)
            .await
            .map_err(|_| {
                self.cfg.error(format!(
                    "creating the durable consumer {name}: no answer in time"
                ))
            })??;
        Ok(NatsConsumer {
            cfg: self.cfg.clone(),
            client: js.client(),
            consumer,
            topic,
        })
    }

    /// Deletes the stream, its messages and its consumers. For tests and for taking a
    /// deployment down.
    pub async fn delete_stream(&self) -> Result<()> {
        let js = self.context().await?;
        js.delete_stream(self.cfg.stream_name())
            .await
            .map_err(|e| self.cfg.nats_error("deleting the stream", e))?;
        if let Some(link) = self.link.lock().await.as_mut() {
            link.stream_ready = false;
        }
        Ok(())
    }

    /// The JetStream context, connecting and creating the stream if needed.
    async fn context(&self) -> Result<Context> {
        let mut link = self.link.lock().await;
        if link.is_none() {
            let options = async_nats::ConnectOptions::new()
                .name(format!("outcall-{}", std::process::id()))
                .connection_timeout(self.cfg.connect_timeout);
            let connected = tokio::time::timeout(
                self.cfg.connect_timeout + Duration::from_secs(1),
                options.connect(self.cfg.url.as_str()),
            )
            .await;
            let client =
                match connected {
                    Ok(Ok(client)) => client,
                    Ok(Err(e)) => return Err(self.cfg.nats_error("cannot connect", e)),
                    Err(_) => return Err(self.cfg.error(
                        "cannot connect: no answer in time: check that NATS is running and that \
                         the URL names the right host and port"
                            .to_string(),
                    )),
                };
            let js = ContextBuilder::new()
                .timeout(self.cfg.confirm_timeout)
                .build(client.clone());
            *link = Some(Link {
                client,
                js,
                stream_ready: false,
            });
        }
        let Some(l) = link.as_mut() else {
            return Err(self.cfg.error("not connected".to_string()));
        };
        if !l.stream_ready {
            ensure_stream(&self.cfg, &l.js).await?;
            l.stream_ready = true;
        }
        let _ = &l.client;
        Ok(l.js.clone())
    }

    async fn stream_lost(&self) {
        if let Some(link) = self.link.lock().await.as_mut() {
            link.stream_ready = false;
        }
    }
}

async fn ensure_stream(cfg: &NatsConfig, js: &Context) -> Result<()> {
    let name = cfg.stream_name();
    let subjects: Vec<String> = Topic::ALL.iter().map(|t| cfg.subject(*t)).collect();
    let config = stream::Config {
        name: name.clone(),
        subjects: subjects.clone(),
        storage: StorageType::File,
        retention: RetentionPolicy::WorkQueue,
        max_age: cfg.max_age,
        duplicate_window: cfg.duplicate_window,
        ..Default::default()
    };
    let stream = tokio::time::timeout(cfg.connect_timeout, js.get_or_create_stream(config))
        .await
        .map_err(|_| cfg.error(format!("creating the stream {name}: no answer in time")))?
        .map_err(|e| cfg.nats_error(&format!("creating the stream {name}"), e))?;
    let info = stream.cached_info();
    for subject in &subjects {
        if !info.config.subjects.iter().any(|s| s == subject) {
            return Err(cfg.error(format!(
                "the stream {name} exists without the subject {subject}: add it (nats stream \
                 edit {name} --subjects ...) or choose another prefix"
            )));
        }
    }
    Ok(())
}

#[async_trait]
impl Publisher for NatsBus {
    async fn publish(&self, batch: &[Envelope]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.cfg.confirm_timeout;
        let js = tokio::time::timeout_at(deadline, self.context())
            .await
            .map_err(|_| {
                self.cfg
                    .error("cannot connect: no answer in time".to_string())
            })??;
        let timeout = || {
            self.cfg.error(format!(
                "no acknowledgement for {} messages within {} ms: check the server's load and \
                 JetStream storage",
                batch.len(),
                self.cfg.confirm_timeout.as_millis()
            ))
        };
        let mut acks = Vec::with_capacity(batch.len());
        for envelope in batch {
            let message = PublishMessage::build()
                .payload(envelope.to_json()?.into())
                .message_id(&envelope.id);
            let sent = tokio::time::timeout_at(
                deadline,
                js.send_publish(self.cfg.subject(envelope.topic), message),
            )
            .await
            .map_err(|_| timeout())?;
            match sent {
                Ok(ack) => acks.push(ack.into_future()),
                Err(e) => return Err(self.cfg.nats_error("publishing", e)),
            }
        }
        let results = tokio::time::timeout_at(deadline, futures_util::future::join_all(acks))
            .await
            .map_err(|_| timeout())?;
        for result in results {
            if let Err(e) = result {
                if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                    self.stream_lost().await;
                }
                return Err(self.cfg.nats_error("waiting for acknowledgements", e));
            }
        }
        Ok(())
    }
}

/// A client of one topic's durable pull consumer.
pub struct NatsConsumer {
    cfg: Arc<NatsConfig>,
    client: Client,
    consumer: PullConsumer,
    topic: Topic,
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        if self.client.connection_state() != State::Connected {
            // Give the client's own reconnection a moment before reporting.
            tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
            if self.client.connection_state() != State::Connected {
                return Err(self.cfg.error(
                    "not connected (the client keeps reconnecting): check that NATS is running"
                        .to_string(),
                ));
            }
        }
        let guard = Instant::now() + wait + Duration::from_secs(2);
        let requested = if wait < Duration::from_millis(10) {
            tokio::time::timeout_at(guard, self.consumer.fetch().max_messages(max).messages()).await
        } else {
            tokio::time::timeout_at(
                guard,
                self.consumer
                    .batch()
                    .max_messages(max)
                    .expires(wait)
                    .messages(),
            )
            .await
        };
        let mut batch = match requested {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => return Err(self.cfg.nats_error("pulling messages", e)),
            Err(_) => {
                return Err(self
                    .cfg
                    .error("pulling messages: no answer in time".to_string()))
            }
        };
        let mut out = Vec::new();
        while out.len() < max {
            let message = match tokio::time::timeout_at(guard, batch.next()).await {
                Err(_) | Ok(None) => break,
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => {
                    if out.is_empty() {
                        return Err(self.cfg.nats_error("pulling messages", e));
                    }
                    tracing::warn!(error = %e, topic = %self.topic, "NATS pull ended early");
                    break;
                }
            };
            let redelivered = message.info().map(|i| i.delivered > 1).unwrap_or(false);
            let Some(reply) = message.message.reply.clone() else {
                continue;
            };
            match Envelope::from_json(&message.message.payload) {
                Ok(envelope) => out.push(Delivery {
                    envelope,
                    redelivered,
                    handle: AckHandle::Nats(reply),
                }),
                Err(e) => {
                    tracing::error!(
                        stream = %self.cfg.stream_name(),
                        topic = %self.topic,
                        error = %e,
                        bytes = message.message.payload.len(),
                        "a message on the stream is not an envelope: terminated (not delivered \
                         again)"
                    );
                    let _ = self.client.publish(reply, "+TERM".into()).await;
                }
            }
        }
        Ok(out)
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        for delivery in deliveries {
            let AckHandle::Nats(reply) = &delivery.handle else {
                return Err(BusError::Invalid {
                    what: "acknowledgement",
                    message: format!(
                        "message {} was not delivered by a NATS consumer",
                        delivery.envelope.id
                    ),
                });
            };
            self.client
                .publish(reply.clone(), Vec::new().into())
                .await
                .map_err(|e| self.cfg.nats_error("acknowledging", e))?;
        }
        match tokio::time::timeout(self.cfg.confirm_timeout, self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.cfg.nats_error("acknowledging", e)),
            Err(_) => Err(self.cfg.error(
                "acknowledging: could not send in time; the messages will be delivered again"
                    .to_string(),
            )),
        }
    }
}
