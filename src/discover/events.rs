//! Event-driven discovery (`[events]`): ECS events from EventBridge, through SQS, applied to
//! the poller's facts; the full poll then runs only every `events.reconcile_interval`.
//!
//! - `decode.rs`: an SQS message body (EventBridge envelope, raw or in an SNS notification) →
//!   [`Event`]. Pure.
//! - `queue.rs`: the queue read: a fixed one, or this replica's own, subscribed to the topic.
//! - `source.rs`: the receive loop, a task beside the discovery stage that hands it batches.
//! - `apply.rs`: one event applied to the poller's facts (through `Poller::apply_events`, the
//!   one owner of them).
//! - the SQS and SNS requests are `aws/sqs_sns.rs`'s; the loop that ties polls and events
//!   together is `discover/reconcile.rs`.
//!
//! # Several replicas
//! Every replica must see every event, from the same settings. An SQS message goes to one
//! consumer, so replicas cannot share a queue; instead the EventBridge rule targets an SNS topic
//! (`events.topic_arn`) and each replica, at start, creates its own queue
//! (`{queue_prefix}{replica id}-{start time}`), lets the topic send to it, and subscribes it
//! with raw message delivery. At shutdown it unsubscribes and deletes it. A replica that
//! crashed leaves its queue behind; each queue carries a heartbeat tag the replica renews, and
//! the next replica to start deletes those whose heartbeat is older than `orphan_after`. The
//! replica id needs no configuration: the daemon's (the ECS task id, as `/nodes` shows it),
//! else the hostname and pid. With one replica, `events.queue_url` reads a queue the rule
//! targets directly (or that the operator manages).
//!
//! # Delivery
//! A message is deleted once its change is applied and the inventory published, or once it is
//! found stale or undecodable (logged with its id and the reason, counted, never retried). A
//! message whose change could not be applied (a Describe call failed) is left for SQS to
//! deliver again after its visibility timeout, at most [`MAX_RECEIVES`] times.
//!
//! # Fallback
//! When receiving fails, discovery polls every `ecs.poll_interval` until receiving works again
//! (logged once each way). Events missed meanwhile are still in the queue, or the polls saw
//! their effect.

pub(crate) mod apply;
pub mod decode;
mod queue;
pub(crate) mod source;

pub use decode::{decode, DecodeError, DetailType, Event};
pub use queue::local_replica_id;

/// Deliveries of a message whose change keeps failing to apply before it is dropped (the next
/// reconcile covers what it said).
pub const MAX_RECEIVES: u32 = 5;

/// What became of one received event: the `outcome` label of `events_received_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventOutcome {
    /// Applied: the inventory changed and was published.
    Applied,
    /// Applied, and nothing that maps to endpoints changed.
    Unchanged,
    /// Older than (or a repeat of) what is known: dropped.
    Stale,
    /// About something discovery does not watch (another cluster, another event type).
    Ignored,
    /// Not an event: logged with the message id and deleted.
    Undecodable,
    /// Applying it failed (an AWS call): left for SQS to deliver again.
    Failed,
}

impl EventOutcome {
    pub const ALL: [EventOutcome; 6] = [
        EventOutcome::Applied,
        EventOutcome::Unchanged,
        EventOutcome::Stale,
        EventOutcome::Ignored,
        EventOutcome::Undecodable,
        EventOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Applied => "applied",
            EventOutcome::Unchanged => "unchanged",
            EventOutcome::Stale => "stale",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Undecodable => "undecodable",
            EventOutcome::Failed => "failed",
        }
    }
}

/// How discovery learns of changes (the `discovery_mode` gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Events off: the full poll every `ecs.poll_interval`.
    Polling,
    /// Events applied as they come; the full poll every `events.reconcile_interval`.
    Events,
    /// Events on, but receiving them fails (or has not worked yet): polling every
    /// `ecs.poll_interval` meanwhile.
    Fallback,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Polling, Mode::Events, Mode::Fallback];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Polling => "polling",
            Mode::Events => "events",
            Mode::Fallback => "fallback",
        }
    }
}
