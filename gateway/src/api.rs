//! `POST /v1/predict` and `GET /v1/model`: the predictor, then the logger, then the answer.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use proto::{
    interaction::v1::Source,
    predictor::v1::{PredictRequest, PredictResponse as PredictResponse_, Row},
};
use serde::Serialize;
use tracing::Instrument;

use crate::{
    App,
    access::Caller,
    input,
    interactions::{self, Origin},
    problem::Problem,
};

#[derive(Serialize, utoipa::ToSchema)]
pub struct PredictResponse {
    pub request_id: String,
    /// The model that answered.
    pub model: ModelInfo,
    /// One per input row, in order.
    pub predictions: Vec<PredictionOut>,
    /// Gateway-observed latency of the prediction, in milliseconds.
    pub latency_ms: f64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub endpoint_name: String,
    pub variant_name: String,
    /// The model package serving that variant, when the registry-watcher knows it.
    pub model_package_arn: Option<String>,
    pub model_package_version: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PredictionOut {
    /// The record identifier of this prediction in the user-interactions feature group.
    pub interaction_id: String,
    /// The first score: the probability of the positive class for binary models.
    pub probability: f64,
    /// Every score (one per class for multi-class models).
    pub scores: Vec<f64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelFeatures {
    pub endpoint_name: String,
    /// The model's features, in order.
    pub features: Vec<String>,
    /// Where they come from: `registry` (the live model's package), `override`
    /// (MODEL_FEATURES) or `default` (neither: the demo model's).
    pub features_source: crate::schema::Source,
    /// The live model's features, when MODEL_FEATURES overrides them with others.
    pub live_features_mismatch: Option<Vec<String>>,
    /// What the registry-watcher last saw; absent until it answers (or when none is configured).
    pub registry: Option<RegistryView>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RegistryView {
    /// Every variant with traffic serves the latest Approved package.
    pub in_sync: bool,
    pub latest_approved_version: Option<i64>,
    pub latest_approved_arn: Option<String>,
    pub endpoint_status: String,
    pub live: Vec<LiveVariant>,
    /// Whether the watcher's last poll failed (what it failed with is in its log and metrics:
    /// a public page does not show AWS's error text).
    pub last_poll_failed: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LiveVariant {
    pub variant_name: String,
    pub weight: f64,
    pub model_package_version: Option<i64>,
}

pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// Score rows with the live model.
#[utoipa::path(
    post,
    path = "/v1/predict",
    request_body(
        description = r#"`{"features": {name: value}}` (one row), `{"instances": [[...], ...]}` (rows in feature order), or `text/csv` (one row per line). null or an empty CSV field is a missing value."#,
        content((serde_json::Value = "application/json"), (String = "text/csv")),
    ),
    responses(
        (status = 200, description = "Scores, the model that answered, and one interaction id per row", body = PredictResponse),
        (status = 400, description = "Bad input; `field` names it", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "API keys are configured and the request has no valid one (Authorization: Bearer <key> or X-Api-Key)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The model rejected the input", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the caller's rate limit (see Retry-After, RateLimit, RateLimit-Policy), or the endpoint throttled", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Predictor or endpoint unavailable, or load shed", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "Deadline exceeded", body = Problem, content_type = "application/problem+json"),
    ),
)]
#[tracing::instrument(name = "predict", skip_all, fields(request_id))]
pub async fn predict(
    State(app): State<Arc<App>>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let id = request_id(&headers);
    tracing::Span::current().record("request_id", id.as_str());
    let result = predict_inner(&app, &caller, &headers, &id, &body, started).await;
    observe(started, &result);
    match result {
        Ok(r) => Json(r).into_response(),
        Err(p) => p.with_request_id(&id).into_response(),
    }
}

async fn predict_inner(
    app: &App,
    caller: &Caller,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
    started: Instant,
) -> Result<PredictResponse, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let rows = validating().in_scope(|| {
        input::parse(
            content_type,
            body,
            &app.schema().features,
            app.config.max_rows,
        )
    })?;
    let origin = Origin::of(caller, headers, Source::Api);
    let scored = score(app, id, rows, &origin, Target::Live, started).await?;
    Ok(PredictResponse::new(id, scored))
}

/// The span of a request's validation (when traces are on).
pub(crate) fn validating() -> tracing::Span {
    telemetry::traces::child(|| tracing::info_span!("validate"))
}

/// Which variant a request is for.
pub(crate) enum Target {
    /// Whichever the endpoint's weights pick (and a rollout's routing).
    Live,
    /// This variant only (a request for one live version).
    Variant(String),
}

/// What scoring a request's rows gave: the predictor's answer and the ids its rows are
/// recorded under.
pub(crate) struct Scored {
    pub answer: PredictResponse_,
    pub interaction_ids: Vec<String>,
    pub latency_ms: f64,
}

/// Every front-door API's one path after its own parsing: the rows scored by the predictor,
/// every row recorded as an interaction of `origin`, and only then the answer (stored, then
/// returned).
pub(crate) async fn score(
    app: &App,
    id: &str,
    rows: Vec<Vec<f64>>,
    origin: &Origin,
    target: Target,
    started: Instant,
) -> Result<Scored, Problem> {
    // The ids the rows are recorded under, fixed before predicting: the predictor names them
    // in a shadowed candidate's records of the same rows.
    let interaction_ids: Vec<String> = (0..rows.len())
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let answer = predict_rows(app, id, rows, interaction_ids.clone(), target).await?;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let interactions =
        interactions::of_answer(&answer, interaction_ids.clone(), origin, latency_ms);
    app.recorder.record(interactions, id).await?;
    Ok(Scored {
        answer,
        interaction_ids,
        latency_ms,
    })
}

/// The predictor's answer for `rows`, within the gateway's deadline.
async fn predict_rows(
    app: &App,
    id: &str,
    rows: Vec<Vec<f64>>,
    interaction_ids: Vec<String>,
    target: Target,
) -> Result<PredictResponse_, Problem> {
    let mut request = tonic::Request::new(PredictRequest {
        request_id: id.to_owned(),
        rows: rows.into_iter().map(|values| Row { values }).collect(),
        target_variant: match target {
            Target::Live => String::new(),
            Target::Variant(v) => v,
        },
        interaction_ids,
    });
    request.set_timeout(app.timeout);
    if let Ok(v) = id.parse() {
        request.metadata_mut().insert("x-request-id", v);
    }
    let span = telemetry::traces::child(|| {
        tracing::info_span!(
            "Predict",
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = "mlops.predictor.v1.Predictor",
            rpc.method = "Predict"
        )
    });
    telemetry::traces::inject_metadata(&span, request.metadata_mut());
    let asked = Instant::now();
    let answer = app.predictor.predict(request).instrument(span).await;
    metrics::histogram!("gateway_upstream_seconds", "call" => "predict")
        .record(asked.elapsed().as_secs_f64());
    Ok(answer.map_err(|s| Problem::from_status(&s))?.into_inner())
}

/// Counts and times a front-door prediction (`gateway_predict_requests_total{status}`,
/// `gateway_predict_seconds`), whichever API it came through.
pub(crate) fn observe<T>(started: Instant, result: &Result<T, Problem>) {
    let status = match result {
        Ok(_) => 200,
        Err(p) => p.status,
    };
    metrics::counter!("gateway_predict_requests_total", "status" => status.to_string())
        .increment(1);
    metrics::histogram!("gateway_predict_seconds").record(started.elapsed().as_secs_f64());
}

impl PredictResponse {
    fn new(id: &str, scored: Scored) -> Self {
        let Scored {
            answer,
            interaction_ids: ids,
            latency_ms,
        } = scored;
        let model = answer.model.unwrap_or_default();
        PredictResponse {
            request_id: id.to_owned(),
            model: ModelInfo {
                endpoint_name: model.endpoint_name,
                variant_name: model.variant_name,
                model_package_arn: (!model.model_package_arn.is_empty())
                    .then_some(model.model_package_arn),
                model_package_version: (model.model_package_version > 0)
                    .then_some(model.model_package_version),
            },
            predictions: answer
                .predictions
                .into_iter()
                .zip(ids)
                .map(|(p, interaction_id)| PredictionOut {
                    interaction_id,
                    probability: p.scores.first().copied().unwrap_or(f64::NAN),
                    scores: p.scores,
                })
                .collect(),
            latency_ms,
        }
    }
}

/// The model's features, in order (the page builds its form from them).
#[utoipa::path(get, path = "/v1/model", responses((status = 200, body = ModelFeatures)))]
pub async fn model(State(app): State<Arc<App>>) -> Json<ModelFeatures> {
    let registry = app.registry.latest().map(|s| {
        let endpoint = s.endpoint.unwrap_or_default();
        RegistryView {
            in_sync: s.in_sync,
            latest_approved_version: s.latest_approved.as_ref().map(|p| p.version),
            latest_approved_arn: s.latest_approved.map(|p| p.arn),
            endpoint_status: endpoint.status,
            live: endpoint
                .variants
                .into_iter()
                .map(|v| LiveVariant {
                    variant_name: v.name,
                    weight: v.current_weight,
                    model_package_version: (v.model_package_version > 0)
                        .then_some(v.model_package_version),
                })
                .collect(),
            last_poll_failed: !s.last_error.is_empty(),
        }
    });
    let schema = app.schema();
    Json(ModelFeatures {
        endpoint_name: app.config.endpoint_name.clone(),
        features: schema.features,
        features_source: schema.source,
        live_features_mismatch: schema.mismatch,
        registry,
    })
}
