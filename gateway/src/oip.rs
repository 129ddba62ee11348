//! The Open Inference Protocol ("v2") over REST, as `kserve/open-inference-protocol`
//! (its REST document) gives it, so a Triton or KServe client calls the front door unchanged:
//! health, server and model metadata, readiness, and `infer` in JSON or with the binary
//! tensor extension `tritonclient.http` uses by default. The model's name is the endpoint
//! name; its versions are the package versions live on it. `infer` goes through exactly what
//! `/v1/predict` does (keys, limits, body rules, the predictor, every row recorded as an
//! interaction of source `oip-rest`, the same metrics); errors are the protocol's
//! `{"error": "..."}` with the status `/v1` would give ([`oip_errors`]).

// The error is the response itself (as in `input`): built once per bad request.
#![allow(clippy::result_large_err)]

pub mod grpc;
mod tensor;

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use proto::interaction::v1::Source;
use serde_json::{Value, json};

use crate::{
    App,
    access::Caller,
    api::{self, Target},
    interactions::Origin,
    problem::Problem,
};

/// The server's name in its metadata.
pub const SERVER_NAME: &str = "mlops-gateway";
/// The model's platform in its metadata.
pub const PLATFORM: &str = "xgboost";
/// The protocol's extensions this server implements (`GET /v2`).
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];
/// The one input tensor: rows of the live model's features, in its order.
pub const INPUT: &str = "features";
/// The one output tensor: the first score of each row.
pub const OUTPUT: &str = "probability";
/// The header that gives the JSON part's length of a binary-extension body.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// `GET /v2/health/live`.
pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

/// `GET /v2/health/ready`: ready when the predictor serves (what `/readyz` says).
pub async fn ready(State(app): State<Arc<App>>) -> Response {
    match crate::predictor_ready(&app).await {
        Ok(()) => Json(json!({ "ready": true })).into_response(),
        Err(p) => p.into_response(),
    }
}

/// `GET /v2`.
pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

/// The package versions live on the endpoint now, by variant (empty when the gateway follows
/// no registry-watcher, or it has not answered yet).
fn live_versions(app: &App) -> Vec<(String, i64)> {
    app.registry
        .latest()
        .and_then(|s| s.endpoint)
        .map(|e| {
            e.variants
                .into_iter()
                .filter(|v| v.model_package_version > 0)
                .map(|v| (v.name, v.model_package_version))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `name` (and `version`) is a model this server serves; the variant to target when
/// a version is named.
fn resolve(app: &App, name: &str, version: Option<&str>) -> Result<Target, Problem> {
    if name != app.config.endpoint_name {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "unknown model {name:?}: this server serves {:?}",
                app.config.endpoint_name
            ),
        ));
    }
    let Some(version) = version else {
        return Ok(Target::Live);
    };
    let live = live_versions(app);
    let wanted: Option<i64> = version.trim_start_matches('v').parse().ok();
    match live.iter().find(|(_, v)| Some(*v) == wanted) {
        Some((variant, _)) => Ok(Target::Variant(variant.clone())),
        None if live.is_empty() => Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "version {version:?} of {name:?} is not known to be live: the registry-watcher has not said what the endpoint serves"
            ),
        )),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "version {version:?} of {name:?} is not live; live: {}",
                live.iter()
                    .map(|(_, v)| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// What a model's metadata says beyond its fixed tensors: its live versions and its width.
struct Model {
    versions: Vec<String>,
    width: usize,
}

fn model(app: &App, name: &str, version: Option<&str>) -> Result<Model, Problem> {
    resolve(app, name, version)?;
    let mut versions: Vec<String> = live_versions(app)
        .into_iter()
        .map(|(_, v)| v.to_string())
        .collect();
    versions.sort();
    versions.dedup();
    Ok(Model {
        versions,
        width: app.schema().features.len(),
    })
}

fn metadata(app: &App, name: &str, version: Option<&str>) -> Result<Json<Value>, Problem> {
    let m = model(app, name, version)?;
    Ok(Json(json!({
        "name": name,
        "versions": m.versions,
        "platform": PLATFORM,
        "inputs": [{ "name": INPUT, "datatype": "FP32", "shape": [-1, m.width] }],
        "outputs": [{ "name": OUTPUT, "datatype": "FP32", "shape": [-1] }],
    })))
}

/// `GET /v2/models/{name}`.
pub async fn model_metadata(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Problem> {
    metadata(&app, &name, None)
}

/// `GET /v2/models/{name}/versions/{version}`.
pub async fn version_metadata(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, Problem> {
    metadata(&app, &name, Some(&version))
}

async fn model_ready_inner(app: &App, name: &str, version: Option<&str>) -> Response {
    if let Err(p) = resolve(app, name, version) {
        return p.into_response();
    }
    match crate::predictor_ready(app).await {
        Ok(()) => Json(json!({ "name": name, "ready": true })).into_response(),
        Err(p) => p.into_response(),
    }
}

/// `GET /v2/models/{name}/ready`.
pub async fn model_ready(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    model_ready_inner(&app, &name, None).await
}

/// `GET /v2/models/{name}/versions/{version}/ready`.
pub async fn version_ready(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    model_ready_inner(&app, &name, Some(&version)).await
}

/// `POST /v2/models/{name}/infer`.
pub async fn infer(
    State(app): State<Arc<App>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer_inner(&app, &caller, &name, None, &headers, &body).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`: answered by the variant serving it.
pub async fn version_infer(
    State(app): State<Arc<App>>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    infer_inner(&app, &caller, &name, Some(&version), &headers, &body).await
}

async fn infer_inner(
    app: &App,
    caller: &Caller,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let started = Instant::now();
    let request_id = api::request_id(headers);
    let result = async {
        let target = resolve(app, name, version)?;
        let request = api::validating().in_scope(|| {
            tensor::InferRequest::parse(
                headers,
                body,
                app.schema().features.len(),
                app.config.max_rows,
            )
        })?;
        let origin = Origin::of(caller, headers, Source::OipRest);
        let rows = request.rows;
        let scored = api::score(app, &request_id, rows, &origin, target, started).await?;
        Ok::<_, Problem>(tensor::response(
            name,
            request.id.unwrap_or_else(|| request_id.clone()),
            scored,
            request.binary_output,
        ))
    }
    .await;
    api::observe(started, &result);
    match result {
        Ok(r) => r,
        Err(p) => p.with_request_id(&request_id).into_response(),
    }
}

/// Every error under `/v2` as the protocol has it: `{"error": "..."}` with the status and
/// headers (`Retry-After`, `WWW-Authenticate`, the rate-limit headers) the one error table
/// gave, whichever layer answered (keys, limits, body rules, the handler).
pub async fn oip_errors(request: Request, next: Next) -> Response {
    let is_oip = request.uri().path().starts_with("/v2");
    let response = next.run(request).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_oip || !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let detail = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|p| p["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            parts
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_owned()
        });
    let body = json!({ "error": detail }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}
