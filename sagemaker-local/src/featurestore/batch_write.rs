//! BatchWriteRecord: 1 to 25 records in one call and one commit, each entry validated as
//! PutRecord validates a record; invalid entries come back in `Errors` with their `Entry`.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{group_for_write, parse_body, prepare_put, record};
use crate::{
    AppState,
    control::{FeatureGroupRecord, TtlDuration},
    error::AwsError,
};
use record::FeatureValue;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchWriteInput {
    entries: Vec<BatchWriteEntry>,
    ttl_duration: Option<TtlDuration>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct BatchWriteEntry {
    feature_group_name: String,
    record: Vec<FeatureValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_stores: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_duration: Option<TtlDuration>,
}

/// The most entries one BatchWriteRecord call takes, as on AWS.
pub const MAX_BATCH_WRITE: usize = 25;

/// Writes many records in one call (and one commit); an entry that fails validation is
/// reported in `Errors` with its `Entry`, the others are written.
pub async fn batch_write_record(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, AwsError> {
    state.settings.authorize("BatchWriteRecord")?;
    let input: BatchWriteInput = parse_body(&body)?;
    if !(1..=MAX_BATCH_WRITE).contains(&input.entries.len()) {
        return Err(AwsError::validation_error(format!(
            "Entries must hold 1 to {MAX_BATCH_WRITE} entries."
        )));
    }
    let input_len = input.entries.len();
    // Each group is looked up once per call.
    let mut groups: HashMap<String, Result<Arc<FeatureGroupRecord>, AwsError>> = Default::default();
    let (mut puts, mut errors) = (Vec::new(), Vec::new());
    for entry in input.entries {
        let group = groups
            .entry(entry.feature_group_name.clone())
            .or_insert_with(|| group_for_write(&state, &entry.feature_group_name).map(Arc::new))
            .clone();
        let prepared = match group {
            Ok(group) => prepare_put(
                &state,
                group,
                entry.record,
                entry.target_stores.as_deref(),
                entry.ttl_duration.or(input.ttl_duration),
            ),
            Err(e) => Err((e, entry.record)),
        };
        match prepared {
            Ok(put) => puts.push(put),
            Err((e, record)) => {
                let echoed = BatchWriteEntry { record, ..entry };
                errors.push(
                    json!({ "Entry": echoed, "ErrorCode": e.code, "ErrorMessage": e.message }),
                )
            }
        }
    }
    let written = puts.len() as u64;
    metrics::histogram!("sagemaker_local_batch_write_entries").record(input_len as f64);
    if !puts.is_empty() {
        state
            .records
            .run(Box::new(move |txn, seq| {
                for put in puts {
                    record::apply_put(txn, seq, put)?;
                }
                Ok(())
            }))
            .await?;
    }
    metrics::counter!("sagemaker_local_records_put_total", "feature_group" => "batch")
        .increment(written);
    Ok(Json(json!({ "Errors": errors, "UnprocessedEntries": [] })).into_response())
}
