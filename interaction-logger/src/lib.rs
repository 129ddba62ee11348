//! The interaction logger: `mlops.interaction.v1.InteractionLogger/Log` acknowledges an
//! interaction only once it is fsynced to the local spool; a background shipper then writes
//! it to the user-interactions feature group with BatchWriteRecord (or PutRecord), at least once, reusing the same
//! interaction_id and event_time on every retry. Records the Feature Store refuses as invalid
//! become dead letters, listed and replayed through the admin HTTP port. With a spool root
//! shared by several loggers (`LOGGER_SPOOL_ROOT`, e.g. on EFS), each writes its own spool
//! under it and ships the spools of loggers that are gone (`ownership`, `adopt`).

pub mod admin;
pub mod adopt;
pub mod drift;
mod lifecycle;
pub mod ownership;
pub mod record;
pub mod service;
pub mod shipper;
pub mod spool;
pub mod store;

use std::path::PathBuf;

pub use lifecycle::Logger;
use proto::interaction::v1::interaction_logger_server::InteractionLoggerServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// The feature group interactions are written to.
    #[arg(
        long,
        env = "USER_INTERACTION_FG_NAME",
        default_value = names::INTERACTIONS_FEATURE_GROUP
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
    /// Most dead letters kept; beyond it a refused record stays in the spool (counted in
    /// `logger_dead_letters_overflow_total`) until room is made.
    #[arg(
        long,
        env = "LOGGER_DEAD_LETTER_MAX_RECORDS",
        default_value_t = 100_000
    )]
    pub dead_letter_max_records: u64,
    /// Most bytes of dead letters kept.
    #[arg(long, env = "LOGGER_DEAD_LETTER_MAX_BYTES", default_value_t = 256 << 20)]
    pub dead_letter_max_bytes: u64,
    /// How long the spool may stay unwritable (a full disk, a failing device) while it is
    /// reopened with backoff; after that the logger exits non-zero for its supervisor to
    /// restart it.
    #[arg(long, env = "LOGGER_SPOOL_RECOVER_SECS", default_value_t = 300)]
    pub spool_recover_secs: u64,
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
    pub admin_token: Option<secret::Secret>,
    #[command(flatten)]
    pub drift: drift::Config,
    #[command(flatten)]
    pub tls: grpc_tls::Tls,
    #[command(flatten)]
    pub grace: bootstrap::shutdown::Grace,
    #[command(flatten)]
    pub aws: bootstrap::aws::AwsClient,
}

/// With mutual TLS, who may call `Log`: the gateway (every prediction's interactions) and
/// the predictor (a shadowed candidate's records). `GRPC_TLS_ALLOW` replaces it.
pub const CALLERS: &[(&str, &[&str])] = &[("Log", &["gateway", "predictor"])];

/// Serves gRPC on `grpc` and the admin HTTP endpoints on `admin` until `shutdown`, then
/// drains the spool within the grace period. An error when the spool could not be claimed or
/// opened, or stayed unwritable past `LOGGER_SPOOL_RECOVER_SECS`.
pub async fn run(
    grpc: TcpListener,
    admin: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut logger = Logger::open(config, &shutdown).await?;
    let readiness = bootstrap::Readiness::default();
    let (health, health_follows_spool) = logger.health(readiness.clone(), shutdown.clone()).await;
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(bootstrap::admin::serve_admin(
        admin,
        logger.admin_router(readiness),
        admin_stop.clone(),
    ));

    tracing::info!(addr = %grpc.local_addr()?, feature_group = %logger.config.feature_group, spool = %logger.claim.dir.display(), id = %logger.id, pending = logger.spool.depth(), transport = logger.config.tls.describe(), "interaction-logger serving");
    // No grace here: once Log calls stop coming, the grace period goes to shipping the spool.
    bootstrap::grpc::serve(
        grpc,
        InteractionLoggerServer::new(logger.service()),
        &logger.config.tls,
        CALLERS,
        health,
        shutdown.clone(),
        None,
    )
    .await?;

    let drained = logger.drain().await;
    admin_stop.cancel();
    let _ = tokio::join!(admin_task, health_follows_spool);
    logger.release();
    drained
}
