//! The user-interactions feature group and the two calls that write it: `BatchWriteRecord`
//! (up to [`crate::shipper::BATCH_WRITE_MAX`] records, each with its own outcome) and
//! `PutRecord` (one), with what each answer means for the records sent.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use aws_sdk_sagemakerfeaturestoreruntime::{
    error::{ProvideErrorMetadata, SdkError},
    types::BatchWriteRecordEntry,
};
use proto::interaction::v1::Interaction;

use crate::record;

/// Error codes that say the caller may not (or cannot) use an operation at all.
const UNSUPPORTED: &[&str] = &[
    "AccessDeniedException",
    "AccessForbidden",
    "UnknownOperationException",
];

/// What the Feature Store says (a `ValidationError`) when the feature group does not exist:
/// not a fault of the record — the group may be being created again — so the record is
/// retried with backoff, never dead-lettered.
fn group_missing(message: &str) -> bool {
    message.contains("can't find a FeatureGroup") || message.contains("Resource Not Found")
}

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

    pub(crate) fn batch_write_enabled(&self) -> bool {
        self.batch_write.load(Ordering::Relaxed)
    }

    pub(crate) fn fall_back(&self, reason: &str) {
        if self.batch_write.swap(false, Ordering::Relaxed) {
            tracing::warn!(%reason, "BatchWriteRecord was refused; shipping with PutRecord from now on");
            metrics::counter!("logger_batch_write_fallback_total").increment(1);
            metrics::gauge!("logger_batch_write_enabled").set(0.0);
        }
    }
}

/// What became of one record.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    Shipped,
    Retry(String),
    Invalid(String),
}

/// What became of a `BatchWriteRecord` call.
pub(crate) enum BatchOutcome {
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

impl FeatureStore {
    pub(crate) async fn put(&self, interaction: &Interaction) -> Outcome {
        metrics::counter!("logger_ship_calls_total", "operation" => "PutRecord").increment(1);
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
                let message = ctx.err().message().unwrap_or("ValidationError");
                if group_missing(message) {
                    Outcome::Retry(message.to_owned())
                } else {
                    Outcome::Invalid(message.to_owned())
                }
            }
            Err(e) => Outcome::Retry(
                aws_sdk_sagemakerfeaturestoreruntime::error::DisplayErrorContext(&e).to_string(),
            ),
        }
    }

    pub(crate) async fn batch_write(&self, chunk: &[(u64, Interaction)]) -> BatchOutcome {
        metrics::counter!("logger_ship_calls_total", "operation" => "BatchWriteRecord")
            .increment(1);
        metrics::histogram!("logger_batch_write_entries").record(chunk.len() as f64);
        let entries = chunk
            .iter()
            .map(|(_, i)| {
                BatchWriteRecordEntry::builder()
                    .feature_group_name(&self.feature_group)
                    .set_record(Some(record::features(i)))
                    .build()
            })
            .collect();
        let result = self
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
                        if code == "ValidationError" && !group_missing(message) {
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
                } else if status == 400
                    && err.code() == Some("ValidationError")
                    && !group_missing(err.message().unwrap_or_default())
                {
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
