//! A logger's life: its spool claimed and opened, the background work started beside it, its
//! health following the spool's, and at the end the spool drained and given up.

use std::{path::Path, sync::Arc, time::Duration};

use proto::interaction::v1::interaction_logger_server::InteractionLoggerServer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Config, admin, adopt, drift, ownership, service, shipper, spool, store};

/// A logger with its spool claimed and opened and its background work running (shipping, the
/// spool's recovery from storage faults, adoption under a shared root, the gauges) and drift
/// followed: what [`run`] serves over gRPC, and what the one-process shape calls in process.
pub struct Logger {
    pub(crate) config: Config,
    pub(crate) id: String,
    pub(crate) claim: ownership::Claim,
    pub(crate) spool: Arc<spool::Spool>,
    wake: Arc<Notify>,
    drift: Option<drift::Drift>,
    background: Option<Background>,
}

impl Logger {
    /// Claims and opens the spool and starts the background work. A spool that stays
    /// unwritable past `LOGGER_SPOOL_RECOVER_SECS` cancels `shutdown` (the process stops).
    pub async fn open(config: Config, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let id = config
            .logger_id
            .clone()
            .unwrap_or_else(|| format!("logger-{}", uuid::Uuid::now_v7().simple()));
        let (claim, spool) = claim_spool(&config, &id)?;
        let wake = Arc::new(Notify::new());
        let store = Arc::new(store::FeatureStore::new(
            aws_sdk_sagemakerfeaturestoreruntime::Client::new(&config.aws.load().await?),
            config.feature_group.clone(),
            config.ship_batch_write,
        ));
        let background = Background::start(&config, &id, &spool, &store, &wake, shutdown);
        let drift = drift::Drift::follow(&config.drift, &config.tls, shutdown)?;
        Ok(Logger {
            config,
            id,
            claim,
            spool,
            wake,
            drift,
            background: Some(background),
        })
    }

    /// The `Log` service on this spool.
    pub fn service(&self) -> service::LoggerService {
        service::LoggerService {
            spool: Arc::clone(&self.spool),
            wake: Arc::clone(&self.wake),
            drift: self.drift.clone(),
        }
    }

    /// The service's health (`grpc.health.v1` and `readiness`, together): serving, and
    /// NOT_SERVING while the spool's storage is faulted, until `shutdown`; with the task that
    /// keeps it so.
    pub async fn health(
        &self,
        readiness: bootstrap::Readiness,
        shutdown: CancellationToken,
    ) -> (bootstrap::grpc::Health, tokio::task::JoinHandle<()>) {
        let health =
            bootstrap::grpc::Health::new::<InteractionLoggerServer<service::LoggerService>>(
                readiness, true,
            )
            .await;
        let follows = tokio::spawn(follow_spool_health(
            Arc::clone(&self.spool),
            health.clone(),
            shutdown,
        ));
        (health, follows)
    }

    /// The admin port's routes (`/metrics`, `/healthz`, `/readyz` by `readiness`, `/drift`,
    /// the dead letters behind `LOGGER_ADMIN_TOKEN`).
    pub fn admin_router(&self, readiness: bootstrap::Readiness) -> axum::Router {
        let token = self
            .config
            .admin_token
            .as_ref()
            .filter(|t| !t.is_blank())
            .map(|t| Arc::from(t.expose()));
        admin::router(
            readiness,
            Arc::clone(&self.spool),
            Arc::clone(&self.wake),
            self.drift.clone(),
            token,
        )
    }

    /// After the last `Log` call: ships what is spooled within the grace period, then stops
    /// the background work. An error when the spool stayed unwritable.
    pub async fn drain(&mut self) -> anyhow::Result<()> {
        let Some(background) = self.background.take() else {
            return Ok(());
        };
        background
            .drain(&self.spool, self.config.grace.duration())
            .await
            .map_err(|e| anyhow::anyhow!("the spool stayed unwritable: {}", spool::error_chain(&e)))
    }

    /// Gives the spool up (after [`Logger::drain`] and once nothing else holds it).
    pub fn release(self) {
        give_up_spool(self.claim, self.spool, self.config.spool_root.as_deref());
    }
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
