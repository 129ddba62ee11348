//! Feature groups: the schema (identifier, event time, typed features) and where records
//! go (online store with optional TTL, offline store in the Glue layout).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{name_from_arn, require_name};
use crate::{
    AppState,
    db::{FEATURE_GROUPS, RECORDS},
    error::AwsError,
};

const RESERVED: [&str; 3] = ["is_deleted", "write_time", "api_invocation_time"];

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureType {
    Integral,
    Fractional,
    String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct FeatureDefinition {
    pub feature_name: String,
    pub feature_type: FeatureType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection_type: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct TtlDuration {
    pub unit: TtlUnit,
    pub value: i64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub enum TtlUnit {
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl TtlDuration {
    pub fn seconds(self) -> Result<f64, AwsError> {
        if self.value < 1 {
            return Err(AwsError::validation_error(
                "TtlDuration.Value must be at least 1.",
            ));
        }
        let unit = match self.unit {
            TtlUnit::Seconds => 1,
            TtlUnit::Minutes => 60,
            TtlUnit::Hours => 3600,
            TtlUnit::Days => 86_400,
            TtlUnit::Weeks => 604_800,
        };
        Ok((self.value * unit) as f64)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct FeatureGroupRecord {
    pub name: String,
    pub arn: String,
    pub record_identifier: String,
    pub event_time_feature: String,
    pub definitions: Vec<FeatureDefinition>,
    pub online_enabled: bool,
    pub online_ttl: Option<TtlDuration>,
    pub online_store_config: Option<Value>,
    /// As described, with ResolvedOutputS3Uri and DataCatalogConfig filled in.
    pub offline_store_config: Option<Value>,
    pub role_arn: Option<String>,
    pub description: Option<String>,
    pub created: f64,
}

impl FeatureGroupRecord {
    pub fn definition(&self, name: &str) -> Option<&FeatureDefinition> {
        self.definitions.iter().find(|d| d.feature_name == name)
    }

    pub fn event_time_type(&self) -> FeatureType {
        self.definition(&self.event_time_feature)
            .map_or(FeatureType::String, |d| d.feature_type)
    }

    /// `s3://.../data`, where offline rows are written, when the offline store is on.
    pub fn resolved_output_uri(&self) -> Option<&str> {
        self.offline_store_config
            .as_ref()?
            .get("S3StorageConfig")?
            .get("ResolvedOutputS3Uri")?
            .as_str()
    }
}

pub fn not_found(name: &str) -> AwsError {
    AwsError::resource_not_found(format!(
        "Resource Not Found: Amazon SageMaker can't find a FeatureGroup with name {name}"
    ))
}

/// The stored group for a name or ARN.
pub fn lookup(state: &AppState, name_or_arn: &str) -> Result<Option<FeatureGroupRecord>, AwsError> {
    Ok(state
        .db
        .get(FEATURE_GROUPS, name_from_arn(name_or_arn, "feature-group"))?)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateInput {
    feature_group_name: String,
    record_identifier_feature_name: String,
    event_time_feature_name: String,
    feature_definitions: Vec<FeatureDefinition>,
    online_store_config: Option<Value>,
    offline_store_config: Option<Value>,
    role_arn: Option<String>,
    description: Option<String>,
}

pub fn create(state: &AppState, input: CreateInput) -> Result<Value, AwsError> {
    let name = input.feature_group_name.clone();
    require_name("featureGroupName", &name, &['-', '_'], 64)?;
    let defs = &input.feature_definitions;
    if defs.is_empty() || defs.len() > 2500 {
        return Err(AwsError::validation_exception(
            "FeatureDefinitions must hold 1 to 2500 features.",
        ));
    }
    for (i, d) in defs.iter().enumerate() {
        require_name("featureName", &d.feature_name, &['-', '_'], 64)?;
        if RESERVED.contains(&d.feature_name.as_str()) {
            return Err(AwsError::validation_exception(format!(
                "Feature name {} is reserved.",
                d.feature_name
            )));
        }
        if defs[..i].iter().any(|o| o.feature_name == d.feature_name) {
            return Err(AwsError::validation_exception(format!(
                "Duplicate feature name {}.",
                d.feature_name
            )));
        }
    }
    let find = |n: &str| defs.iter().find(|d| d.feature_name == n);
    if find(&input.record_identifier_feature_name).is_none() {
        return Err(AwsError::validation_exception(format!(
            "The RecordIdentifierFeatureName {} is not defined in FeatureDefinitions.",
            input.record_identifier_feature_name
        )));
    }
    match find(&input.event_time_feature_name) {
        None => {
            return Err(AwsError::validation_exception(format!(
                "The EventTimeFeatureName {} is not defined in FeatureDefinitions.",
                input.event_time_feature_name
            )));
        }
        Some(d) if d.feature_type == FeatureType::Integral => {
            return Err(AwsError::validation_exception(
                "The EventTimeFeature must be of type Fractional or String.",
            ));
        }
        _ => {}
    }
    if input.online_store_config.is_none() && input.offline_store_config.is_none() {
        return Err(AwsError::validation_exception(
            "At least one of OnlineStoreConfig and OfflineStoreConfig is required.",
        ));
    }
    let online_enabled = input.online_store_config.as_ref().is_some_and(|c| {
        c.get("EnableOnlineStore")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    });
    let online_ttl = match input
        .online_store_config
        .as_ref()
        .and_then(|c| c.get("TtlDuration"))
    {
        Some(v) => {
            let ttl: TtlDuration = serde_json::from_value(v.clone()).map_err(|e| {
                AwsError::validation_exception(format!("OnlineStoreConfig.TtlDuration: {e}"))
            })?;
            ttl.seconds()
                .map_err(|e| AwsError::validation_exception(e.message))?;
            Some(ttl)
        }
        None => None,
    };
    let created = state.now();
    let offline_store_config = input
        .offline_store_config
        .clone()
        .map(|c| resolve_offline(state, &name, created, c))
        .transpose()?;
    let arn = state.arn("feature-group", &name);
    let record = FeatureGroupRecord {
        name: name.clone(),
        arn: arn.clone(),
        record_identifier: input.record_identifier_feature_name,
        event_time_feature: input.event_time_feature_name,
        definitions: input.feature_definitions,
        online_enabled,
        online_ttl,
        online_store_config: input.online_store_config,
        offline_store_config,
        role_arn: input.role_arn,
        description: input.description,
        created,
    };
    state.db.write(|txn| {
        if txn.get::<FeatureGroupRecord>(FEATURE_GROUPS, &name)?.is_some() {
            return Err(AwsError::resource_in_use(format!(
                "Resource Already Exists: FeatureGroup with name {name} already exists. Choose a different name."
            )));
        }
        txn.put(FEATURE_GROUPS, &name, &record)?;
        Ok(json!({ "FeatureGroupArn": arn }))
    })
}

/// Fills in where the offline store writes, as SageMaker does.
fn resolve_offline(
    state: &AppState,
    name: &str,
    created: f64,
    mut config: Value,
) -> Result<Value, AwsError> {
    let uri = config
        .pointer("/S3StorageConfig/S3Uri")
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("s3://") && u.len() > 5)
        .ok_or_else(|| {
            AwsError::validation_exception(
                "OfflineStoreConfig.S3StorageConfig.S3Uri must be an s3:// URI.",
            )
        })?
        .trim_end_matches('/')
        .to_owned();
    let epoch = created as i64;
    let s = &state.settings;
    let resolved = format!(
        "{uri}/{}/sagemaker/{}/offline-store/{name}-{epoch}/data",
        s.account_id, s.region
    );
    // The offline store writes only under the data dir's S3 folder: a URI whose bucket or
    // prefix would lead elsewhere (`s3://b//etc`, `..`) is refused here, not at the first flush.
    crate::runtime::artifact::resolve_s3(&s.data_dir, &format!("{resolved}/x.parquet")).map_err(
        |e| {
            AwsError::validation_exception(format!("OfflineStoreConfig.S3StorageConfig.S3Uri: {e}"))
        },
    )?;
    config["S3StorageConfig"]["ResolvedOutputS3Uri"] = json!(resolved);
    let disable_glue = config
        .get("DisableGlueTableCreation")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if config.get("DataCatalogConfig").is_none() && !disable_glue {
        config["DataCatalogConfig"] = json!({
            "TableName": format!("{}_{epoch}", name.replace('-', "_")),
            "Catalog": "AwsDataCatalog",
            "Database": "sagemaker_featurestore",
        });
    }
    Ok(config)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NameInput {
    feature_group_name: String,
}

pub fn describe(state: &AppState, input: NameInput) -> Result<Value, AwsError> {
    let g = lookup(state, &input.feature_group_name)?
        .ok_or_else(|| not_found(&input.feature_group_name))?;
    let mut v = json!({
        "FeatureGroupArn": g.arn,
        "FeatureGroupName": g.name,
        "RecordIdentifierFeatureName": g.record_identifier,
        "EventTimeFeatureName": g.event_time_feature,
        "FeatureDefinitions": g.definitions,
        "CreationTime": g.created,
        "FeatureGroupStatus": "Created",
        "ThroughputConfig": { "ThroughputMode": "OnDemand" },
        "NextToken": "",
    });
    if let Some(c) = g.online_store_config {
        v["OnlineStoreConfig"] = c;
    }
    if let Some(c) = g.offline_store_config {
        v["OfflineStoreConfig"] = c;
        v["OfflineStoreStatus"] = json!({ "Status": "Active" });
    }
    if let Some(r) = g.role_arn {
        v["RoleArn"] = json!(r);
    }
    if let Some(d) = g.description {
        v["Description"] = json!(d);
    }
    Ok(v)
}

pub fn delete(state: &AppState, input: NameInput) -> Result<Value, AwsError> {
    let name = name_from_arn(&input.feature_group_name, "feature-group").to_owned();
    state.db.write(|txn| {
        if !txn.remove(FEATURE_GROUPS, &name)? {
            return Err(not_found(&name));
        }
        let prefix = format!("{name}\0");
        for key in txn.keys_with_prefix(RECORDS, &prefix)? {
            txn.remove(RECORDS, &key)?;
        }
        Ok(json!({}))
    })
}
