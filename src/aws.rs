//! AWS: the only module that uses the AWS SDK, and no SDK type leaves it. Every request goes
//! through one place ([`Aws::call`], in `retry.rs`): one attempt timeout per operation, capped
//! exponential backoff with full jitter, throttling logged at warn, and every attempt counted in
//! the one [`CallCounter`] the daemon shares with its metrics.
//!
//! The SDK's own retries are switched off so there is exactly one retry layer, and every attempt
//! is visible to the counter (the efficiency figure counts requests, not operations).
//!
//! One file per AWS service, each turning the SDK's answers into plain values at once:
//! - `ecs.rs` (and `ecs/facts.rs`, the plain task and task-definition facts), `ec2.rs`;
//! - `cloud_map.rs`: namespaces, services and their instances;
//! - `sqs_sns.rs`: the event queue's requests (receive, delete, create, subscribe);
//! - `secrets.rs`: the identity CA's Secrets Manager secret;
//! - `sts.rs`: signing a task's unsent GetCallerIdentity proof (the agent), and sending a
//!   checked one to the pinned STS endpoint (the identity endpoint);
//! - `scope.rs`: the clients of another account (an assumed role) or region, for
//!   `[[ecs.sources]]`, and the account the credentials are of;
//! - `s3.rs`: the objects of the shared push store ([`Objects`]); what they mean is `push`'s.

use std::future::Future;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::endpoint::EndpointPrefix;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::settings::AwsSettings;

mod cloud_map;
mod counter;
mod ec2;
mod ecs;
mod retry;
mod s3;
mod scope;
mod secrets;
mod sqs_sns;
mod sts;

pub(crate) use cloud_map::{Instance, MAX_INSTANCES};
pub use counter::{CallCounter, Outcome, DEFAULT_SOURCE};
pub(crate) use ecs::facts::{
    ContainerDef, ContainerFacts, NetworkMode, PortMapping, TaskDef, TaskFacts,
};
pub(crate) use ecs::{INSTANCE_BATCH, SERVICE_BATCH, TASK_BATCH};
pub use retry::RetryPolicy;
pub use s3::Objects;
pub(crate) use sqs_sns::{NewQueue, Received, MESSAGE_BATCH};
#[cfg(test)]
pub(crate) use sts::test_credentials;
pub use sts::{
    sign_caller_identity, sign_with, sts_host, SignedRequest, Sts, CALLER_IDENTITY_BODY,
};

/// An AWS request that failed after its retries, or AWS not set up. Each says which operation
/// on what, so the user can act (`DescribeTasks on ECS cluster demo failed: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    #[error("{operation} on {target} failed: {message}")]
    Call {
        operation: &'static str,
        target: String,
        /// The AWS error code (`ThrottlingException`, `ServiceNotFound`...), when AWS answered.
        code: Option<String>,
        message: String,
    },
    #[error("no AWS region configured: set aws.region in the settings file or AWS_REGION")]
    NoRegion,
}

impl AwsError {
    /// The AWS error code of a failed call, when AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Call { code, .. } => code.as_deref(),
            AwsError::NoRegion => None,
        }
    }

    /// A call that AWS answered without what the caller needs (an empty answer).
    fn empty(operation: &'static str, target: impl Into<String>, what: &str) -> AwsError {
        AwsError::Call {
            operation,
            target: target.into(),
            code: None,
            message: format!("the answer holds no {what}"),
        }
    }
}

/// The clients of event-driven discovery.
#[derive(Debug, Clone)]
pub(crate) struct EventClients {
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
}

/// The AWS clients ecs-xds uses, with the retry policy and the call counter. Cheap to clone:
/// the SDK clients are handles, and clones count into the same counter.
#[derive(Debug, Clone)]
pub struct Aws {
    ecs: aws_sdk_ecs::Client,
    ec2: aws_sdk_ec2::Client,
    cloud_map: aws_sdk_servicediscovery::Client,
    /// SQS and SNS, for event-driven discovery (`[events]`); absent on recorded-response clients
    /// that were not given them.
    events: Option<EventClients>,
    /// S3, for the shared push store; absent on recorded-response clients.
    s3: Option<aws_sdk_s3::Client>,
    /// Secrets Manager, for the identity CA's secret; absent on recorded-response clients.
    secrets: Option<aws_sdk_secretsmanager::Client>,
    /// The region written on every endpoint's locality.
    region: String,
    /// The account the credentials are of, once known (given, the role's, or asked of STS).
    account: Option<String>,
    /// What the clients were made from, to make those of another account or region
    /// ([`Aws::for_scope`]); absent on recorded-response clients.
    sdk: Option<SdkConfig>,
    calls: CallCounter,
    retry: RetryPolicy,
}

impl Aws {
    /// Loads the standard credential chain and region, honouring `[aws]` and `AWS_ENDPOINT_URL`
    /// (and `events_endpoint`, `events.endpoint_url`, for SQS and SNS).
    pub async fn connect(
        settings: &AwsSettings,
        events_endpoint: Option<&str>,
    ) -> Result<Self, AwsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let aws = Self::from_sdk_config(&config)?;
        Ok(match events_endpoint {
            Some(url) => {
                let events = config.to_builder().endpoint_url(url).build();
                aws.with_event_clients(
                    aws_sdk_sqs::Client::new(&events),
                    aws_sdk_sns::Client::new(&events),
                )
            }
            None => aws,
        })
    }

    /// Builds the clients from a loaded SDK config (tests pass one with explicit credentials).
    pub fn from_sdk_config(config: &SdkConfig) -> Result<Self, AwsError> {
        let region = config.region().ok_or(AwsError::NoRegion)?.to_string();
        let config = without_sdk_retries(config);
        let custom_endpoint = config.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_SERVICEDISCOVERY").is_some();
        let mut cloud_map = aws_sdk_servicediscovery::config::Builder::from(&config);
        if custom_endpoint {
            cloud_map = cloud_map.interceptor(NoEndpointPrefix);
        }
        // An emulator on 127.0.0.1 has no per-bucket host names: address buckets by path.
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(
                config.endpoint_url().is_some()
                    || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some(),
            )
            .build();
        let mut aws = Self::from_clients(
            aws_sdk_ecs::Client::new(&config),
            aws_sdk_ec2::Client::new(&config),
            aws_sdk_servicediscovery::Client::from_conf(cloud_map.build()),
            region,
        )
        .with_event_clients(
            aws_sdk_sqs::Client::new(&config),
            aws_sdk_sns::Client::new(&config),
        );
        aws.s3 = Some(aws_sdk_s3::Client::from_conf(s3));
        aws.secrets = Some(aws_sdk_secretsmanager::Client::new(&config));
        aws.sdk = Some(config);
        Ok(aws)
    }

    /// Uses these SQS and SNS clients for event-driven discovery (retries off: [`Aws::call`]
    /// retries, with each operation's own attempt timeout).
    pub fn with_event_clients(
        mut self,
        sqs: aws_sdk_sqs::Client,
        sns: aws_sdk_sns::Client,
    ) -> Self {
        let sqs = aws_sdk_sqs::Client::from_conf(
            sqs.config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .timeout_config(sdk_timeouts())
                .build(),
        );
        let sns = aws_sdk_sns::Client::from_conf(
            sns.config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .timeout_config(sdk_timeouts())
                .build(),
        );
        self.events = Some(EventClients { sqs, sns });
        self
    }

    /// Wraps ready-made clients (recorded responses in tests and in the discover-calls example).
    /// Their SDK retries are switched off: [`Aws::call`] is the only retry layer.
    pub fn from_clients(
        ecs: aws_sdk_ecs::Client,
        ec2: aws_sdk_ec2::Client,
        cloud_map: aws_sdk_servicediscovery::Client,
        region: impl Into<String>,
    ) -> Self {
        let no_retry = RetryConfig::disabled();
        Self {
            ecs: aws_sdk_ecs::Client::from_conf(
                ecs.config()
                    .to_builder()
                    .retry_config(no_retry.clone())
                    .build(),
            ),
            ec2: aws_sdk_ec2::Client::from_conf(
                ec2.config()
                    .to_builder()
                    .retry_config(no_retry.clone())
                    .build(),
            ),
            cloud_map: aws_sdk_servicediscovery::Client::from_conf(
                cloud_map
                    .config()
                    .to_builder()
                    .retry_config(no_retry)
                    .build(),
            ),
            events: None,
            s3: None,
            secrets: None,
            region: region.into(),
            account: None,
            sdk: None,
            calls: CallCounter::new(),
            retry: RetryPolicy::default(),
        }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Counts into `calls` instead of a fresh counter (to share one with the metrics layer).
    pub fn with_call_counter(mut self, calls: CallCounter) -> Self {
        self.calls = calls;
        self
    }

    pub fn calls(&self) -> &CallCounter {
        &self.calls
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Whether SQS and SNS clients are configured (event-driven discovery needs them).
    pub fn has_event_clients(&self) -> bool {
        self.events.is_some()
    }

    fn event_clients(
        &self,
        operation: &'static str,
        target: &str,
    ) -> Result<&EventClients, AwsError> {
        self.events.as_ref().ok_or_else(|| AwsError::Call {
            operation,
            target: target.to_owned(),
            code: None,
            message: "no SQS/SNS client configured".into(),
        })
    }
}

/// The SDK config with its retries off and only a connect timeout of its own: [`Aws::call`]
/// bounds each attempt by its operation's timeout.
fn without_sdk_retries(config: &SdkConfig) -> SdkConfig {
    config
        .to_builder()
        .retry_config(RetryConfig::disabled())
        .timeout_config(sdk_timeouts())
        .build()
}

fn sdk_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .build()
}

/// Cloud Map's DiscoverInstances is modelled with a `data-` host prefix. Against a custom
/// endpoint (an emulator on 127.0.0.1) that makes the SDK call `data-127.0.0.1`, which does not
/// resolve, and the SDK has no switch for it; so this removes the prefix from the request's
/// config bag before the endpoint is resolved. Installed only when a custom endpoint is set.
#[derive(Debug)]
struct NoEndpointPrefix;

impl Intercept for NoEndpointPrefix {
    fn name(&self) -> &'static str {
        "NoEndpointPrefix"
    }

    fn modify_before_retry_loop(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().unset::<EndpointPrefix>();
        Ok(())
    }
}

/// Requests kept in flight at once: enough to hide latency, few enough not to be throttled.
pub(crate) const CONCURRENCY: usize = 8;

/// Runs `jobs` with at most `limit` at a time; results come back in the order of `jobs`.
pub(crate) async fn run_bounded<T, Fut>(jobs: Vec<Fut>, limit: usize) -> Vec<T>
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let count = jobs.len();
    for (i, job) in jobs.into_iter().enumerate() {
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (i, job.await)
        });
    }
    let mut out = Vec::with_capacity(count);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(result) => out.push(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("AWS request task was cancelled: {e}"),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}
