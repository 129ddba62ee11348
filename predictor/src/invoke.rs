//! Calls InvokeEndpoint: within the caller's deadline, retrying only throttling and 5xx with
//! jittered exponential backoff, behind the circuit breaker. A rollout's candidate gets one
//! attempt outside the breaker: its failure falls back to the live variant (see `rollout`), and
//! must not open the circuit the live variant's calls go through.

use std::time::Duration;

use aws_sdk_sagemakerruntime::{
    error::{ProvideErrorMetadata, SdkError},
    operation::invoke_endpoint::InvokeEndpointError,
};
use aws_smithy_types::Blob;
use rand::Rng;
use tokio::time::Instant;

use crate::{breaker::Breaker, error::Error};

pub struct Invoker {
    client: aws_sdk_sagemakerruntime::Client,
    endpoint: String,
    breaker: Breaker,
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
}

/// How a call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attempts {
    /// Retried, behind the breaker.
    #[default]
    Live,
    /// Once, outside the breaker: a rollout's candidate, whose failure the caller handles.
    Once,
}

/// The endpoint's answer.
pub struct Answer {
    pub body: String,
    /// From `x-Amzn-Invoked-Production-Variant`.
    pub variant: String,
}

struct Failure {
    error: Error,
    retryable: bool,
    /// Counts against the breaker: the endpoint looked down (not merely busy or picky).
    endpoint_down: bool,
}

impl Invoker {
    pub fn new(
        client: aws_sdk_sagemakerruntime::Client,
        endpoint: String,
        breaker: Breaker,
    ) -> Self {
        Invoker {
            client,
            endpoint,
            breaker,
            max_attempts: 4,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub async fn invoke(
        &self,
        csv: String,
        inference_id: &str,
        target_variant: Option<&str>,
        deadline: Instant,
        attempts: Attempts,
    ) -> Result<Answer, Error> {
        let body = bytes_of(csv);
        let max_attempts = match attempts {
            Attempts::Live => self.max_attempts,
            Attempts::Once => 1,
        };
        let mut attempt = 0;
        loop {
            let permit = match attempts {
                Attempts::Live => Some(self.breaker.allow().map_err(Error::CircuitOpen)?),
                Attempts::Once => None,
            };
            let record = |success| {
                if let Some(permit) = permit {
                    self.breaker.record(permit, success)
                }
            };
            let started = Instant::now();
            let call = self
                .client
                .invoke_endpoint()
                .endpoint_name(&self.endpoint)
                .content_type("text/csv")
                .accept("text/csv")
                .inference_id(inference_id)
                .set_target_variant(target_variant.map(str::to_owned))
                .body(body.clone())
                .send();
            let result = match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_) => {
                    record(false);
                    return Err(Error::Deadline);
                }
            };
            metrics::histogram!("predictor_endpoint_seconds")
                .record(started.elapsed().as_secs_f64());
            let failure = match result {
                Ok(out) => {
                    record(true);
                    let body = out
                        .body
                        .map(|b| String::from_utf8_lossy(b.as_ref()).into_owned())
                        .unwrap_or_default();
                    let variant = out.invoked_production_variant.unwrap_or_default();
                    tracing::Span::current().record("sagemaker.variant", variant.as_str());
                    return Ok(Answer { body, variant });
                }
                Err(e) => classify(e),
            };
            record(!failure.endpoint_down);
            attempt += 1;
            if !failure.retryable || attempt >= max_attempts {
                return Err(failure.error);
            }
            let ceiling = self
                .backoff_max
                .min(self.backoff_base * 2u32.pow(attempt - 1));
            let pause = ceiling.mul_f64(rand::rng().random_range(0.5..1.0));
            if Instant::now() + pause >= deadline {
                return Err(failure.error);
            }
            metrics::counter!("predictor_endpoint_retries_total").increment(1);
            tracing::debug!(attempt, ?pause, error = %failure.error, "retrying InvokeEndpoint");
            tokio::time::sleep(pause).await;
        }
    }
}

fn bytes_of(csv: String) -> Blob {
    Blob::new(csv.into_bytes())
}

fn classify(
    e: SdkError<InvokeEndpointError, aws_sdk_sagemakerruntime::config::http::HttpResponse>,
) -> Failure {
    let unavailable = |msg: String| Failure {
        error: Error::Unavailable(msg),
        retryable: true,
        endpoint_down: true,
    };
    match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let err = ctx.into_err();
            let message = err.message().unwrap_or_default().to_owned();
            match &err {
                InvokeEndpointError::ModelError(m) => match m.original_status_code() {
                    Some(400..=499) => Failure {
                        error: Error::ModelRejected(
                            m.original_message().unwrap_or(&message).to_owned(),
                        ),
                        retryable: false,
                        endpoint_down: false,
                    },
                    _ => unavailable(format!("the model failed: {message}")),
                },
                InvokeEndpointError::ModelNotReadyException(_) => Failure {
                    error: Error::Throttled(message),
                    retryable: true,
                    endpoint_down: false,
                },
                _ if err.code() == Some("ThrottlingException") => Failure {
                    error: Error::Throttled(message),
                    retryable: true,
                    endpoint_down: false,
                },
                // "The variant(s) "[v2]" are not found for endpoint ..."
                InvokeEndpointError::ValidationError(_) if message.contains("variant(s)") => {
                    Failure {
                        error: Error::NoSuchVariant(message),
                        retryable: false,
                        endpoint_down: false,
                    }
                }
                InvokeEndpointError::ValidationError(_) if message.contains("not found") => {
                    Failure {
                        error: Error::Unavailable(message),
                        retryable: false,
                        endpoint_down: true,
                    }
                }
                _ if status >= 500 => unavailable(format!(
                    "{} ({status}): {message}",
                    err.code().unwrap_or("error")
                )),
                _ => {
                    tracing::error!(status, code = err.code(), %message, "InvokeEndpoint refused the request");
                    Failure {
                        error: Error::Internal(format!("InvokeEndpoint: {message}")),
                        retryable: false,
                        endpoint_down: false,
                    }
                }
            }
        }
        SdkError::TimeoutError(_) => unavailable("the endpoint timed out".into()),
        SdkError::DispatchFailure(f) => unavailable(format!(
            "cannot reach the endpoint: {:?}",
            f.as_connector_error().map(|c| c.to_string())
        )),
        SdkError::ResponseError(_) => {
            unavailable("the endpoint sent an unreadable response".into())
        }
        other => {
            tracing::error!(error = %aws_smithy_types::error::display::DisplayErrorContext(&other), "InvokeEndpoint could not be sent");
            Failure {
                error: Error::Internal("InvokeEndpoint could not be sent".into()),
                retryable: false,
                endpoint_down: false,
            }
        }
    }
}
