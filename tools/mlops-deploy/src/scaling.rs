//! Capacity that follows each deployment: the live variant scales with Application Auto
//! Scaling (target tracking on `SageMakerVariantInvocationsPerInstance`). SageMaker refuses an
//! `UpdateEndpoint` that removes a variant registered as a scalable target, and each version's
//! variant has its own name, so Deploy deregisters a retiring variant before the update that
//! removes it and registers the one that serves alone after.

use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};

use crate::{DeployError, aws};

/// How the serving variant scales (`DEPLOY_SCALING_MIN` 0: not at all).
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct Scaling {
    /// Fewest instances of the serving variant; 0 leaves auto scaling off.
    #[arg(long = "scaling-min", env = "DEPLOY_SCALING_MIN", default_value_t = 0)]
    pub min: i32,
    /// Most instances of the serving variant.
    #[arg(long = "scaling-max", env = "DEPLOY_SCALING_MAX", default_value_t = 4)]
    pub max: i32,
    /// Invocations per instance per minute that target tracking holds the variant at.
    #[arg(
        long = "scaling-target",
        env = "DEPLOY_SCALING_TARGET",
        default_value_t = 1000.0
    )]
    pub target: f64,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            min: 0,
            max: 4,
            target: 1000.0,
        }
    }
}

/// The scaling policy's name, one per variant.
const POLICY: &str = "mlops-invocations-per-instance";

pub fn resource_id(endpoint: &str, variant: &str) -> String {
    format!("endpoint/{endpoint}/variant/{variant}")
}

/// Application Auto Scaling for one endpoint's variants.
pub struct Scaler {
    pub client: aws_sdk_applicationautoscaling::Client,
    pub config: Scaling,
}

impl Scaler {
    pub fn enabled(&self) -> bool {
        self.config.min > 0
    }

    fn check(&self) -> Result<(), DeployError> {
        let c = &self.config;
        if c.max < c.min || !(c.target.is_finite() && c.target > 0.0) {
            return Err(DeployError::Failed(format!(
                "DEPLOY_SCALING_MAX ({}) must be at least DEPLOY_SCALING_MIN ({}) and DEPLOY_SCALING_TARGET ({}) above 0",
                c.max, c.min, c.target
            )));
        }
        Ok(())
    }

    /// Whether `variant` is registered as a scalable target.
    pub async fn registered(&self, endpoint: &str, variant: &str) -> Result<bool, DeployError> {
        let out = self
            .client
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Sagemaker)
            .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
            .resource_ids(resource_id(endpoint, variant))
            .send()
            .await
            .map_err(|e| aws("DescribeScalableTargets", e))?;
        Ok(!out.scalable_targets().is_empty())
    }

    /// Removes `variant`'s policies and its registration, if any (before an update that
    /// removes the variant). Done whether or not scaling is on: a target registered by an
    /// earlier configuration would block the update all the same.
    pub async fn deregister(&self, endpoint: &str, variant: &str) -> Result<(), DeployError> {
        if !self.registered(endpoint, variant).await? {
            return Ok(());
        }
        let id = resource_id(endpoint, variant);
        let policies = self
            .client
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Sagemaker)
            .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
            .resource_id(&id)
            .send()
            .await
            .map_err(|e| aws("DescribeScalingPolicies", e))?;
        for p in policies.scaling_policies() {
            self.client
                .delete_scaling_policy()
                .service_namespace(ServiceNamespace::Sagemaker)
                .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
                .resource_id(&id)
                .policy_name(p.policy_name())
                .send()
                .await
                .map_err(|e| aws("DeleteScalingPolicy", e))?;
        }
        self.client
            .deregister_scalable_target()
            .service_namespace(ServiceNamespace::Sagemaker)
            .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
            .resource_id(&id)
            .send()
            .await
            .map_err(|e| aws("DeregisterScalableTarget", e))?;
        tracing::info!(%id, "deregistered from auto scaling (the variant is retiring)");
        Ok(())
    }

    /// Registers `variant` (min..max instances) with its target-tracking policy; nothing when
    /// scaling is off.
    pub async fn register(&self, endpoint: &str, variant: &str) -> Result<(), DeployError> {
        if !self.enabled() {
            return Ok(());
        }
        self.check()?;
        let id = resource_id(endpoint, variant);
        self.client
            .register_scalable_target()
            .service_namespace(ServiceNamespace::Sagemaker)
            .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
            .resource_id(&id)
            .min_capacity(self.config.min)
            .max_capacity(self.config.max)
            .send()
            .await
            .map_err(|e| aws("RegisterScalableTarget", e))?;
        let metric = PredefinedMetricSpecification::builder()
            .predefined_metric_type(MetricType::SageMakerVariantInvocationsPerInstance)
            .build()
            .map_err(|e| DeployError::Failed(e.to_string()))?;
        let tracking = TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(self.config.target)
            .predefined_metric_specification(metric)
            .build()
            .map_err(|e| DeployError::Failed(e.to_string()))?;
        self.client
            .put_scaling_policy()
            .policy_name(POLICY)
            .service_namespace(ServiceNamespace::Sagemaker)
            .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
            .resource_id(&id)
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(tracking)
            .send()
            .await
            .map_err(|e| aws("PutScalingPolicy", e))?;
        tracing::info!(%id, min = self.config.min, max = self.config.max, target = self.config.target, "registered for auto scaling");
        Ok(())
    }
}
