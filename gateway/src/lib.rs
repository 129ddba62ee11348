//! The gateway (axum, :8080): the web page, `POST /v1/predict` (JSON or CSV), `/openapi.json`,
//! `/healthz`, `/readyz` (predictor reachable), `/metrics`. Each prediction goes to the
//! predictor, then its interactions to the logger, then back to the caller.

pub mod access;
pub mod api;
mod body;
pub mod input;
pub mod interactions;
pub mod oip;
pub mod problem;
pub mod schema;
mod traced;
mod upstream;
mod web;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
    serve::ListenerExt,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::OpenApi;

use problem::Problem;
pub use upstream::Hops;

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// The predictor's gRPC URL.
    #[arg(long, env = "PREDICTOR_URL", default_value = "http://127.0.0.1:50051")]
    pub predictor_url: String,
    /// The interaction logger's gRPC URL.
    #[arg(long, env = "LOGGER_URL", default_value = "http://127.0.0.1:50052")]
    pub logger_url: String,
    /// registry-watcher gRPC URL: /v1/model and the page then say whether the live model is
    /// the latest approved one.
    #[arg(long, env = "REGISTRY_WATCHER_URL")]
    pub registry_watcher_url: Option<String>,
    /// Shown on the page and in /v1/model.
    #[arg(
        long,
        env = "SAGEMAKER_ENDPOINT_NAME",
        default_value = names::ENDPOINT_NAME
    )]
    pub endpoint_name: String,
    /// Override of the model's feature names, in order (comma-separated). Unset: the live
    /// model's, from its package (see `schema`).
    #[arg(long, env = "MODEL_FEATURES")]
    pub features: Option<String>,
    /// Most rows in one request.
    #[arg(long, env = "GATEWAY_MAX_ROWS", default_value_t = 1000)]
    pub max_rows: usize,
    /// Largest request body.
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Deadline for a prediction, passed on to the predictor.
    #[arg(long, env = "GATEWAY_TIMEOUT_MS", default_value_t = 3000)]
    pub timeout_ms: u64,
    /// How long a request's body may take to arrive (a slow upload gets 408 instead of
    /// holding an in-flight slot); separate from the prediction's deadline.
    #[arg(long, env = "GATEWAY_BODY_TIMEOUT_MS", default_value_t = 2000)]
    pub body_timeout_ms: u64,
    /// Requests handled at once; beyond it the gateway sheds load with 503.
    #[arg(long, env = "GATEWAY_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// What to do when the logger cannot take an interaction: `buffered` answers anyway and
    /// retries from memory; `strict` answers 503 (no answer goes out unrecorded).
    #[arg(long, env = "GATEWAY_LOG_MODE", value_enum, default_value = "buffered")]
    pub log_mode: interactions::LogMode,
    /// Interactions kept for retry while the logger is unavailable (buffered mode).
    #[arg(long, env = "GATEWAY_LOG_BUFFER", default_value_t = 100_000)]
    pub log_buffer: usize,
    /// `Log` calls in flight at once; the interactions of requests that arrive while all are
    /// busy share the next call. 0: one call per request.
    #[arg(long, env = "GATEWAY_LOG_CONCURRENCY", default_value_t = 2)]
    pub log_concurrency: usize,
    /// Most milliseconds one `Log` call to the interaction logger may take before it counts
    /// as failed (strict mode answers 503, buffered mode keeps the interactions for retry).
    #[arg(long, env = "GATEWAY_LOG_TIMEOUT_MS", default_value_t = 1000)]
    pub log_timeout_ms: u64,
    /// Other web origins allowed to call the API from a browser (comma-separated, e.g.
    /// `https://app.example.com`); none by default.
    #[arg(long, env = "GATEWAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// HTTP/2 connections to each upstream (predictor, logger): one connection serializes its
    /// streams' work, a few spread it over the runtime's workers.
    #[arg(long, env = "GATEWAY_UPSTREAM_CONNECTIONS", default_value_t = 4)]
    pub upstream_connections: usize,
    #[command(flatten)]
    pub access: access::AccessConfig,
    #[command(flatten)]
    pub tls: grpc_tls::Tls,
    #[command(flatten)]
    pub grace: bootstrap::shutdown::Grace,
}

pub struct App {
    pub access: Arc<access::Access>,
    pub config: Config,
    pub schemas: schema::Schemas,
    /// The predictor: over gRPC, or in this process (the one-process shape).
    pub predictor: hops::Predictor,
    pub recorder: interactions::Recorder,
    pub registry: registry_follower::Follower,
    predictor_health: hops::Health,
    pub timeout: Duration,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "MLOps inference gateway",
        description = "Predictions from the live SageMaker model; every one recorded in the feature store."
    ),
    paths(api::predict, api::model),
    components(schemas(
        api::PredictResponse,
        api::ModelInfo,
        api::PredictionOut,
        api::ModelFeatures,
        Problem
    ))
)]
struct ApiDoc;

impl App {
    /// The feature names in use now (they follow deployments).
    pub fn schema(&self) -> schema::Schema {
        self.schemas.current(&self.registry)
    }
}

/// The OpenAPI document, with the live model's feature names as the `Features` object that
/// `{"features": ...}` takes.
async fn openapi(State(app): State<Arc<App>>) -> Response {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let features = app.schema().features;
    let properties: serde_json::Map<String, serde_json::Value> = features
        .iter()
        .map(|f| (f.clone(), serde_json::json!({ "type": ["number", "null"] })))
        .collect();
    doc["components"]["schemas"]["Features"] = serde_json::json!({
        "type": "object",
        "description": "One row by feature name (null or left out: missing). The live model's features, in order.",
        "properties": properties,
        "additionalProperties": false,
        "x-feature-order": features,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    )
        .into_response()
}

impl App {
    /// The gateway of the microservices: its callees over gRPC. Must run inside the Tokio
    /// runtime (it starts following the registry-watcher).
    pub fn new(config: Config, shutdown: &CancellationToken) -> anyhow::Result<Arc<Self>> {
        let hops = Hops::remote(&config)?;
        Self::with(config, hops, shutdown)
    }

    /// The gateway calling `hops` (in process, for the one-process shape).
    pub fn with(
        config: Config,
        hops: Hops,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let Hops {
            predictor,
            predictor_health,
            logger,
        } = hops;
        Ok(Arc::new(App {
            access: Arc::new(access::Access::new(config.access.clone())?),
            schemas: schema::Schemas::new(config.features.as_deref()),
            predictor,
            registry: match &config.registry_watcher_url {
                Some(url) => registry_follower::Follower::start(
                    config.tls.endpoint(url)?,
                    shutdown.child_token(),
                ),
                None => registry_follower::Follower::none(),
            },
            recorder: interactions::Recorder::new(
                logger,
                config.log_mode,
                config.log_buffer,
                Duration::from_millis(config.log_timeout_ms),
                (config.log_concurrency > 0).then_some(config.log_concurrency),
            ),
            predictor_health,
            timeout: Duration::from_millis(config.timeout_ms),
            config,
        }))
    }
}

pub fn router(app: Arc<App>) -> Router {
    let shed = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            Problem::unavailable("the gateway is at capacity; retry shortly", 1)
        }))
        .load_shed()
        .concurrency_limit(app.config.max_in_flight);
    let api = Router::new()
        .route("/v1/predict", post(api::predict))
        .route("/v2/models/{name}/infer", post(oip::infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(oip::version_infer),
        )
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        .layer(middleware::from_fn(body::problem_for_rejections))
        .layer(middleware::from_fn_with_state(
            (
                app.config.max_body_bytes,
                Duration::from_millis(app.config.body_timeout_ms.max(1)),
            ),
            body::read_body,
        ))
        .layer(middleware::from_fn_with_state(
            app.config.max_body_bytes,
            body::refuse_oversized,
        ))
        .route_layer(shed)
        // Outermost: a caller without a valid key, or over its limit, is answered before its
        // body is read.
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app.access),
            access::guard,
        ));
    let health = if app.access.keys_required() {
        "ok (API keys required)"
    } else {
        "ok (open: no API keys configured)"
    };
    let cors = web::cors(&app.config.cors_origins);
    let trusted = Arc::<[ipnet::IpNet]>::from(app.config.access.trusted_proxies.clone());
    Router::new()
        .route("/", get(web::page))
        .route("/static/app.js", get(web::script))
        .route("/static/app.css", get(web::style))
        .route("/v1/model", get(api::model))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(move || async move { health }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { telemetry::render() }))
        .route("/v2", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/v2/models/{name}", get(oip::model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(oip::version_metadata),
        )
        .route("/v2/models/{name}/ready", get(oip::model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(oip::version_ready),
        )
        .merge(api)
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(app)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(middleware::from_fn(traced::request))
                .layer(TraceLayer::new_for_http().make_span_with(traced::tower_span))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn_with_state(
                    trusted,
                    web::security_headers,
                ))
                .layer(middleware::from_fn(oip::oip_errors))
                .option_layer(cors),
        )
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match predictor_ready(&app).await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(p) => p.into_response(),
    }
}

/// Whether the predictor serves (its gRPC health): what `/readyz` and the OIP readiness say.
pub(crate) async fn predictor_ready(app: &App) -> Result<(), Problem> {
    match app
        .predictor_health
        .serving(Duration::from_millis(500))
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the predictor is not serving",
        )),
        Err(s) => {
            tracing::warn!(code = ?s.code(), message = s.message(), "readiness: the predictor is unreachable");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the predictor is unreachable",
            ))
        }
    }
}

/// Serves HTTP on `listener` (and the Open Inference Protocol's gRPC API on `grpc`, with
/// health and reflection) until `shutdown`; then drains requests and the interaction buffer.
pub async fn run(
    listener: TcpListener,
    grpc: Option<TcpListener>,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let retry_stop = CancellationToken::new();
    let keys = tokio::spawn(Arc::clone(&app.access).maintain(retry_stop.clone()));
    let retry = tokio::spawn({
        let app = Arc::clone(&app);
        let stop = retry_stop.clone();
        async move { app.recorder.retry_buffered(stop).await }
    });
    tracing::info!(addr = %listener.local_addr()?, predictor = %app.config.predictor_url, logger = %app.config.logger_url, "gateway serving");
    let grace = app.config.grace.duration();
    let grpc = grpc.map(|grpc| tokio::spawn(serve_grpc(grpc, Arc::clone(&app), shutdown.clone())));
    let stop = shutdown.clone();
    let server = axum::serve(
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        router(Arc::clone(&app)).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await });
    tokio::select! {
        result = server => result?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => tracing::warn!("requests still in flight after the grace period"),
    }
    if let Some(grpc) = grpc {
        grpc.await??;
    }
    retry_stop.cancel();
    let _ = tokio::time::timeout(grace, retry).await;
    let _ = keys.await;
    tracing::info!(buffered = app.recorder.buffered(), "gateway stopped");
    Ok(())
}

/// The Open Inference Protocol's gRPC API, with health (serving from the start: its readiness
/// per model is `ModelReady`) and reflection, until `shutdown` and the grace period.
async fn serve_grpc(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use proto::inference::grpc_inference_service_server::GrpcInferenceServiceServer;
    type Server = GrpcInferenceServiceServer<oip::grpc::Oip>;
    let health =
        bootstrap::grpc::Health::new::<Server>(bootstrap::Readiness::default(), true).await;
    let grace = app.config.grace.duration();
    let service = GrpcInferenceServiceServer::new(oip::grpc::Oip { app });
    bootstrap::grpc::serve(
        listener,
        service,
        &grpc_tls::Tls::default(),
        &[],
        health,
        shutdown,
        Some(grace),
    )
    .await?;
    Ok(())
}
