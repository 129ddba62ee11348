//! The `mlops.interaction.v1.InteractionLogger` service: validate, fill ids and event times,
//! append durably, acknowledge.

use std::sync::Arc;

use proto::interaction::v1::{
    LogRequest, LogResponse, interaction_logger_server::InteractionLogger,
};
use tokio::sync::Notify;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::Instrument;

use crate::{
    record,
    spool::{Spool, SpoolError},
};

pub const MAX_PER_CALL: usize = proto::MAX_INTERACTIONS_PER_LOG;

pub struct LoggerService {
    pub spool: Arc<Spool>,
    pub wake: Arc<Notify>,
    /// Counts each interaction's features against the live model's baseline (`None`: off).
    pub drift: Option<crate::drift::Drift>,
}

fn invalid(field: String, reason: &str) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid {field}: {reason}"),
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

/// The Log call's one error table. A storage fault is UNAVAILABLE, which every caller
/// retries (the gateway buffers or answers 503): nothing it holds is lost, and nothing is
/// acknowledged that is not on disk. The cause is logged where the fault is noticed.
impl From<SpoolError> for Status {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Full(detail) => Status::resource_exhausted(format!(
                "the interaction spool is full ({detail}); retry later"
            )),
            SpoolError::Recovering
            | SpoolError::Storage { .. }
            | SpoolError::Io { .. }
            | SpoolError::Stopped => Status::unavailable(
                "the interaction spool cannot be written now (its storage failed and is being reopened); retry",
            ),
        }
    }
}

#[tonic::async_trait]
impl InteractionLogger for LoggerService {
    #[tracing::instrument(name = "log", skip_all, fields(request_id, count))]
    async fn log(&self, request: Request<LogRequest>) -> Result<Response<LogResponse>, Status> {
        if let Some(id) = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
        {
            tracing::Span::current().record("request_id", id);
        }
        let mut interactions = request.into_inner().interactions;
        tracing::Span::current().record("count", interactions.len());
        if interactions.is_empty() || interactions.len() > MAX_PER_CALL {
            return Err(invalid(
                "interactions".into(),
                &format!("must hold 1 to {MAX_PER_CALL} interactions"),
            ));
        }
        // the trace the shipping span links to: the caller's request's, else this call's
        let traceparent = telemetry::traces::current_traceparent();
        for (n, i) in interactions.iter_mut().enumerate() {
            if let Some(t) = traceparent.as_ref().filter(|_| i.traceparent.is_empty()) {
                i.traceparent.clone_from(t);
            }
            if i.interaction_id.is_empty() {
                i.interaction_id = uuid::Uuid::now_v7().to_string();
            }
            if i.event_time.is_empty() {
                i.event_time = record::now_event_time();
            } else if !record::valid_event_time(&i.event_time) {
                return Err(invalid(
                    format!("interactions[{n}].event_time"),
                    "must be yyyy-MM-ddTHH:mm:ss.SSSZ",
                ));
            }
            if !i.prediction.is_finite()
                || !i.latency_ms.is_finite()
                || !i.live_prediction.is_finite()
            {
                return Err(invalid(
                    format!("interactions[{n}]"),
                    "prediction, live_prediction and latency_ms must be finite",
                ));
            }
            if i.interaction_id.len() > 256 {
                return Err(invalid(
                    format!("interactions[{n}].interaction_id"),
                    "must be at most 256 characters",
                ));
            }
        }
        let ids: Vec<String> = interactions
            .iter()
            .map(|i| i.interaction_id.clone())
            .collect();
        let count = ids.len() as u64;
        if let Some(drift) = &self.drift {
            drift.observe(&interactions);
        }
        let commit = telemetry::traces::child(|| {
            tracing::info_span!("spool commit", interactions = count as i64)
        });
        match self.spool.append(interactions).instrument(commit).await {
            Ok(()) => {
                metrics::counter!("logger_accepted_total").increment(count);
                self.wake.notify_one();
                Ok(Response::new(LogResponse {
                    interaction_ids: ids,
                }))
            }
            Err(e) => {
                let reason = if matches!(e, SpoolError::Full(_)) {
                    "full"
                } else {
                    "storage"
                };
                metrics::counter!("logger_refused_total", "reason" => reason).increment(count);
                Err(e.into())
            }
        }
    }
}
