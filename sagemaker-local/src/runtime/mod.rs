//! The SageMaker runtime: `POST /endpoints/{name}/invocations` runs the endpoint's XGBoost
//! model in process, routing between production variants by weight (or the requested one).

pub mod artifact;
pub mod payload;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock, Weak},
    time::Instant,
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use rand::Rng;
use xgboost_json::Model;

use crate::{
    AppState,
    control::{ModelRecord, model_data_url},
    db::MODELS,
    error::AwsError,
};
use payload::{Accept, ContainerError};

/// One production variant as it serves.
pub struct LiveVariant {
    pub name: String,
    pub weight: f32,
    pub model: Arc<Model>,
}

pub struct LiveEndpoint {
    pub variants: Vec<LiveVariant>,
}

/// What each endpoint serves right now, and a cache so one artifact loads once.
#[derive(Default)]
pub struct Serving {
    endpoints: RwLock<HashMap<String, Arc<LiveEndpoint>>>,
    models: Mutex<HashMap<PathBuf, Weak<Model>>>,
}

impl Serving {
    /// Loads every variant of `config`; any failure names the variant and the cause.
    pub fn load(
        &self,
        state: &AppState,
        config: &crate::control::models::EndpointConfigRecord,
    ) -> Result<Arc<LiveEndpoint>, String> {
        let mut variants = Vec::with_capacity(config.variants.len());
        for v in &config.variants {
            let model = state
                .db
                .get::<ModelRecord>(MODELS, &v.model_name)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "variant {}: model {} does not exist",
                        v.variant_name, v.model_name
                    )
                })?;
            let (url, _) = model_data_url(state, &model)
                .map_err(|e| format!("variant {}: {e}", v.variant_name))?;
            let path =
                artifact::resolve(&state.settings.data_dir, &state.settings.file_roots, &url)
                    .map_err(|e| format!("variant {}: {e}", v.variant_name))?;
            let loaded = self
                .model(&path, state.settings.artifact_caps)
                .map_err(|e| format!("variant {}: {e}", v.variant_name))?;
            variants.push(LiveVariant {
                name: v.variant_name.clone(),
                weight: v.initial_variant_weight,
                model: loaded,
            });
        }
        Ok(Arc::new(LiveEndpoint { variants }))
    }

    fn model(&self, path: &std::path::Path, caps: artifact::Caps) -> Result<Arc<Model>, String> {
        let mut cache = self.models.lock().expect("model cache lock");
        if let Some(model) = cache.get(path).and_then(Weak::upgrade) {
            return Ok(model);
        }
        let json = artifact::read_model_json(path, caps)?;
        let model =
            Arc::new(Model::from_json(&json).map_err(|e| format!("{}: {e}", path.display()))?);
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(path.to_owned(), Arc::downgrade(&model));
        Ok(model)
    }

    pub fn install(&self, endpoint: &str, live: Arc<LiveEndpoint>) {
        self.endpoints
            .write()
            .expect("serving lock")
            .insert(endpoint.to_owned(), live);
    }

    pub fn remove(&self, endpoint: &str) {
        self.endpoints
            .write()
            .expect("serving lock")
            .remove(endpoint);
    }

    pub fn get(&self, endpoint: &str) -> Option<Arc<LiveEndpoint>> {
        self.endpoints
            .read()
            .expect("serving lock")
            .get(endpoint)
            .cloned()
    }
}

impl LiveEndpoint {
    /// The same models, each variant's weight as `weight_of` says (its own where it says none).
    pub fn reweighted(&self, weight_of: impl Fn(&str) -> Option<f32>) -> LiveEndpoint {
        LiveEndpoint {
            variants: self
                .variants
                .iter()
                .map(|v| LiveVariant {
                    name: v.name.clone(),
                    weight: weight_of(&v.name).unwrap_or(v.weight),
                    model: Arc::clone(&v.model),
                })
                .collect(),
        }
    }

    /// The requested variant, or one drawn by weight.
    fn pick(&self, target: Option<&str>) -> Option<&LiveVariant> {
        if let Some(name) = target {
            return self.variants.iter().find(|v| v.name == name);
        }
        let total: f32 = self.variants.iter().map(|v| v.weight).sum();
        if self.variants.len() == 1 || total <= 0.0 {
            return self.variants.first();
        }
        let mut draw = rand::rng().random_range(0.0..total);
        for v in &self.variants {
            if draw < v.weight {
                return Some(v);
            }
            draw -= v.weight;
        }
        self.variants.last()
    }
}

pub async fn invoke(
    State(state): State<Arc<AppState>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AwsError> {
    let started = Instant::now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(id) = header("x-amzn-sagemaker-inference-id")
        && !(1..=64).contains(&id.len())
    {
        return Err(AwsError::validation_error(
            "Inference-Id must be 1 to 64 characters long.",
        ));
    }
    let live = state.serving.get(&endpoint).ok_or_else(|| {
        AwsError::validation_error(format!(
            "Endpoint {endpoint} of account {} not found.",
            state.settings.account_id
        ))
    })?;
    let target = header("x-amzn-sagemaker-target-variant");
    let variant = live.pick(target).ok_or_else(|| {
        AwsError::validation_error(format!(
            "The variant(s) \"[{}]\" are not found for endpoint {endpoint}.",
            target.unwrap_or_default()
        ))
    })?;

    let fault = state.settings.fault(&endpoint, &variant.name);
    if let Some(delay) = fault.and_then(|f| f.delay) {
        tokio::time::sleep(delay).await;
    }
    let result = if fault.is_some_and(|f| f.fails_now()) {
        Err(ContainerError {
            status: 500,
            message: "injected fault (SAGEMAKER_LOCAL_ENDPOINT_FAULTS)".into(),
        })
    } else {
        predict(variant, header("content-type"), header("accept"), &body)
    };
    let outcome = if result.is_ok() { "ok" } else { "model_error" };
    metrics::counter!("sagemaker_local_invocations_total", "endpoint" => endpoint.clone(), "variant" => variant.name.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!("sagemaker_local_invocation_seconds", "endpoint" => endpoint.clone())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok((accept, text)) => {
            let mut response = (StatusCode::OK, text).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(accept.content_type()),
            );
            if let Ok(v) = HeaderValue::from_str(&variant.name) {
                h.insert("x-Amzn-Invoked-Production-Variant", v);
            }
            Ok(response)
        }
        Err(e) => Err(model_error(&state, &endpoint, &variant.name, e)),
    }
}

fn predict(
    variant: &LiveVariant,
    content_type: Option<&str>,
    accept: Option<&str>,
    body: &[u8],
) -> Result<(Accept, String), ContainerError> {
    let kind = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if kind != "text/csv" {
        return Err(ContainerError {
            status: 415,
            message: format!(
                "Content type {kind} is not supported by this framework. Please provide input data as text/csv."
            ),
        });
    }
    let accept = Accept::parse(accept)?;
    let model = &variant.model;
    let (rows, _) = payload::parse_csv(body, model.num_features())?;
    let predictions = model.predict(&rows);
    Ok((
        accept,
        payload::render(accept, &predictions, model.num_outputs()),
    ))
}

/// What SageMaker returns when the container answers 4xx/5xx: 424 ModelError.
fn model_error(state: &AppState, endpoint: &str, variant: &str, e: ContainerError) -> AwsError {
    let s = &state.settings;
    let kind = if e.status >= 500 { "server" } else { "client" };
    AwsError::new(
        StatusCode::FAILED_DEPENDENCY,
        "ModelError",
        format!(
            "Received {kind} error ({}) from primary with message \"{}\". See https://{r}.console.aws.amazon.com/cloudwatch/home?region={r}#logEventViewer:group=/aws/sagemaker/Endpoints/{endpoint} in account {a} for more information.",
            e.status, e.message, r = s.region, a = s.account_id
        ),
    )
    .with("OriginalStatusCode", e.status)
    .with("OriginalMessage", e.message)
    .with(
        "LogStreamArn",
        format!("arn:aws:logs:{}:{}:log-group:/aws/sagemaker/Endpoints/{endpoint}:log-stream:{variant}/local", s.region, s.account_id),
    )
}
