//! The `mlops.predictor.v1.Predictor` service.

use std::time::Duration;

use proto::predictor::v1::{
    ModelRef, PredictRequest, PredictResponse, Prediction, predictor_server::Predictor,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::{
    batch::{self, Invocations},
    error::Error,
    invoke::Attempts,
    rollout, rows,
};

pub struct PredictorService {
    /// The endpoint's name, as answers report it.
    pub endpoint: String,
    pub invocations: Invocations,
    /// Which package each variant serves, from the registry-watcher.
    pub registry: registry_follower::Follower,
    /// Mirrors live requests to a shadowed candidate (`None`: off).
    pub mirror: Option<std::sync::Arc<crate::shadow::Mirror>>,
    /// Where rollout outcomes go.
    pub rollout: crate::rollout::Reporter,
    pub max_rows: usize,
    /// `MODEL_NUM_FEATURES`: an explicit override of the live model's width.
    pub features: Option<usize>,
    pub default_timeout: Duration,
    /// The current mismatch between the override and the live schema was logged.
    pub mismatch_reported: std::sync::atomic::AtomicBool,
}

impl PredictorService {
    /// The row width to insist on: the live model's (from its package's schema, as the
    /// watcher reports it), or `MODEL_NUM_FEATURES` when set — an explicit override, whose
    /// disagreement with the live model is reported (metric, log), not hidden.
    fn width(&self) -> Option<usize> {
        let live = self.registry.live_width();
        let mismatch = matches!((self.features, live), (Some(o), Some(l)) if o != l);
        // Said once per change, not per request.
        if self
            .mismatch_reported
            .swap(mismatch, std::sync::atomic::Ordering::Relaxed)
            != mismatch
        {
            metrics::gauge!("predictor_schema_mismatch").set(if mismatch { 1.0 } else { 0.0 });
            if mismatch {
                tracing::warn!(
                    override_width = self.features,
                    live_width = live,
                    "MODEL_NUM_FEATURES disagrees with the live model's schema; using the override"
                );
            }
        }
        self.features.or(live)
    }
}

struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!("predictor_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("predictor_in_flight").decrement(1.0);
    }
}

impl PredictorService {
    async fn predict_inner(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<PredictResponse, Error> {
        let timeout = hops::deadline(request.metadata())
            .unwrap_or(self.default_timeout)
            .min(self.default_timeout.max(Duration::from_secs(60)));
        let deadline = Instant::now() + timeout;
        let header_id = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = request.into_inner();
        let request_id = match (req.request_id.is_empty(), header_id) {
            (false, _) => req.request_id,
            (true, Some(id)) => id,
            (true, None) => uuid::Uuid::now_v7().to_string(),
        };
        if request_id.len() > 64 {
            return Err(Error::invalid(
                "request_id",
                "must be at most 64 characters (it is the SageMaker inference id)",
            ));
        }
        tracing::Span::current().record("request_id", request_id.as_str());
        let lines = rows::encode(&req.rows, self.max_rows, self.width())?;
        if !(req.interaction_ids.is_empty() || req.interaction_ids.len() == lines.len())
            || req
                .interaction_ids
                .iter()
                .any(|id| id.is_empty() || id.len() > 128)
        {
            return Err(Error::invalid(
                "interaction_ids",
                "none, or one per row, each 1 to 128 characters",
            ));
        }
        let target = (!req.target_variant.is_empty()).then_some(req.target_variant);
        let started = Instant::now();
        let rows = batch::Rows {
            csv: lines.join("\n"),
            rows: lines.len(),
            request_id: request_id.clone(),
            deadline,
            target_variant: target,
            attempts: Attempts::Live,
            span: telemetry::traces::current(),
        };
        // A caller that names a variant gets it; the others are routed while a rollout runs.
        let route = match rows.target_variant {
            Some(_) => None,
            None => self
                .registry
                .with(|s| s.and_then(|s| rollout::route(s, rand::random::<f64>()))),
        };
        let result = match route {
            Some(route) => rollout::score(&self.invocations, &self.rollout, route, rows).await,
            None => self.invocations.score(rows).await,
        };
        // Mirrored: what the live model answered, or a failure of the live endpoint; not a
        // request the model refused as bad input (the candidate would never see it).
        let mirrored = !matches!(result, Err(Error::ModelRejected(_) | Error::Invalid { .. }));
        if let Some(mirror) = self.mirror.as_ref().filter(|_| mirrored) {
            let live_latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            mirror.offer(|| crate::shadow::Job {
                lines: lines.clone(),
                interaction_ids: req.interaction_ids,
                live_version: result.as_ref().map_or(0, |a| {
                    self.registry.package_of(&a.variant).map_or(0, |(_, v)| v)
                }),
                request_id: request_id.clone(),
                live: result
                    .as_ref()
                    .map_or_else(|_| Vec::new(), |a| a.first_scores()),
                live_latency_ms,
                live_failed: result.is_err(),
                span: telemetry::traces::current(),
            });
        }
        let answer = result?;
        if answer.inference_id != request_id {
            tracing::Span::current().record("batch_id", answer.inference_id.as_str());
        }
        let scores = answer.scores;
        let (model_package_arn, model_package_version) = self
            .registry
            .package_of(&answer.variant)
            .unwrap_or_default();
        metrics::counter!("predictor_rows_total").increment(lines.len() as u64);
        Ok(PredictResponse {
            request_id,
            predictions: scores
                .into_iter()
                .zip(lines)
                .map(|(scores, features_csv)| Prediction {
                    scores,
                    features_csv,
                })
                .collect(),
            model: Some(ModelRef {
                endpoint_name: self.endpoint.clone(),
                variant_name: answer.variant,
                model_package_arn,
                model_package_version,
            }),
        })
    }
}

#[tonic::async_trait]
impl Predictor for PredictorService {
    #[tracing::instrument(name = "predict", skip_all, fields(request_id, batch_id))]
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let _in_flight = InFlight::start();
        let result = self.predict_inner(request).await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code(),
        };
        metrics::counter!("predictor_requests_total", "code" => format!("{code:?}")).increment(1);
        if let Err(e) = &result {
            tracing::info!(error = %e, ?code, "predict failed");
        }
        result.map(Response::new).map_err(Status::from)
    }
}
