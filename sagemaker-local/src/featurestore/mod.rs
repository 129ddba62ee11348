//! The Feature Store runtime (restJson1): PutRecord, BatchWriteRecord (`batch_write`), GetRecord,
//! BatchGetRecord and DeleteRecord. Writes go through the group-committing [`writer::Writer`]; reads see the
//! committed online store. Rows for the offline store are queued durably and written as
//! Parquet by [`offline`].

pub mod batch_write;
pub mod event_time;
pub mod offline;
pub mod record;
pub mod writer;

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    AppState,
    control::{FeatureGroupRecord, TtlDuration, feature_groups},
    db::RECORDS,
    error::AwsError,
};
use record::{FeatureValue, StoredRecord, record_key};

fn group_for_write(state: &AppState, name: &str) -> Result<FeatureGroupRecord, AwsError> {
    // PutRecord and DeleteRecord report an unknown group as ValidationError, as AWS does.
    feature_groups::lookup(state, name)?.ok_or_else(|| {
        AwsError::validation_error(format!(
            "Resource Not Found: Amazon SageMaker can't find a FeatureGroup with name {name}"
        ))
    })
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, AwsError> {
    serde_json::from_slice(body)
        .map_err(|e| AwsError::validation_error(format!("Invalid request body: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutRecordInput {
    record: Vec<FeatureValue>,
    target_stores: Option<Vec<String>>,
    ttl_duration: Option<TtlDuration>,
}

/// Validates one record for a write to `group` and prepares it for the writer; an invalid
/// record comes back with the error.
fn prepare_put(
    state: &AppState,
    group: Arc<FeatureGroupRecord>,
    record: Vec<FeatureValue>,
    target_stores: Option<&[String]>,
    ttl: Option<TtlDuration>,
) -> Result<record::Put, (AwsError, Vec<FeatureValue>)> {
    let checks = || -> Result<_, AwsError> {
        let (online, offline) = record::target_stores(&group, target_stores)?;
        let checked = record::check(&group, &record)?;
        let ttl = match ttl.or(group.online_ttl) {
            Some(ttl) if online || group.online_enabled => Some(ttl.seconds()?),
            Some(_) => {
                return Err(AwsError::validation_error(
                    "TtlDuration needs the OnlineStore.",
                ));
            }
            None => None,
        };
        Ok((checked, online, offline, ttl))
    };
    match checks() {
        Ok((checked, online, offline, ttl)) => Ok(record::Put {
            group,
            record,
            checked,
            online,
            offline,
            ttl,
            received: state.now(),
        }),
        Err(e) => Err((e, record)),
    }
}

pub async fn put_record(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, AwsError> {
    let input: PutRecordInput = parse_body(&body)?;
    let put = prepare_put(
        &state,
        Arc::new(group_for_write(&state, &name)?),
        input.record,
        input.target_stores.as_deref(),
        input.ttl_duration,
    )
    .map_err(|(e, _)| e)?;
    state
        .records
        .run(Box::new(move |txn, seq| {
            record::apply_put(txn, seq, put).map_err(AwsError::from)
        }))
        .await?;
    metrics::counter!("sagemaker_local_records_put_total", "feature_group" => name).increment(1);
    Ok(().into_response())
}

/// Query pairs, percent-decoded; repeated keys kept in order.
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn single<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(pairs: &'a [(String, String)], key: &str) -> Result<&'a str, AwsError> {
    single(pairs, key).ok_or_else(|| AwsError::validation_error(format!("{key} is required.")))
}

fn expiration_enabled(value: Option<&str>) -> Result<bool, AwsError> {
    match value {
        None | Some("Disabled") => Ok(false),
        Some("Enabled") => Ok(true),
        Some(other) => Err(AwsError::validation_error(format!(
            "ExpirationTimeResponse must be Enabled or Disabled, not {other}."
        ))),
    }
}

/// The visible online record, restricted to `names` when given.
fn read_record(
    state: &AppState,
    group: &FeatureGroupRecord,
    id: &str,
    names: &[String],
    with_expiry: bool,
) -> Result<Option<Value>, AwsError> {
    for n in names {
        if group.definition(n).is_none() {
            return Err(AwsError::validation_error(format!(
                "Feature {n} is not defined in FeatureGroup {}.",
                group.name
            )));
        }
    }
    let Some(stored) = state
        .db
        .get::<StoredRecord>(RECORDS, &record_key(&group.name, id))?
    else {
        return Ok(None);
    };
    if !stored.visible(state.now()) {
        return Ok(None);
    }
    let values: Vec<&FeatureValue> = stored
        .values
        .iter()
        .filter(|v| names.is_empty() || names.contains(&v.feature_name))
        .collect();
    let mut out = json!({ "Record": values });
    if with_expiry && let Some(t) = stored.expires_at {
        out["ExpiresAt"] = json!(event_time::format(t));
    }
    Ok(Some(out))
}

pub async fn get_record(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, AwsError> {
    let pairs = query_pairs(query.as_deref());
    let id = required(&pairs, "RecordIdentifierValueAsString")?;
    let names: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "FeatureName")
        .map(|(_, v)| v.clone())
        .collect();
    let with_expiry = expiration_enabled(single(&pairs, "ExpirationTimeResponse"))?;
    let group = feature_groups::lookup(&state, &name)?.ok_or_else(|| {
        feature_groups::not_found(&name).with_status(axum::http::StatusCode::NOT_FOUND)
    })?;
    if !group.online_enabled {
        return Err(AwsError::validation_error(format!(
            "FeatureGroup {} does not have an OnlineStore.",
            group.name
        )));
    }
    let found = read_record(&state, &group, id, &names, with_expiry)?;
    Ok(Json(found.unwrap_or_else(|| json!({}))).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchGetInput {
    identifiers: Vec<BatchIdentifier>,
    expiration_time_response: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchIdentifier {
    feature_group_name: String,
    record_identifiers_value_as_string: Vec<String>,
    #[serde(default)]
    feature_names: Vec<String>,
}

pub async fn batch_get_record(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, AwsError> {
    let input: BatchGetInput = parse_body(&body)?;
    if !(1..=100).contains(&input.identifiers.len()) {
        return Err(AwsError::validation_error(
            "Identifiers must hold 1 to 100 entries.",
        ));
    }
    let with_expiry = expiration_enabled(input.expiration_time_response.as_deref())?;
    let (mut records, mut errors) = (Vec::new(), Vec::new());
    for ident in &input.identifiers {
        if !(1..=100).contains(&ident.record_identifiers_value_as_string.len()) {
            return Err(AwsError::validation_error(
                "RecordIdentifiersValueAsString must hold 1 to 100 values.",
            ));
        }
        let group = feature_groups::lookup(&state, &ident.feature_group_name)?;
        for id in &ident.record_identifiers_value_as_string {
            let error = |code: &str, message: String| {
                json!({
                    "FeatureGroupName": ident.feature_group_name,
                    "RecordIdentifierValueAsString": id,
                    "ErrorCode": code,
                    "ErrorMessage": message,
                })
            };
            let Some(group) = group.as_ref().filter(|g| g.online_enabled) else {
                errors.push(error(
                    "ResourceNotFound",
                    format!(
                        "FeatureGroup {} with an OnlineStore was not found.",
                        ident.feature_group_name
                    ),
                ));
                continue;
            };
            match read_record(&state, group, id, &ident.feature_names, with_expiry) {
                Ok(Some(mut found)) => {
                    found["FeatureGroupName"] = json!(ident.feature_group_name);
                    found["RecordIdentifierValueAsString"] = json!(id);
                    records.push(found);
                }
                Ok(None) => {}
                Err(e) => errors.push(error(e.code, e.message)),
            }
        }
    }
    Ok(
        Json(json!({ "Records": records, "Errors": errors, "UnprocessedIdentifiers": [] }))
            .into_response(),
    )
}

pub async fn delete_record(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, AwsError> {
    let pairs = query_pairs(query.as_deref());
    let id = required(&pairs, "RecordIdentifierValueAsString")?.to_owned();
    let raw_event_time = required(&pairs, "EventTime")?.to_owned();
    let group = group_for_write(&state, &name)?;
    let stores: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "TargetStores")
        .map(|(_, v)| v.clone())
        .collect();
    let (online, offline) =
        record::target_stores(&group, (!stores.is_empty()).then_some(stores.as_slice()))?;
    let hard = match single(&pairs, "DeletionMode") {
        None | Some("SoftDelete") => false,
        Some("HardDelete") => true,
        Some(other) => {
            return Err(AwsError::validation_error(format!(
                "DeletionMode must be SoftDelete or HardDelete, not {other}."
            )));
        }
    };
    let event_time = event_time::parse(group.event_time_type(), &raw_event_time)
        .map_err(|e| AwsError::validation_error(format!("Invalid EventTime: {e}")))?;
    let delete = record::Delete {
        group,
        id,
        event_time,
        raw_event_time,
        hard,
        online,
        offline,
        received: state.now(),
    };
    state
        .records
        .run(Box::new(move |txn, seq| {
            record::apply_delete(txn, seq, delete)
        }))
        .await?;
    Ok(().into_response())
}
