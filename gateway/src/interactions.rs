//! Forwards interactions to the logger, in one of two modes (`GATEWAY_LOG_MODE`):
//!
//! - `buffered` (the default): an unavailable logger never fails a prediction: the
//!   interactions wait in a bounded in-memory buffer and are retried in the background; what
//!   does not fit is counted (`gateway_interactions_dropped_total`) and logged. Once a call
//!   has failed, later interactions go straight to the buffer (behind the ones already
//!   waiting) until the background retry gets through again, so predictions do not each wait
//!   out the logger's timeout while it is down. A gateway that dies meanwhile loses them.
//! - `strict`: no answer goes out unrecorded. If the logger does not durably take the
//!   interactions, the caller gets 503 with `Retry-After` and nothing is buffered. While the
//!   logger is down, one call per probe interval tries it; the others fail at once.
//!
//! In both modes, the interactions of requests that arrive while every `Log` lane
//! (`GATEWAY_LOG_CONCURRENCY`) is busy share the next `Log` call (`coalesce`: a lone request's
//! call leaves at once), and each request still waits for the logger's acknowledgement of its
//! own interactions before it is answered. A coalesced call the logger refuses as invalid is
//! sent again request by request, so only the request with the bad interaction is refused.
//!
//! In both modes, an interaction the logger refuses for itself (invalid, or larger than its
//! message limit: it can never be stored) is counted (`gateway_interactions_rejected_total`)
//! and logged with the reason, never retried; the others of its call are sent again without
//! it (`log_client`). Calls carry at most `proto::MAX_INTERACTIONS_PER_LOG` interactions and
//! `proto::MAX_LOG_CALL_BYTES`, the logger's own limits.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::access::Caller;
use axum::http::HeaderMap;
use coalesce::{Coalescer, Limits, Weight};
use log_client::{LogClient, LogFailure, Refused};
use proto::{
    interaction::v1::{Interaction, Source},
    predictor::v1::PredictResponse,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What happens to interactions the logger cannot take.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogMode {
    /// Answer anyway; keep them in memory and retry in the background.
    Buffered,
    /// Answer 503 instead: every answer's interactions are durable first.
    Strict,
}

/// While the logger is down, strict mode lets one request try it this often.
const STRICT_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Who a request's interactions are recorded as coming from.
pub struct Origin {
    pub source: Source,
    pub client_id: String,
}

impl Origin {
    /// `api` names the API the request came through; of `/v1`'s (`Api`), the page's
    /// requests are `Web`. With API keys the client is the key's name, never a header the
    /// caller chose; open (no keys), the caller's own `X-Client-Id`, as a label only.
    pub fn of(caller: &Caller, headers: &HeaderMap, api: Source) -> Self {
        let page = headers
            .get("x-requested-by")
            .is_some_and(|v| v == "mlops-web");
        let source = if api == Source::Api && page {
            Source::Web
        } else {
            api
        };
        let client_id = match &caller.key_name {
            Some(name) => name.clone(),
            None => headers
                .get("x-client-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 128)
                .unwrap_or("anonymous")
                .to_owned(),
        };
        Origin { source, client_id }
    }
}

/// One interaction per row of the predictor's `answer`, under the ids fixed for them.
pub fn of_answer(
    answer: &PredictResponse,
    interaction_ids: Vec<String>,
    origin: &Origin,
    latency_ms: f64,
) -> Vec<Interaction> {
    let model = answer.model.clone().unwrap_or_default();
    let event_time = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let traceparent = telemetry::traces::current_traceparent().unwrap_or_default();
    answer
        .predictions
        .iter()
        .zip(interaction_ids)
        .map(|(p, interaction_id)| Interaction {
            interaction_id,
            event_time: event_time.clone(),
            client_id: origin.client_id.clone(),
            source: origin.source as i32,
            features_csv: p.features_csv.clone(),
            prediction: p.scores.first().copied().unwrap_or(f64::NAN),
            scores_csv: p
                .scores
                .iter()
                .map(f64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            model_package_arn: model.model_package_arn.clone(),
            model_package_version: model.model_package_version,
            endpoint_name: model.endpoint_name.clone(),
            variant_name: model.variant_name.clone(),
            latency_ms,
            traceparent: traceparent.clone(),
            ..Default::default()
        })
        .collect()
}

/// Why strict mode refused to answer.
#[derive(Debug, thiserror::Error)]
pub enum NotRecorded {
    /// The logger is down or overloaded: the caller may retry.
    #[error("the interaction logger did not take the interactions ({0}); not answering unrecorded")]
    Unavailable(String),
    /// The logger refused them as invalid: retrying cannot help.
    #[error("the interaction logger refused the interactions ({0})")]
    Refused(String),
}

/// Shares `Log` calls: a request's interactions and id in, its own outcome out.
type LogCoalescer = Coalescer<(Vec<Interaction>, String), Result<Refused, LogFailure>>;

pub struct Recorder {
    client: LogClient,
    /// Shares `Log` calls among concurrent requests (`None`: one call per request).
    coalescer: Option<LogCoalescer>,
    mode: LogMode,
    /// Strict mode, logger down: when a request last tried it.
    last_probe: Mutex<Option<std::time::Instant>>,
    buffer: Mutex<VecDeque<Interaction>>,
    capacity: usize,
    wake: Notify,
    /// The last call failed and the retry has not got through since.
    logger_down: AtomicBool,
}

impl Recorder {
    /// `lanes`: `Log` calls in flight at once while coalescing; `None` turns coalescing off.
    /// Must be called within a Tokio runtime.
    pub fn new(
        client: hops::Logger,
        mode: LogMode,
        capacity: usize,
        timeout: Duration,
        lanes: Option<usize>,
    ) -> Self {
        let client = LogClient { client, timeout };
        let coalescer = lanes.map(|lanes| {
            let client = client.clone();
            Coalescer::start(
                Limits {
                    rows: proto::MAX_INTERACTIONS_PER_LOG,
                    bytes: proto::MAX_LOG_CALL_BYTES,
                    lanes,
                },
                "gateway_log_call_requests",
                move |requests: Vec<(Vec<Interaction>, String)>| {
                    let client = client.clone();
                    let sampled = requests
                        .iter()
                        .flat_map(|(interactions, _)| interactions)
                        .any(|i| !i.traceparent.is_empty());
                    telemetry::traces::for_stored(sampled, async move {
                        client.log_together(requests).await
                    })
                },
            )
        });
        Recorder {
            client,
            coalescer,
            mode,
            last_probe: Mutex::new(None),
            buffer: Mutex::new(VecDeque::new()),
            capacity,
            wake: Notify::new(),
            logger_down: AtomicBool::new(false),
        }
    }

    /// A request's interactions to the logger: sharing a call with concurrent requests when
    /// coalescing; returns once the logger has taken them (or failed).
    async fn log(
        &self,
        interactions: Vec<Interaction>,
        request_id: &str,
    ) -> Result<Refused, LogFailure> {
        let Some(coalescer) = &self.coalescer else {
            return self.client.log(interactions, request_id).await;
        };
        let weight = Weight {
            rows: interactions.len(),
            bytes: interactions.iter().map(prost::Message::encoded_len).sum(),
        };
        match coalescer
            .submit((interactions, request_id.to_owned()), None, weight)
            .await
        {
            Ok(outcome) => outcome,
            Err(coalesce::Stopped) => {
                tracing::error!(
                    request_id,
                    "the runtime is stopping: interactions not logged"
                );
                Err((
                    tonic::Status::unavailable("the gateway is stopping"),
                    Vec::new(),
                ))
            }
        }
    }

    /// Logs now. When the logger cannot take them: buffered mode buffers them for a retry
    /// (at once while the logger is known to be down) and returns Ok; strict mode returns
    /// `NotRecorded` and keeps nothing.
    pub async fn record(
        &self,
        interactions: Vec<Interaction>,
        request_id: &str,
    ) -> Result<(), NotRecorded> {
        if self.mode == LogMode::Strict {
            return self.record_strict(interactions, request_id).await;
        }
        if self.logger_down.load(Ordering::Acquire) {
            self.buffer(interactions);
            return Ok(());
        }
        match self.log(interactions, request_id).await {
            Ok(refused) => {
                self.drop_refused(refused);
            }
            Err((status, rest)) => {
                self.mark_down(&status, "buffering interactions until it answers again");
                self.buffer(rest);
            }
        }
        Ok(())
    }

    /// Interactions the logger refused for themselves can never be stored: counted and logged
    /// with the reason, never retried (they would block everything behind them). Returns the
    /// first reason, if any was refused.
    fn drop_refused(&self, refused: Refused) -> Option<String> {
        let first = refused.first().map(|(s, _)| s.message().to_owned());
        for (status, interaction) in refused {
            metrics::counter!("gateway_interactions_rejected_total").increment(1);
            tracing::error!(
                code = ?status.code(),
                reason = status.message(),
                interaction_id = %interaction.interaction_id,
                "the logger refused an interaction for itself; it is not stored"
            );
        }
        first
    }

    async fn record_strict(
        &self,
        interactions: Vec<Interaction>,
        request_id: &str,
    ) -> Result<(), NotRecorded> {
        if self.logger_down.load(Ordering::Acquire) {
            let mut last = self.last_probe.lock().expect("probe lock");
            if last.is_some_and(|t| t.elapsed() < STRICT_PROBE_INTERVAL) {
                metrics::counter!("gateway_interactions_refused_total")
                    .increment(interactions.len() as u64);
                return Err(NotRecorded::Unavailable("the logger is down".into()));
            }
            *last = Some(std::time::Instant::now());
        }
        let count = interactions.len() as u64;
        match self.log(interactions, request_id).await {
            Ok(refused) => {
                if self.logger_down.swap(false, Ordering::AcqRel) {
                    tracing::info!("logger answering again");
                    metrics::gauge!("gateway_logger_up").set(1.0);
                }
                match self.drop_refused(refused) {
                    None => Ok(()),
                    Some(reason) => Err(NotRecorded::Refused(reason)),
                }
            }
            Err((status, _)) => {
                // the next probe is one interval from this failure
                *self.last_probe.lock().expect("probe lock") = Some(std::time::Instant::now());
                self.mark_down(&status, "strict mode: answering 503 until it answers again");
                metrics::counter!("gateway_interactions_refused_total").increment(count);
                Err(NotRecorded::Unavailable(format!("{:?}", status.code())))
            }
        }
    }

    fn mark_down(&self, status: &tonic::Status, what_now: &str) {
        if !self.logger_down.swap(true, Ordering::AcqRel) {
            tracing::warn!(code = ?status.code(), message = status.message(), "logger unavailable; {what_now}");
        }
        metrics::gauge!("gateway_logger_up").set(0.0);
    }

    fn buffer(&self, interactions: Vec<Interaction>) {
        let mut buffer = self.buffer.lock().expect("buffer lock");
        let room = self.capacity.saturating_sub(buffer.len());
        let dropped = interactions.len().saturating_sub(room);
        buffer.extend(interactions.into_iter().take(room));
        metrics::gauge!("gateway_interactions_buffered").set(buffer.len() as f64);
        if dropped > 0 {
            metrics::counter!("gateway_interactions_dropped_total").increment(dropped as u64);
            tracing::error!(
                dropped,
                capacity = self.capacity,
                "interaction buffer full: interactions dropped"
            );
        }
        drop(buffer);
        self.wake.notify_one();
    }

    pub fn buffered(&self) -> usize {
        self.buffer.lock().expect("buffer lock").len()
    }

    /// Retries buffered interactions until `stop`; then tries once more to empty the buffer.
    pub async fn retry_buffered(&self, stop: CancellationToken) {
        metrics::gauge!("gateway_logger_up").set(1.0);
        let mut backoff = Duration::from_millis(100);
        loop {
            let batch: Vec<Interaction> = {
                let mut buffer = self.buffer.lock().expect("buffer lock");
                let n = buffer.len().min(proto::MAX_INTERACTIONS_PER_LOG);
                buffer.drain(..n).collect()
            };
            if batch.is_empty() {
                // The buffer's room goes back once it is empty: memory after an outage is
                // what it was before it.
                self.buffer.lock().expect("buffer lock").shrink_to_fit();
                // Everything that waited is delivered, and whatever failed since is queued
                // behind it: the direct path may take over again.
                if self.logger_down.swap(false, Ordering::AcqRel) {
                    tracing::info!("logger answering again; buffer delivered");
                    metrics::gauge!("gateway_logger_up").set(1.0);
                }
                if stop.is_cancelled() {
                    return;
                }
                tokio::select! { _ = self.wake.notified() => {}, _ = stop.cancelled() => {} }
                continue;
            }
            let count = batch.len();
            match self.client.log(batch, "retry").await {
                Ok(refused) => {
                    backoff = Duration::from_millis(100);
                    let delivered = count - refused.len();
                    self.drop_refused(refused);
                    metrics::counter!("gateway_interactions_retried_total")
                        .increment(delivered as u64);
                    metrics::gauge!("gateway_interactions_buffered").set(self.buffered() as f64);
                }
                Err((status, rest)) => {
                    {
                        let mut buffer = self.buffer.lock().expect("buffer lock");
                        for i in rest.into_iter().rev() {
                            buffer.push_front(i);
                        }
                    }
                    if stop.is_cancelled() {
                        tracing::error!(count = self.buffered(), code = ?status.code(), "shutting down with interactions the logger never took");
                        return;
                    }
                    tokio::select! { _ = tokio::time::sleep(backoff) => {}, _ = stop.cancelled() => {} }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

mod log_client;
#[cfg(test)]
mod tests;
