//! The calls between the front door's parts: the gateway's `Predict` and `Log`, and the
//! predictor's shadow records to the logger. Each caller holds its callee as the callee's own
//! service trait (`predictor_server::Predictor`, `interaction_logger_server::InteractionLogger`)
//! and calls it the same way in both deployment shapes:
//!
//! - between the microservices, over gRPC ([`remote_predictor`], [`remote_logger`]): the
//!   generated client behind the trait;
//! - in one process ([`local_predictor`], [`local_logger`]): the service itself, its typed
//!   messages passed as they are (no encoding, no socket), with what its gRPC server would
//!   have added: the call's `grpc-timeout` enforced.
//!
//! [`Health`] says whether the callee serves, from its gRPC health or its readiness in process.

use std::{sync::Arc, time::Duration};

use proto::{
    interaction::v1::{
        LogRequest, LogResponse, interaction_logger_client::InteractionLoggerClient,
        interaction_logger_server::InteractionLogger,
    },
    predictor::v1::{
        PredictRequest, PredictResponse, predictor_client::PredictorClient,
        predictor_server::Predictor as PredictorService,
    },
};
use tonic::{Request, Response, Status, async_trait, transport::Channel};

/// The predictor, as its callers hold it.
pub type Predictor = Arc<dyn PredictorService>;
/// The interaction logger, as its callers hold it.
pub type Logger = Arc<dyn InteractionLogger>;

/// The predictor over gRPC.
pub fn remote_predictor(channel: Channel) -> Predictor {
    Arc::new(Remote(PredictorClient::new(channel)))
}

/// The logger over gRPC.
pub fn remote_logger(channel: Channel) -> Logger {
    Arc::new(Remote(InteractionLoggerClient::new(channel)))
}

/// The predictor in this process.
pub fn local_predictor<S: PredictorService>(service: Arc<S>) -> Predictor {
    Arc::new(Local(service))
}

/// The logger in this process.
pub fn local_logger<S: InteractionLogger>(service: Arc<S>) -> Logger {
    Arc::new(Local(service))
}

struct Remote<C>(C);

#[async_trait]
impl PredictorService for Remote<PredictorClient<Channel>> {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        self.0.clone().predict(request).await
    }
}

#[async_trait]
impl InteractionLogger for Remote<InteractionLoggerClient<Channel>> {
    async fn log(&self, request: Request<LogRequest>) -> Result<Response<LogResponse>, Status> {
        self.0.clone().log(request).await
    }
}

struct Local<S>(Arc<S>);

#[async_trait]
impl<S: PredictorService> PredictorService for Local<S> {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        within(deadline(request.metadata()), self.0.predict(request)).await
    }
}

#[async_trait]
impl<S: InteractionLogger> InteractionLogger for Local<S> {
    async fn log(&self, request: Request<LogRequest>) -> Result<Response<LogResponse>, Status> {
        within(deadline(request.metadata()), self.0.log(request)).await
    }
}

/// What tonic's server does with a call's `grpc-timeout`: the call is dropped when it
/// expires, and the caller gets CANCELLED ("Timeout expired").
async fn within<T>(
    deadline: Option<Duration>,
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match deadline {
        None => call.await,
        Some(d) => tokio::time::timeout(d, call)
            .await
            .unwrap_or_else(|_| Err(Status::cancelled("Timeout expired"))),
    }
}

/// A call's deadline, from its `grpc-timeout` metadata (the gRPC wire format: at most 8
/// digits and a unit); None when absent or malformed.
pub fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    const MAX_DIGITS: usize = 8;
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether a callee serves: its `grpc.health.v1` status for its service (over gRPC), or in
/// process the readiness of every part it needs (what their health would report).
#[derive(Clone)]
pub enum Health {
    Grpc {
        channel: Channel,
        service: &'static str,
    },
    Local(Vec<bootstrap::Readiness>),
}

impl Health {
    /// Serving, not serving, or the status the health call failed with (unreachable).
    pub async fn serving(&self, timeout: Duration) -> Result<bool, Status> {
        match self {
            Health::Local(parts) => Ok(parts.iter().all(bootstrap::Readiness::is_ready)),
            Health::Grpc { channel, service } => {
                use tonic_health::pb::{
                    HealthCheckRequest, health_check_response::ServingStatus,
                    health_client::HealthClient,
                };
                let mut request = Request::new(HealthCheckRequest {
                    service: (*service).to_owned(),
                });
                request.set_timeout(timeout);
                let answer = HealthClient::new(channel.clone()).check(request).await?;
                Ok(answer.get_ref().status == ServingStatus::Serving as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests;
