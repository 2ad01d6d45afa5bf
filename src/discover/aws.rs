//! The AWS SDK clients, and the one place every AWS request goes through ([`Aws::call`]):
//! it retries with capped exponential backoff and full jitter, logs throttling at warn, and counts
//! each attempt in the [`CallCounter`].
//!
//! The SDK's own retries are switched off so there is exactly one retry layer, and every attempt
//! is visible to the counter (the efficiency figure counts requests, not operations).

use std::future::Future;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::endpoint::EndpointPrefix;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::calls::{CallCounter, Outcome};
use super::settings::DiscoverSettings;
use super::DiscoverError;

/// How [`Aws::call`] retries a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Upper bound of the first backoff; it doubles per attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter": a uniform delay in [0, min(cap, initial · 2^(attempt-1))], which spreads
    /// retries of many pollers better than a fixed exponential delay.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// The clients of event-driven discovery.
#[derive(Debug, Clone)]
pub(crate) struct EventClients {
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
}

/// A request attempt's time limit; SQS's long polls wait up to 20 s more.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// The AWS clients discovery uses, with the retry policy and the call counter. Cheap to clone:
/// the SDK clients are handles.
#[derive(Debug, Clone)]
pub struct Aws {
    pub(crate) ecs: aws_sdk_ecs::Client,
    pub(crate) ec2: aws_sdk_ec2::Client,
    pub(crate) cloud_map: aws_sdk_servicediscovery::Client,
    /// SQS and SNS, for event-driven discovery (`[events]`); absent on recorded-response clients
    /// that were not given them.
    pub(crate) events: Option<EventClients>,
    /// S3, for the shared push store; absent on recorded-response clients.
    pub(crate) s3: Option<aws_sdk_s3::Client>,
    /// The region written on every endpoint's locality.
    pub(crate) region: String,
    calls: CallCounter,
    retry: RetryPolicy,
}

impl Aws {
    /// Loads the standard credential chain and region, honouring `[aws]` and `AWS_ENDPOINT_URL`
    /// (and `events.endpoint_url` for SQS and SNS).
    pub async fn connect(settings: &DiscoverSettings) -> Result<Self, DiscoverError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.aws.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &settings.aws.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let mut aws = Self::from_sdk_config(&config)?;
        if let Some(url) = &settings.events.endpoint_url {
            let events = config.to_builder().endpoint_url(url).build();
            aws.events = Some(event_clients(&events));
        }
        Ok(aws)
    }

    /// Builds the clients from a loaded SDK config (tests pass one with explicit credentials).
    pub fn from_sdk_config(config: &SdkConfig) -> Result<Self, DiscoverError> {
        let region = config.region().ok_or(DiscoverError::NoRegion)?.to_string();
        let config = config
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            )
            .build();
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
        Ok(aws)
    }

    /// Uses these SQS and SNS clients for event-driven discovery (retries off, and a request
    /// timeout that leaves room for SQS long polls).
    pub fn with_event_clients(
        mut self,
        sqs: aws_sdk_sqs::Client,
        sns: aws_sdk_sns::Client,
    ) -> Self {
        let sqs = aws_sdk_sqs::Client::from_conf(
            sqs.config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
                .timeout_config(long_poll_timeouts())
                .build(),
        );
        let sns = aws_sdk_sns::Client::from_conf(
            sns.config()
                .to_builder()
                .retry_config(RetryConfig::disabled())
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
            region: region.into(),
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

    /// Sends one request (`send` builds and sends it afresh per attempt), retrying transient
    /// failures. `target` names what it was about ("cluster demo") for errors and logs.
    pub(crate) async fn call<T, E, Fut>(
        &self,
        operation: &'static str,
        target: &str,
        mut send: impl FnMut() -> Fut,
    ) -> Result<T, DiscoverError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut attempt = 1;
        loop {
            let err = match send().await {
                Ok(out) => {
                    self.calls.record(operation, Outcome::Ok);
                    return Ok(out);
                }
                Err(err) => err,
            };
            let (outcome, retryable) = classify(&err);
            self.calls.record(operation, outcome);
            let message = error_chain(&err);
            if !retryable || attempt >= self.retry.max_attempts {
                let code = err.code().map(str::to_owned);
                return Err(DiscoverError::Aws {
                    operation,
                    target: target.to_owned(),
                    code,
                    message,
                });
            }
            let delay = self.retry.backoff(attempt);
            if outcome == Outcome::Throttled {
                tracing::warn!(
                    operation,
                    target,
                    attempt,
                    ?delay,
                    "AWS throttled the request; backing off"
                );
            } else {
                tracing::info!(operation, target, attempt, ?delay, error = %message, "transient AWS failure; retrying");
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

fn long_poll_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT + Duration::from_secs(20))
        .build()
}

fn event_clients(config: &SdkConfig) -> EventClients {
    let config = config
        .to_builder()
        .retry_config(RetryConfig::disabled())
        .timeout_config(long_poll_timeouts())
        .build();
    EventClients {
        sqs: aws_sdk_sqs::Client::new(&config),
        sns: aws_sdk_sns::Client::new(&config),
    }
}

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
];
const TRANSIENT_CODES: &[&str] = &[
    "ServerException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
];

/// "a: b: c" from an error and its sources: readable, unlike the SDK's Debug-laden context.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = e.source();
    }
    message
}

/// (outcome, retryable) of a failed request.
fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> (Outcome, bool) {
    match err {
        SdkError::ServiceError(ctx) => {
            let code = ctx.err().code().unwrap_or_default();
            let status = ctx.raw().status().as_u16();
            if THROTTLING_CODES.contains(&code) || status == 429 {
                (Outcome::Throttled, true)
            } else {
                (
                    Outcome::Error,
                    TRANSIENT_CODES.contains(&code) || status >= 500,
                )
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            (Outcome::Error, true)
        }
        _ => (Outcome::Error, false),
    }
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

/// Requests discovery keeps in flight at once: enough to hide latency, few enough not to be
/// throttled.
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
            Err(e) => panic!("discovery request task was cancelled: {e}"),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_stays_under_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        for _ in 0..200 {
            assert!(policy.backoff(1) <= Duration::from_millis(100));
            assert!(policy.backoff(2) <= Duration::from_millis(200));
            assert!(policy.backoff(30) <= Duration::from_millis(500));
        }
        // Jitter: not every delay is the ceiling.
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| policy.backoff(3)).collect();
        assert!(delays.len() > 1);
    }
}
