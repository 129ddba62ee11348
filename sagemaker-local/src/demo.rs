//! The demo world of the design documents, created through the same operations the wire
//! uses: package group `my-mlops-prod-pkg` with an Approved v1 (the churn model in
//! `demo/`), endpoint `my-mlops-prod-endpoint` serving it, the training feature group
//! filled with the demo customers, and an empty user-interactions feature group.
//! Idempotent: what already exists is left alone.

use serde_json::{Value, json};

use crate::{
    AppState,
    control::{self, FeatureGroupRecord},
    db::{ENDPOINTS, FEATURE_GROUPS, MODEL_PACKAGE_GROUPS},
    error::AwsError,
    featurestore::record::{self, FeatureValue},
    runtime::artifact,
};

pub use names::{
    ENDPOINT_NAME, INTERACTIONS_FEATURE_GROUP, MODEL_PACKAGE_GROUP, TRAINING_FEATURE_GROUP,
};
pub const XGBOOST_IMAGE: &str =
    "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1";
pub const MODEL_DATA_URL: &str = "s3://my-mlops-artifacts/models/churn-v1/model.tar.gz";

const MODEL_JSON: &[u8] = include_bytes!("../../demo/model/xgboost-model.json");
const CUSTOMERS_CSV: &str = include_str!("../../demo/data/customers.csv");
/// The demo customers' event time: when the training snapshot was taken.
const SNAPSHOT_TIME: f64 = 1_767_225_600.0; // 2026-01-01T00:00:00Z

fn op(state: &AppState, name: &str, input: Value) -> Result<Value, AwsError> {
    control::dispatch(state, name, input)
}

/// The demo model's training baseline per feature (the customers' file it was trained on), in
/// the format the pipeline's Train step writes: what the logger measures drift against.
fn baselines(features: &[&str]) -> Vec<(String, String)> {
    let mut lines = CUSTOMERS_CSV.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    features
        .iter()
        .filter_map(|f| {
            let col = header.iter().position(|h| h == f)?;
            let values = rows
                .iter()
                .map(|r| r.get(col).and_then(|v| v.trim().parse::<f64>().ok()));
            let b = drift::Baseline::from_values(values, drift::baseline::BINS)?;
            Some((f.to_string(), b.encode()))
        })
        .collect()
}

pub fn bootstrap(state: &AppState) -> Result<(), AwsError> {
    let path = artifact::resolve_s3(&state.settings.data_dir, MODEL_DATA_URL)
        .map_err(AwsError::internal)?;
    if !path.exists() {
        artifact::write_tar_gz(&path, MODEL_JSON)
            .map_err(|e| AwsError::internal(format!("{}: {e}", path.display())))?;
    }
    if state
        .db
        .get::<Value>(MODEL_PACKAGE_GROUPS, MODEL_PACKAGE_GROUP)?
        .is_none()
    {
        op(
            state,
            "CreateModelPackageGroup",
            json!({
                "ModelPackageGroupName": MODEL_PACKAGE_GROUP,
                "ModelPackageGroupDescription": "Customer churn classifier (demo)",
            }),
        )?;
        // The columns the model was trained on, in order: the customers' file less its id
        // and label, as the pipeline's Train step records them.
        let header = CUSTOMERS_CSV.lines().next().unwrap_or_default();
        let features: Vec<&str> = header
            .split(',')
            .filter(|c| !matches!(*c, "customer_id" | "churned"))
            .collect();
        let mut metadata = json!({
            "features": features.join(","),
            "label": "churned",
            "training_feature_group": TRAINING_FEATURE_GROUP,
            "source_commit": "demo",
        });
        for (name, baseline) in baselines(&features) {
            metadata[format!("{}{name}", drift::baseline::KEY_PREFIX)] = baseline.into();
        }
        let arn = op(
            state,
            "CreateModelPackage",
            json!({
                "ModelPackageGroupName": MODEL_PACKAGE_GROUP,
                "ModelPackageDescription": "churn v1, trained by demo/train_demo.py",
                "ModelApprovalStatus": "Approved",
                "InferenceSpecification": {
                    "Containers": [{ "Image": XGBOOST_IMAGE, "ModelDataUrl": MODEL_DATA_URL }],
                    "SupportedContentTypes": ["text/csv"],
                    "SupportedResponseMIMETypes": ["text/csv", "application/json"],
                },
                "CustomerMetadataProperties": metadata,
            }),
        )?["ModelPackageArn"]
            .clone();
        op(
            state,
            "CreateModel",
            json!({
                "ModelName": "my-mlops-prod-model-v1",
                "PrimaryContainer": { "ModelPackageName": arn },
                "ExecutionRoleArn": format!("arn:aws:iam::{}:role/my-mlops-sagemaker-execution", state.settings.account_id),
            }),
        )?;
        op(
            state,
            "CreateEndpointConfig",
            json!({
                "EndpointConfigName": "my-mlops-prod-endpoint-config-v1",
                "ProductionVariants": [{
                    "VariantName": "AllTraffic",
                    "ModelName": "my-mlops-prod-model-v1",
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                    "InitialVariantWeight": 1.0,
                }],
            }),
        )?;
    }
    if state.db.get::<Value>(ENDPOINTS, ENDPOINT_NAME)?.is_none() {
        op(
            state,
            "CreateEndpoint",
            json!({
                "EndpointName": ENDPOINT_NAME,
                "EndpointConfigName": "my-mlops-prod-endpoint-config-v1",
            }),
        )?;
    }
    // The demo world starts InService: finish the creation now rather than after the delay.
    if let Some(ep) = state
        .db
        .get::<control::EndpointRecord>(ENDPOINTS, ENDPOINT_NAME)?
        && let Some(transition) = ep.transition
    {
        control::finish_transition(state, ENDPOINT_NAME, &transition)?;
    }
    if state
        .db
        .get::<Value>(FEATURE_GROUPS, TRAINING_FEATURE_GROUP)?
        .is_none()
    {
        create_training_group(state)?;
    }
    if state
        .db
        .get::<Value>(FEATURE_GROUPS, INTERACTIONS_FEATURE_GROUP)?
        .is_none()
    {
        create_interactions_group(state)?;
    }
    Ok(())
}

fn stores(bucket_prefix: &str) -> (Value, Value) {
    (
        json!({ "EnableOnlineStore": true }),
        json!({ "S3StorageConfig": { "S3Uri": format!("s3://my-mlops-feature-store/{bucket_prefix}") } }),
    )
}

fn create_training_group(state: &AppState) -> Result<(), AwsError> {
    let mut lines = CUSTOMERS_CSV.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let integral = [
        "age",
        "tenure_months",
        "support_calls",
        "num_products",
        "late_payments",
        "has_contract",
        "churned",
    ];
    let mut defs = vec![
        json!({"FeatureName": "customer_id", "FeatureType": "String"}),
        json!({"FeatureName": "event_time", "FeatureType": "String"}),
    ];
    for name in &header[1..] {
        let ty = if integral.contains(name) {
            "Integral"
        } else {
            "Fractional"
        };
        defs.push(json!({ "FeatureName": name, "FeatureType": ty }));
    }
    let (online, offline) = stores("training");
    op(
        state,
        "CreateFeatureGroup",
        json!({
            "FeatureGroupName": TRAINING_FEATURE_GROUP,
            "RecordIdentifierFeatureName": "customer_id",
            "EventTimeFeatureName": "event_time",
            "FeatureDefinitions": defs,
            "OnlineStoreConfig": online,
            "OfflineStoreConfig": offline,
            "Description": "Demo training data: customer churn (demo/data/customers.csv)",
        }),
    )?;
    let group: std::sync::Arc<FeatureGroupRecord> = std::sync::Arc::new(
        state
            .db
            .get(FEATURE_GROUPS, TRAINING_FEATURE_GROUP)?
            .expect("just created"),
    );
    let event_time = crate::featurestore::event_time::format(SNAPSHOT_TIME);
    let mut puts = Vec::new();
    for line in lines {
        let mut values = vec![FeatureValue {
            feature_name: "event_time".into(),
            value_as_string: Some(event_time.clone()),
            value_as_string_list: None,
        }];
        for (name, value) in header.iter().zip(line.split(',')) {
            if !value.is_empty() {
                values.push(FeatureValue {
                    feature_name: name.to_string(),
                    value_as_string: Some(value.to_owned()),
                    value_as_string_list: None,
                });
            }
        }
        let checked = record::check(&group, &values)?;
        puts.push(record::Put {
            group: std::sync::Arc::clone(&group),
            record: values,
            checked,
            online: true,
            offline: true,
            ttl: None,
            received: state.now(),
        });
    }
    let count = puts.len();
    state.records.run_blocking(Box::new(move |txn, seq| {
        for put in puts {
            record::apply_put(txn, seq, put)?;
        }
        Ok(())
    }))?;
    tracing::info!(
        records = count,
        group = TRAINING_FEATURE_GROUP,
        "demo training data loaded"
    );
    Ok(())
}

fn create_interactions_group(state: &AppState) -> Result<(), AwsError> {
    let features = [
        ("interaction_id", "String"),
        ("event_time", "String"),
        ("client_id", "String"),
        ("source", "String"),
        ("features_csv", "String"),
        ("prediction", "Fractional"),
        ("scores_csv", "String"),
        ("model_package_arn", "String"),
        ("model_package_version", "Integral"),
        ("endpoint_name", "String"),
        ("variant_name", "String"),
        ("latency_ms", "Fractional"),
        // Shadow records: the live interaction a candidate's answer mirrors.
        ("shadow_of", "String"),
        ("live_prediction", "Fractional"),
        ("live_model_package_version", "Integral"),
    ];
    let defs: Vec<Value> = features
        .iter()
        .map(|(n, t)| json!({ "FeatureName": n, "FeatureType": t }))
        .collect();
    let (online, offline) = stores("interactions");
    op(
        state,
        "CreateFeatureGroup",
        json!({
            "FeatureGroupName": INTERACTIONS_FEATURE_GROUP,
            "RecordIdentifierFeatureName": "interaction_id",
            "EventTimeFeatureName": "event_time",
            "FeatureDefinitions": defs,
            "OnlineStoreConfig": online,
            "OfflineStoreConfig": offline,
            "Description": "Every prediction served by the inference service",
        }),
    )?;
    Ok(())
}
