//! The in-process bus: bounded queues in memory, for a single node.

use crate::envelope::AckHandle;
use crate::{BusError, Consumer, Delivery, Envelope, Publisher, Result, Topic};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

const BROKER: &str = "in-process bus";

/// A bus inside the process, for `outcall serve` on one node: one bounded queue per topic.
///
/// It keeps the semantics of the brokers: a delivery stays with its consumer until acked,
/// goes back to the front of the queue when that consumer is dropped, and consumers of a
/// topic compete. Nothing is written to disk. Cloning gives another handle to the same bus.
#[derive(Clone)]
pub struct InProcessBus {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    topics: [TopicQueue; 2],
    next_consumer: AtomicU64,
}

#[derive(Default)]
struct TopicQueue {
    state: Mutex<QueueState>,
    /// Signalled when messages become ready.
    ready: Notify,
    /// Signalled when room is freed.
    room: Notify,
}

#[derive(Default)]
struct QueueState {
    next_tag: u64,
    /// (tag, redelivered, envelope), oldest first.
    ready: VecDeque<(u64, bool, Envelope)>,
    /// Per consumer: tag → envelope, for the deliveries it holds.
    unacked: HashMap<u64, BTreeMap<u64, Envelope>>,
    held: usize,
}

impl TopicQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while the lock was held leaves a consistent queue (every operation
        // completes its moves before it can panic), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl InProcessBus {
    /// A bus holding at most `capacity` messages per topic (ready or unacknowledged);
    /// [`Publisher::publish`] waits for room beyond that.
    pub fn new(capacity: usize) -> Self {
        InProcessBus {
            shared: Arc::new(Shared {
                capacity: capacity.max(1),
                topics: Default::default(),
                next_consumer: AtomicU64::new(1),
            }),
        }
    }

    /// A new consumer of `topic`, competing with the other consumers of that topic.
    pub fn consumer(&self, topic: Topic) -> InProcessConsumer {
        InProcessConsumer {
            shared: self.shared.clone(),
            topic,
            id: self.shared.next_consumer.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Messages of `topic` waiting for a consumer (not counting those delivered and not yet
    /// acknowledged).
    pub fn ready(&self, topic: Topic) -> usize {
        self.shared.topics[topic.index()].lock().ready.len()
    }
}

impl Default for InProcessBus {
    /// A bus of 100,000 messages per topic.
    fn default() -> Self {
        InProcessBus::new(100_000)
    }
}

#[async_trait]
impl Publisher for InProcessBus {
    async fn publish(&self, batch: &[Envelope]) -> Result<()> {
        for envelope in batch {
            let queue = &self.shared.topics[envelope.topic.index()];
            loop {
                let room = queue.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                {
                    let mut state = queue.lock();
                    if state.ready.len() + state.held < self.shared.capacity {
                        let tag = state.next_tag;
                        state.next_tag += 1;
                        state.ready.push_back((tag, false, envelope.clone()));
                        break;
                    }
                }
                room.await;
            }
            queue.ready.notify_waiters();
        }
        Ok(())
    }
}

/// A consumer of one topic of an [`InProcessBus`]. Dropping it puts the deliveries it did not
/// acknowledge back at the front of the queue.
pub struct InProcessConsumer {
    shared: Arc<Shared>,
    topic: Topic,
    id: u64,
}

impl InProcessConsumer {
    fn queue(&self) -> &TopicQueue {
        &self.shared.topics[self.topic.index()]
    }
}

#[async_trait]
impl Consumer for InProcessConsumer {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        let max = max.max(1);
        loop {
            let queue = self.queue();
            let ready = queue.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut state = queue.lock();
                let take = (max - out.len()).min(state.ready.len());
                let mut taken = Vec::with_capacity(take);
                for (tag, redelivered, envelope) in state.ready.drain(..take) {
                    taken.push((tag, redelivered, envelope));
                }
                let held = state.unacked.entry(self.id).or_default();
                for (tag, redelivered, envelope) in taken {
                    held.insert(tag, envelope.clone());
                    out.push(Delivery {
                        envelope,
                        redelivered,
                        handle: AckHandle::InProcess {
                            consumer: self.id,
                            tag,
                        },
                    });
                }
                state.held += take;
            }
            if out.len() >= max {
                return Ok(out);
            }
            if tokio::time::timeout_at(deadline, ready).await.is_err() {
                return Ok(out);
            }
        }
    }

    async fn ack(&mut self, deliveries: &[Delivery]) -> Result<()> {
        let queue = self.queue();
        let mut freed = 0;
        {
            let mut state = queue.lock();
            let held = state.unacked.entry(self.id).or_default();
            for delivery in deliveries {
                match delivery.handle {
                    AckHandle::InProcess { consumer, tag } if consumer == self.id => {
                        if held.remove(&tag).is_some() {
                            freed += 1;
                        }
                    }
                    _ => {
                        return Err(BusError::Invalid {
                            what: "acknowledgement",
                            message: format!(
                                "message {} was not delivered by this {BROKER} consumer",
                                delivery.envelope.id
                            ),
                        })
                    }
                }
            }
            state.held -= freed;
        }
        if freed > 0 {
            queue.room.notify_waiters();
        }
        Ok(())
    }
}

impl Drop for InProcessConsumer {
    fn drop(&mut self) {
        let queue = &self.shared.topics[self.topic.index()];
        let mut state = queue.lock();
        let Some(held) = state.unacked.remove(&self.id) else {
            return;
        };
        if held.is_empty() {
            return;
        }
        state.held -= held.len();
        // Back to the front, oldest first, ahead of newer messages.
        for (tag, envelope) in held.into_iter().rev() {
            state.ready.push_front((tag, true, envelope));
        }
        drop(state);
        queue.ready.notify_waiters();
    }
}
