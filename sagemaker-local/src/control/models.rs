//! Models (what to serve: an image and an artifact, directly or via a model package) and
//! endpoint configs (which models, as which weighted production variants).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{PackageRecord, registry::find_package, require_name};
use crate::{
    AppState,
    db::{ENDPOINT_CONFIGS, ENDPOINTS, MODEL_PACKAGES, MODELS},
    error::AwsError,
};

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ModelRecord {
    pub name: String,
    pub arn: String,
    pub primary_container: Option<Value>,
    pub containers: Option<Vec<Value>>,
    pub execution_role_arn: Option<String>,
    pub enable_network_isolation: bool,
    pub created: f64,
}

impl ModelRecord {
    /// The container that serves: the primary one, else the first of `Containers`.
    pub fn container(&self) -> Option<&Value> {
        self.primary_container
            .as_ref()
            .or_else(|| self.containers.as_ref()?.first())
    }
}

/// Where the model's artifact lives: the container's ModelDataUrl, or its model package's.
pub fn model_data_url(
    state: &AppState,
    model: &ModelRecord,
) -> Result<(String, Option<PackageRecord>), String> {
    let container = model.container().ok_or("the model has no container")?;
    if let Some(pkg) = container.get("ModelPackageName").and_then(Value::as_str) {
        let package = find_package(|arn| Ok(state.db.get(MODEL_PACKAGES, arn)?), state, pkg)
            .map_err(|e| e.message)?;
        let url = package
            .model_data_url()
            .ok_or_else(|| format!("model package {pkg} has no ModelDataUrl"))?
            .to_owned();
        return Ok((url, Some(package)));
    }
    container
        .get("ModelDataUrl")
        .and_then(Value::as_str)
        .map(|u| (u.to_owned(), None))
        .ok_or_else(|| "the model's container has neither ModelDataUrl nor ModelPackageName".into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateModelInput {
    model_name: String,
    primary_container: Option<Value>,
    containers: Option<Vec<Value>>,
    execution_role_arn: Option<String>,
    #[serde(default)]
    enable_network_isolation: bool,
}

pub fn create_model(state: &AppState, input: CreateModelInput) -> Result<Value, AwsError> {
    require_name("modelName", &input.model_name, &['-'], 63)?;
    let arn = state.arn("model", &input.model_name);
    let containers: Vec<&Value> = input
        .primary_container
        .iter()
        .chain(input.containers.iter().flatten())
        .collect();
    if containers.is_empty() || (input.primary_container.is_some() && input.containers.is_some()) {
        return Err(AwsError::validation_exception(
            "Exactly one of PrimaryContainer and Containers must be given.",
        ));
    }
    state.db.write(|txn| {
        if txn.get::<ModelRecord>(MODELS, &input.model_name)?.is_some() {
            return Err(AwsError::validation_exception(format!("Cannot create already existing model \"{arn}\".")));
        }
        for c in &containers {
            if let Some(pkg) = c.get("ModelPackageName").and_then(Value::as_str) {
                let package = find_package(|a| Ok(txn.get(MODEL_PACKAGES, a)?), state, pkg)?;
                // Versioned packages must be approved before they can be deployed.
                if package.group.is_some() && package.approval_status != "Approved" {
                    return Err(AwsError::validation_exception(format!(
                        "Model Package {} is in {} status. Only Approved model packages can be deployed.",
                        package.arn, package.approval_status
                    )));
                }
            } else if c.get("ModelDataUrl").and_then(Value::as_str).is_none() {
                return Err(AwsError::validation_exception("A container needs ModelDataUrl or ModelPackageName."));
            }
        }
        let record = ModelRecord {
            name: input.model_name.clone(),
            arn: arn.clone(),
            primary_container: input.primary_container.clone(),
            containers: input.containers.clone(),
            execution_role_arn: input.execution_role_arn.clone(),
            enable_network_isolation: input.enable_network_isolation,
            created: state.now(),
        };
        txn.put(MODELS, &record.name, &record)?;
        Ok(json!({ "ModelArn": arn }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModelNameInput {
    model_name: String,
}

fn missing_model(state: &AppState, name: &str) -> AwsError {
    AwsError::validation_exception(format!(
        "Could not find model \"{}\".",
        state.arn("model", name)
    ))
}

pub fn describe_model(state: &AppState, input: ModelNameInput) -> Result<Value, AwsError> {
    let m: ModelRecord = state
        .db
        .get(MODELS, &input.model_name)?
        .ok_or_else(|| missing_model(state, &input.model_name))?;
    let mut v = json!({
        "ModelName": m.name,
        "ModelArn": m.arn,
        "CreationTime": m.created,
        "EnableNetworkIsolation": m.enable_network_isolation,
    });
    if let Some(c) = m.primary_container {
        v["PrimaryContainer"] = c;
    }
    if let Some(c) = m.containers {
        v["Containers"] = json!(c);
    }
    if let Some(r) = m.execution_role_arn {
        v["ExecutionRoleArn"] = json!(r);
    }
    Ok(v)
}

pub fn delete_model(state: &AppState, input: ModelNameInput) -> Result<Value, AwsError> {
    state.db.write(|txn| {
        if !txn.remove(MODELS, &input.model_name)? {
            return Err(missing_model(state, &input.model_name));
        }
        Ok(json!({}))
    })
}

/// One production variant as configured (echoed by DescribeEndpointConfig).
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "PascalCase")]
pub struct VariantSpec {
    pub variant_name: String,
    pub model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_instance_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default = "one")]
    pub initial_variant_weight: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serverless_config: Option<Value>,
}

fn one() -> f32 {
    1.0
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct EndpointConfigRecord {
    pub name: String,
    pub arn: String,
    pub variants: Vec<VariantSpec>,
    pub created: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointConfigInput {
    endpoint_config_name: String,
    production_variants: Vec<VariantSpec>,
}

pub fn create_endpoint_config(
    state: &AppState,
    input: CreateEndpointConfigInput,
) -> Result<Value, AwsError> {
    require_name(
        "endpointConfigName",
        &input.endpoint_config_name,
        &['-'],
        63,
    )?;
    let arn = state.arn("endpoint-config", &input.endpoint_config_name);
    let variants = input.production_variants;
    if !(1..=10).contains(&variants.len()) {
        return Err(AwsError::validation_exception(
            "ProductionVariants must hold 1 to 10 variants.",
        ));
    }
    for (i, v) in variants.iter().enumerate() {
        require_name("variantName", &v.variant_name, &['-'], 63)?;
        if variants[..i]
            .iter()
            .any(|o| o.variant_name == v.variant_name)
        {
            return Err(AwsError::validation_exception(format!(
                "Duplicate VariantName {}.",
                v.variant_name
            )));
        }
        if v.initial_variant_weight.is_nan() || v.initial_variant_weight < 0.0 {
            return Err(AwsError::validation_exception(
                "InitialVariantWeight must be 0 or more.",
            ));
        }
    }
    state.db.write(|txn| {
        if txn
            .get::<EndpointConfigRecord>(ENDPOINT_CONFIGS, &input.endpoint_config_name)?
            .is_some()
        {
            return Err(AwsError::validation_exception(format!(
                "Cannot create already existing endpoint configuration \"{arn}\"."
            )));
        }
        for v in &variants {
            if txn.get::<ModelRecord>(MODELS, &v.model_name)?.is_none() {
                return Err(missing_model(state, &v.model_name));
            }
        }
        let record = EndpointConfigRecord {
            name: input.endpoint_config_name.clone(),
            arn: arn.clone(),
            variants: variants.clone(),
            created: state.now(),
        };
        txn.put(ENDPOINT_CONFIGS, &record.name, &record)?;
        Ok(json!({ "EndpointConfigArn": arn }))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointConfigNameInput {
    endpoint_config_name: String,
}

pub(super) fn missing_config(state: &AppState, name: &str) -> AwsError {
    AwsError::validation_exception(format!(
        "Could not find endpoint configuration \"{}\".",
        state.arn("endpoint-config", name)
    ))
}

pub fn describe_endpoint_config(
    state: &AppState,
    input: EndpointConfigNameInput,
) -> Result<Value, AwsError> {
    let c: EndpointConfigRecord = state
        .db
        .get(ENDPOINT_CONFIGS, &input.endpoint_config_name)?
        .ok_or_else(|| missing_config(state, &input.endpoint_config_name))?;
    Ok(json!({
        "EndpointConfigName": c.name,
        "EndpointConfigArn": c.arn,
        "ProductionVariants": c.variants,
        "CreationTime": c.created,
    }))
}

pub fn delete_endpoint_config(
    state: &AppState,
    input: EndpointConfigNameInput,
) -> Result<Value, AwsError> {
    state.db.write(|txn| {
        let in_use = txn
            .list::<super::EndpointRecord>(ENDPOINTS)?
            .into_iter()
            .any(|e| {
                e.config_name.as_deref() == Some(&input.endpoint_config_name)
                    || e.pending_config.as_deref() == Some(&input.endpoint_config_name)
            });
        if in_use {
            return Err(AwsError::validation_exception(format!(
                "Endpoint configuration {} is in use by an endpoint.",
                input.endpoint_config_name
            )));
        }
        if !txn.remove(ENDPOINT_CONFIGS, &input.endpoint_config_name)? {
            return Err(missing_config(state, &input.endpoint_config_name));
        }
        Ok(json!({}))
    })
}
