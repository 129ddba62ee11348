//! The predictor: `mlops.predictor.v1.Predictor/Predict` validates rows, invokes the SageMaker
//! endpoint (aws-sdk-sagemakerruntime, `text/csv`, the request id as the inference id) within
//! the caller's deadline, and returns one score vector per row with the model that answered.

pub mod batch;
pub mod breaker;
pub mod error;
pub mod invoke;
pub mod report;
pub mod rollout;
pub mod rows;
pub mod service;
pub mod shadow;

use std::{sync::Arc, time::Duration};

use proto::predictor::v1::predictor_server::PredictorServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Configuration, from flags or the environment names of the design documents.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// The SageMaker real-time endpoint to invoke.
    #[arg(
        long,
        env = "SAGEMAKER_ENDPOINT_NAME",
        default_value = names::ENDPOINT_NAME
    )]
    pub endpoint_name: String,
    /// Features per row the model takes; rows of another width are refused up front.
    #[arg(long, env = "MODEL_NUM_FEATURES")]
    pub num_features: Option<usize>,
    /// Most rows in one Predict call.
    #[arg(long, env = "PREDICTOR_MAX_ROWS", default_value_t = 1000)]
    pub max_rows: usize,
    /// Deadline for calls that bring none (and the cap for those that do, up to 60 s).
    #[arg(long, env = "PREDICTOR_TIMEOUT_MS", default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Consecutive failures that open the circuit to the endpoint.
    #[arg(long, env = "PREDICTOR_BREAKER_THRESHOLD", default_value_t = 5)]
    pub breaker_threshold: u32,
    /// How long an open circuit fails fast before it lets a probe through.
    #[arg(long, env = "PREDICTOR_BREAKER_COOLDOWN_MS", default_value_t = 2000)]
    pub breaker_cooldown_ms: u64,
    /// Rows of Predict calls that arrive while every invocation lane is busy share the next
    /// InvokeEndpoint call (a lone call is never delayed). `false`: one invocation per call.
    #[arg(long, env = "PREDICTOR_BATCHING", default_value_t = true, action = clap::ArgAction::Set)]
    pub batching: bool,
    /// With batching: InvokeEndpoint calls in flight at once.
    #[arg(long, env = "PREDICTOR_INVOKE_CONCURRENCY", default_value_t = 4)]
    pub invoke_concurrency: usize,
    /// With batching: most rows in one InvokeEndpoint call (the payload also stays under
    /// SageMaker's 6 MB).
    #[arg(long, env = "PREDICTOR_BATCH_MAX_ROWS", default_value_t = 1000)]
    pub batch_max_rows: usize,
    /// registry-watcher gRPC URL; when set, answers carry the model package version.
    #[arg(long, env = "REGISTRY_WATCHER_URL")]
    pub registry_watcher_url: Option<String>,
    #[command(flatten)]
    pub shadow: shadow::Config,
    #[command(flatten)]
    pub tls: grpc_tls::Tls,
    #[command(flatten)]
    pub grace: bootstrap::shutdown::Grace,
    #[command(flatten)]
    pub aws: bootstrap::aws::AwsClient,
}

/// With mutual TLS, who may call `Predict`: the gateway, the front door every prediction
/// comes through (and is recorded by). `GRPC_TLS_ALLOW` replaces it.
pub const CALLERS: &[(&str, &[&str])] = &[("Predict", &["gateway"])];

/// The predictor's service from `config`, with what works beside it started (the registry
/// follower, the rollout reporter, the shadow mirror), each until `shutdown`. A shadowed
/// candidate's answers are recorded through `shadow_logger` (the logger at `LOGGER_URL` over
/// gRPC, or in process). Must run inside the Tokio runtime.
pub async fn service(
    config: &Config,
    shadow_logger: Option<hops::Logger>,
    shutdown: &CancellationToken,
) -> anyhow::Result<service::PredictorService> {
    let aws = config.aws.load().await?;
    let client = aws_sdk_sagemakerruntime::Client::new(&aws);
    let breaker = breaker::Breaker::new(
        config.breaker_threshold,
        Duration::from_millis(config.breaker_cooldown_ms),
    );
    let invoker = Arc::new(invoke::Invoker::new(
        client.clone(),
        config.endpoint_name.clone(),
        breaker,
    ));
    let watcher = match config.registry_watcher_url.as_deref() {
        Some(url) => Some(config.tls.endpoint(url)?),
        None => None,
    };
    let registry = match watcher.clone() {
        Some(endpoint) => registry_follower::Follower::start(endpoint, shutdown.child_token()),
        None => registry_follower::Follower::none(),
    };
    if config.shadow.shadow_fraction > 0.0 && watcher.is_none() {
        tracing::warn!(
            "PREDICTOR_SHADOW_FRACTION is set but REGISTRY_WATCHER_URL is not: nothing is mirrored"
        );
    }
    let rollout = rollout::Reporter::start(watcher.clone(), shutdown.child_token());
    let mirror = shadow::Mirror::start(
        &config.shadow,
        client,
        registry.clone(),
        watcher,
        shadow_logger,
        shutdown.child_token(),
    );
    metrics::gauge!("predictor_schema_mismatch").set(0.0);
    Ok(service::PredictorService {
        endpoint: config.endpoint_name.clone(),
        invocations: batch::Invocations::new(
            invoker,
            config
                .batching
                .then_some((config.invoke_concurrency, config.batch_max_rows)),
        ),
        registry,
        mirror,
        rollout,
        max_rows: config.max_rows,
        features: config.num_features,
        mismatch_reported: Default::default(),
        default_timeout: Duration::from_millis(config.timeout_ms),
    })
}

/// Serves gRPC on `grpc` and the admin HTTP endpoints on `admin` until `shutdown`.
pub async fn run(
    grpc: TcpListener,
    admin: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let logger = match config.shadow.logger_url.as_deref() {
        Some(url) => Some(hops::remote_logger(
            config.tls.endpoint(url)?.connect_lazy(),
        )),
        None => None,
    };
    let service = service(&config, logger, &shutdown).await?;

    let readiness = bootstrap::Readiness::default();
    let health = bootstrap::grpc::Health::new::<PredictorServer<service::PredictorService>>(
        readiness.clone(),
        true,
    )
    .await;
    let admin_task = tokio::spawn(bootstrap::admin::serve_admin(
        admin,
        bootstrap::admin::admin_router(readiness),
        shutdown.child_token(),
    ));

    tracing::info!(addr = %grpc.local_addr()?, endpoint = %config.endpoint_name, batching = config.batching, invoke_concurrency = config.invoke_concurrency, transport = config.tls.describe(), "predictor serving");
    let grace = config.grace.duration();
    let finished = bootstrap::grpc::serve(
        grpc,
        PredictorServer::new(service),
        &config.tls,
        CALLERS,
        health,
        shutdown,
        Some(grace),
    )
    .await?;
    if !finished {
        tracing::warn!(
            ?grace,
            "in-flight calls did not finish within the grace period"
        );
    }
    let _ = admin_task.await;
    tracing::info!("predictor stopped");
    Ok(())
}
