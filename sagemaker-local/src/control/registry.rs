//! Model packages (versioned in a group, or unversioned) with approval status, ClientToken
//! idempotency, filters, sorting and pagination.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{name_from_arn, package_groups::GroupRecord, require_name};
use crate::{
    AppState,
    db::{CLIENT_TOKENS, MODEL_PACKAGE_GROUPS, MODEL_PACKAGES},
    error::AwsError,
};

const APPROVAL: [&str; 3] = ["Approved", "Rejected", "PendingManualApproval"];

/// A model package as stored; `Describe` output is built from it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PackageRecord {
    pub arn: String,
    /// The group name for versioned packages.
    pub name: String,
    pub group: Option<String>,
    pub version: Option<i64>,
    pub description: Option<String>,
    pub created: f64,
    pub last_modified: Option<f64>,
    pub approval_status: String,
    pub approval_description: Option<String>,
    pub inference_specification: Option<Value>,
    pub model_metrics: Option<Value>,
    pub customer_metadata: Option<Map<String, Value>>,
}

impl PackageRecord {
    /// The first container's ModelDataUrl, which the runtime loads.
    pub fn model_data_url(&self) -> Option<&str> {
        self.inference_specification
            .as_ref()?
            .get("Containers")?
            .get(0)?
            .get("ModelDataUrl")?
            .as_str()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreatePackageInput {
    model_package_group_name: Option<String>,
    model_package_name: Option<String>,
    model_package_description: Option<String>,
    model_approval_status: Option<String>,
    inference_specification: Option<Value>,
    model_metrics: Option<Value>,
    customer_metadata_properties: Option<Map<String, Value>>,
    client_token: Option<String>,
}

fn check_approval(status: &str) -> Result<(), AwsError> {
    if APPROVAL.contains(&status) {
        Ok(())
    } else {
        Err(AwsError::validation_exception(format!(
            "1 validation error detected: Value '{status}' at 'modelApprovalStatus' failed to satisfy constraint: \
             Member must satisfy enum value set: [Approved, Rejected, PendingManualApproval]"
        )))
    }
}

fn check_inference_spec(spec: &Value) -> Result<(), AwsError> {
    let containers = spec.get("Containers").and_then(Value::as_array);
    match containers {
        Some(c) if !c.is_empty() && c.len() <= 15 => Ok(()),
        _ => Err(AwsError::validation_exception(
            "InferenceSpecification.Containers must hold 1 to 15 containers",
        )),
    }
}

pub fn create_package(state: &AppState, input: CreatePackageInput) -> Result<Value, AwsError> {
    let approval = input
        .model_approval_status
        .clone()
        .unwrap_or_else(|| "PendingManualApproval".into());
    check_approval(&approval)?;
    if let Some(spec) = &input.inference_specification {
        check_inference_spec(spec)?;
    }
    state.db.write(|txn| {
        if let Some(token) = &input.client_token
            && let Some(arn) = txn.get::<String>(CLIENT_TOKENS, token)?
        {
            return Ok(json!({ "ModelPackageArn": arn }));
        }
        let now = state.now();
        let (name, group, version, arn) =
            match (&input.model_package_group_name, &input.model_package_name) {
                (Some(group), None) => {
                    let key = name_from_arn(group, "model-package-group").to_lowercase();
                    let group: GroupRecord =
                        txn.get(MODEL_PACKAGE_GROUPS, &key)?.ok_or_else(|| {
                            AwsError::validation_exception(format!(
                                "Model Package Group {group} does not exist."
                            ))
                        })?;
                    let packages: Vec<PackageRecord> = txn.list(MODEL_PACKAGES)?;
                    let version = packages
                        .iter()
                        .filter(|p| p.group.as_deref() == Some(&group.name))
                        .count() as i64
                        + 1;
                    let arn = format!("{}/{version}", state.arn("model-package", &group.name));
                    (group.name.clone(), Some(group.name), Some(version), arn)
                }
                (None, Some(name)) => {
                    require_name("modelPackageName", name, &['-'], 63)?;
                    let arn = state.arn("model-package", name);
                    if txn.get::<PackageRecord>(MODEL_PACKAGES, &arn)?.is_some() {
                        return Err(AwsError::validation_exception(format!(
                            "Model Package already exists: {arn}"
                        )));
                    }
                    (name.clone(), None, None, arn)
                }
                _ => {
                    return Err(AwsError::validation_exception(
                        "Exactly one of ModelPackageGroupName and ModelPackageName must be given.",
                    ));
                }
            };
        if let Some(m) = &input.customer_metadata_properties {
            check_metadata(m)?;
        }
        let record = PackageRecord {
            arn: arn.clone(),
            name,
            group,
            version,
            description: input.model_package_description.clone(),
            created: now,
            last_modified: None,
            approval_status: approval.clone(),
            approval_description: None,
            inference_specification: input.inference_specification.clone(),
            model_metrics: input.model_metrics.clone(),
            customer_metadata: input.customer_metadata_properties.clone(),
        };
        txn.put(MODEL_PACKAGES, &arn, &record)?;
        if let Some(token) = &input.client_token {
            txn.put(CLIENT_TOKENS, token, &arn)?;
        }
        Ok(json!({ "ModelPackageArn": arn }))
    })
}

/// Finds a package by ARN, `group/version`, or unversioned name.
pub(super) fn find_package(
    txn_get: impl Fn(&str) -> Result<Option<PackageRecord>, AwsError>,
    state: &AppState,
    key: &str,
) -> Result<PackageRecord, AwsError> {
    let arn = if key.starts_with("arn:") {
        let (head, tail) = key.split_once(":model-package/").unwrap_or((key, ""));
        format!("{head}:model-package/{}", tail.to_lowercase())
    } else {
        state.arn("model-package", key)
    };
    txn_get(&arn)?.ok_or_else(|| {
        AwsError::validation_exception(format!("ModelPackage {key} does not exist."))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdatePackageInput {
    model_package_arn: String,
    model_approval_status: Option<String>,
    approval_description: Option<String>,
    customer_metadata_properties: Option<Map<String, Value>>,
    customer_metadata_properties_to_remove: Option<Vec<String>>,
}

/// SageMaker's limits on a package's CustomerMetadataProperties: at most 50 entries, keys of
/// 1 to 128 characters, string values of at most 256.
fn check_metadata(m: &Map<String, Value>) -> Result<(), AwsError> {
    if m.len() > 50 {
        return Err(AwsError::validation_exception(format!(
            "1 validation error detected: Value at 'customerMetadataProperties' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 50] (it has {})",
            m.len()
        )));
    }
    for (k, v) in m {
        let len = v.as_str().map(|v| v.chars().count());
        if !(1..=128).contains(&k.chars().count()) || len.is_none_or(|l| l > 256) {
            return Err(AwsError::validation_exception(format!(
                "1 validation error detected: Value at 'customerMetadataProperties' failed to satisfy constraint: keys must be 1 to 128 characters and values strings of at most 256 (key {k:?})"
            )));
        }
    }
    Ok(())
}

pub fn update_package(state: &AppState, input: UpdatePackageInput) -> Result<Value, AwsError> {
    if let Some(status) = &input.model_approval_status {
        check_approval(status)?;
    }
    state.db.write(|txn| {
        let mut pkg = find_package(
            |arn| Ok(txn.get(MODEL_PACKAGES, arn)?),
            state,
            &input.model_package_arn,
        )?;
        if let Some(status) = input.model_approval_status {
            pkg.approval_status = status;
        }
        if input.approval_description.is_some() {
            pkg.approval_description = input.approval_description;
        }
        let metadata = pkg.customer_metadata.get_or_insert_with(Map::new);
        metadata.extend(input.customer_metadata_properties.unwrap_or_default());
        for key in input
            .customer_metadata_properties_to_remove
            .unwrap_or_default()
        {
            metadata.remove(&key);
        }
        check_metadata(metadata)?;
        pkg.last_modified = Some(state.now());
        txn.put(MODEL_PACKAGES, &pkg.arn, &pkg)?;
        Ok(json!({ "ModelPackageArn": pkg.arn }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListPackagesInput {
    model_package_group_name: Option<String>,
    model_approval_status: Option<String>,
    model_package_type: Option<String>,
    name_contains: Option<String>,
    creation_time_after: Option<f64>,
    creation_time_before: Option<f64>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

pub fn list_packages(state: &AppState, input: ListPackagesInput) -> Result<Value, AwsError> {
    let max = input.max_results.unwrap_or(10);
    if !(1..=100).contains(&max) {
        return Err(AwsError::validation_exception(
            "MaxResults must be between 1 and 100.",
        ));
    }
    if let Some(status) = &input.model_approval_status {
        check_approval(status)?;
    }
    let group = input
        .model_package_group_name
        .as_deref()
        .map(|g| name_from_arn(g, "model-package-group").to_lowercase());
    let kind = input
        .model_package_type
        .as_deref()
        .unwrap_or(if group.is_some() {
            "Both"
        } else {
            "Unversioned"
        });
    let mut packages: Vec<PackageRecord> = state.db.list(MODEL_PACKAGES)?;
    packages.retain(|p| {
        let versioned = p.group.is_some();
        (match kind {
            "Versioned" => versioned,
            "Unversioned" => !versioned,
            _ => true,
        }) && group
            .as_ref()
            .is_none_or(|g| p.group.as_ref().is_some_and(|pg| pg.to_lowercase() == *g))
            && input
                .model_approval_status
                .as_ref()
                .is_none_or(|s| &p.approval_status == s)
            && input
                .name_contains
                .as_ref()
                .is_none_or(|n| p.name.contains(n.as_str()))
            && input.creation_time_after.is_none_or(|t| p.created > t)
            && input.creation_time_before.is_none_or(|t| p.created < t)
    });
    match input.sort_by.as_deref().unwrap_or("CreationTime") {
        "Name" => {
            packages.sort_by(|a, b| (a.name.as_str(), a.version).cmp(&(b.name.as_str(), b.version)))
        }
        "CreationTime" => packages.sort_by(|a, b| {
            a.created
                .total_cmp(&b.created)
                .then(a.version.cmp(&b.version))
        }),
        other => {
            return Err(AwsError::validation_exception(format!(
                "Invalid SortBy {other}; use Name or CreationTime."
            )));
        }
    }
    match input.sort_order.as_deref().unwrap_or("Ascending") {
        "Ascending" => {}
        "Descending" => packages.reverse(),
        other => {
            return Err(AwsError::validation_exception(format!(
                "Invalid SortOrder {other}; use Ascending or Descending."
            )));
        }
    }
    let start = match input.next_token.as_deref() {
        None | Some("") => 0,
        Some(token) => token
            .strip_prefix("page-")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| AwsError::validation_exception("Invalid pagination token"))?,
    };
    let page: Vec<Value> = packages.iter().skip(start).take(max).map(summary).collect();
    let mut out = json!({ "ModelPackageSummaryList": page });
    if start + max < packages.len() {
        out["NextToken"] = json!(format!("page-{}", start + max));
    }
    Ok(out)
}

fn summary(p: &PackageRecord) -> Value {
    let mut v = json!({
        "ModelPackageName": p.name,
        "ModelPackageArn": p.arn,
        "CreationTime": p.created,
        "ModelPackageStatus": "Completed",
        "ModelApprovalStatus": p.approval_status,
    });
    if let Some(g) = &p.group {
        v["ModelPackageGroupName"] = json!(g);
        v["ModelPackageVersion"] = json!(p.version);
    }
    if let Some(d) = &p.description {
        v["ModelPackageDescription"] = json!(d);
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribePackageInput {
    model_package_name: String,
}

pub fn describe_package(state: &AppState, input: DescribePackageInput) -> Result<Value, AwsError> {
    let p = find_package(
        |arn| Ok(state.db.get(MODEL_PACKAGES, arn)?),
        state,
        &input.model_package_name,
    )?;
    let mut v = summary(&p);
    let obj = v.as_object_mut().expect("summary is an object");
    obj.insert(
        "ModelPackageStatusDetails".into(),
        json!({ "ValidationStatuses": [] }),
    );
    for (key, value) in [
        ("InferenceSpecification", p.inference_specification.clone()),
        ("ModelMetrics", p.model_metrics.clone()),
        (
            "ApprovalDescription",
            p.approval_description.clone().map(Value::from),
        ),
        ("LastModifiedTime", p.last_modified.map(Value::from)),
        (
            "CustomerMetadataProperties",
            p.customer_metadata.clone().map(Value::Object),
        ),
    ] {
        if let Some(value) = value {
            obj.insert(key.into(), value);
        }
    }
    Ok(v)
}
