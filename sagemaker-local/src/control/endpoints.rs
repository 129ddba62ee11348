//! Endpoints and their lifecycle. Create goes `Creating` -> `InService` (or `Failed`);
//! update goes `Updating` -> `InService` on the new config, or back to the old one with a
//! `FailureReason` when the new models cannot load. The old config serves until the switch.
//! Transitions run after a configurable delay and resume after a restart.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    models::{EndpointConfigRecord, missing_config},
    require_name,
};
use crate::{
    AppState,
    db::{ENDPOINT_CONFIGS, ENDPOINTS},
    error::AwsError,
};

/// The lifecycle states this emulator takes an endpoint through (AWS's names, which are also
/// how they are stored and sent).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointStatus {
    Creating,
    Updating,
    InService,
    Failed,
}

impl std::fmt::Display for EndpointStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct EndpointRecord {
    pub name: String,
    pub arn: String,
    /// The config that serves traffic (none until the first successful create).
    pub config_name: Option<String>,
    /// The config being rolled out by a create or update.
    pub pending_config: Option<String>,
    pub status: EndpointStatus,
    pub failure_reason: Option<String>,
    pub created: f64,
    pub last_modified: f64,
    /// Identifies the transition in flight, so a stale timer never applies.
    pub transition: Option<String>,
    pub transition_started: Option<f64>,
    /// The config whose models are being loaded, recorded (fsynced) before the load starts
    /// and cleared when it ends: one still set at start-up is a load that never finished —
    /// the model may have crashed the server — and is not tried again.
    #[serde(default)]
    pub loading: Option<String>,
    /// Each variant's weight and instance count as they serve (`current_*`) and as asked
    /// (`desired_*`), from the config's initial values at each switch, changed by
    /// `UpdateEndpointWeightsAndCapacities`. Empty for a record written before they were kept.
    #[serde(default)]
    pub variants: Vec<super::variants::VariantState>,
}

fn missing_endpoint(state: &AppState, name: &str) -> AwsError {
    AwsError::validation_exception(format!(
        "Could not find endpoint \"{}\".",
        state.arn("endpoint", name)
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInput {
    endpoint_name: String,
    endpoint_config_name: String,
}

pub fn create(state: &AppState, input: EndpointInput) -> Result<Value, AwsError> {
    require_name("endpointName", &input.endpoint_name, &['-'], 63)?;
    let arn = state.arn("endpoint", &input.endpoint_name);
    let record = state.db.write(|txn| {
        if txn
            .get::<EndpointRecord>(ENDPOINTS, &input.endpoint_name)?
            .is_some()
        {
            return Err(AwsError::validation_exception(format!(
                "Cannot create already existing endpoint \"{arn}\"."
            )));
        }
        if txn
            .get::<EndpointConfigRecord>(ENDPOINT_CONFIGS, &input.endpoint_config_name)?
            .is_none()
        {
            return Err(missing_config(state, &input.endpoint_config_name));
        }
        let now = state.now();
        let record = EndpointRecord {
            name: input.endpoint_name.clone(),
            arn: arn.clone(),
            config_name: None,
            pending_config: Some(input.endpoint_config_name.clone()),
            status: EndpointStatus::Creating,
            failure_reason: None,
            created: now,
            last_modified: now,
            transition: Some(uuid::Uuid::new_v4().to_string()),
            transition_started: Some(now),
            loading: None,
            variants: Vec::new(),
        };
        txn.put(ENDPOINTS, &record.name, &record)?;
        Ok(record)
    })?;
    schedule(state, &record);
    Ok(json!({ "EndpointArn": arn }))
}

pub fn update(state: &AppState, input: EndpointInput) -> Result<Value, AwsError> {
    let record = state.db.write(|txn| {
        let mut ep: EndpointRecord = txn
            .get(ENDPOINTS, &input.endpoint_name)?
            .ok_or_else(|| missing_endpoint(state, &input.endpoint_name))?;
        match ep.status {
            EndpointStatus::InService => {}
            // A failed endpoint is deleted and created again, never updated (as on AWS).
            EndpointStatus::Failed => {
                return Err(AwsError::validation_exception(format!(
                    "Cannot update failed endpoint \"{}\".",
                    ep.arn
                )));
            }
            EndpointStatus::Creating | EndpointStatus::Updating => {
                return Err(AwsError::validation_exception(format!(
                    "Cannot update in-progress endpoint \"{}\".",
                    ep.arn
                )));
            }
        }
        let Some(config) =
            txn.get::<EndpointConfigRecord>(ENDPOINT_CONFIGS, &input.endpoint_config_name)?
        else {
            return Err(missing_config(state, &input.endpoint_config_name));
        };
        // As SageMaker: a variant registered with Application Auto Scaling cannot be removed
        // by an update; it is deregistered first.
        for v in &ep.variants {
            if !config.variants.iter().any(|c| c.variant_name == v.name)
                && crate::autoscaling::is_registered(txn, &ep.name, &v.name)?
            {
                return Err(AwsError::validation_exception(format!(
                    "The endpoint {} has a variant {} that is registered as a scalable target with Application Auto Scaling, and the new endpoint configuration {} does not have it. Deregister the variant as a scalable target before you update the endpoint.",
                    ep.arn, v.name, config.name
                )));
            }
        }
        let now = state.now();
        ep.status = EndpointStatus::Updating;
        ep.pending_config = Some(input.endpoint_config_name.clone());
        ep.failure_reason = None;
        ep.last_modified = now;
        ep.transition = Some(uuid::Uuid::new_v4().to_string());
        ep.transition_started = Some(now);
        txn.put(ENDPOINTS, &ep.name, &ep)?;
        Ok(ep)
    })?;
    schedule(state, &record);
    Ok(json!({ "EndpointArn": record.arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointNameInput {
    endpoint_name: String,
}

pub fn describe(state: &AppState, input: EndpointNameInput) -> Result<Value, AwsError> {
    let read = state.db.read()?;
    let ep: EndpointRecord = read
        .get(ENDPOINTS, &input.endpoint_name)?
        .ok_or_else(|| missing_endpoint(state, &input.endpoint_name))?;
    let mut v = json!({
        "EndpointName": ep.name,
        "EndpointArn": ep.arn,
        "EndpointStatus": ep.status,
        "CreationTime": ep.created,
        "LastModifiedTime": ep.last_modified,
    });
    if let Some(reason) = &ep.failure_reason {
        v["FailureReason"] = json!(reason);
    }
    if let Some(name) = ep.config_name.as_ref().or(ep.pending_config.as_ref()) {
        v["EndpointConfigName"] = json!(name);
    }
    if let Some(name) = &ep.config_name
        && let Some(config) = read.get::<EndpointConfigRecord>(ENDPOINT_CONFIGS, name)?
    {
        v["ProductionVariants"] = json!(super::variants::summaries(
            state,
            &config,
            &ep.variants,
            ep.last_modified
        ));
    }
    if ep.status == EndpointStatus::Updating
        && let Some(name) = &ep.pending_config
    {
        v["PendingDeploymentSummary"] = json!({
            "EndpointConfigName": name,
            "StartTime": ep.transition_started,
        });
    }
    Ok(v)
}

pub fn delete(state: &AppState, input: EndpointNameInput) -> Result<Value, AwsError> {
    state.db.write(|txn| {
        if !txn.remove(ENDPOINTS, &input.endpoint_name)? {
            return Err(missing_endpoint(state, &input.endpoint_name));
        }
        Ok::<_, AwsError>(())
    })?;
    state.serving.remove(&input.endpoint_name);
    Ok(json!({}))
}

/// Runs the endpoint's pending transition after the configured delay.
pub(crate) fn schedule(state: &AppState, record: &EndpointRecord) {
    let Some(transition) = record.transition.clone() else {
        return;
    };
    let (me, name, delay) = (
        state.me.clone(),
        record.name.clone(),
        state.settings.endpoint_delay,
    );
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        // A stopped server leaves the transition to the next start (resume_transitions).
        let Some(state) = me.upgrade() else { return };
        let finished = tokio::task::spawn_blocking({
            let state = Arc::clone(&state);
            move || finish_transition(&state, &name, &transition)
        })
        .await;
        if let Ok(Err(e)) = finished {
            tracing::error!(error = %e, "endpoint transition could not be recorded");
        }
    });
}

pub(crate) fn missing(state: &AppState, name: &str) -> AwsError {
    missing_endpoint(state, name)
}

pub(crate) fn finish_transition(
    state: &AppState,
    name: &str,
    transition: &str,
) -> Result<(), AwsError> {
    let Some(ep) = state.db.get::<EndpointRecord>(ENDPOINTS, name)? else {
        return Ok(());
    };
    if ep.transition.as_deref() != Some(transition) {
        return Ok(());
    }
    let Some(pending) = ep.pending_config.clone() else {
        return super::variants::finish_weights(state, name, transition);
    };
    let loaded = if ep.loading.as_deref() == Some(pending.as_str()) {
        Err(UNFINISHED_LOAD.to_owned())
    } else {
        mark_loading(state, name, Some(&pending))?;
        state
            .db
            .get::<EndpointConfigRecord>(ENDPOINT_CONFIGS, &pending)?
            .ok_or_else(|| format!("endpoint configuration {pending} no longer exists"))
            .and_then(|config| state.serving.load(state, &config))
    };
    // The new models serve only once the transition is committed.
    let install = state.db.write(|txn| {
        let Some(mut ep) = txn.get::<EndpointRecord>(ENDPOINTS, name)? else { return Ok(None) };
        if ep.transition.as_deref() != Some(transition) {
            return Ok(None);
        }
        let was = ep.status;
        match &loaded {
            Ok(_) => {
                ep.config_name = Some(pending.clone());
                ep.failure_reason = None;
                if let Some(config) = txn.get::<EndpointConfigRecord>(ENDPOINT_CONFIGS, &pending)? {
                    ep.variants = super::variants::initial(&config);
                }
            }
            Err(reason) if ep.config_name.is_none() => {
                ep.failure_reason = Some(reason.clone());
                ep.status = EndpointStatus::Failed;
            }
            // An update that cannot load rolls back: the old config keeps serving.
            Err(reason) => ep.failure_reason = Some(format!("Update rolled back: {reason}")),
        }
        if ep.status != EndpointStatus::Failed {
            ep.status = EndpointStatus::InService;
        }
        ep.pending_config = None;
        ep.transition = None;
        ep.transition_started = None;
        ep.loading = None;
        ep.last_modified = state.now();
        tracing::info!(endpoint = name, from = %was, to = %ep.status, reason = ?ep.failure_reason, "endpoint transition");
        txn.put(ENDPOINTS, name, &ep)?;
        Ok::<_, AwsError>(loaded.as_ref().ok().map(Arc::clone))
    })?;
    if let Some(live) = install {
        state.serving.install(name, live);
    }
    Ok(())
}

/// Why a model is not loaded again at start-up.
const UNFINISHED_LOAD: &str = "loading this endpoint's models did not finish before sagemaker-local stopped (they may have crashed it), so they are not loaded again; create another endpoint config, or delete the endpoint";

/// Records (fsynced) that `endpoint` is loading `config`'s models, or that it is done.
fn mark_loading(state: &AppState, endpoint: &str, config: Option<&str>) -> Result<(), AwsError> {
    state.db.write(|txn| {
        if let Some(mut ep) = txn.get::<EndpointRecord>(ENDPOINTS, endpoint)? {
            ep.loading = config.map(str::to_owned);
            txn.put(ENDPOINTS, endpoint, &ep)?;
        }
        Ok::<_, AwsError>(())
    })
}

/// At start-up: load what every endpoint serves, and re-arm transitions in flight. A load
/// that was under way when the server stopped is not tried again: the endpoint fails with the
/// reason instead (a model that crashes the server would otherwise crash every start).
pub fn resume_transitions(state: &AppState) -> Result<(), AwsError> {
    for ep in state.db.list::<EndpointRecord>(ENDPOINTS)? {
        if let Some(config_name) = &ep.config_name {
            if ep.loading.as_deref() == Some(config_name.as_str()) {
                tracing::error!(endpoint = %ep.name, config = %config_name, "{UNFINISHED_LOAD}");
                fail(state, &ep.name, UNFINISHED_LOAD)?;
                continue;
            }
            match state
                .db
                .get::<EndpointConfigRecord>(ENDPOINT_CONFIGS, config_name)?
            {
                Some(config) => {
                    mark_loading(state, &ep.name, Some(config_name))?;
                    let loaded = state.serving.load(state, &config);
                    mark_loading(state, &ep.name, None)?;
                    match loaded {
                        Ok(live) => state
                            .serving
                            .install(&ep.name, super::variants::weighted(&live, &ep.variants)),
                        Err(e) => {
                            tracing::error!(endpoint = %ep.name, error = %e, "cannot load the serving models")
                        }
                    }
                }
                None => {
                    tracing::error!(endpoint = %ep.name, config = %config_name, "serving config is missing")
                }
            }
        }
        if ep.transition.is_some() {
            schedule(state, &ep);
        }
    }
    Ok(())
}

/// Marks `endpoint` Failed with `reason` (nothing serves from it).
fn fail(state: &AppState, endpoint: &str, reason: &str) -> Result<(), AwsError> {
    state.db.write(|txn| {
        if let Some(mut ep) = txn.get::<EndpointRecord>(ENDPOINTS, endpoint)? {
            ep.status = EndpointStatus::Failed;
            ep.failure_reason = Some(reason.to_owned());
            ep.loading = None;
            ep.pending_config = None;
            ep.transition = None;
            ep.transition_started = None;
            txn.put(ENDPOINTS, endpoint, &ep)?;
        }
        Ok::<_, AwsError>(())
    })?;
    state.serving.remove(endpoint);
    Ok(())
}

#[cfg(test)]
mod tests;
