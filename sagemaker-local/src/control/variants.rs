//! Production variants as they serve: each one's weight and instance count, current and
//! desired, as `DescribeEndpoint` reports them, and `UpdateEndpointWeightsAndCapacities`, which
//! changes them without a new endpoint config: the endpoint goes `Updating`, then `InService`
//! with the new weights current, and invocations are routed by the current weights.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{endpoints, models::EndpointConfigRecord};
use crate::{
    AppState,
    control::{EndpointRecord, endpoints::EndpointStatus},
    db::ENDPOINTS,
    error::AwsError,
    runtime::LiveEndpoint,
};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VariantState {
    pub name: String,
    pub current_weight: f32,
    pub desired_weight: f32,
    pub current_instance_count: i64,
    pub desired_instance_count: i64,
}

/// The variants of a config as they start: its initial weights and instance counts.
pub fn initial(config: &EndpointConfigRecord) -> Vec<VariantState> {
    config
        .variants
        .iter()
        .map(|v| {
            let count = v.initial_instance_count.unwrap_or(1);
            VariantState {
                name: v.variant_name.clone(),
                current_weight: v.initial_variant_weight,
                desired_weight: v.initial_variant_weight,
                current_instance_count: count,
                desired_instance_count: count,
            }
        })
        .collect()
}

/// `live` routing by the current weights of `states` (the config's own where none is kept).
pub fn weighted(live: &Arc<LiveEndpoint>, states: &[VariantState]) -> Arc<LiveEndpoint> {
    if states.is_empty() {
        return Arc::clone(live);
    }
    Arc::new(live.reweighted(|name| {
        states
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.current_weight)
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DesiredWeightAndCapacity {
    variant_name: String,
    desired_weight: Option<f32>,
    desired_instance_count: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateWeightsInput {
    endpoint_name: String,
    desired_weights_and_capacities: Vec<DesiredWeightAndCapacity>,
}

/// `UpdateEndpointWeightsAndCapacities`: the named variants' desired weight and instance count;
/// the endpoint is `Updating` until they are current.
pub fn update_weights(state: &AppState, input: UpdateWeightsInput) -> Result<Value, AwsError> {
    if input.desired_weights_and_capacities.is_empty() {
        return Err(AwsError::validation_exception(
            "1 validation error detected: Value at 'desiredWeightsAndCapacities' failed to satisfy constraint: Member must have length greater than or equal to 1",
        ));
    }
    let record = state.db.write(|txn| {
        let mut ep: EndpointRecord = txn
            .get(ENDPOINTS, &input.endpoint_name)?
            .ok_or_else(|| endpoints::missing(state, &input.endpoint_name))?;
        if ep.status != EndpointStatus::InService {
            return Err(AwsError::validation_exception(format!(
                "Cannot update in-progress endpoint \"{}\".",
                ep.arn
            )));
        }
        if ep.variants.is_empty()
            && let Some(config) = ep
                .config_name
                .as_ref()
                .map(|c| txn.get::<EndpointConfigRecord>(crate::db::ENDPOINT_CONFIGS, c))
                .transpose()?
                .flatten()
        {
            ep.variants = initial(&config);
        }
        for want in &input.desired_weights_and_capacities {
            let Some(v) = ep.variants.iter_mut().find(|v| v.name == want.variant_name) else {
                return Err(AwsError::validation_exception(format!(
                    "The variant(s) \"[{}]\" are not present on endpoint \"{}\".",
                    want.variant_name, ep.arn
                )));
            };
            if let Some(w) = want.desired_weight {
                if !(w.is_finite() && w >= 0.0) {
                    return Err(AwsError::validation_exception(format!(
                        "1 validation error detected: Value '{w}' at 'desiredWeightsAndCapacities.member.desiredWeight' failed to satisfy constraint: Member must have value greater than or equal to 0"
                    )));
                }
                v.desired_weight = w;
            }
            if let Some(n) = want.desired_instance_count {
                if n < 1 {
                    return Err(AwsError::validation_exception(format!(
                        "1 validation error detected: Value '{n}' at 'desiredWeightsAndCapacities.member.desiredInstanceCount' failed to satisfy constraint: Member must have value greater than or equal to 1"
                    )));
                }
                v.desired_instance_count = n;
            }
        }
        if ep.variants.iter().all(|v| v.desired_weight == 0.0) {
            return Err(AwsError::validation_exception(format!(
                "The desired weights of endpoint \"{}\" would all be 0: at least one variant must take traffic.",
                ep.arn
            )));
        }
        let now = state.now();
        ep.status = EndpointStatus::Updating;
        ep.last_modified = now;
        ep.transition = Some(uuid::Uuid::new_v4().to_string());
        ep.transition_started = Some(now);
        txn.put(ENDPOINTS, &ep.name, &ep)?;
        Ok::<_, AwsError>(ep)
    })?;
    endpoints::schedule(state, &record);
    Ok(json!({ "EndpointArn": record.arn }))
}

/// A weights-and-capacities transition that has waited its delay: the desired values become
/// current and the endpoint serves by them.
pub(crate) fn finish_weights(
    state: &AppState,
    name: &str,
    transition: &str,
) -> Result<(), AwsError> {
    let states = state.db.write(|txn| {
        let Some(mut ep) = txn.get::<EndpointRecord>(ENDPOINTS, name)? else {
            return Ok(None);
        };
        if ep.transition.as_deref() != Some(transition) {
            return Ok(None);
        }
        for v in &mut ep.variants {
            v.current_weight = v.desired_weight;
            v.current_instance_count = v.desired_instance_count;
        }
        ep.status = EndpointStatus::InService;
        ep.transition = None;
        ep.transition_started = None;
        ep.last_modified = state.now();
        tracing::info!(endpoint = name, weights = ?ep.variants.iter().map(|v| (v.name.as_str(), v.current_weight)).collect::<Vec<_>>(), "variant weights and capacities updated");
        txn.put(ENDPOINTS, name, &ep)?;
        Ok::<_, AwsError>(Some(ep.variants))
    })?;
    if let (Some(states), Some(live)) = (states, state.serving.get(name)) {
        state.serving.install(name, weighted(&live, &states));
    }
    Ok(())
}

/// `DescribeEndpoint`'s `ProductionVariants`: the config's variants with their current and
/// desired weights and instance counts.
pub fn summaries(
    state: &AppState,
    config: &EndpointConfigRecord,
    states: &[VariantState],
    at: f64,
) -> Vec<Value> {
    let fallback = initial(config);
    config
        .variants
        .iter()
        .map(|v| {
            let s = states
                .iter()
                .chain(&fallback)
                .find(|s| s.name == v.variant_name)
                .cloned()
                .expect("every config variant has a state");
            let image = state
                .db
                .get::<super::ModelRecord>(crate::db::MODELS, &v.model_name)
                .ok()
                .flatten()
                .and_then(|m| m.container()?.get("Image")?.as_str().map(str::to_owned))
                .unwrap_or_default();
            let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(image.as_bytes()));
            json!({
                "VariantName": v.variant_name,
                "DeployedImages": [{
                    "SpecifiedImage": image,
                    "ResolvedImage": format!("{}@sha256:{digest}", image.split(':').next().unwrap_or_default()),
                    "ResolutionTime": at,
                }],
                "CurrentWeight": s.current_weight,
                "DesiredWeight": s.desired_weight,
                "CurrentInstanceCount": s.current_instance_count,
                "DesiredInstanceCount": s.desired_instance_count,
            })
        })
        .collect()
}
