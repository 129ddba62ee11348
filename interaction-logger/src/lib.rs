//! The interaction logger: `mlops.interaction.v1.InteractionLogger/Log` acknowledges an
//! interaction only once it is fsynced to the local spool; a background shipper then writes
//! it to the user-interactions feature group with BatchWriteRecord (or PutRecord), at least once, reusing the same
//! interaction_id and event_time on every retry. Records the Feature Store refuses as invalid
//! become dead letters, listed and replayed through the admin HTTP port. With a spool root
//! shared by several loggers (`LOGGER_SPOOL_ROOT`, e.g. on EFS), each writes its own spool
//! under it and ships the spools of loggers that are gone (`ownership`, `adopt`).

pub mod adopt;
pub mod drift;
pub mod ownership;
pub mod record;
pub mod service;
pub mod shipper;
pub mod spool;
pub mod store;

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    routing::{get, post},
};
use proto::interaction::v1::interaction_logger_server::InteractionLoggerServer;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// The feature group interactions are written to.
    #[arg(
        long,
        env = "USER_INTERACTION_FG_NAME",
        default_value = "my-mlops-user-interactions-v1"
    )]
    pub feature_group: String,
    /// Where the durable spool lives (put it on a volume). Ignored with a spool root.
    #[arg(
        long,
        env = "LOGGER_SPOOL_DIR",
        default_value = ".data/interaction-logger"
    )]
    pub spool_dir: PathBuf,
    /// A folder shared by several loggers (a volume, or a network file system such as EFS):
    /// this logger's spool is `{root}/{LOGGER_ID}`, and it adopts the spools of loggers that
    /// are gone.
    #[arg(long, env = "LOGGER_SPOOL_ROOT")]
    pub spool_root: Option<PathBuf>,
    /// This logger's identity under the spool root (default: a new one at every start; a
    /// stable one reopens its own spool after a restart).
    #[arg(long, env = "LOGGER_ID")]
    pub logger_id: Option<String>,
    /// How often to look for spools whose logger is gone, under the spool root.
    #[arg(long, env = "LOGGER_ADOPT_INTERVAL_MS", default_value_t = 5000)]
    pub adopt_interval_ms: u64,
    /// Most unshipped interactions kept; beyond it Log returns RESOURCE_EXHAUSTED.
    #[arg(long, env = "LOGGER_SPOOL_MAX_RECORDS", default_value_t = 1_000_000)]
    pub max_records: u64,
    /// Most unshipped bytes kept.
    #[arg(long, env = "LOGGER_SPOOL_MAX_BYTES", default_value_t = 1 << 30)]
    pub max_bytes: u64,
    /// Feature Store calls in flight at once.
    #[arg(long, env = "LOGGER_SHIP_CONCURRENCY", default_value_t = 32)]
    pub ship_concurrency: usize,
    /// Ship up to 25 interactions per BatchWriteRecord call (`false`: one per PutRecord).
    /// A BatchWriteRecord refused as unknown or unauthorised falls back to PutRecord by
    /// itself.
    #[arg(long, env = "LOGGER_SHIP_BATCH_WRITE", default_value_t = true, action = clap::ArgAction::Set)]
    pub ship_batch_write: bool,
    /// How long fewer than 256 unshipped interactions wait for more before they ship
    /// together (0: ship each as soon as it is spooled).
    #[arg(long, env = "LOGGER_SHIP_LINGER_MS", default_value_t = 20)]
    pub ship_linger_ms: u64,
    /// The token the admin port's dead-letter routes require (`Authorization: Bearer ...`);
    /// unset, they are refused. Give it as a secret.
    #[arg(long, env = "LOGGER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub drift: drift::Config,
    #[command(flatten)]
    pub tls: grpc_tls::Tls,
    #[command(flatten)]
    pub grace: shutdown::Grace,
    #[command(flatten)]
    pub aws: aws_client::AwsClient,
}

/// Serves gRPC on `grpc` and the admin HTTP endpoints on `admin` until `shutdown`, then
/// drains the spool within the grace period.
pub async fn run(
    grpc: TcpListener,
    admin: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let id = config
        .logger_id
        .clone()
        .unwrap_or_else(|| format!("logger-{}", uuid::Uuid::now_v7().simple()));
    let spool_dir = match &config.spool_root {
        Some(root) => root.join(&id),
        None => config.spool_dir.clone(),
    };
    let claim = ownership::Claim::try_own(&spool_dir, &id)
        .map_err(|e| anyhow::anyhow!("cannot claim the spool {}: {e}", spool_dir.display()))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the spool {} is held by another running logger",
                spool_dir.display()
            )
        })?;
    let spool = Arc::new(spool::Spool::open(
        &spool_dir,
        config.max_records,
        config.max_bytes,
    )?);
    let aws = config.aws.load().await;
    let wake = Arc::new(Notify::new());
    let store = Arc::new(store::FeatureStore::new(
        aws_sdk_sagemakerfeaturestoreruntime::Client::new(&aws),
        config.feature_group.clone(),
        config.ship_batch_write,
    ));
    let shipper = Arc::new(shipper::Shipper {
        spool: Arc::clone(&spool),
        store: Arc::clone(&store),
        concurrency: config.ship_concurrency.max(1),
        wake: Arc::clone(&wake),
        linger: Duration::from_millis(config.ship_linger_ms),
    });
    let (stop_shipping, drain) = (CancellationToken::new(), CancellationToken::new());
    let shipping = tokio::spawn(Arc::clone(&shipper).run(stop_shipping.clone(), drain.clone()));
    let gauges = tokio::spawn(publish_gauges(Arc::clone(&spool), drain.clone()));
    let adopting = config.spool_root.clone().map(|root| {
        tokio::spawn(
            adopt::Adopter {
                root,
                id: id.clone(),
                interval: Duration::from_millis(config.adopt_interval_ms.max(10)),
                own: Arc::clone(&spool),
                store,
                concurrency: config.ship_concurrency.max(1),
            }
            .run(stop_shipping.clone(), drain.clone()),
        )
    });

    let drift = match config.drift.registry_watcher_url.as_deref() {
        Some(url) => {
            let follower = registry_follower::Follower::start(
                config.tls.endpoint(url)?,
                shutdown.child_token(),
            );
            let drift = drift::Drift::new(&config.drift, follower);
            telemetry::add_section({
                let drift = drift.clone();
                move || drift.metrics()
            });
            Some(drift)
        }
        None => {
            tracing::info!("no REGISTRY_WATCHER_URL: live inputs are not checked for drift");
            None
        }
    };

    let readiness = telemetry::Readiness::default();
    let health = grpc_serve::Health::new::<InteractionLoggerServer<service::LoggerService>>(
        readiness.clone(),
        true,
    )
    .await;
    // Dead letters are recorded interactions, and a replay changes state: both need the token.
    let token: Option<Arc<str>> = config
        .admin_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(Arc::from);
    if token.is_none() {
        tracing::info!("no LOGGER_ADMIN_TOKEN: the dead-letter routes are refused");
    }
    let drift_view = drift.clone();
    let admin_routes = telemetry::admin_router(readiness)
        .route(
            "/drift",
            get(move || {
                let view = drift_view.as_ref().map_or_else(
                    || serde_json::json!({ "tracking": false }),
                    drift::Drift::json,
                );
                std::future::ready(Json(view))
            }),
        )
        .merge(
            axum::Router::new()
                .route("/dead-letters", get(list_dead_letters))
                .route("/dead-letters/replay", post(replay_dead_letters))
                .with_state((Arc::clone(&spool), Arc::clone(&wake)))
                .route_layer(axum::middleware::from_fn_with_state(
                    token,
                    telemetry::require_admin_token,
                )),
        );
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(telemetry::serve_admin(
        admin,
        admin_routes,
        admin_stop.clone(),
    ));

    tracing::info!(addr = %grpc.local_addr()?, feature_group = %config.feature_group, spool = %spool_dir.display(), id = %id, pending = spool.depth(), transport = config.tls.describe(), "interaction-logger serving");
    // No grace here: once Log calls stop coming, the grace period goes to shipping the spool.
    grpc_serve::serve(
        grpc,
        InteractionLoggerServer::new(service::LoggerService {
            spool: Arc::clone(&spool),
            wake,
            drift,
        }),
        &config.tls,
        health,
        shutdown,
        None,
    )
    .await?;

    // No more Log calls: ship what is spooled, within the grace period.
    let grace = config.grace.duration();
    tracing::info!(pending = spool.depth(), ?grace, "draining the spool");
    stop_shipping.cancel();
    if tokio::time::timeout(grace, shipping).await.is_err() {
        tracing::warn!(
            pending = spool.depth(),
            "grace period over; the rest stays in the spool for the next start"
        );
    }
    drain.cancel();
    admin_stop.cancel();
    let _ = tokio::join!(gauges, admin_task);
    if let Some(adopting) = adopting {
        let _ = adopting.await;
    }
    let pending = spool.depth();
    let empty = pending == 0 && spool.dead_letter_count() == 0;
    drop((shipper, spool));
    // Under a shared root an empty spool is removed (a new start makes a new one); a spool
    // with something left is released for its next claimant: this logger, or any other.
    let given_up = match &config.spool_root {
        Some(root) if empty => claim.retire(root),
        _ => claim.release(),
    };
    if let Err(e) = given_up {
        tracing::warn!(spool = %spool_dir.display(), error = %e, "could not record the spool's release");
    }
    tracing::info!(pending, "interaction-logger stopped");
    Ok(())
}

async fn publish_gauges(spool: Arc<spool::Spool>, stop: CancellationToken) {
    loop {
        let age = spool
            .oldest_event_time()
            .ok()
            .flatten()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map_or(0.0, |t| {
                (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0
            });
        metrics::gauge!("logger_oldest_unshipped_age_seconds").set(age);
        metrics::gauge!("logger_dead_letters").set(spool.dead_letter_count() as f64);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

type AdminState = (Arc<spool::Spool>, Arc<Notify>);

async fn list_dead_letters(
    State((spool, _)): State<AdminState>,
) -> Result<Json<Vec<spool::DeadLetter>>, (axum::http::StatusCode, String)> {
    spool
        .dead_letters()
        .map(Json)
        .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn replay_dead_letters(
    State((spool, wake)): State<AdminState>,
) -> Result<Json<serde_json::Value>, (axum::http::StatusCode, String)> {
    let n = spool
        .replay_dead_letters()
        .await
        .map_err(|e| (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    wake.notify_one();
    Ok(Json(serde_json::json!({ "replayed": n })))
}
