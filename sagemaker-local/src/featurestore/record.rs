//! Record semantics: validation against the group's schema, "newest EventTime wins" in the
//! online store, historic writes to the offline store only, TTL, and deletes.

use serde::{Deserialize, Serialize};

use super::{event_time, writer::pending_key};
use crate::{
    control::{FeatureGroupRecord, FeatureType},
    db::{DbError, OFFLINE_PENDING, RECORDS, Write},
    error::AwsError,
};

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct FeatureValue {
    pub feature_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_as_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_as_string_list: Option<Vec<String>>,
}

/// An online record. `values` is empty once soft-deleted (the EventTime is kept).
#[derive(Serialize, Deserialize, Debug)]
pub struct StoredRecord {
    pub event_time: f64,
    pub values: Vec<FeatureValue>,
    pub expires_at: Option<f64>,
}

impl StoredRecord {
    pub fn visible(&self, now: f64) -> bool {
        !self.values.is_empty() && self.expires_at.is_none_or(|t| t > now)
    }
}

/// A row waiting for the offline store.
#[derive(Serialize, Deserialize, Debug)]
pub struct PendingRow {
    pub group: String,
    pub event_time: f64,
    pub api_invocation_time: f64,
    pub is_deleted: bool,
    pub values: Vec<FeatureValue>,
}

pub fn record_key(group: &str, id: &str) -> String {
    format!("{group}\0{id}")
}

/// Which stores a write goes to: the requested ones, else all the group has enabled.
pub fn target_stores(
    group: &FeatureGroupRecord,
    requested: Option<&[String]>,
) -> Result<(bool, bool), AwsError> {
    let offline_enabled = group.resolved_output_uri().is_some();
    let Some(requested) = requested else {
        return Ok((group.online_enabled, offline_enabled));
    };
    if requested.is_empty() {
        return Err(AwsError::validation_error(
            "TargetStores must name at least one store.",
        ));
    }
    let (mut online, mut offline) = (false, false);
    for store in requested {
        match store.as_str() {
            "OnlineStore" if group.online_enabled => online = true,
            "OfflineStore" if offline_enabled => offline = true,
            "OnlineStore" | "OfflineStore" => {
                return Err(AwsError::validation_error(format!(
                    "{store} is not enabled for FeatureGroup {}.",
                    group.name
                )));
            }
            other => {
                return Err(AwsError::validation_error(format!(
                    "Value '{other}' at 'targetStores' failed to satisfy constraint: Member must satisfy enum value set: [OnlineStore, OfflineStore]"
                )));
            }
        }
    }
    Ok((online, offline))
}

/// A record that passed validation: its identifier and EventTime.
pub struct Checked {
    pub id: String,
    pub event_time: f64,
}

/// Checks a record against the group's schema; every error names the feature.
pub fn check(group: &FeatureGroupRecord, record: &[FeatureValue]) -> Result<Checked, AwsError> {
    if record.is_empty() || record.len() > 2500 {
        return Err(AwsError::validation_error(
            "Record must hold 1 to 2500 feature values.",
        ));
    }
    for (i, value) in record.iter().enumerate() {
        let name = &value.feature_name;
        let def = group.definition(name).ok_or_else(|| {
            AwsError::validation_error(format!(
                "Feature {name} is not defined in FeatureGroup {}.",
                group.name
            ))
        })?;
        if record[..i].iter().any(|o| &o.feature_name == name) {
            return Err(AwsError::validation_error(format!(
                "Feature {name} appears more than once in the record."
            )));
        }
        let items: Vec<&String> = match (
            &value.value_as_string,
            &value.value_as_string_list,
            &def.collection_type,
        ) {
            (Some(v), None, None) => vec![v],
            (None, Some(list), Some(_)) => list.iter().collect(),
            (None, Some(_), None) => {
                return Err(AwsError::validation_error(format!(
                    "Feature {name} is not a collection: use ValueAsString."
                )));
            }
            (Some(_), None, Some(_)) => {
                return Err(AwsError::validation_error(format!(
                    "Feature {name} is a collection: use ValueAsStringList."
                )));
            }
            _ => {
                return Err(AwsError::validation_error(format!(
                    "Feature {name} needs exactly one of ValueAsString and ValueAsStringList."
                )));
            }
        };
        for item in items {
            let ok = match def.feature_type {
                FeatureType::Integral => item.trim().parse::<i64>().is_ok(),
                FeatureType::Fractional => item.trim().parse::<f64>().is_ok(),
                FeatureType::String => item.chars().count() <= 358_400,
            };
            if !ok {
                return Err(AwsError::validation_error(format!(
                    "Failed to parse value '{item}' of feature {name} as type {:?}.",
                    def.feature_type
                )));
            }
        }
    }
    let find = |n: &str| {
        record
            .iter()
            .find(|v| v.feature_name == n)
            .and_then(|v| v.value_as_string.clone())
    };
    let id = find(&group.record_identifier).ok_or_else(|| {
        AwsError::validation_error(format!(
            "The record identifier feature {} is missing from the record.",
            group.record_identifier
        ))
    })?;
    let raw_time = find(&group.event_time_feature).ok_or_else(|| {
        AwsError::validation_error(format!(
            "The event time feature {} is missing from the record.",
            group.event_time_feature
        ))
    })?;
    let event_time = event_time::parse(group.event_time_type(), &raw_time).map_err(|e| {
        AwsError::validation_error(format!(
            "Invalid value for event time feature {}: {e}",
            group.event_time_feature
        ))
    })?;
    Ok(Checked { id, event_time })
}

pub struct Put {
    /// Shared by every record of a BatchWriteRecord call for the same group.
    pub group: std::sync::Arc<FeatureGroupRecord>,
    pub record: Vec<FeatureValue>,
    pub checked: Checked,
    pub online: bool,
    pub offline: bool,
    /// Seconds, from the request or the group's OnlineStoreConfig.
    pub ttl: Option<f64>,
    pub received: f64,
}

/// Applies a checked put inside the writer's transaction.
pub fn apply_put(txn: &mut Write, seq: &mut u64, put: Put) -> Result<(), DbError> {
    let key = record_key(&put.group.name, &put.checked.id);
    if put.online {
        let stored: Option<StoredRecord> = txn.get(RECORDS, &key)?;
        let newer = stored.is_none_or(|s| {
            put.checked.event_time > s.event_time || s.expires_at.is_some_and(|t| t <= put.received)
        });
        if newer {
            let record = StoredRecord {
                event_time: put.checked.event_time,
                values: put.record.clone(),
                expires_at: put.ttl.map(|ttl| put.checked.event_time + ttl),
            };
            txn.put(RECORDS, &key, &record)?;
        }
    }
    if put.offline {
        append_offline(
            txn,
            seq,
            &put.group.name,
            put.checked.event_time,
            put.received,
            false,
            put.record,
        )?;
    }
    Ok(())
}

fn append_offline(
    txn: &mut Write,
    seq: &mut u64,
    group: &str,
    event_time: f64,
    received: f64,
    is_deleted: bool,
    values: Vec<FeatureValue>,
) -> Result<(), DbError> {
    let row = PendingRow {
        group: group.to_owned(),
        event_time,
        api_invocation_time: received,
        is_deleted,
        values,
    };
    txn.put(OFFLINE_PENDING, &pending_key(*seq), &row)?;
    *seq += 1;
    Ok(())
}

pub struct Delete {
    pub group: FeatureGroupRecord,
    pub id: String,
    pub event_time: f64,
    pub raw_event_time: String,
    pub hard: bool,
    pub online: bool,
    pub offline: bool,
    pub received: f64,
}

/// SoftDelete nulls the online record (keeping its EventTime); HardDelete removes it.
/// A delete not later than the stored EventTime: SoftDelete leaves the record, HardDelete
/// is refused. Both append an `is_deleted` marker to the offline store.
pub fn apply_delete(txn: &mut Write, seq: &mut u64, d: Delete) -> Result<(), AwsError> {
    let key = record_key(&d.group.name, &d.id);
    let stored: Option<StoredRecord> = txn.get(RECORDS, &key)?;
    let later = stored.as_ref().is_none_or(|s| d.event_time > s.event_time);
    if d.hard && !later {
        return Err(AwsError::validation_error(format!(
            "HardDelete EventTime {} is not later than the record's EventTime.",
            d.raw_event_time
        )));
    }
    if d.online && later && stored.is_some() {
        if d.hard {
            txn.remove(RECORDS, &key)?;
        } else {
            txn.put(
                RECORDS,
                &key,
                &StoredRecord {
                    event_time: d.event_time,
                    values: Vec::new(),
                    expires_at: None,
                },
            )?;
        }
    }
    if d.offline {
        let marker = vec![
            FeatureValue {
                feature_name: d.group.record_identifier.clone(),
                value_as_string: Some(d.id.clone()),
                value_as_string_list: None,
            },
            FeatureValue {
                feature_name: d.group.event_time_feature.clone(),
                value_as_string: Some(d.raw_event_time.clone()),
                value_as_string_list: None,
            },
        ];
        append_offline(
            txn,
            seq,
            &d.group.name,
            d.event_time,
            d.received,
            true,
            marker,
        )?;
    }
    Ok(())
}
