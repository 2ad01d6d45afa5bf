//! What each REST-JSON poller was sent, and what its next poll says about it.
//!
//! REST has no stream and no nonce to pair a request with a response, so ACK and NACK are read
//! from versions, per (node, type). A poll asking with the version last sent ACKs it. A poll
//! carrying `error_detail` NACKs it (the response nonce, which is the version, or the one last
//! sent). Envoy's own REST client never sends `error_detail`: after rejecting a response it
//! just asks again with its previous version. So a poll that asks with an older version after
//! being sent one is answered once more (the first answer may have been lost to Envoy's request
//! timeout), and if it asks with the older version again the version sent is recorded as
//! rejected, and is answered `304 Not Modified` until there is a newer one: never resent in a
//! loop.
//!
//! Pollers are forgotten after [`IDLE`] without a poll, and at most [`MAX_POLLERS`] are
//! tracked; beyond that a poll is answered in full, untracked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::cache::{Location, Nack, StatusRegistry, StreamStatus};
use crate::snapshot::ResourceType;

/// A poller not heard from for this long is forgotten (and leaves `/nodes`): well above any
/// `refresh_delay` Envoy is given in practice, with its jitter.
pub(super) const IDLE: Duration = Duration::from_secs(120);
/// The most pollers tracked at once.
pub(super) const MAX_POLLERS: usize = 10_000;

/// How to answer a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// The current version in full.
    Send,
    /// `304 Not Modified`: the poller has the current version, or rejected it.
    NotModified,
}

/// What a poll said of the version sent before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Acked(Arc<str>),
    Rejected { version: Arc<str>, message: String },
}

/// One poll, as read from its request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Poll<'a> {
    pub asked: &'a str,
    pub names: &'a [String],
    /// `error_detail.message`, when the request carries one.
    pub error: Option<&'a str>,
    pub nonce: &'a str,
    /// The version the poller would be sent now.
    pub current: &'a Arc<str>,
}

/// One (node, type)'s poll state.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct TypePoll {
    sent: Option<Arc<str>>,
    names: Vec<String>,
    acked: Option<Arc<str>>,
    /// The version sent was sent again, once, after a poll asked with an older one.
    resent: bool,
    rejected: Option<Arc<str>>,
}

impl TypePoll {
    /// Reads `poll` against what was sent before it: how to answer, and the ACK or NACK it
    /// makes, if any.
    pub(super) fn on_poll(&mut self, poll: Poll<'_>) -> (Answer, Option<Verdict>) {
        let same_names = self.sent.is_some() && self.names == poll.names;
        let verdict = match (poll.error, self.sent.clone()) {
            (Some(message), sent) => {
                let nonce = (!poll.nonce.is_empty()).then(|| Arc::from(poll.nonce));
                let version = nonce.or(sent).unwrap_or_else(|| poll.asked.into());
                self.rejected = Some(version.clone());
                let message = message.to_owned();
                Some(Verdict::Rejected { version, message })
            }
            (None, Some(sent)) if *sent == *poll.asked => {
                self.resent = false;
                let new = self.acked.as_ref() != Some(&sent);
                self.acked = Some(sent.clone());
                new.then_some(Verdict::Acked(sent))
            }
            (None, Some(sent)) if same_names && self.rejected.as_ref() != Some(&sent) => {
                if !self.resent {
                    self.resent = true;
                    return (Answer::Send, None);
                }
                self.rejected = Some(sent.clone());
                let message = inferred_rejection(poll.asked, &sent);
                Some(Verdict::Rejected {
                    version: sent,
                    message,
                })
            }
            (None, None) if poll.names.is_empty() && poll.asked == &**poll.current => {
                // The poller has the current version of everything (from a replica, or before a
                // restart): versions are content hashes, so there is nothing to send.
                self.sent = Some(poll.current.clone());
                self.acked = Some(poll.current.clone());
                return (
                    Answer::NotModified,
                    Some(Verdict::Acked(poll.current.clone())),
                );
            }
            (None, _) => None,
        };
        let has_current = same_names
            && (self.rejected.as_ref() == Some(poll.current)
                || (poll.asked == &**poll.current && self.sent.as_ref() == Some(poll.current)));
        if has_current {
            return (Answer::NotModified, verdict);
        }
        self.sent = Some(poll.current.clone());
        self.names = poll.names.to_vec();
        self.resent = false;
        (Answer::Send, verdict)
    }
}

fn inferred_rejection(asked: &str, sent: &str) -> String {
    format!(
        "rejected over REST-JSON: sent version {sent:?} twice, the poller asked again with {asked:?} \
         (Envoy's REST client sends no reason; its log and its update_rejected stat have it)"
    )
}

/// Who a poller is: a change (another Envoy reusing the node id) starts it afresh.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Poller {
    pub node_id: String,
    pub node_type: String,
    pub caller: String,
    pub location: Location,
    pub identity: Option<Arc<str>>,
}

struct Tracked {
    who: Poller,
    stream_id: u64,
    types: [TypePoll; ResourceType::COUNT],
    seen: Instant,
}

/// Every tracked poller, by node id.
#[derive(Default)]
pub(in crate::serve) struct Polls {
    pollers: Mutex<HashMap<String, Tracked>>,
}

impl std::fmt::Debug for Polls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Polls").finish_non_exhaustive()
    }
}

impl Polls {
    /// Answers `poll` of `ty` from `who`, recording in `status` what it was sent, ACKed and
    /// rejected.
    pub(super) fn poll(
        &self,
        status: &StatusRegistry,
        who: Poller,
        ty: ResourceType,
        poll: Poll<'_>,
    ) -> Answer {
        let mut pollers = self.pollers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if !pollers.contains_key(&who.node_id) && pollers.len() >= MAX_POLLERS {
            forget_idle(&mut pollers, status, now);
        }
        if !pollers.get(&who.node_id).is_some_and(|t| t.who == who) {
            if pollers.len() >= MAX_POLLERS && !pollers.contains_key(&who.node_id) {
                tracing::debug!(node_id = %who.node_id, "REST-JSON poller not tracked: {MAX_POLLERS} are");
                return Answer::Send;
            }
            let fresh = track(status, who.clone(), now);
            if let Some(old) = pollers.insert(who.node_id.clone(), fresh) {
                status.disconnect(old.stream_id);
            }
        }
        let tracked = pollers.get_mut(&who.node_id).expect("tracked above");
        tracked.seen = now;
        let (answer, verdict) = tracked.types[ty.index()].on_poll(poll);
        let id = tracked.stream_id;
        match verdict {
            Some(Verdict::Acked(version)) => status.acked(id, ty, &version),
            Some(Verdict::Rejected { version, message }) => status.nacked(
                id,
                Nack {
                    node_id: who.node_id.clone(),
                    node_type: who.node_type.clone(),
                    resource_type: ty,
                    rejected_version: version.to_string(),
                    message,
                    at: SystemTime::now(),
                },
            ),
            None => {}
        }
        if answer == Answer::Send {
            status.sent(id, ty, poll.current);
        }
        if pollers.len() > 1 && fastrand::u8(..) == 0 {
            // Now and then, rather than on a timer: idle pollers cost only memory meanwhile.
            forget_idle(&mut pollers, status, now);
        }
        answer
    }
}

fn track(status: &StatusRegistry, who: Poller, now: Instant) -> Tracked {
    let stream_id = status.connect(StreamStatus {
        connected_at: None,
        node_id: who.node_id.clone(),
        node_type: who.node_type.clone(),
        location: who.location.clone(),
        caller: who.caller.clone(),
        identity: who.identity.clone(),
        service: "rest",
        mode: "rest",
        types: Default::default(),
    });
    Tracked {
        who,
        stream_id,
        types: Default::default(),
        seen: now,
    }
}

fn forget_idle(pollers: &mut HashMap<String, Tracked>, status: &StatusRegistry, now: Instant) {
    pollers.retain(|_, tracked| {
        let idle = now.duration_since(tracked.seen) >= IDLE;
        if idle {
            status.disconnect(tracked.stream_id);
        }
        !idle
    });
}

#[cfg(test)]
#[path = "polls_tests.rs"]
mod tests;
