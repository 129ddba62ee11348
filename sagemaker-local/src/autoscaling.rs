//! Application Auto Scaling for SageMaker variants, the calls Deploy makes, as boto3 and
//! aws-sdk-rust send them (awsJson1_1, `X-Amz-Target: AnyScaleFrontendService.<Op>`, signed for
//! `application-autoscaling`): register and deregister a variant's instance count as a
//! scalable target, put and delete a target-tracking policy on it, describe both. The
//! `sagemaker` namespace only. Nothing scales here (there are no instances): what matters is
//! the bookkeeping, and that SageMaker refuses an `UpdateEndpoint` that would remove a
//! registered variant (`control::endpoints::update`).

use std::sync::Arc;

use axum::{
    body::Bytes,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    AppState,
    control::EndpointRecord,
    db::{DbError, ENDPOINTS, SCALABLE_TARGETS, SCALING_POLICIES, Write},
    error::AwsError,
};

/// The operations answered (metric labels come from this list only).
pub const OPERATIONS: &[&str] = &[
    "RegisterScalableTarget",
    "DeregisterScalableTarget",
    "DescribeScalableTargets",
    "PutScalingPolicy",
    "DeleteScalingPolicy",
    "DescribeScalingPolicies",
];

const NAMESPACE: &str = "sagemaker";
const DIMENSION: &str = "sagemaker:variant:DesiredInstanceCount";

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "PascalCase")]
struct ScalableTarget {
    service_namespace: String,
    resource_id: String,
    scalable_dimension: String,
    min_capacity: i64,
    max_capacity: i64,
    #[serde(rename = "RoleARN", default, skip_serializing_if = "Option::is_none")]
    role_arn: Option<String>,
    creation_time: f64,
    #[serde(rename = "ScalableTargetARN")]
    scalable_target_arn: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "PascalCase")]
struct ScalingPolicy {
    #[serde(rename = "PolicyARN")]
    policy_arn: String,
    policy_name: String,
    service_namespace: String,
    resource_id: String,
    scalable_dimension: String,
    policy_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_tracking_scaling_policy_configuration: Option<Value>,
    alarms: Vec<Value>,
    creation_time: f64,
}

fn target_key(resource_id: &str) -> String {
    format!("{NAMESPACE}\0{resource_id}\0{DIMENSION}")
}

fn not_found(message: impl Into<String>) -> AwsError {
    AwsError::new(StatusCode::BAD_REQUEST, "ObjectNotFoundException", message)
}

/// Whether `variant` of `endpoint` is registered as a scalable target.
pub(crate) fn is_registered(
    txn: &Write<'_>,
    endpoint: &str,
    variant: &str,
) -> Result<bool, DbError> {
    Ok(txn
        .get::<ScalableTarget>(
            SCALABLE_TARGETS,
            &target_key(&format!("endpoint/{endpoint}/variant/{variant}")),
        )?
        .is_some())
}

pub async fn handle(state: Arc<AppState>, op: String, body: Bytes) -> Response {
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return AwsError::new(
                    StatusCode::BAD_REQUEST,
                    "SerializationException",
                    e.to_string(),
                )
                .into_response();
            }
        }
    };
    let label = OPERATIONS
        .iter()
        .find(|o| **o == op)
        .copied()
        .unwrap_or("unknown");
    let result = tokio::task::spawn_blocking(move || dispatch(&state, &op, input))
        .await
        .unwrap_or_else(|e| Err(AwsError::internal(format!("operation panicked: {e}"))));
    let code = result.as_ref().err().map_or("ok", |e| e.code);
    metrics::counter!("sagemaker_local_autoscaling_requests_total", "operation" => label, "code" => code)
        .increment(1);
    match result {
        Ok(out) => {
            let mut response = axum::Json(out).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TargetInput {
    service_namespace: String,
    resource_id: String,
    scalable_dimension: String,
    min_capacity: Option<i64>,
    max_capacity: Option<i64>,
    #[serde(rename = "RoleARN")]
    role_arn: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyInput {
    policy_name: String,
    service_namespace: String,
    resource_id: String,
    scalable_dimension: String,
    policy_type: Option<String>,
    target_tracking_scaling_policy_configuration: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInput {
    service_namespace: String,
    resource_ids: Option<Vec<String>>,
    resource_id: Option<String>,
    policy_names: Option<Vec<String>>,
}

fn parse<T: serde::de::DeserializeOwned>(input: Value) -> Result<T, AwsError> {
    serde_json::from_value(input)
        .map_err(|e| AwsError::validation_exception(format!("1 validation error detected: {e}")))
}

/// The namespace and dimension this emulator answers for, and a resource id naming a variant
/// of an endpoint that exists: (endpoint, variant).
fn check_target(
    txn: &Write<'_>,
    namespace: &str,
    resource_id: &str,
    dimension: &str,
) -> Result<(String, String), AwsError> {
    if namespace != NAMESPACE {
        return Err(AwsError::validation_exception(format!(
            "sagemaker-local answers Application Auto Scaling for the sagemaker namespace only, not {namespace}"
        )));
    }
    if dimension != DIMENSION {
        return Err(AwsError::validation_exception(format!(
            "Unsupported scalable dimension {dimension} for namespace sagemaker (only {DIMENSION})"
        )));
    }
    let parts: Vec<&str> = resource_id.split('/').collect();
    let ["endpoint", endpoint, "variant", variant] = parts.as_slice() else {
        return Err(AwsError::validation_exception(format!(
            "Unsupported resource id {resource_id}: expected endpoint/<endpoint>/variant/<variant>"
        )));
    };
    let serves = txn
        .get::<EndpointRecord>(ENDPOINTS, endpoint)?
        .is_some_and(|ep| ep.variants.iter().any(|v| v.name == *variant));
    if !serves {
        return Err(AwsError::validation_exception(format!(
            "The endpoint variant {resource_id} does not exist"
        )));
    }
    Ok(((*endpoint).to_owned(), (*variant).to_owned()))
}

fn dispatch(state: &AppState, op: &str, input: Value) -> Result<Value, AwsError> {
    match op {
        "RegisterScalableTarget" => {
            let i: TargetInput = parse(input)?;
            state.db.write(|txn| {
                check_target(txn, &i.service_namespace, &i.resource_id, &i.scalable_dimension)?;
                let key = target_key(&i.resource_id);
                let existing = txn.get::<ScalableTarget>(SCALABLE_TARGETS, &key)?;
                let min = i.min_capacity.or(existing.as_ref().map(|t| t.min_capacity));
                let max = i.max_capacity.or(existing.as_ref().map(|t| t.max_capacity));
                let (Some(min), Some(max)) = (min, max) else {
                    return Err(AwsError::validation_exception(
                        "MinCapacity and MaxCapacity are required to register a new scalable target",
                    ));
                };
                if min < 1 || max < min {
                    return Err(AwsError::validation_exception(format!(
                        "MinCapacity ({min}) must be at least 1 and at most MaxCapacity ({max})"
                    )));
                }
                let target = ScalableTarget {
                    service_namespace: NAMESPACE.into(),
                    resource_id: i.resource_id.clone(),
                    scalable_dimension: DIMENSION.into(),
                    min_capacity: min,
                    max_capacity: max,
                    role_arn: i.role_arn.or(existing.as_ref().and_then(|t| t.role_arn.clone())),
                    creation_time: existing.as_ref().map_or_else(|| state.now(), |t| t.creation_time),
                    scalable_target_arn: existing.map_or_else(
                        || {
                            format!(
                                "arn:aws:application-autoscaling:{}:{}:scalable-target/{}",
                                state.settings.region,
                                state.settings.account_id,
                                uuid::Uuid::new_v4().simple()
                            )
                        },
                        |t| t.scalable_target_arn,
                    ),
                };
                txn.put(SCALABLE_TARGETS, &key, &target)?;
                Ok(json!({ "ScalableTargetARN": target.scalable_target_arn }))
            })
        }
        "DeregisterScalableTarget" => {
            let i: TargetInput = parse(input)?;
            state.db.write(|txn| {
                let key = target_key(&i.resource_id);
                if i.service_namespace != NAMESPACE || !txn.remove(SCALABLE_TARGETS, &key)? {
                    return Err(not_found(format!(
                        "No scalable target found for service namespace: {}, resource ID: {}, scalable dimension: {}",
                        i.service_namespace, i.resource_id, i.scalable_dimension
                    )));
                }
                // Deregistering deletes the target's policies.
                for k in txn.keys_with_prefix(SCALING_POLICIES, &format!("{key}\0"))? {
                    txn.remove(SCALING_POLICIES, &k)?;
                }
                Ok(json!({}))
            })
        }
        "DescribeScalableTargets" => {
            let i: DescribeInput = parse(input)?;
            let read = state.db.read()?;
            let targets: Vec<ScalableTarget> = read
                .list::<ScalableTarget>(SCALABLE_TARGETS)?
                .into_iter()
                .filter(|t| t.service_namespace == i.service_namespace)
                .filter(|t| {
                    i.resource_ids
                        .as_ref()
                        .is_none_or(|ids| ids.contains(&t.resource_id))
                })
                .collect();
            Ok(json!({ "ScalableTargets": targets }))
        }
        "PutScalingPolicy" => {
            let i: PolicyInput = parse(input)?;
            state.db.write(|txn| {
                let key = target_key(&i.resource_id);
                if txn.get::<ScalableTarget>(SCALABLE_TARGETS, &key)?.is_none() {
                    return Err(not_found(format!(
                        "No scalable target registered for service namespace: {}, resource ID: {}, scalable dimension: {}",
                        i.service_namespace, i.resource_id, i.scalable_dimension
                    )));
                }
                let policy_type = i.policy_type.unwrap_or_else(|| "StepScaling".into());
                if policy_type == "TargetTrackingScaling"
                    && i.target_tracking_scaling_policy_configuration
                        .as_ref()
                        .and_then(|c| c.get("TargetValue"))
                        .and_then(Value::as_f64)
                        .is_none()
                {
                    return Err(AwsError::validation_exception(
                        "TargetTrackingScalingPolicyConfiguration.TargetValue is required",
                    ));
                }
                let name = &i.policy_name;
                let arn = format!(
                    "arn:aws:autoscaling:{}:{}:scalingPolicy:{}:resource/sagemaker/{}:policyName/{name}",
                    state.settings.region,
                    state.settings.account_id,
                    uuid::Uuid::new_v4(),
                    i.resource_id
                );
                let alarm = |direction: &str| {
                    let alarm = format!("TargetTracking-{}-{direction}-{}", i.resource_id, uuid::Uuid::new_v4());
                    json!({ "AlarmName": alarm, "AlarmARN": format!("arn:aws:cloudwatch:{}:{}:alarm:{alarm}", state.settings.region, state.settings.account_id) })
                };
                let policy = ScalingPolicy {
                    policy_arn: arn.clone(),
                    policy_name: name.clone(),
                    service_namespace: NAMESPACE.into(),
                    resource_id: i.resource_id.clone(),
                    scalable_dimension: DIMENSION.into(),
                    policy_type,
                    target_tracking_scaling_policy_configuration: i
                        .target_tracking_scaling_policy_configuration,
                    alarms: vec![alarm("AlarmHigh"), alarm("AlarmLow")],
                    creation_time: state.now(),
                };
                txn.put(SCALING_POLICIES, &format!("{key}\0{name}"), &policy)?;
                Ok(json!({ "PolicyARN": arn, "Alarms": policy.alarms }))
            })
        }
        "DeleteScalingPolicy" => {
            let i: PolicyInput = parse(input)?;
            state.db.write(|txn| {
                let key = format!("{}\0{}", target_key(&i.resource_id), i.policy_name);
                if !txn.remove(SCALING_POLICIES, &key)? {
                    return Err(not_found(format!(
                        "No scaling policy found for service namespace: {}, resource ID: {}, scalable dimension: {}, policy name: {}",
                        i.service_namespace, i.resource_id, i.scalable_dimension, i.policy_name
                    )));
                }
                Ok(json!({}))
            })
        }
        "DescribeScalingPolicies" => {
            let i: DescribeInput = parse(input)?;
            let policies: Vec<ScalingPolicy> = state
                .db
                .read()?
                .list::<ScalingPolicy>(SCALING_POLICIES)?
                .into_iter()
                .filter(|p| p.service_namespace == i.service_namespace)
                .filter(|p| i.resource_id.as_ref().is_none_or(|r| *r == p.resource_id))
                .filter(|p| {
                    i.policy_names
                        .as_ref()
                        .is_none_or(|n| n.contains(&p.policy_name))
                })
                .collect();
            Ok(json!({ "ScalingPolicies": policies }))
        }
        other => Err(AwsError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!(
                "Application Auto Scaling operation {other} is not supported by sagemaker-local"
            ),
        )),
    }
}
