//! The SQS and SNS requests of event-driven discovery, one function per request, through the
//! same [`Aws::call`] as ECS's (retries, backoff, every attempt counted).
//!
//! ReceiveMessage is a long poll: its attempt may take its wait time plus [`RECEIVE_MARGIN`],
//! and no longer, so an SQS that accepts connections but never answers is noticed within
//! seconds; it is tried once, because the event source retries it with its own backoff and
//! tells discovery to poll meanwhile. Every other request has a few seconds per attempt.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::operation::list_queues::ListQueuesOutput;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use super::retry::Request;
use super::{Aws, AwsError};

/// ReceiveMessage returns at most 10 messages, and DeleteMessageBatch takes at most 10.
pub(crate) const MESSAGE_BATCH: i32 = 10;

/// How much longer than its wait time a ReceiveMessage may take before it is overdue.
pub(crate) const RECEIVE_MARGIN: Duration = Duration::from_secs(3);

/// The attempt timeout of every other SQS and SNS request: they answer in milliseconds, and the
/// event source waits on each of them between two receives.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

fn request(operation: &'static str) -> Request {
    Request {
        attempt_timeout: ATTEMPT_TIMEOUT,
        ..Request::new(operation)
    }
}

/// A queue to create: its name, how long it keeps a message, how long a received message stays
/// hidden, and its tags.
#[derive(Debug, Clone)]
pub(crate) struct NewQueue<'a> {
    pub name: &'a str,
    pub retention: Duration,
    pub visibility_timeout: Duration,
    pub tags: &'a [(&'a str, String)],
}

/// One received SQS message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// How many times SQS has handed this message out (1 the first time).
    pub receive_count: u32,
}

fn target(queue: &str) -> String {
    format!("SQS queue {queue}")
}

impl Aws {
    /// ReceiveMessage, long-polling up to `wait`.
    pub(crate) async fn receive_messages(
        &self,
        queue_url: &str,
        wait: Duration,
    ) -> Result<Vec<Received>, AwsError> {
        let target = target(queue_url);
        let sqs = &self.event_clients("ReceiveMessage", &target)?.sqs;
        let receive = Request {
            operation: "ReceiveMessage",
            attempt_timeout: wait + RECEIVE_MARGIN,
            max_attempts: Some(1),
        };
        let out = self
            .call_with(receive, &target, || {
                sqs.receive_message()
                    .queue_url(queue_url)
                    .max_number_of_messages(MESSAGE_BATCH)
                    .wait_time_seconds(wait.as_secs() as i32)
                    .message_system_attribute_names(
                        MessageSystemAttributeName::ApproximateReceiveCount,
                    )
                    .send()
            })
            .await?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    id: m.message_id()?.to_owned(),
                    receipt: m.receipt_handle()?.to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receive_count,
                })
            })
            .collect())
    }

    /// DeleteMessageBatch for at most [`MESSAGE_BATCH`] receipts; returns the ids SQS did not
    /// delete (they come back after their visibility timeout, and are stale then).
    pub(crate) async fn delete_messages(
        &self,
        queue_url: &str,
        messages: &[&Received],
    ) -> Result<Vec<String>, AwsError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let target = target(queue_url);
        let sqs = &self.event_clients("DeleteMessageBatch", &target)?.sqs;
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&m.receipt)
                    .build()
                    .ok()
            })
            .collect();
        let out = self
            .call_with(request("DeleteMessageBatch"), &target, || {
                sqs.delete_message_batch()
                    .queue_url(queue_url)
                    .set_entries(Some(entries.clone()))
                    .send()
            })
            .await?;
        Ok(out
            .failed()
            .iter()
            .filter_map(|f| messages.get(f.id().parse::<usize>().ok()?))
            .map(|m| m.id.clone())
            .collect())
    }

    /// CreateQueue (idempotent for the same attributes) with `tags`; returns the queue URL.
    pub(crate) async fn create_queue(&self, queue: &NewQueue<'_>) -> Result<String, AwsError> {
        let name = queue.name;
        let target = target(name);
        let sqs = &self.event_clients("CreateQueue", &target)?.sqs;
        let attributes: HashMap<QueueAttributeName, String> = [
            (
                QueueAttributeName::MessageRetentionPeriod,
                queue.retention.as_secs().to_string(),
            ),
            (
                QueueAttributeName::VisibilityTimeout,
                queue.visibility_timeout.as_secs().to_string(),
            ),
        ]
        .into();
        let tags: HashMap<String, String> = queue
            .tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let out = self
            .call_with(request("CreateQueue"), &target, || {
                sqs.create_queue()
                    .queue_name(name)
                    .set_attributes(Some(attributes.clone()))
                    .set_tags(Some(tags.clone()))
                    .send()
            })
            .await?;
        out.queue_url()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::empty("CreateQueue", target, "queue URL"))
    }

    /// GetQueueAttributes QueueArn.
    pub(crate) async fn queue_arn(&self, queue_url: &str) -> Result<String, AwsError> {
        let target = target(queue_url);
        let sqs = &self.event_clients("GetQueueAttributes", &target)?.sqs;
        let out = self
            .call_with(request("GetQueueAttributes"), &target, || {
                sqs.get_queue_attributes()
                    .queue_url(queue_url)
                    .attribute_names(QueueAttributeName::QueueArn)
                    .send()
            })
            .await?;
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .cloned()
            .ok_or_else(|| AwsError::empty("GetQueueAttributes", target, "QueueArn"))
    }

    /// SetQueueAttributes Policy.
    pub(crate) async fn set_queue_policy(
        &self,
        queue_url: &str,
        policy: &str,
    ) -> Result<(), AwsError> {
        let target = target(queue_url);
        let sqs = &self.event_clients("SetQueueAttributes", &target)?.sqs;
        self.call_with(request("SetQueueAttributes"), &target, || {
            sqs.set_queue_attributes()
                .queue_url(queue_url)
                .attributes(QueueAttributeName::Policy, policy)
                .send()
        })
        .await?;
        Ok(())
    }

    /// TagQueue.
    pub(crate) async fn tag_queue(
        &self,
        queue_url: &str,
        tags: &[(&str, String)],
    ) -> Result<(), AwsError> {
        let target = target(queue_url);
        let sqs = &self.event_clients("TagQueue", &target)?.sqs;
        let tags: HashMap<String, String> = tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        self.call_with(request("TagQueue"), &target, || {
            sqs.tag_queue()
                .queue_url(queue_url)
                .set_tags(Some(tags.clone()))
                .send()
        })
        .await?;
        Ok(())
    }

    /// ListQueues with a name prefix, every page.
    pub(crate) async fn list_queues(&self, prefix: &str) -> Result<Vec<String>, AwsError> {
        let target = format!("SQS queues named {prefix}*");
        let sqs = &self.event_clients("ListQueues", &target)?.sqs;
        let send = |token| {
            let list = sqs
                .list_queues()
                .queue_name_prefix(prefix)
                .max_results(1000);
            list.set_next_token(token).send()
        };
        let page = |out: ListQueuesOutput| {
            (
                out.queue_urls().to_vec(),
                out.next_token().map(str::to_owned),
            )
        };
        self.call_paged(request("ListQueues"), &target, send, page)
            .await
    }

    /// ListQueueTags.
    pub(crate) async fn queue_tags(
        &self,
        queue_url: &str,
    ) -> Result<HashMap<String, String>, AwsError> {
        let target = target(queue_url);
        let sqs = &self.event_clients("ListQueueTags", &target)?.sqs;
        let out = self
            .call_with(request("ListQueueTags"), &target, || {
                sqs.list_queue_tags().queue_url(queue_url).send()
            })
            .await?;
        Ok(out.tags().cloned().unwrap_or_default())
    }

    /// DeleteQueue.
    pub(crate) async fn delete_queue(&self, queue_url: &str) -> Result<(), AwsError> {
        let target = target(queue_url);
        let sqs = &self.event_clients("DeleteQueue", &target)?.sqs;
        self.call_with(request("DeleteQueue"), &target, || {
            sqs.delete_queue().queue_url(queue_url).send()
        })
        .await?;
        Ok(())
    }

    /// SNS Subscribe of an SQS queue with raw message delivery; returns the subscription ARN.
    pub(crate) async fn subscribe_queue(
        &self,
        topic_arn: &str,
        queue_arn: &str,
    ) -> Result<String, AwsError> {
        let target = format!("SNS topic {topic_arn}");
        let sns = &self.event_clients("Subscribe", &target)?.sns;
        let out = self
            .call_with(request("Subscribe"), &target, || {
                sns.subscribe()
                    .topic_arn(topic_arn)
                    .protocol("sqs")
                    .endpoint(queue_arn)
                    .attributes("RawMessageDelivery", "true")
                    .return_subscription_arn(true)
                    .send()
            })
            .await?;
        out.subscription_arn()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::empty("Subscribe", target, "subscription ARN"))
    }

    /// SNS Unsubscribe.
    pub(crate) async fn unsubscribe(&self, subscription_arn: &str) -> Result<(), AwsError> {
        let target = format!("SNS subscription {subscription_arn}");
        let sns = &self.event_clients("Unsubscribe", &target)?.sns;
        self.call_with(request("Unsubscribe"), &target, || {
            sns.unsubscribe().subscription_arn(subscription_arn).send()
        })
        .await?;
        Ok(())
    }
}
