//! The event source: a task that opens the queue, long-polls it, decodes each message and hands
//! the batch to discovery, then deletes what discovery says is done with. It tells discovery
//! when receiving stops or starts working, once per change, so discovery polls meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::decode::{decode, DecodeError, Event};
use super::queue::{self, Queue};
use crate::aws::{Aws, AwsError, Received, MESSAGE_BATCH};
use crate::settings::{EventsSettings, EventsSource};

/// Longest wait between two attempts to open or read the queue while it fails.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long closing this replica's queue may take at shutdown.
const CLOSE_LIMIT: Duration = Duration::from_secs(4);

/// What the source tells discovery.
pub(crate) enum Signal {
    /// Receiving works (first time, or again): the queue's URL.
    Up(String),
    /// Receiving failed: discovery polls until the next `Up`.
    Down(AwsError),
    /// Messages received. Discovery answers, per message, whether it is done with it.
    Batch(Batch),
}

/// One received message, decoded.
pub(crate) struct Delivered {
    /// The SQS message id, for the log.
    pub id: String,
    /// How many times SQS has delivered it (1 the first time).
    pub receive_count: u32,
    pub event: Result<Event, DecodeError>,
}

/// Received messages, decoded, and the answer discovery owes.
pub(crate) struct Batch {
    pub messages: Vec<Delivered>,
    /// One flag per message, in order: delete it (applied, stale, undecodable) or leave it for
    /// SQS to deliver again.
    pub done: oneshot::Sender<Vec<bool>>,
}

/// Runs the source until `stop` (or until discovery goes away), then removes this replica's
/// queue.
pub(crate) async fn run(
    aws: Aws,
    (settings, from): (EventsSettings, EventsSource),
    replica: Arc<str>,
    heartbeat: Duration,
    tx: mpsc::Sender<Signal>,
    stop: CancellationToken,
) {
    loop {
        let Some(queue) = open(&aws, (&settings, &from), &replica, &tx, &stop).await else {
            return;
        };
        let ended = receive(&aws, &queue, &settings, heartbeat, &tx, &stop).await;
        let _ = tokio::time::timeout(CLOSE_LIMIT, queue.close(&aws)).await;
        match ended {
            Ended::Stopped => return,
            // Deleted under us (taken for an orphan, say): make it again.
            Ended::QueueGone => {
                tracing::warn!(queue = %queue.url, "the queue is gone; opening it again")
            }
        }
    }
}

/// Why receiving ended.
enum Ended {
    Stopped,
    QueueGone,
}

/// Does `error` say the queue does not exist?
fn queue_gone(error: &AwsError) -> bool {
    matches!(error.code(), Some(code)
        if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist"))
}

/// Opens the queue, retrying with backoff; `None` once stopped.
async fn open(
    aws: &Aws,
    (settings, from): (&EventsSettings, &EventsSource),
    replica: &str,
    tx: &mpsc::Sender<Signal>,
    stop: &CancellationToken,
) -> Option<Queue> {
    let mut retry = Retry::default();
    loop {
        let opened = tokio::select! {
            _ = stop.cancelled() => return None,
            opened = queue::open(aws, settings, from, replica) => opened,
        };
        match opened {
            Ok(queue) => return Some(queue),
            Err(e) => {
                retry.failed(e, tx).await;
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = retry.wait() => {}
                }
            }
        }
    }
}

async fn receive(
    aws: &Aws,
    queue: &Queue,
    settings: &EventsSettings,
    heartbeat: Duration,
    tx: &mpsc::Sender<Signal>,
    stop: &CancellationToken,
) -> Ended {
    let mut retry = Retry::default();
    let mut last_beat = Instant::now();
    loop {
        // Between receives, never during one: a receive abandoned half way hides its messages
        // for their visibility timeout.
        if last_beat.elapsed() >= heartbeat {
            match queue.heartbeat(aws).await {
                Ok(()) => last_beat = Instant::now(),
                Err(e) => tracing::warn!(error = %e, "could not mark this replica's queue alive"),
            }
        }
        let received = tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            received = aws.receive_messages(&queue.url, settings.wait_time) => received,
        };
        let messages = match received {
            Ok(messages) => {
                if retry.recovered() && tx.send(Signal::Up(queue.url.clone())).await.is_err() {
                    return Ended::Stopped;
                }
                messages
            }
            Err(e) => {
                let gone = queue_gone(&e);
                retry.failed(e, tx).await;
                tokio::select! {
                    _ = stop.cancelled() => return Ended::Stopped,
                    _ = retry.wait() => {}
                }
                if gone {
                    return Ended::QueueGone;
                }
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let decoded = messages
            .iter()
            .map(|m| Delivered {
                id: m.id.clone(),
                receive_count: m.receive_count,
                event: decode(&m.body),
            })
            .collect();
        let (done, answer) = oneshot::channel();
        let batch = Batch {
            messages: decoded,
            done,
        };
        if tx.send(Signal::Batch(batch)).await.is_err() {
            return Ended::Stopped;
        }
        // Discovery keeps the messages until it has applied and published them.
        let flags = tokio::select! {
            _ = stop.cancelled() => return Ended::Stopped,
            answer = answer => match answer {
                Ok(flags) => flags,
                Err(_) => return Ended::Stopped,
            },
        };
        delete(aws, &queue.url, &messages, &flags).await;
    }
}

async fn delete(aws: &Aws, url: &str, messages: &[Received], flags: &[bool]) {
    let done: Vec<&Received> = messages
        .iter()
        .zip(flags)
        .filter(|(_, delete)| **delete)
        .map(|(m, _)| m)
        .collect();
    for chunk in done.chunks(MESSAGE_BATCH as usize) {
        match aws.delete_messages(url, chunk).await {
            Ok(failed) if failed.is_empty() => {}
            Ok(failed) => tracing::warn!(
                ?failed,
                "SQS did not delete these messages; they will come back, stale"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "could not delete received messages; they will come back, stale")
            }
        }
    }
}

/// Failure bookkeeping: `Down` once per outage, `Up` once per recovery, growing waits.
#[derive(Default)]
struct Retry {
    /// Consecutive failures; `None` before the first receive.
    failures: Option<u32>,
}

impl Retry {
    async fn failed(&mut self, error: AwsError, tx: &mpsc::Sender<Signal>) {
        let first = !matches!(self.failures, Some(n) if n > 0);
        self.failures = Some(self.failures.unwrap_or(0) + 1);
        if first {
            let _ = tx.send(Signal::Down(error)).await;
        } else {
            tracing::debug!(error = %error, "receiving ECS events still fails");
        }
    }

    /// A receive worked; true when that is news (the first one, or after failures).
    fn recovered(&mut self) -> bool {
        let news = self.failures != Some(0);
        self.failures = Some(0);
        news
    }

    async fn wait(&self) {
        let n = self.failures.unwrap_or(1).min(6);
        let wait = (Duration::from_millis(500) * 2u32.pow(n - 1)).min(MAX_RETRY);
        tokio::time::sleep(wait.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
    }
}
