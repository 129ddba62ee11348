//! Mirrors a fraction of live requests to the candidate awaiting a decision, off the answer
//! path. The registry-watcher's status says when there is one to mirror to: a
//! PendingManualApproval package newer than the latest Approved, InService on the shadow
//! endpoint that `mlops-deploy shadow` stands up. A Predict call hands its rows and live scores
//! to a bounded queue (`try_send`: a full queue drops the shadow work and counts it) and
//! answers; workers invoke the candidate (their own timeout, no retries: a failure is the
//! candidate's error) and the outcomes go to the watcher in batches (`ReportShadow`), where
//! they become the comparison the approver reads. With LOGGER_URL set, each mirrored row the
//! caller named (`PredictRequest.interaction_ids`, as the gateway does) is also recorded beside
//! the live one: a shadow record `{interaction_id}.shadow` in the interactions feature group,
//! through the interaction-logger. Nothing here can delay or fail a live answer.

use std::{sync::Arc, time::Duration};

use aws_smithy_types::Blob;
use proto::{
    interaction::v1::{Interaction, LogRequest, Source},
    registry::v1::{
        ReportShadowRequest, ShadowOutcome, Status, registry_watcher_client::RegistryWatcherClient,
    },
};
use tokio::{
    sync::{Semaphore, mpsc},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::Instrument;

use crate::rows;

/// Configuration (part of the predictor's).
#[derive(clap::Args, Debug, Clone)]
#[group(id = "shadow")]
pub struct Config {
    /// Share of live requests mirrored to a shadowed candidate (0 = off, 1 = every request).
    /// Needs REGISTRY_WATCHER_URL (it says when a candidate is shadowed, and takes the outcomes).
    #[arg(long, env = "PREDICTOR_SHADOW_FRACTION", default_value_t = 0.0)]
    pub shadow_fraction: f64,
    /// Mirrored requests waiting for a worker; beyond that shadow work is dropped (counted).
    #[arg(long, env = "PREDICTOR_SHADOW_QUEUE", default_value_t = 256)]
    pub shadow_queue: usize,
    /// Calls to the candidate in flight at once.
    #[arg(long, env = "PREDICTOR_SHADOW_CONCURRENCY", default_value_t = 2)]
    pub shadow_concurrency: usize,
    /// A candidate call taking longer counts as the candidate's error.
    #[arg(long, env = "PREDICTOR_SHADOW_TIMEOUT_MS", default_value_t = 2000)]
    pub shadow_timeout_ms: u64,
    /// interaction-logger gRPC URL: the candidate's answer to each mirrored row is recorded
    /// beside the live one (unset: only the comparison).
    #[arg(long, env = "LOGGER_URL")]
    pub logger_url: Option<String>,
}

/// Where mirrored rows go: the shadow endpoint, and the package it serves.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    endpoint: String,
    candidate_arn: String,
    candidate_version: i64,
}

/// One live request, as the candidate gets it.
pub struct Job {
    /// One CSV line per row, as the live model got them.
    pub lines: Vec<String>,
    /// The ids the caller records the rows under (one per row, or none).
    pub interaction_ids: Vec<String>,
    pub live_version: i64,
    pub request_id: String,
    /// The live model's first score per row (empty when `live_failed`).
    pub live: Vec<f64>,
    pub live_latency_ms: f64,
    pub live_failed: bool,
    /// The live request's span when traces are on: the shadow call is its child.
    pub span: tracing::Span,
}

pub struct Mirror {
    fraction: f64,
    registry: registry_follower::Follower,
    queue: mpsc::Sender<(Target, Job)>,
}

/// The candidate to mirror to, if one is shadowed and takes the live model's rows.
fn target(status: &Status) -> Option<Target> {
    registry_status::status::shadowed(status)?;
    let candidate = status.candidate.as_ref()?;
    let live = registry_follower::live_schema(status);
    if let Some(live) = live
        && !candidate.features.is_empty()
        && candidate.features != *live
    {
        metrics::counter!("predictor_shadow_skipped_total", "reason" => "schema").increment(1);
        return None;
    }
    Some(Target {
        endpoint: status.shadow.as_ref()?.name.clone(),
        candidate_arn: candidate.arn.clone(),
        candidate_version: candidate.version,
    })
}

impl Mirror {
    /// `None` when mirroring is off (fraction 0, or no watcher to say what to mirror to).
    pub fn start(
        config: &Config,
        client: aws_sdk_sagemakerruntime::Client,
        registry: registry_follower::Follower,
        watcher: Option<Endpoint>,
        logger: Option<hops::Logger>,
        shutdown: CancellationToken,
    ) -> Option<Arc<Self>> {
        let watcher = watcher.filter(|_| config.shadow_fraction > 0.0)?;
        let (queue, jobs) = mpsc::channel(config.shadow_queue.max(1));
        let (outcomes_tx, outcomes) = mpsc::channel(1024);
        tokio::spawn(work(
            jobs,
            client,
            config.shadow_concurrency.max(1),
            Duration::from_millis(config.shadow_timeout_ms.max(1)),
            outcomes_tx,
        ));
        tokio::spawn(report(outcomes, watcher, logger, shutdown));
        tracing::info!(
            fraction = config.shadow_fraction,
            queue = config.shadow_queue,
            "mirroring live requests to a shadowed candidate whenever there is one"
        );
        Some(Arc::new(Mirror {
            fraction: config.shadow_fraction.min(1.0),
            registry,
            queue,
        }))
    }

    /// On the answer path: picks the request or not, and when it is picked and a candidate is
    /// shadowed, queues `job()` without waiting.
    pub fn offer(&self, job: impl FnOnce() -> Job) {
        if self.fraction < 1.0 && rand::random::<f64>() >= self.fraction {
            return;
        }
        let Some(target) = self.registry.with(|s| s.and_then(target)) else {
            return;
        };
        match self.queue.try_send((target, job())) {
            Ok(()) => metrics::counter!("predictor_shadow_mirrored_total").increment(1),
            Err(_) => metrics::counter!("predictor_shadow_skipped_total", "reason" => "queue_full")
                .increment(1),
        }
    }
}

/// Invokes the candidate for each job, `concurrency` at a time.
async fn work(
    mut jobs: mpsc::Receiver<(Target, Job)>,
    client: aws_sdk_sagemakerruntime::Client,
    concurrency: usize,
    timeout: Duration,
    outcomes: mpsc::Sender<(String, Reported)>,
) {
    let lanes = Arc::new(Semaphore::new(concurrency));
    while let Some((target, job)) = jobs.recv().await {
        let Ok(lane) = Arc::clone(&lanes).acquire_owned().await else {
            return;
        };
        let (client, outcomes) = (client.clone(), outcomes.clone());
        tokio::spawn(async move {
            let reported = invoke(&client, &target, job, timeout).await;
            drop(lane);
            let _ = outcomes
                .send((target.candidate_arn.clone(), reported))
                .await;
        });
    }
}

/// One mirrored request's outcome and the shadow records of its rows.
struct Reported {
    outcome: ShadowOutcome,
    records: Vec<Interaction>,
    /// The shadow call's trace (when traces are on), which its report follows.
    traceparent: String,
}

async fn invoke(
    client: &aws_sdk_sagemakerruntime::Client,
    target: &Target,
    job: Job,
    timeout: Duration,
) -> Reported {
    let mut outcome = ShadowOutcome {
        live: job.live,
        live_latency_ms: job.live_latency_ms,
        live_failed: job.live_failed,
        ..Default::default()
    };
    let span = telemetry::traces::child_of(&job.span, || {
        tracing::info_span!(
            parent: &job.span,
            "shadow InvokeEndpoint",
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.method = "InvokeEndpoint",
            sagemaker.endpoint = %target.endpoint,
            sagemaker.variant = tracing::field::Empty,
            sagemaker.inference_id = %job.request_id,
            candidate.version = target.candidate_version,
        )
    });
    let traceparent = telemetry::traces::traceparent(&span).unwrap_or_default();
    let mut reported = Reported {
        outcome: ShadowOutcome::default(),
        records: Vec::new(),
        traceparent: traceparent.clone(),
    };
    if job.live_failed {
        reported.outcome = outcome;
        return reported;
    }
    let rows = job.lines.len();
    let started = Instant::now();
    let call = client
        .invoke_endpoint()
        .endpoint_name(&target.endpoint)
        .content_type("text/csv")
        .accept("text/csv")
        .inference_id(&job.request_id)
        .body(Blob::new(job.lines.join("\n").into_bytes()))
        .send();
    let result = tokio::time::timeout(timeout, call)
        .instrument(span.clone())
        .await;
    let elapsed = started.elapsed();
    outcome.candidate_latency_ms = Some(elapsed.as_secs_f64() * 1000.0);
    metrics::histogram!("predictor_shadow_seconds").record(elapsed.as_secs_f64());
    let mut variant = String::new();
    let scores = match result {
        Ok(Ok(out)) => {
            variant = out.invoked_production_variant.unwrap_or_default();
            span.record("sagemaker.variant", variant.as_str());
            let body = out
                .body
                .map(|b| String::from_utf8_lossy(b.as_ref()).into_owned())
                .unwrap_or_default();
            rows::parse_scores(&body, rows).map_err(|e| e.to_string())
        }
        Ok(Err(e)) => Err(aws_smithy_types::error::display::DisplayErrorContext(&e).to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    };
    match scores {
        Ok(scores) => {
            outcome.candidate = scores
                .iter()
                .map(|s| s.first().copied().unwrap_or(f64::NAN))
                .collect();
            if job.interaction_ids.len() == rows {
                let latency_ms = outcome.candidate_latency_ms.unwrap_or_default();
                reported.records = job
                    .interaction_ids
                    .into_iter()
                    .zip(job.lines)
                    .zip(scores)
                    .zip(&outcome.live)
                    .map(|(((id, line), scores), live)| Interaction {
                        interaction_id: format!("{id}.shadow"),
                        client_id: "shadow".into(),
                        source: Source::Shadow as i32,
                        features_csv: line,
                        prediction: scores.first().copied().unwrap_or(f64::NAN),
                        scores_csv: scores
                            .iter()
                            .map(f64::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        model_package_arn: target.candidate_arn.clone(),
                        model_package_version: target.candidate_version,
                        endpoint_name: target.endpoint.clone(),
                        variant_name: variant.clone(),
                        latency_ms,
                        shadow_of: id,
                        live_prediction: *live,
                        live_model_package_version: job.live_version,
                        traceparent: traceparent.clone(),
                        ..Default::default()
                    })
                    .filter(|r| r.prediction.is_finite() && r.live_prediction.is_finite())
                    .collect();
            }
        }
        Err(e) => {
            outcome.candidate_failed = true;
            metrics::counter!("predictor_shadow_candidate_errors_total").increment(1);
            tracing::debug!(request_id = %job.request_id, error = %e, "the shadowed candidate failed");
        }
    }
    reported.outcome = outcome;
    reported
}

/// Sends outcomes to the watcher, per candidate, and shadow records to the logger, in the
/// batches of [`crate::report`]. What either does not take is dropped (counted): the
/// comparison is statistics, and the records are evidence, not the users' interactions.
async fn report(
    outcomes: mpsc::Receiver<(String, Reported)>,
    watcher: Endpoint,
    logger: Option<hops::Logger>,
    shutdown: CancellationToken,
) {
    let client = RegistryWatcherClient::new(watcher.connect_lazy());
    crate::report::batches(outcomes, shutdown, |arn, batch| {
        let (mut client, logger) = (client.clone(), logger.clone());
        async move {
            let n = batch.len() as u64;
            let mut request = ReportShadowRequest {
                candidate_package_arn: arn,
                outcomes: Vec::with_capacity(batch.len()),
            };
            let mut records: Vec<Interaction> = Vec::new();
            let span = telemetry::traces::span(|| tracing::info_span!(parent: None, "report shadow", outcomes = n as i64));
            telemetry::traces::follow(&span, batch.iter().map(|r| r.traceparent.as_str()));
            for r in batch {
                request.outcomes.push(r.outcome);
                records.extend(r.records);
            }
            let mut request = tonic::Request::new(request);
            telemetry::traces::inject_metadata(&span, request.metadata_mut());
            match client.report_shadow(request).instrument(span.clone()).await {
                Ok(_) => metrics::counter!("predictor_shadow_reported_total").increment(n),
                Err(e) => {
                    metrics::counter!("predictor_shadow_report_errors_total").increment(n);
                    tracing::warn!(error = %e.message(), outcomes = n, "the registry-watcher did not take shadow outcomes; dropped");
                }
            }
            let Some(logger) = logger else { return };
            for chunk in records.chunks(proto::MAX_INTERACTIONS_PER_LOG) {
                let n = chunk.len() as u64;
                let mut request = tonic::Request::new(LogRequest {
                    interactions: chunk.to_vec(),
                });
                telemetry::traces::inject_metadata(&span, request.metadata_mut());
                match logger.log(request).instrument(span.clone()).await {
                    Ok(_) => metrics::counter!("predictor_shadow_records_total").increment(n),
                    Err(e) => {
                        metrics::counter!("predictor_shadow_record_errors_total").increment(n);
                        tracing::warn!(error = %e.message(), records = n, "the interaction-logger did not take shadow records; dropped");
                    }
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests;
