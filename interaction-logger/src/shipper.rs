//! Ships spooled interactions to the Feature Store with bounded concurrency, up to
//! [`BATCH_WRITE_MAX`] per `BatchWriteRecord` call. Retryable failures (throttling, 5xx,
//! network, entries the store left unprocessed) are retried with backoff until they succeed,
//! always with the same interaction_id and event_time; records the Feature Store refuses as
//! invalid go to the dead letters with the reason. When `BatchWriteRecord` itself is refused
//! as unknown or unauthorised (an older region, a narrower policy), the logger says so once
//! (log, `logger_batch_write_fallback_total`) and ships with `PutRecord`, one record per
//! call, from then on. Whatever was not shipped before a crash is still in the spool and is
//! shipped after the restart.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aws_sdk_sagemakerfeaturestoreruntime::{
    error::{ProvideErrorMetadata, SdkError},
    types::BatchWriteRecordEntry,
};
use proto::interaction::v1::Interaction;
use rand::Rng;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::{record, spool::Spool};

/// The most entries one `BatchWriteRecord` call takes (AWS's limit).
pub const BATCH_WRITE_MAX: usize = 25;

/// A batch this large ships without lingering.
const BATCH: usize = 256;

/// Error codes that say the caller may not (or cannot) use an operation at all.
const UNSUPPORTED: &[&str] = &[
    "AccessDeniedException",
    "AccessForbidden",
    "UnknownOperationException",
];

/// The feature group the interactions go to, and how to write to it; shared by this
/// logger's shipper and the shippers of the spools it adopts.
pub struct FeatureStore {
    pub client: aws_sdk_sagemakerfeaturestoreruntime::Client,
    pub feature_group: String,
    /// Ship with `BatchWriteRecord` (until it is refused); `PutRecord` otherwise.
    batch_write: AtomicBool,
}

impl FeatureStore {
    pub fn new(
        client: aws_sdk_sagemakerfeaturestoreruntime::Client,
        feature_group: String,
        batch_write: bool,
    ) -> Self {
        metrics::gauge!("logger_batch_write_enabled").set(if batch_write { 1.0 } else { 0.0 });
        FeatureStore {
            client,
            feature_group,
            batch_write: AtomicBool::new(batch_write),
        }
    }

    fn batch_write_enabled(&self) -> bool {
        self.batch_write.load(Ordering::Relaxed)
    }

    fn fall_back(&self, reason: &str) {
        if self.batch_write.swap(false, Ordering::Relaxed) {
            tracing::warn!(%reason, "BatchWriteRecord was refused; shipping with PutRecord from now on");
            metrics::counter!("logger_batch_write_fallback_total").increment(1);
            metrics::gauge!("logger_batch_write_enabled").set(0.0);
        }
    }
}

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

/// What became of one record.
#[derive(Debug, PartialEq)]
enum Outcome {
    Shipped,
    Retry(String),
    Invalid(String),
}

/// What became of a `BatchWriteRecord` call.
enum BatchOutcome {
    /// Per entry, in the order sent.
    Entries(Vec<Outcome>),
    /// The whole call failed and may succeed later.
    Retry(String),
    /// The operation is not available to this caller.
    Unsupported(String),
    /// The call itself was refused as invalid: ship its records one by one, so that only
    /// what is invalid itself is dead-lettered.
    Refused(String),
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
            cursor = batch.last().map(|(key, _)| *key);
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
            if !self.store.batch_write_enabled() || chunk.len() == 1 {
                return self.ship_each(chunk, drain).await;
            }
            let retry_reason = match self.batch_write(&chunk).await {
                BatchOutcome::Entries(outcomes) => {
                    let mut retry = Vec::new();
                    let mut shipped = Vec::new();
                    let mut reason = String::new();
                    for ((key, interaction), outcome) in chunk.into_iter().zip(outcomes) {
                        match outcome {
                            Outcome::Shipped => shipped.push(key),
                            Outcome::Invalid(why) => self.dead_letter(key, &interaction, why).await,
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
            match self.put(&interaction).await {
                Outcome::Shipped => return self.shipped(vec![key]).await,
                Outcome::Invalid(reason) => {
                    return self.dead_letter(key, &interaction, reason).await;
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
            tracing::error!(error = %e, "shipped, but could not remove from the spool; they will ship again");
        }
        metrics::counter!("logger_shipped_total").increment(n);
    }

    async fn dead_letter(&self, key: u64, interaction: &Interaction, reason: String) {
        tracing::warn!(interaction_id = %interaction.interaction_id, %reason, "feature store refused the record: dead-lettered");
        if let Err(e) = self.spool.dead_letter(key, reason).await {
            tracing::error!(error = %e, key, "could not dead-letter");
        }
        metrics::counter!("logger_dead_lettered_total").increment(1);
    }

    async fn put(&self, interaction: &Interaction) -> Outcome {
        metrics::counter!("logger_ship_calls_total", "operation" => "PutRecord").increment(1);
        let result = self
            .store
            .client
            .put_record()
            .feature_group_name(&self.store.feature_group)
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

    async fn batch_write(&self, chunk: &[(u64, Interaction)]) -> BatchOutcome {
        metrics::counter!("logger_ship_calls_total", "operation" => "BatchWriteRecord")
            .increment(1);
        metrics::histogram!("logger_batch_write_entries").record(chunk.len() as f64);
        let entries = chunk
            .iter()
            .map(|(_, i)| {
                BatchWriteRecordEntry::builder()
                    .feature_group_name(&self.store.feature_group)
                    .set_record(Some(record::features(i)))
                    .build()
            })
            .collect();
        let result = self
            .store
            .client
            .batch_write_record()
            .set_entries(Some(entries))
            .send()
            .await;
        match result {
            Ok(out) => {
                let ids: Vec<&str> = chunk
                    .iter()
                    .map(|(_, i)| i.interaction_id.as_str())
                    .collect();
                let failures = out.errors().iter().map(|e| {
                    let code = e.error_code().unwrap_or_default();
                    let message = e.error_message().unwrap_or(code);
                    (
                        e.entry().and_then(entry_id),
                        if code == "ValidationError" {
                            Outcome::Invalid(message.to_owned())
                        } else {
                            Outcome::Retry(format!("{code}: {message}"))
                        },
                    )
                });
                let unprocessed = out
                    .unprocessed_entries()
                    .iter()
                    .map(|e| (entry_id(e), Outcome::Retry("left unprocessed".into())));
                match outcomes(&ids, failures.chain(unprocessed)) {
                    Some(outcomes) => BatchOutcome::Entries(outcomes),
                    None => BatchOutcome::Retry(
                        "an entry failed without saying which; sending them all again".into(),
                    ),
                }
            }
            Err(SdkError::ServiceError(ctx)) => {
                let (status, err) = (ctx.raw().status().as_u16(), ctx.err());
                let reason = format!(
                    "{} ({status}): {}",
                    err.code().unwrap_or("error"),
                    err.message().unwrap_or_default()
                );
                if status == 404 || err.code().is_some_and(|c| UNSUPPORTED.contains(&c)) {
                    BatchOutcome::Unsupported(reason)
                } else if status == 400 && err.code() == Some("ValidationError") {
                    BatchOutcome::Refused(reason)
                } else {
                    BatchOutcome::Retry(reason)
                }
            }
            Err(e) => BatchOutcome::Retry(
                aws_sdk_sagemakerfeaturestoreruntime::error::DisplayErrorContext(&e).to_string(),
            ),
        }
    }
}

/// The interaction id an entry echoed back by the store carries.
fn entry_id(entry: &BatchWriteRecordEntry) -> Option<&str> {
    entry
        .record()
        .iter()
        .find(|v| v.feature_name() == Some("interaction_id"))
        .and_then(|v| v.value_as_string())
}

/// Each entry's outcome, given the ids sent (in order) and the failures the store reported:
/// everything not reported failed was written. `None` when a failure cannot be matched to
/// an entry sent (then all of them must go again; writing a record twice is harmless, its
/// id and event time are the same).
fn outcomes<'a>(
    ids: &[&str],
    failures: impl Iterator<Item = (Option<&'a str>, Outcome)>,
) -> Option<Vec<Outcome>> {
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(n, id)| (*id, n)).collect();
    let mut out: Vec<Outcome> = ids.iter().map(|_| Outcome::Shipped).collect();
    for (id, outcome) in failures {
        let n = *index.get(id?)?;
        // An invalid entry stays invalid even if it is also reported unprocessed.
        if !matches!(out[n], Outcome::Invalid(_)) {
            out[n] = outcome;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_not_reported_failed_are_shipped() {
        let ids = ["a", "b", "c", "d"];
        let got = outcomes(
            &ids,
            [
                (Some("b"), Outcome::Invalid("bad".into())),
                (Some("d"), Outcome::Retry("left unprocessed".into())),
                (Some("b"), Outcome::Retry("left unprocessed".into())),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                Outcome::Shipped,
                Outcome::Invalid("bad".into()),
                Outcome::Shipped,
                Outcome::Retry("left unprocessed".into()),
            ]
        );
    }

    #[test]
    fn a_failure_that_names_no_entry_sent_means_all_go_again() {
        let ids = ["a", "b"];
        assert!(outcomes(&ids, [(None, Outcome::Retry("x".into()))].into_iter()).is_none());
        assert!(outcomes(&ids, [(Some("z"), Outcome::Retry("x".into()))].into_iter()).is_none());
        assert_eq!(
            outcomes(&ids, std::iter::empty()).unwrap(),
            vec![Outcome::Shipped, Outcome::Shipped]
        );
    }
}
