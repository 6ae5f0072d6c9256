//! The bus on RabbitMQ: a durable direct exchange and a durable queue per topic, publisher
//! confirms, manual acknowledgements with a prefetch.

use crate::envelope::AckHandle;
use crate::error::network_hint;
use crate::{redact_url, BusError, Consumer, Delivery, Envelope, Publisher, Result, Topic};
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const BROKER: &str = "RabbitMQ";

/// Settings of a [`RabbitBus`].
#[derive(Debug, Clone)]
pub struct RabbitConfig {
    /// `amqp://user:password@host:5672/%2f` (the vhost URL-encoded).
    pub url: String,
    /// Name of the exchange, and prefix of the queues and routing keys (`<prefix>.events`,
    /// `<prefix>.cdrs`). Default `outcall`.
    pub prefix: String,
    /// How long a publish waits for the broker's confirmations. Default 5 s.
    pub confirm_timeout: Duration,
    /// How long opening a connection may take. Default 5 s.
    pub connect_timeout: Duration,
    /// Unacknowledged messages a consumer may hold (`basic.qos`). Default 2,000; keep it above
    /// the ingest batch size.
    pub prefetch: u16,
}

impl RabbitConfig {
    /// Default settings for the broker at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RabbitConfig {
            url: url.into(),
            prefix: "outcall".to_string(),
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            prefetch: 2000,
        }
    }

    /// The exchange every message is published to.
    pub fn exchange(&self) -> String {
        self.prefix.clone()
    }

    /// The queue (and routing key) of `topic`.
    pub fn queue(&self, topic: Topic) -> String {
        topic.subject_with(&self.prefix)
    }

    fn validate(&self) -> Result<()> {
        let ok = !self.prefix.is_empty()
            && self.prefix.len() <= 200
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !ok {
            return Err(BusError::Invalid {
                what: "RabbitMQ prefix",
                message: format!(
                    "{:?}: use 1 to 200 letters, digits, '.', '-' or '_'",
                    self.prefix
                ),
            });
        }
        if self.prefetch == 0 {
            return Err(BusError::Invalid {
                what: "RabbitMQ prefetch",
                message: "must be at least 1".to_string(),
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

    fn lapin_error(&self, doing: &str, e: &lapin::Error) -> BusError {
        let detail = e.to_string();
        let hint = if detail.contains("PRECONDITION_FAILED") {
            "an exchange or queue of that name exists with other settings: delete it or choose \
             another prefix"
                .to_string()
        } else if detail.contains("NOT_FOUND") {
            "the virtual host, exchange or queue does not exist: check the vhost in the URL \
             (%2f for /)"
                .to_string()
        } else if detail.contains("ACCESS_REFUSED") {
            "access refused: check the user and password in the URL and the user's \
             permissions on the vhost"
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

/// The bus on RabbitMQ. Publishing uses one connection and channel (in confirm mode),
/// opened on first use and again after it was lost; each [`RabbitConsumer`] has its own
/// connection. See the crate documentation for the topology.
pub struct RabbitBus {
    cfg: Arc<RabbitConfig>,
    link: tokio::sync::Mutex<Option<Link>>,
}

struct Link {
    conn: Connection,
    channel: Channel,
}

static CONSUMER_SEQ: AtomicU64 = AtomicU64::new(1);

/// Opens a connection and a channel, and declares the topology.
async fn open(cfg: &RabbitConfig, role: &str) -> Result<(Connection, Channel)> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("outcall-{role}-{}", std::process::id()).into());
    let conn = match tokio::time::timeout(cfg.connect_timeout, Connection::connect(&cfg.url, props))
        .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(cfg.lapin_error("cannot connect", &e)),
        Err(_) => {
            return Err(cfg.error(format!(
                "cannot connect: no answer within {} ms: check that RabbitMQ is running and \
                 that the URL names the right host and port",
                cfg.connect_timeout.as_millis()
            )))
        }
    };
    let declared = async {
        let channel = conn.create_channel().await?;
        channel
            .exchange_declare(
                cfg.exchange().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        for topic in Topic::ALL {
            let queue = cfg.queue(topic);
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    cfg.exchange().into(),
                    queue.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok::<_, lapin::Error>(channel)
    };
    match tokio::time::timeout(cfg.connect_timeout, declared).await {
        Ok(Ok(channel)) => Ok((conn, channel)),
        Ok(Err(e)) => Err(cfg.lapin_error("declaring the exchange and queues", &e)),
        Err(_) => Err(cfg.error(format!(
            "declaring the exchange and queues: no answer within {} ms",
            cfg.connect_timeout.as_millis()
        ))),
    }
}

fn usable(conn: &Connection, channel: &Channel) -> bool {
    conn.status().connected() && channel.status().connected()
}

impl RabbitBus {
    /// A bus that connects on first use (so it can be created while the broker is down).
    pub fn new(cfg: RabbitConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(RabbitBus {
            cfg: Arc::new(cfg),
            link: tokio::sync::Mutex::new(None),
        })
    }

    /// A bus connected now, with its exchange and queues declared.
    pub async fn connect(cfg: RabbitConfig) -> Result<Self> {
        let bus = RabbitBus::new(cfg)?;
        bus.channel().await?;
        Ok(bus)
    }

    /// The settings.
    pub fn config(&self) -> &RabbitConfig {
        &self.cfg
    }

    /// A consumer of `topic` on its own connection, opened now. Consumers of the same topic
    /// share its queue and compete for its messages.
    pub async fn consumer(&self, topic: Topic) -> Result<RabbitConsumer> {
        let mut consumer = RabbitConsumer {
            cfg: self.cfg.clone(),
            topic,
            link: None,
            outstanding: 0,
        };
        consumer.ensure().await?;
        Ok(consumer)
    }

    /// Deletes the queues and the exchange (with the messages in them). For tests and for
    /// taking a deployment down.
    pub async fn delete_topology(&self) -> Result<()> {
        let channel = self.channel().await?;
        for topic in Topic::ALL {
            channel
                .queue_delete(self.cfg.queue(topic).into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| self.cfg.lapin_error("deleting a queue", &e))?;
        }
        channel
            .exchange_delete(self.cfg.exchange().into(), ExchangeDeleteOptions::default())
            .await
            .map_err(|e| self.cfg.lapin_error("deleting the exchange", &e))?;
        *self.link.lock().await = None;
        Ok(())
    }

    /// The publishing channel, opened again if it was lost.
    async fn channel(&self) -> Result<Channel> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref() {
            if usable(&l.conn, &l.channel) {
                return Ok(l.channel.clone());
            }
            tracing::info!(url = %redact_url(&self.cfg.url), "RabbitMQ connection lost: reconnecting");
        }
        *link = None;
        let (conn, channel) = open(&self.cfg, "publisher").await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| self.cfg.lapin_error("enabling publisher confirms", &e))?;
        *link = Some(Link {
            conn,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    async fn forget(&self, channel: &Channel) {
        let mut link = self.link.lock().await;
        if link
            .as_ref()
            .is_some_and(|l| l.channel.id() == channel.id())
        {
            *link = None;
        }
    }
}

#[async_trait]
impl Publisher for RabbitBus {
    async fn publish(&self, batch: &[Envelope]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.cfg.confirm_timeout;
        let channel = tokio::time::timeout_at(deadline, self.channel())
            .await
            .map_err(|_| {
                self.cfg
                    .error("cannot connect: no answer in time".to_string())
            })??;
        let exchange: ShortString = self.cfg.exchange().into();
        let bodies = batch
            .iter()
            .map(Envelope::to_json)
            .collect::<Result<Vec<_>>>()?;
        // Every publish is queued before the connection writes any: the first poll of each
        // `basic_publish` (in batch order) assigns its delivery tag and queues its frames, so
        // the batch leaves in a few writes and in order, and the confirmations are awaited
        // together afterwards.
        let sends = batch.iter().zip(&bodies).map(|(envelope, body)| {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(envelope.id.as_str().into())
                .with_timestamp((envelope.published_at_ms / 1000).max(0) as u64);
            channel.basic_publish(
                exchange.clone(),
                self.cfg.queue(envelope.topic).into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                props,
            )
        });
        let sent = tokio::time::timeout_at(deadline, futures_util::future::join_all(sends))
            .await
            .map_err(|_| {
                self.cfg.error(format!(
                    "publishing: could not send within {} ms (connection blocked by a memory \
                     or disk alarm?)",
                    self.cfg.confirm_timeout.as_millis()
                ))
            })?;
        let mut confirms = Vec::with_capacity(batch.len());
        for result in sent {
            match result {
                Ok(confirm) => confirms.push(confirm),
                Err(e) => {
                    self.forget(&channel).await;
                    return Err(self.cfg.lapin_error("publishing", &e));
                }
            }
        }
        let results =
            match tokio::time::timeout_at(deadline, futures_util::future::join_all(confirms)).await
            {
                Ok(results) => results,
                Err(_) => {
                    return Err(self.cfg.error(format!(
                        "no confirmation for {} messages within {} ms: check the broker's load \
                         and alarms",
                        batch.len(),
                        self.cfg.confirm_timeout.as_millis()
                    )))
                }
            };
        for (envelope, result) in batch.iter().zip(results) {
            match result {
                Ok(Confirmation::Ack(None)) => {}
                Ok(Confirmation::Ack(Some(_))) => {
                    // The topology is declared again with the next connection.
                    self.forget(&channel).await;
                    return Err(self.cfg.error(format!(
                        "message {} was returned as unroutable: queue {} is missing or not \
                         bound to exchange {}",
                        envelope.id,
                        self.cfg.queue(envelope.topic),
                        self.cfg.exchange()
                    )));
                }
                Ok(Confirmation::Nack(_)) => {
                    return Err(self.cfg.error(format!(
                        "the broker refused message {} (nack): check its logs (queue length \
                         limit, disk or memory alarm)",
                        envelope.id
                    )))
                }
                Ok(Confirmation::NotRequested) => {
                    self.forget(&channel).await;
                    return Err(self
                        .cfg
                        .error("the channel is not in confirm mode; reconnecting".to_string()));
                }
                Err(e) => {
                    self.forget(&channel).await;
                    return Err(self.cfg.lapin_error("waiting for confirmations", &e));
                }
            }
        }
        Ok(())
    }
}

/// A consumer of one topic's queue, on its own connection, with manual acknowledgements. A
/// lost connection is opened again on the next call (its unacknowledged messages went back
/// to the queue). Dropping the consumer closes its connection: the broker hands what it did
/// not acknowledge to the other consumers.
pub struct RabbitConsumer {
    cfg: Arc<RabbitConfig>,
    topic: Topic,
    link: Option<ConsumerLink>,
    /// Deliveries handed out on the current channel and not acknowledged yet: once they
    /// reach the prefetch, the broker sends nothing more until some are acknowledged.
    outstanding: usize,
}

struct ConsumerLink {
    conn: Connection,
    channel: Channel,
    stream: lapin::Consumer,
}

impl RabbitConsumer {
    async fn ensure(&mut self) -> Result<()> {
        if self
            .link
            .as_ref()
            .is_some_and(|l| usable(&l.conn, &l.channel))
        {
            return Ok(());
        }
        if self.link.take().is_some() {
            tracing::info!(url = %redact_url(&self.cfg.url), topic = %self.topic, "RabbitMQ consumer connection lost: reconnecting");
        }
        self.outstanding = 0;
        let (conn, channel) = open(&self.cfg, "consumer").await?;
        let queue = self.cfg.queue(self.topic);
        let tag = format!(
            "outcall-{}-{}",
            std::process::id(),
            CONSUMER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let subscribed = async {
            channel
                .basic_qos(self.cfg.prefetch, BasicQosOptions::default())
                .await?;
            channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        };
        let stream = match tokio::time::timeout(self.cfg.connect_timeout, subscribed).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.cfg.lapin_error("subscribing to the queue", &e)),
            Err(_) => {
                return Err(self
                    .cfg
                    .error("subscribing to the queue: no answer in time".to_string()))
            }
        };
        self.link = Some(ConsumerLink {
            conn,
            channel,
            stream,
        });
        Ok(())
    }
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        self.ensure().await?;
        let Some(link) = self.link.as_mut() else {
            return Err(self.cfg.error("consumer not connected".to_string()));
        };
        let mut out = Vec::new();
        let mut failure = None;
        // Beyond the prefetch nothing comes until an acknowledgement: waiting is pointless.
        let room = usize::from(self.cfg.prefetch).saturating_sub(self.outstanding);
        let max = max.max(1).min(room);
        while out.len() < max {
            match tokio::time::timeout_at(deadline, link.stream.next()).await {
                Err(_) => break,
                Ok(None) => {
                    failure = Some(self.cfg.error(format!(
                        "the broker cancelled the subscription to {} (queue deleted?)",
                        self.cfg.queue(self.topic)
                    )));
                    break;
                }
                Ok(Some(Err(e))) => {
                    failure = Some(self.cfg.lapin_error("receiving", &e));
                    break;
                }
                Ok(Some(Ok(delivery))) => match Envelope::from_json(&delivery.data) {
                    Ok(envelope) => out.push(Delivery {
                        envelope,
                        redelivered: delivery.redelivered,
                        handle: AckHandle::Rabbit(delivery.acker),
                    }),
                    Err(e) => {
                        tracing::error!(
                            queue = %self.cfg.queue(self.topic),
                            error = %e,
                            bytes = delivery.data.len(),
                            "a message on the queue is not an envelope: rejected (dead-lettered \
                             if the queue has a dead-letter exchange)"
                        );
                        let _ = delivery
                            .acker
                            .reject(BasicRejectOptions { requeue: false })
                            .await;
                    }
                },
            }
        }
        self.outstanding += out.len();
        if let Some(e) = failure {
            self.link = None;
            self.outstanding = 0;
            if out.is_empty() {
                return Err(e);
            }
            tracing::warn!(error = %e, "RabbitMQ consumer: connection lost after a partial batch");
        }
        Ok(out)
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let mut ackers = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match &delivery.handle {
                AckHandle::Rabbit(acker) => ackers.push(acker.ack(BasicAckOptions::default())),
                _ => {
                    return Err(BusError::Invalid {
                        what: "acknowledgement",
                        message: format!(
                            "message {} was not delivered by a RabbitMQ consumer",
                            delivery.envelope.id
                        ),
                    })
                }
            }
        }
        let results = futures_util::future::join_all(ackers).await;
        let mut lost = 0usize;
        for result in results {
            match result {
                Ok(true) => self.outstanding = self.outstanding.saturating_sub(1),
                Ok(false) => lost += 1,
                Err(e) => return Err(self.cfg.lapin_error("acknowledging", &e)),
            }
        }
        if lost > 0 {
            return Err(self.cfg.error(format!(
                "{lost} acknowledgements could not be sent: the channel that delivered them is \
                 closed, and the broker delivers them again"
            )));
        }
        Ok(())
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else {
            return;
        };
        // Close now rather than when the last handle goes, so the broker requeues at once.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = link.channel.close(200, "consumer closed".into()).await;
                let _ = link.conn.close(200, "consumer closed".into()).await;
            });
        }
    }
}
