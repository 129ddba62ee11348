//! Ships spooled interactions to the Feature Store with bounded concurrency, up to
//! [`BATCH_WRITE_MAX`] per `BatchWriteRecord` call. Retryable failures (throttling, 5xx,
//! network, entries the store left unprocessed) are retried with backoff until they succeed,
//! always with the same interaction_id and event_time; records the Feature Store refuses as
//! invalid go to the dead letters with the reason. When `BatchWriteRecord` itself is refused
//! as unknown or unauthorised (an older region, a narrower policy), the logger says so once
//! (log, `logger_batch_write_fallback_total`) and ships with `PutRecord`, one record per
//! call, from then on. Whatever was not shipped before a crash is still in the spool and is
//! shipped after the restart.

use std::{sync::Arc, time::Duration};

use proto::interaction::v1::Interaction;
use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    spool::{Pending, Spool, SpoolError, blocking, error_chain},
    store::{BatchOutcome, FeatureStore, Outcome},
};

/// The most entries one `BatchWriteRecord` call takes (AWS's limit).
pub const BATCH_WRITE_MAX: usize = 25;

/// A batch this large ships without lingering.
const BATCH: usize = 256;

pub struct Shipper {
    pub spool: Arc<Spool>,
    pub store: Arc<FeatureStore>,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Woken when interactions are appended or replayed.
    pub wake: Arc<Notify>,
    /// How long a partial batch waits for more interactions before it ships. Interactions
    /// that ship together are removed from the spool together (fewer fsyncs) and reach the
    /// Feature Store in fewer, fuller calls.
    pub linger: Duration,
}

fn pause(backoff: Duration) -> Duration {
    backoff.mul_f64(rand::rng().random_range(0.5..1.0))
}

impl Shipper {
    /// Ships until `stop` is cancelled and, after that, until the spool is empty or `drain`
    /// is cancelled too.
    pub async fn run(self: Arc<Self>, stop: CancellationToken, drain: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut cursor: Option<u64> = None;
        let mut generation = self.spool.generation();
        let mut lingered = false;
        loop {
            if drain.is_cancelled() {
                return;
            }
            // After a reopen (or room made in the dead letters) start over from the oldest
            // entry: whatever a failed removal left, or a full dead-letter store held back,
            // ships now (a repeat of one in flight is harmless).
            if self.spool.generation() != generation {
                generation = self.spool.generation();
                cursor = None;
            }
            let spool = Arc::clone(&self.spool);
            let batch = match blocking(move || spool.pending_after(cursor, BATCH)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %error_chain(&e), "cannot read the spool now");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = drain.cancelled() => return,
                    }
                    continue;
                }
            };
            let Pending {
                entries: batch,
                undecodable,
            } = batch;
            if batch.is_empty() && undecodable.is_empty() {
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
            if batch.len() + undecodable.len() < BATCH
                && !lingered
                && !self.linger.is_zero()
                && !stop.is_cancelled()
            {
                lingered = true;
                tokio::select! {
                    _ = tokio::time::sleep(self.linger) => {}
                    _ = stop.cancelled() => {}
                    _ = drain.cancelled() => return,
                }
                continue;
            }
            lingered = false;
            cursor = cursor.max(batch.last().map(|(key, _)| *key));
            // An entry that does not decode cannot ship: dead-lettered with the reason, while
            // everything behind it ships.
            for bad in undecodable {
                cursor = cursor.max(Some(bad.key));
                self.dead_letter(bad.key, "", bad.reason).await;
            }
            let per_call = if self.store.batch_write_enabled() {
                BATCH_WRITE_MAX
            } else {
                1
            };
            let mut batch = batch.into_iter().peekable();
            while batch.peek().is_some() {
                let chunk: Vec<(u64, Interaction)> = batch.by_ref().take(per_call).collect();
                let permit = tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore never closes"),
                    _ = drain.cancelled() => return,
                };
                let me = Arc::clone(&self);
                let drain = drain.clone();
                tokio::spawn(async move {
                    me.ship_chunk(chunk, drain).await;
                    drop(permit);
                });
            }
        }
    }

    /// Ships `chunk` (by BatchWriteRecord while it is allowed), retrying what may succeed
    /// later, until every record is shipped or dead-lettered, or `drain`.
    async fn ship_chunk(&self, mut chunk: Vec<(u64, Interaction)>, drain: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        while !chunk.is_empty() {
            if !self.store.batch_write_enabled() {
                return self.ship_each(chunk, drain).await;
            }
            let span = shipping_span("BatchWriteRecord", chunk.iter().map(|(_, i)| i));
            let retry_reason = match self.store.batch_write(&chunk).instrument(span).await {
                BatchOutcome::Entries(outcomes) => {
                    let mut retry = Vec::new();
                    let mut shipped = Vec::new();
                    let mut reason = String::new();
                    for ((key, interaction), outcome) in chunk.into_iter().zip(outcomes) {
                        match outcome {
                            Outcome::Shipped => shipped.push(key),
                            Outcome::Invalid(why) => {
                                self.dead_letter(key, &interaction.interaction_id, why)
                                    .await
                            }
                            Outcome::Retry(why) => {
                                reason = why;
                                retry.push((key, interaction));
                            }
                        }
                    }
                    self.shipped(shipped).await;
                    chunk = retry;
                    if chunk.is_empty() {
                        return;
                    }
                    reason
                }
                BatchOutcome::Unsupported(reason) => {
                    self.store.fall_back(&reason);
                    continue;
                }
                BatchOutcome::Refused(reason) => {
                    tracing::warn!(%reason, entries = chunk.len(), "BatchWriteRecord refused the call; shipping its records one by one");
                    return self.ship_each(chunk, drain).await;
                }
                BatchOutcome::Retry(reason) => reason,
            };
            metrics::counter!("logger_retried_total").increment(chunk.len() as u64);
            tracing::debug!(reason = %retry_reason, entries = chunk.len(), ?backoff, "BatchWriteRecord left entries; retrying");
            tokio::select! {
                _ = tokio::time::sleep(pause(backoff)) => {}
                _ = drain.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Each record by its own PutRecord, concurrently.
    async fn ship_each(&self, chunk: Vec<(u64, Interaction)>, drain: CancellationToken) {
        let each = chunk
            .into_iter()
            .map(|(key, interaction)| self.ship_one(key, interaction, drain.clone()));
        futures_util::future::join_all(each).await;
    }

    async fn ship_one(&self, key: u64, interaction: Interaction, drain: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let span = shipping_span("PutRecord", [&interaction]);
            match self.store.put(&interaction).instrument(span).await {
                Outcome::Shipped => return self.shipped(vec![key]).await,
                Outcome::Invalid(reason) => {
                    return self
                        .dead_letter(key, &interaction.interaction_id, reason)
                        .await;
                }
                Outcome::Retry(reason) => {
                    metrics::counter!("logger_retried_total").increment(1);
                    tracing::debug!(interaction_id = %interaction.interaction_id, %reason, ?backoff, "PutRecord failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(pause(backoff)) => {}
                        _ = drain.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn shipped(&self, keys: Vec<u64>) {
        if keys.is_empty() {
            return;
        }
        let n = keys.len() as u64;
        if let Err(e) = self.spool.remove_many(keys).await {
            tracing::error!(error = %error_chain(&e), "shipped, but could not remove from the spool; they will ship again");
        }
        metrics::counter!("logger_shipped_total").increment(n);
    }

    /// A record that can never be stored goes to the dead letters with the reason. When they
    /// are full it stays pending (counted, logged, alarmed on): it is tried again once room is
    /// made (`DELETE /dead-letters`) or at the next start.
    async fn dead_letter(&self, key: u64, interaction_id: &str, reason: String) {
        match self.spool.dead_letter(key, reason.clone()).await {
            Ok(()) => {
                tracing::warn!(interaction_id, %reason, "feature store refused the record: dead-lettered");
                metrics::counter!("logger_dead_lettered_total").increment(1);
            }
            Err(SpoolError::Full(full)) => {
                tracing::error!(interaction_id, %reason, %full, "the dead letters are full: the refused record stays in the spool");
                metrics::counter!("logger_dead_letters_overflow_total").increment(1);
            }
            Err(e) => {
                tracing::error!(error = %error_chain(&e), key, "could not dead-letter; it stays in the spool");
            }
        }
    }
}

/// A Feature Store call's span (when traces are on): a trace of its own, linked to the trace
/// of every interaction it carries.
fn shipping_span<'a>(
    call: &'static str,
    interactions: impl IntoIterator<Item = &'a Interaction>,
) -> tracing::Span {
    telemetry::traces::span(|| {
        let span = tracing::info_span!(
            parent: None,
            "ship",
            otel.name = call,
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = "SageMaker Feature Store Runtime",
            rpc.method = call,
            records = tracing::field::Empty,
        );
        telemetry::traces::link_each(
            &span,
            interactions.into_iter().map(|i| i.traceparent.as_str()),
        );
        span
    })
}
