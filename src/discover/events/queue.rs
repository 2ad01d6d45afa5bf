//! The queue events are read from: a fixed one (`events.queue_url`), or this replica's own
//! (`events.topic_arn`), created at start, subscribed to the topic, kept alive by a heartbeat
//! tag, and removed at shutdown. A replica that crashed cannot remove its queue; the next
//! replica to start removes every queue of the prefix whose heartbeat is older than
//! `events.orphan_after` (and its subscription).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::aws::{Aws, AwsError, NewQueue};
use crate::settings::{EventsSettings, EventsSource};

/// Tag holding the Unix time of the replica's last heartbeat.
const HEARTBEAT_TAG: &str = "ecs-xds:heartbeat";
/// Tag holding the SNS subscription ARN, so whoever cleans the queue up can unsubscribe it.
const SUBSCRIPTION_TAG: &str = "ecs-xds:subscription";
/// SQS queue names are at most 80 characters.
const MAX_NAME: usize = 80;
/// A replica queue keeps an event an hour at most: older ones are the reconcile's job.
const RETENTION: Duration = Duration::from_secs(3600);

/// The queue being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queue {
    pub url: String,
    /// This replica's own queue (created here, removed at the end), not a fixed one.
    own: bool,
    /// For this replica's own queue: its subscription to the topic.
    subscription: Option<String>,
}

/// A replica id off ECS: host name and pid, different for every process on a host (the
/// daemon uses the ECS task id instead where there is one; see `daemon::replica`).
pub fn local_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

/// `{prefix}{id}-{start}`: SQS characters only, at most 80, the start time (hex seconds) kept
/// whole so a restarted process never reuses a name SQS still reserves (it does for 60 s
/// after a delete).
pub(crate) fn queue_name(prefix: &str, id: &str, started: SystemTime) -> String {
    let stamp = format!("-{:x}", unix_secs(started));
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let room = MAX_NAME.saturating_sub(prefix.len() + stamp.len());
    let id = &id[id.len().saturating_sub(room)..];
    format!("{prefix}{id}{stamp}")
}

/// The queue policy letting only `topic_arn` send to the queue.
pub(crate) fn queue_policy(queue_arn: &str, topic_arn: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "EcsEventsTopicToThisReplica",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
        }],
    })
    .to_string()
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The queue to read, ready: the fixed one as is, or this replica's own, created and
/// subscribed (after removing orphaned ones).
pub(crate) async fn open(
    aws: &Aws,
    settings: &EventsSettings,
    from: &EventsSource,
    replica: &str,
) -> Result<Queue, AwsError> {
    let topic = match from {
        EventsSource::Queue(url) => {
            return Ok(Queue {
                url: url.clone(),
                own: false,
                subscription: None,
            })
        }
        EventsSource::Topic(arn) => arn.as_str(),
    };
    let name = queue_name(&settings.queue_prefix, replica, SystemTime::now());
    if let Err(e) = remove_orphans(aws, settings, &name).await {
        tracing::warn!(error = %e, "could not look for queues of replicas that no longer run");
    }
    let heartbeat = [(HEARTBEAT_TAG, unix_secs(SystemTime::now()).to_string())];
    let url = aws
        .create_queue(&NewQueue {
            name: &name,
            retention: RETENTION,
            visibility_timeout: Duration::from_secs(30),
            tags: &heartbeat,
        })
        .await?;
    let queue = Queue {
        url,
        own: true,
        subscription: None,
    };
    // From here on a failure leaves a queue behind: remove it before giving up.
    match subscribe(aws, &queue.url, topic).await {
        Ok(subscription) => {
            tracing::info!(queue = %queue.url, %topic, "created this replica's queue and subscribed it to the topic");
            Ok(Queue {
                subscription: Some(subscription),
                ..queue
            })
        }
        Err(e) => {
            queue.close(aws).await;
            Err(e)
        }
    }
}

async fn subscribe(aws: &Aws, url: &str, topic: &str) -> Result<String, AwsError> {
    let arn = aws.queue_arn(url).await?;
    aws.set_queue_policy(url, &queue_policy(&arn, topic))
        .await?;
    let subscription = aws.subscribe_queue(topic, &arn).await?;
    aws.tag_queue(url, &[(SUBSCRIPTION_TAG, subscription.clone())])
        .await?;
    Ok(subscription)
}

/// Deletes the queues of the prefix (not `own`) whose heartbeat is older than `orphan_after`,
/// unsubscribing each first. A queue of the prefix without a heartbeat tag is not ours: kept.
async fn remove_orphans(aws: &Aws, settings: &EventsSettings, own: &str) -> Result<(), AwsError> {
    let now = unix_secs(SystemTime::now());
    for url in aws.list_queues(&settings.queue_prefix).await? {
        if url.rsplit('/').next() == Some(own) {
            continue;
        }
        let tags = aws.queue_tags(&url).await?;
        let Some(beat) = tags.get(HEARTBEAT_TAG).and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        };
        if now.saturating_sub(beat) <= settings.orphan_after.as_secs() {
            continue;
        }
        if let Some(subscription) = tags.get(SUBSCRIPTION_TAG) {
            aws.unsubscribe(subscription).await?;
        }
        aws.delete_queue(&url).await?;
        tracing::info!(queue = %url, last_heartbeat_secs_ago = now.saturating_sub(beat), "removed the queue of a replica that no longer runs");
    }
    Ok(())
}

impl Queue {
    /// Marks this replica's queue alive.
    pub async fn heartbeat(&self, aws: &Aws) -> Result<(), AwsError> {
        if !self.own {
            return Ok(());
        }
        let now = unix_secs(SystemTime::now()).to_string();
        aws.tag_queue(&self.url, &[(HEARTBEAT_TAG, now)]).await
    }

    /// Unsubscribes and deletes this replica's queue (a fixed queue is left alone). Failures
    /// are logged: the queue is then an orphan for the next replica to remove.
    pub async fn close(&self, aws: &Aws) {
        if let Some(subscription) = &self.subscription {
            if let Err(e) = aws.unsubscribe(subscription).await {
                tracing::warn!(error = %e, "could not unsubscribe this replica's queue");
            }
        }
        if self.own {
            match aws.delete_queue(&self.url).await {
                Ok(()) => tracing::info!(queue = %self.url, "removed this replica's queue"),
                Err(e) => tracing::warn!(error = %e, "could not delete this replica's queue"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_name_is_prefix_id_and_start_within_sqs_limits() {
        let at = UNIX_EPOCH + Duration::from_secs(0x6a00_0000);
        assert_eq!(
            queue_name("ecs-xds-", "ip-10-0-1-5.ec2.internal-42", at),
            "ecs-xds-ip-10-0-1-5-ec2-internal-42-6a000000"
        );
        let long = queue_name("ecs-xds-", &"f".repeat(200), at);
        assert_eq!(long.len(), 80);
        assert!(long.starts_with("ecs-xds-ff") && long.ends_with("-6a000000"));
    }

    #[test]
    fn the_queue_policy_lets_only_the_topic_send() {
        let policy: serde_json::Value =
            serde_json::from_str(&queue_policy("arn:aws:sqs:r:1:q", "arn:aws:sns:r:1:t")).unwrap();
        let statement = &policy["Statement"][0];
        assert_eq!(statement["Principal"]["Service"], "sns.amazonaws.com");
        assert_eq!(statement["Action"], "sqs:SendMessage");
        assert_eq!(statement["Resource"], "arn:aws:sqs:r:1:q");
        assert_eq!(
            statement["Condition"]["ArnEquals"]["aws:SourceArn"],
            "arn:aws:sns:r:1:t"
        );
    }
}
