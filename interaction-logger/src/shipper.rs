//! Ships spooled interactions to the Feature Store with bounded concurrency. Retryable
//! failures (throttling, 5xx, network) are retried with backoff until they succeed, always
//! with the same interaction_id and event_time; records the Feature Store refuses as invalid
//! go to the dead letters with the reason. Whatever was not shipped before a crash is still
//! in the spool and is shipped after the restart.

use std::{sync::Arc, time::Duration};

use aws_sdk_sagemakerfeaturestoreruntime::{error::ProvideErrorMetadata, error::SdkError};
use proto::interaction::v1::Interaction;
use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{record, spool::Spool};

pub struct Shipper {
    pub spool: Arc<Spool>,
    pub client: aws_sdk_sagemakerfeaturestoreruntime::Client,
    pub feature_group: String,
    pub concurrency: usize,
    /// Woken when interactions are appended or replayed.
    pub wake: Arc<Notify>,
    /// How long a partial batch waits for more interactions before it ships. Interactions
    /// that ship together are removed from the spool together (fewer fsyncs) and reach the
    /// Feature Store as one burst of concurrent calls instead of one call per wake-up.
    pub linger: Duration,
}

/// A batch this large ships without lingering.
const BATCH: usize = 256;

enum Outcome {
    Shipped,
    Retry(String),
    Invalid(String),
}

impl Shipper {
    /// Ships until `stop` is cancelled and, after that, until the spool is empty or `drain`
    /// is cancelled too.
    pub async fn run(self: Arc<Self>, stop: CancellationToken, drain: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut cursor: Option<u64> = None;
        let mut lingered = false;
        loop {
            if drain.is_cancelled() {
                return;
            }
            let batch = match self.spool.pending_after(cursor, BATCH) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spool");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                if stop.is_cancelled() && self.spool.depth() == 0 {
                    // Everything acknowledged has shipped; wait for in-flight ships to end.
                    let _ = permits.acquire_many(self.concurrency as u32).await;
                    if self.spool.depth() == 0 {
                        return;
                    }
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = drain.cancelled() => return,
                }
                continue;
            }
            if batch.len() < BATCH && !lingered && !self.linger.is_zero() && !stop.is_cancelled() {
                lingered = true;
                tokio::select! {
                    _ = tokio::time::sleep(self.linger) => {}
                    _ = stop.cancelled() => {}
                    _ = drain.cancelled() => return,
                }
                continue;
            }
            lingered = false;
            for (key, interaction) in batch {
                cursor = Some(key);
                let permit = tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore never closes"),
                    _ = drain.cancelled() => return,
                };
                let me = Arc::clone(&self);
                let drain = drain.clone();
                tokio::spawn(async move {
                    me.ship(key, interaction, drain).await;
                    drop(permit);
                });
            }
        }
    }

    async fn ship(&self, key: u64, interaction: Interaction, drain: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.put(&interaction).await {
                Outcome::Shipped => {
                    if let Err(e) = self.spool.remove(key).await {
                        tracing::error!(error = %e, key, "shipped, but could not remove from the spool; it will ship again");
                    }
                    metrics::counter!("logger_shipped_total").increment(1);
                    return;
                }
                Outcome::Invalid(reason) => {
                    tracing::warn!(interaction_id = %interaction.interaction_id, %reason, "feature store refused the record: dead-lettered");
                    if let Err(e) = self.spool.dead_letter(key, reason).await {
                        tracing::error!(error = %e, key, "could not dead-letter");
                    }
                    metrics::counter!("logger_dead_lettered_total").increment(1);
                    return;
                }
                Outcome::Retry(reason) => {
                    metrics::counter!("logger_retried_total").increment(1);
                    tracing::debug!(interaction_id = %interaction.interaction_id, %reason, ?backoff, "PutRecord failed; retrying");
                    let pause = backoff.mul_f64(rand::rng().random_range(0.5..1.0));
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = drain.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn put(&self, interaction: &Interaction) -> Outcome {
        let result = self
            .client
            .put_record()
            .feature_group_name(&self.feature_group)
            .set_record(Some(record::features(interaction)))
            .send()
            .await;
        match result {
            Ok(_) => Outcome::Shipped,
            Err(SdkError::ServiceError(ctx))
                if ctx.raw().status().as_u16() == 400
                    && ctx.err().code() == Some("ValidationError") =>
            {
                Outcome::Invalid(ctx.err().message().unwrap_or("ValidationError").to_owned())
            }
            Err(e) => Outcome::Retry(
                aws_sdk_sagemakerfeaturestoreruntime::error::DisplayErrorContext(&e).to_string(),
            ),
        }
    }
}
