//! [`Aws::call`], the one way an AWS request is sent: each attempt bounded by its operation's
//! timeout, transient failures retried with capped exponential backoff and full jitter, and
//! every attempt counted.

use std::future::Future;
use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{Aws, AwsError, Outcome};

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

/// A request attempt's time limit, unless its operation says otherwise ([`Request`]).
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// What [`Aws::call_with`] sends: an operation with its own attempt timeout, and its own
/// number of attempts where the caller retries by itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub operation: &'static str,
    pub attempt_timeout: Duration,
    /// `None`: the client's [`RetryPolicy`].
    pub max_attempts: Option<u32>,
}

impl Request {
    pub fn new(operation: &'static str) -> Request {
        Request {
            operation,
            attempt_timeout: ATTEMPT_TIMEOUT,
            max_attempts: None,
        }
    }
}

impl Aws {
    /// Sends one request (`send` builds and sends it afresh per attempt), retrying transient
    /// failures. `target` names what it was about ("ECS cluster demo") for errors and logs.
    pub(crate) async fn call<T, E, Fut>(
        &self,
        operation: &'static str,
        target: &str,
        send: impl FnMut() -> Fut,
    ) -> Result<T, AwsError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.call_with(Request::new(operation), target, send).await
    }

    /// [`Aws::call`] with the request's own attempt timeout and attempts.
    pub(crate) async fn call_with<T, E, Fut>(
        &self,
        request: Request,
        target: &str,
        mut send: impl FnMut() -> Fut,
    ) -> Result<T, AwsError>
    where
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let operation = request.operation;
        let max_attempts = request.max_attempts.unwrap_or(self.retry.max_attempts);
        let mut attempt = 1;
        loop {
            let failure = match tokio::time::timeout(request.attempt_timeout, send()).await {
                Ok(Ok(out)) => {
                    self.calls.record(operation, Outcome::Ok);
                    return Ok(out);
                }
                Ok(Err(err)) => Failure::of(&err),
                Err(_) => Failure::overdue(request.attempt_timeout),
            };
            self.calls.record(operation, failure.outcome);
            if !failure.retryable || attempt >= max_attempts {
                return Err(AwsError::Call {
                    operation,
                    target: target.to_owned(),
                    code: failure.code,
                    message: failure.message,
                });
            }
            let delay = self.retry.backoff(attempt);
            if failure.outcome == Outcome::Throttled {
                tracing::warn!(
                    operation,
                    target,
                    attempt,
                    ?delay,
                    "AWS throttled the request; backing off"
                );
            } else {
                tracing::info!(operation, target, attempt, ?delay, error = %failure.message, "transient AWS failure; retrying");
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

impl Aws {
    /// Every page of a paged request, each page through [`Aws::call_with`]: `send(token)`
    /// asks for the page after `token` (`None`: the first), `page(out)` gives a page's items
    /// and the next page's token (`None`: that was the last).
    pub(crate) async fn call_paged<T, O, E, Fut>(
        &self,
        request: Request,
        target: &str,
        mut send: impl FnMut(Option<String>) -> Fut,
        mut page: impl FnMut(O) -> (Vec<T>, Option<String>),
    ) -> Result<Vec<T>, AwsError>
    where
        Fut: Future<Output = Result<O, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .call_with(request, target, || send(token.clone()))
                .await?;
            let (more, next) = page(out);
            items.extend(more);
            match next {
                Some(next) => token = Some(next),
                None => return Ok(items),
            }
        }
    }
}

/// One failed attempt, classified.
struct Failure {
    outcome: Outcome,
    retryable: bool,
    code: Option<String>,
    message: String,
}

impl Failure {
    fn of<E: ProvideErrorMetadata + std::error::Error + 'static>(
        err: &SdkError<E, HttpResponse>,
    ) -> Failure {
        let (outcome, retryable) = classify(err);
        Failure {
            outcome,
            retryable,
            code: err.code().map(str::to_owned),
            message: error_chain(err),
        }
    }

    /// No answer within the attempt's timeout: a hanging endpoint, retried like a timeout.
    fn overdue(limit: Duration) -> Failure {
        Failure {
            outcome: Outcome::Error,
            retryable: true,
            code: None,
            message: format!(
                "no answer within {} (the attempt timeout)",
                humantime::format_duration(limit)
            ),
        }
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
