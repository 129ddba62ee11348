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
pub mod ownership;
pub mod record;
pub mod service;
pub mod shipper;
pub mod spool;
pub mod store;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
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
    let id = config
        .logger_id
        .clone()
        .unwrap_or_else(|| format!("logger-{}", uuid::Uuid::now_v7().simple()));
    let (claim, spool) = claim_spool(&config, &id)?;
    let wake = Arc::new(Notify::new());
    let store = Arc::new(store::FeatureStore::new(
        aws_sdk_sagemakerfeaturestoreruntime::Client::new(&config.aws.load().await),
        config.feature_group.clone(),
        config.ship_batch_write,
    ));
    let background = Background::start(&config, &id, &spool, &store, &wake, &shutdown);
    let drift = drift::Drift::follow(&config.drift, &config.tls, &shutdown)?;

    let readiness = bootstrap::Readiness::default();
    let health = bootstrap::grpc::Health::new::<InteractionLoggerServer<service::LoggerService>>(
        readiness.clone(),
        true,
    )
    .await;
    let health_follows_spool = tokio::spawn(follow_spool_health(
        Arc::clone(&spool),
        health.clone(),
        shutdown.clone(),
    ));
    let token = config
        .admin_token
        .as_ref()
        .filter(|t| !t.is_blank())
        .map(|t| Arc::from(t.expose()));
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(bootstrap::admin::serve_admin(
        admin,
        admin::router(
            readiness,
            Arc::clone(&spool),
            Arc::clone(&wake),
            drift.clone(),
            token,
        ),
        admin_stop.clone(),
    ));

    tracing::info!(addr = %grpc.local_addr()?, feature_group = %config.feature_group, spool = %claim.dir.display(), id = %id, pending = spool.depth(), transport = config.tls.describe(), "interaction-logger serving");
    // No grace here: once Log calls stop coming, the grace period goes to shipping the spool.
    let service = service::LoggerService {
        spool: Arc::clone(&spool),
        wake,
        drift,
    };
    bootstrap::grpc::serve(
        grpc,
        InteractionLoggerServer::new(service),
        &config.tls,
        CALLERS,
        health,
        shutdown.clone(),
        None,
    )
    .await?;

    let unrecovered = background.drain(&spool, config.grace.duration()).await;
    admin_stop.cancel();
    let _ = tokio::join!(admin_task, health_follows_spool);
    give_up_spool(claim, spool, config.spool_root.as_deref());
    unrecovered
        .map_err(|e| anyhow::anyhow!("the spool stayed unwritable: {}", spool::error_chain(&e)))
}

/// Claims this logger's spool (its own folder, or `{root}/{id}`) and opens it.
fn claim_spool(config: &Config, id: &str) -> anyhow::Result<(ownership::Claim, Arc<spool::Spool>)> {
    let (dir, quarantine) = match &config.spool_root {
        Some(root) => (root.join(id), root.join(ownership::QUARANTINE)),
        None => (
            config.spool_dir.clone(),
            config.spool_dir.join(ownership::QUARANTINE),
        ),
    };
    let claim = ownership::Claim::try_own(&dir, id)
        .map_err(|e| anyhow::anyhow!("cannot claim the spool {}: {e}", dir.display()))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the spool {} is held by another running logger",
                dir.display()
            )
        })?;
    let limits = spool::Limits {
        max_records: config.max_records,
        max_bytes: config.max_bytes,
        dead_max_records: config.dead_letter_max_records,
        dead_max_bytes: config.dead_letter_max_bytes,
    };
    let spool = spool::Spool::open(&dir, &quarantine, limits).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the spool {}: {}",
            dir.display(),
            spool::error_chain(&e)
        )
    })?;
    Ok((claim, Arc::new(spool)))
}

/// The logger's background work: shipping, the spool gauges, the spool's recovery from
/// storage faults, and (under a shared root) adopting the spools of loggers that are gone.
struct Background {
    stop_shipping: CancellationToken,
    drain: CancellationToken,
    shipping: tokio::task::JoinHandle<()>,
    gauges: tokio::task::JoinHandle<()>,
    recovery: tokio::task::JoinHandle<Result<(), spool::SpoolError>>,
    adopting: Option<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn start(
        config: &Config,
        id: &str,
        spool: &Arc<spool::Spool>,
        store: &Arc<store::FeatureStore>,
        wake: &Arc<Notify>,
        shutdown: &CancellationToken,
    ) -> Self {
        let (stop_shipping, drain) = (CancellationToken::new(), CancellationToken::new());
        let shipper = Arc::new(shipper::Shipper {
            spool: Arc::clone(spool),
            store: Arc::clone(store),
            concurrency: config.ship_concurrency.max(1),
            wake: Arc::clone(wake),
            linger: Duration::from_millis(config.ship_linger_ms),
        });
        // A spool that cannot be reopened in time ends the process (exit non-zero).
        let recovery = tokio::spawn({
            let (spool, shutdown, until) = (Arc::clone(spool), shutdown.clone(), drain.clone());
            let give_up = Duration::from_secs(config.spool_recover_secs);
            async move {
                let result = spool.recover(until, give_up).await;
                if result.is_err() {
                    shutdown.cancel();
                }
                result
            }
        });
        let adopting = config.spool_root.clone().map(|root| {
            tokio::spawn(
                adopt::Adopter {
                    root,
                    id: id.to_owned(),
                    interval: Duration::from_millis(config.adopt_interval_ms.max(10)),
                    own: Arc::clone(spool),
                    store: Arc::clone(store),
                    concurrency: config.ship_concurrency.max(1),
                }
                .run(stop_shipping.clone(), drain.clone()),
            )
        });
        Background {
            shipping: tokio::spawn(shipper.run(stop_shipping.clone(), drain.clone())),
            gauges: tokio::spawn(publish_gauges(Arc::clone(spool), drain.clone())),
            recovery,
            adopting,
            stop_shipping,
            drain,
        }
    }

    /// After the last Log call: ships what is spooled within `grace`, then stops everything.
    /// Returns the recovery's verdict (an error: the spool stayed unwritable).
    async fn drain(self, spool: &spool::Spool, grace: Duration) -> Result<(), spool::SpoolError> {
        tracing::info!(pending = spool.depth(), ?grace, "draining the spool");
        self.stop_shipping.cancel();
        if tokio::time::timeout(grace, self.shipping).await.is_err() {
            tracing::warn!(
                pending = spool.depth(),
                "grace period over; the rest stays in the spool for the next start"
            );
        }
        self.drain.cancel();
        let _ = self.gauges.await;
        if let Some(adopting) = self.adopting {
            let _ = adopting.await;
        }
        self.recovery.await.unwrap_or(Ok(()))
    }
}

/// The service's health follows the spool's: NOT_SERVING while its storage is faulted.
async fn follow_spool_health(
    spool: Arc<spool::Spool>,
    health: bootstrap::grpc::Health,
    shutdown: CancellationToken,
) {
    let mut healthy = spool.healthy();
    loop {
        tokio::select! {
            changed = healthy.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        let now = *healthy.borrow_and_update();
        if !shutdown.is_cancelled() {
            health.set(now).await;
        }
    }
}

/// Gives the spool up: under a shared root an empty one is removed (a new start makes a new
/// one); one with something left, or one whose storage failed (its contents are not known),
/// is released for its next claimant: this logger, or any other.
fn give_up_spool(claim: ownership::Claim, spool: Arc<spool::Spool>, root: Option<&Path>) {
    let pending = spool.depth();
    let readable = *spool.healthy().borrow();
    let empty = readable && pending == 0 && spool.dead_letter_count() == 0;
    let dir = claim.dir.clone();
    drop(spool);
    let given_up = match root {
        Some(root) if empty => claim.retire(root),
        _ => claim.release(),
    };
    if let Err(e) = given_up {
        tracing::warn!(spool = %dir.display(), error = %e, "could not record the spool's release");
    }
    tracing::info!(pending, readable, "interaction-logger stopped");
}

/// The spool gauges read from disk, every second. A gauge that cannot be read is left as it
/// was and the failure counted (`logger_spool_gauge_errors_total`): never a 0 that would
/// silence the unshipped-age alarm.
async fn publish_gauges(spool: Arc<spool::Spool>, stop: CancellationToken) {
    loop {
        let reader = Arc::clone(&spool);
        match tokio::task::spawn_blocking(move || reader.oldest_event_time()).await {
            Ok(Ok(oldest)) => {
                let age = oldest
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                    .map_or(0.0, |t| {
                        (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                            .num_milliseconds()
                            .max(0) as f64
                            / 1000.0
                    });
                metrics::gauge!("logger_oldest_unshipped_age_seconds").set(age);
            }
            _ => metrics::counter!("logger_spool_gauge_errors_total").increment(1),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
