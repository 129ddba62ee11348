//! Rolling an endpoint onto a model: the endpoint config, the create or update, the wait for
//! InService (the live endpoint in `deploy`, the shadow endpoint in `shadow`).

use std::{collections::HashMap, time::Instant};

use aws_sdk_sagemaker::{
    error::ProvideErrorMetadata,
    operation::describe_endpoint::DescribeEndpointOutput,
    types::{
        ContainerDefinition, DesiredWeightAndCapacity, EndpointStatus, ProductionVariant,
        ProductionVariantInstanceType,
    },
};

use proto::registry::v1::EndpointState;

use crate::{DeployError, Deployer, aws};

impl Deployer {
    pub(crate) async fn describe_package(
        &self,
        arn: &str,
    ) -> Result<
        aws_sdk_sagemaker::operation::describe_model_package::DescribeModelPackageOutput,
        DeployError,
    > {
        self.client
            .describe_model_package()
            .model_package_name(arn)
            .send()
            .await
            .map_err(|e| aws("DescribeModelPackage", e))
    }

    pub(crate) async fn describe_endpoint(
        &self,
        endpoint: &str,
    ) -> Result<aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointOutput, DeployError>
    {
        self.client
            .describe_endpoint()
            .endpoint_name(endpoint)
            .send()
            .await
            .map_err(|e| aws("DescribeEndpoint", e))
    }

    /// What the endpoint serves now.
    pub(crate) async fn endpoint_state(&self) -> Result<EndpointState, DeployError> {
        self.poller().endpoint().await.map_err(Self::poll_error)
    }

    /// What the endpoint serves once its current change (if any) is over.
    pub(crate) async fn settled_state(&self) -> Result<EndpointState, DeployError> {
        let state = self.endpoint_state().await?;
        if !in_transition(&EndpointStatus::from(state.status.as_str())) {
            return Ok(state);
        }
        tracing::info!(status = %state.status, "waiting for the endpoint's current change to finish");
        self.wait_settled(&self.endpoint).await?;
        self.endpoint_state().await
    }

    /// Sets the variants' weights (`UpdateEndpointWeightsAndCapacities`) unless they are
    /// those already, and waits for InService.
    pub(crate) async fn set_weights(&self, weights: &[(&str, f64)]) -> Result<(), DeployError> {
        let state = self.endpoint_state().await?;
        let current: HashMap<&str, f64> = state
            .variants
            .iter()
            .map(|v| (v.name.as_str(), v.current_weight))
            .collect();
        if weights
            .iter()
            .all(|(n, w)| current.get(n).is_some_and(|c| (c - w).abs() < 1e-6))
        {
            return Ok(());
        }
        self.client
            .update_endpoint_weights_and_capacities()
            .endpoint_name(&self.endpoint)
            .set_desired_weights_and_capacities(Some(
                weights
                    .iter()
                    .map(|(n, w)| {
                        DesiredWeightAndCapacity::builder()
                            .variant_name(*n)
                            .desired_weight(*w as f32)
                            .build()
                    })
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| aws("UpdateEndpointWeightsAndCapacities", e))?;
        self.wait_settled(&self.endpoint).await?;
        Ok(())
    }

    /// The model `name` with `container`: the existing one when its container `holds` what is
    /// wanted (`what`, for the error), else created now. A model of that name holding anything
    /// else is an error, never replaced.
    pub(crate) async fn ensure_model(
        &self,
        name: String,
        container: ContainerDefinition,
        holds: impl Fn(&ContainerDefinition) -> bool,
        what: &str,
    ) -> Result<String, DeployError> {
        match self.client.describe_model().model_name(&name).send().await {
            Ok(m) if m.primary_container().is_some_and(&holds) => return Ok(name),
            Ok(_) => {
                return Err(DeployError::Failed(format!(
                    "model {name} exists but does not hold {what}"
                )));
            }
            Err(e) if e.code() == Some("ValidationException") => {}
            Err(e) => return Err(aws("DescribeModel", e)),
        }
        self.client
            .create_model()
            .model_name(&name)
            .primary_container(container)
            .set_execution_role_arn(self.execution_role_arn.clone())
            .send()
            .await
            .map_err(|e| aws("CreateModel", e))?;
        Ok(name)
    }

    /// Puts the model of package version `version` on `endpoint` (one variant `v{n}` taking
    /// all traffic; the endpoint is created when it does not exist) and waits until it is
    /// InService on the new config. Returns the config's name.
    pub(crate) async fn roll_out(
        &self,
        endpoint: &str,
        model_name: &str,
        version: i64,
        exists: bool,
    ) -> Result<String, DeployError> {
        let variant = ProductionVariant::builder()
            .variant_name(format!("v{version}"))
            .model_name(model_name)
            .initial_instance_count(self.instance_count)
            .instance_type(ProductionVariantInstanceType::from(
                self.instance_type.as_str(),
            ))
            .initial_variant_weight(1.0)
            .build();
        self.apply_config(
            endpoint,
            &format!("{endpoint}-v{version}"),
            vec![variant],
            exists,
        )
        .await
    }

    /// A new endpoint config `{name}-{millis}` of `variants`, then the endpoint created or
    /// updated onto it; waits until it is InService on that config. Returns the config's name.
    pub(crate) async fn apply_config(
        &self,
        endpoint: &str,
        name: &str,
        variants: Vec<ProductionVariant>,
        exists: bool,
    ) -> Result<String, DeployError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let config_name = truncate(&format!("{name}-{stamp}"), 63);
        // Auto scaling follows the production endpoint's serving variant (not the shadow's).
        let scaler = self.scaler.as_ref().filter(|_| endpoint == self.endpoint);
        if let (Some(scaler), true) = (scaler, exists) {
            let described = self.describe_endpoint(endpoint).await?;
            for retiring in described
                .production_variants()
                .iter()
                .filter_map(|v| v.variant_name())
                .filter(|n| !variants.iter().any(|v| v.variant_name() == Some(*n)))
            {
                scaler.deregister(endpoint, retiring).await?;
            }
        }
        let applied = self
            .create_or_update(endpoint, &config_name, variants.clone(), exists)
            .await;
        let Some(scaler) = scaler else {
            return applied.map(|()| config_name);
        };
        // Whatever serves alone now scales: the new version, or (the update failed and
        // SageMaker rolled it back) the version the retiring registration was taken from.
        let serving = match (&applied, variants.as_slice()) {
            (Ok(()), [only]) => only.variant_name().map(str::to_owned),
            (Ok(()), _) => None,
            (Err(_), _) => match self
                .client
                .describe_endpoint()
                .endpoint_name(endpoint)
                .send()
                .await
            {
                Ok(d) => match d.production_variants() {
                    [only] => only.variant_name().map(str::to_owned),
                    _ => None,
                },
                Err(_) => None,
            },
        };
        if let Some(name) = serving {
            let registered = scaler.register(endpoint, &name).await;
            match (&applied, registered) {
                (Ok(()), Err(e)) => return Err(e),
                (Err(_), Err(e)) => {
                    tracing::warn!(error = %e, variant = %name, "could not register the variant that still serves for auto scaling")
                }
                _ => {}
            }
        }
        applied.map(|()| config_name)
    }

    /// CreateEndpointConfig, then CreateEndpoint or UpdateEndpoint onto it, and the wait for
    /// InService on that config.
    async fn create_or_update(
        &self,
        endpoint: &str,
        config_name: &str,
        variants: Vec<ProductionVariant>,
        exists: bool,
    ) -> Result<(), DeployError> {
        self.client
            .create_endpoint_config()
            .endpoint_config_name(config_name)
            .set_production_variants(Some(variants))
            .set_kms_key_id(self.kms_key_id.clone())
            .send()
            .await
            .map_err(|e| aws("CreateEndpointConfig", e))?;
        if exists {
            self.client
                .update_endpoint()
                .endpoint_name(endpoint)
                .endpoint_config_name(config_name)
                .send()
                .await
                .map_err(|e| aws("UpdateEndpoint", e))?;
        } else {
            self.client
                .create_endpoint()
                .endpoint_name(endpoint)
                .endpoint_config_name(config_name)
                .send()
                .await
                .map_err(|e| aws("CreateEndpoint", e))?;
        }
        tracing::info!(%endpoint, config = %config_name, "updating the endpoint");
        let settled = self.wait_settled(endpoint).await?;
        let live_config = settled.endpoint_config_name().unwrap_or_default();
        if settled.endpoint_status() != Some(&EndpointStatus::InService)
            || live_config != config_name
        {
            return Err(DeployError::Failed(format!(
                "{endpoint} is {} on {live_config}: {}",
                settled.endpoint_status().map_or("?", |s| s.as_str()),
                settled.failure_reason().unwrap_or("no reason given")
            )));
        }
        Ok(())
    }

    /// Describes `endpoint` every `poll` until `done` says so of its status (`None`: there is
    /// no such endpoint), or the timeout passes.
    async fn wait_until(
        &self,
        endpoint: &str,
        done: impl Fn(Option<&EndpointStatus>) -> bool,
    ) -> Result<Option<DescribeEndpointOutput>, DeployError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let out = match self
                .client
                .describe_endpoint()
                .endpoint_name(endpoint)
                .send()
                .await
            {
                Ok(out) => Some(out),
                Err(e) if e.code() == Some("ValidationException") => None,
                Err(e) => return Err(aws("DescribeEndpoint", e)),
            };
            let status = out.as_ref().map(|o| {
                o.endpoint_status()
                    .cloned()
                    .unwrap_or_else(|| EndpointStatus::from("none"))
            });
            if done(status.as_ref()) {
                return Ok(out);
            }
            if Instant::now() >= deadline {
                return Err(DeployError::Timeout(
                    self.timeout,
                    status.map_or_else(|| "gone".to_owned(), |s| s.as_str().to_owned()),
                ));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Waits until `endpoint` is in no transition; its description then.
    pub(crate) async fn wait_settled(
        &self,
        endpoint: &str,
    ) -> Result<DescribeEndpointOutput, DeployError> {
        self.wait_until(endpoint, |s| s.is_none_or(|s| !in_transition(s)))
            .await?
            .ok_or_else(|| DeployError::Failed(format!("the endpoint {endpoint} does not exist")))
    }

    /// Waits until `endpoint` is gone (after DeleteEndpoint).
    pub(crate) async fn wait_gone(&self, endpoint: &str) -> Result<(), DeployError> {
        self.wait_until(endpoint, |s| s.is_none()).await.map(|_| ())
    }
}

/// An endpoint in one of these states is changing: wait for it to settle.
pub(crate) fn in_transition(status: &EndpointStatus) -> bool {
    matches!(
        status,
        EndpointStatus::Creating
            | EndpointStatus::Updating
            | EndpointStatus::SystemUpdating
            | EndpointStatus::RollingBack
    )
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}
