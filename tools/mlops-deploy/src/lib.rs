//! The deploy step a pipeline stage runs, against real AWS or sagemaker-local:
//! `register` (artifact -> new package, PendingManualApproval), `approve`, `reject`, `status`,
//! and `deploy`: roll the endpoint to the latest Approved package of the group (CreateModel
//! from the package, CreateEndpointConfig, UpdateEndpoint, wait for InService). Idempotent:
//! nothing happens when that package is already live. A package Rejected after it was
//! deployed is no longer the latest Approved, so `deploy` rolls back to the newest one that is.
//! Each deployment names its variant after the version (`v3`), so the variant SageMaker
//! reports on every answer identifies the model exactly.

use std::time::{Duration, Instant};

use aws_sdk_sagemaker::{
    error::ProvideErrorMetadata,
    types::{
        ContainerDefinition, EndpointStatus, InferenceSpecification, ModelApprovalStatus,
        ModelPackageContainerDefinition,
    },
};
mod cli;
mod endpoint;
mod progressive;
pub mod report;
mod scaling;
mod shadow;
mod steer;
mod strategy;

pub use cli::{Target, init_cli_logging};
use endpoint::truncate;
pub use model_registry::version_of;
use model_registry::{poll::Poller, status::in_sync};
use report::{
    Approval, Deployment, LiveVariant, PackageRef, Registered, Status, Switched, SwitchedTo,
    VariantVersion,
};
pub use scaling::{Scaler, Scaling};
pub use strategy::{Kind, Quiet, Strategy};

/// Why a deploy operation failed; an AWS call's error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{operation}: {code}: {message}")]
    Aws {
        operation: String,
        code: String,
        message: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Registry(#[from] model_registry::poll::PollError),
    #[error("the group {0} has no Approved model package")]
    NothingApproved(String),
    #[error("the endpoint did not reach InService within {0:?} (last status {1})")]
    Timeout(Duration, String),
    #[error("the deployment failed: {0}")]
    Failed(String),
}

/// An AWS call's error, as every part of the deploy step reports it.
fn aws<E>(what: &str, e: E) -> DeployError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    DeployError::Aws {
        operation: what.to_owned(),
        code: e.code().unwrap_or("error").to_owned(),
        message: e.message().map_or_else(|| format!("{e:?}"), str::to_owned),
        source: Box::new(e),
    }
}

pub struct Deployer {
    pub client: aws_sdk_sagemaker::Client,
    pub group: String,
    pub endpoint: String,
    /// Where a pending candidate is shadowed (`mlops-deploy shadow`).
    pub shadow_endpoint: String,
    pub execution_role_arn: Option<String>,
    /// The KMS key the endpoint config encrypts the instances' storage with.
    pub kms_key_id: Option<String>,
    pub instance_type: String,
    pub instance_count: i32,
    pub poll: Duration,
    pub timeout: Duration,
    /// How `deploy` moves traffic to a new version.
    pub strategy: Strategy,
    /// Auto scaling of the serving variant (`None`: not managed).
    pub scaler: Option<Scaler>,
}

impl Deployer {
    /// A deployer with the CLI's defaults (one ml.m5.large, no execution role, polls every 15 s
    /// for up to an hour).
    pub fn new(client: aws_sdk_sagemaker::Client, target: Target) -> Self {
        Deployer {
            client,
            group: target.group,
            shadow_endpoint: target
                .shadow_endpoint_name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| {
                    model_registry::status::shadow_endpoint_name(&target.endpoint_name)
                }),
            endpoint: target.endpoint_name,
            execution_role_arn: None,
            kms_key_id: None,
            instance_type: "ml.m5.large".into(),
            instance_count: 1,
            poll: Duration::from_secs(15),
            timeout: Duration::from_secs(3600),
            strategy: Strategy::default(),
            scaler: None,
        }
    }

    fn poller(&self) -> Poller {
        Poller::new(
            self.client.clone(),
            self.group.clone(),
            self.endpoint.clone(),
        )
    }

    fn poll_error(e: model_registry::poll::PollError) -> DeployError {
        DeployError::Registry(e)
    }

    /// The package ARN for a version of the group (or an ARN given as is).
    pub async fn package_arn(&self, version_or_arn: &str) -> Result<String, DeployError> {
        if version_or_arn.starts_with("arn:") {
            return Ok(version_or_arn.to_owned());
        }
        let name = format!("{}/{}", self.group, version_or_arn.trim_start_matches('v'));
        let d = self.describe_package(&name).await?;
        Ok(d.model_package_arn().unwrap_or_default().to_owned())
    }

    pub async fn register(
        &self,
        model_data_url: &str,
        image: &str,
        description: Option<String>,
        features: Option<String>,
    ) -> Result<Registered, DeployError> {
        let spec = InferenceSpecification::builder()
            .containers(
                ModelPackageContainerDefinition::builder()
                    .image(image)
                    .model_data_url(model_data_url)
                    .build(),
            )
            .supported_content_types("text/csv")
            .supported_response_mime_types("text/csv")
            .build();
        let out = self
            .client
            .create_model_package()
            .model_package_group_name(&self.group)
            .set_model_package_description(description)
            .model_approval_status(ModelApprovalStatus::PendingManualApproval)
            .inference_specification(spec)
            .set_customer_metadata_properties(features.map(|f| {
                std::collections::HashMap::from([(
                    model_registry::schema::FEATURES_KEY.to_owned(),
                    f,
                )])
            }))
            .send()
            .await
            .map_err(|e| aws("CreateModelPackage", e))?;
        let arn = out.model_package_arn().unwrap_or_default().to_owned();
        Ok(Registered {
            version: version_of(&arn),
            arn,
            status: ModelApprovalStatus::PendingManualApproval.as_str(),
        })
    }

    pub async fn set_approval(
        &self,
        version_or_arn: &str,
        status: ModelApprovalStatus,
        reason: Option<String>,
        only_if_pending: bool,
    ) -> Result<Approval, DeployError> {
        if !matches!(
            status,
            ModelApprovalStatus::Approved | ModelApprovalStatus::Rejected
        ) {
            return Err(DeployError::Failed(format!(
                "{} is not a decision (Approved or Rejected)",
                status.as_str()
            )));
        }
        let arn = self.package_arn(version_or_arn).await?;
        if only_if_pending {
            let current = self
                .describe_package(&arn)
                .await?
                .model_approval_status()
                .cloned();
            match current {
                Some(s) if s == status => {
                    return Ok(Approval::None {
                        reason: format!("already {}", s.as_str()),
                        version: version_of(&arn),
                        arn,
                    });
                }
                Some(ModelApprovalStatus::PendingManualApproval) | None => {}
                Some(other) => {
                    return Err(DeployError::Failed(format!(
                        "{arn} is {} in the registry, not PendingManualApproval: not changing it to {}",
                        other.as_str(),
                        status.as_str()
                    )));
                }
            }
        }
        self.client
            .update_model_package()
            .model_package_arn(&arn)
            .model_approval_status(status.clone())
            .set_approval_description(reason)
            .send()
            .await
            .map_err(|e| aws("UpdateModelPackage", e))?;
        let changed = PackageRef {
            version: version_of(&arn),
            arn,
        };
        Ok(match status {
            ModelApprovalStatus::Rejected => Approval::Rejected(changed),
            _ => Approval::Approved(changed), // the only other decision, checked above
        })
    }

    pub async fn status(&self) -> Result<Status, DeployError> {
        let mut poller = self.poller();
        let latest = poller.latest_approved().await.map_err(Self::poll_error)?;
        let endpoint = poller.endpoint().await.map_err(Self::poll_error)?;
        Ok(Status {
            group: self.group.clone(),
            latest_approved: latest.as_ref().map(|p| PackageRef {
                arn: p.arn.clone(),
                version: p.version,
            }),
            in_sync: in_sync(latest.as_ref(), &endpoint),
            candidate: self.candidate_seen_by(&mut poller, latest.as_ref()).await?,
            rollout: self.rollout_view(&endpoint).await?,
            live: endpoint
                .variants
                .iter()
                .map(|v| LiveVariant {
                    variant: v.name.clone(),
                    weight: v.current_weight,
                    version: v.model_package_version,
                    arn: v.model_package_arn.clone(),
                })
                .collect(),
            endpoint: endpoint.name,
            endpoint_status: endpoint.status,
            endpoint_config: endpoint.endpoint_config_name,
            failure_reason: endpoint.failure_reason,
        })
    }

    /// Rolls the endpoint to the latest Approved package by the strategy (see `progressive`);
    /// does nothing when it is live. A rollout the endpoint is in (a Deploy was stopped
    /// mid-way) is resumed when its candidate is still the latest Approved, else rolled back.
    pub async fn deploy(&self) -> Result<Deployment, DeployError> {
        let started = Instant::now();
        let mut poller = self.poller();
        let latest = poller
            .latest_approved()
            .await
            .map_err(Self::poll_error)?
            .ok_or_else(|| DeployError::NothingApproved(self.group.clone()))?;
        let exists = match self
            .client
            .describe_endpoint()
            .endpoint_name(&self.endpoint)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) if e.code() == Some("ValidationException") => false,
            Err(e) => return Err(aws("DescribeEndpoint", e)),
        };
        let mut before = Vec::new();
        let mut live = None;
        if exists {
            let mut state = self.settled_state().await?;
            if let Some(pair) = progressive::Pair::of(&state) {
                if pair.candidate.model_package_arn == latest.arn {
                    let total = pair.live.current_weight + pair.candidate.current_weight;
                    let share = if total > 0.0 {
                        pair.candidate.current_weight / total
                    } else {
                        0.0
                    };
                    let from = strategy::resume_step(&self.strategy.shares()?, share);
                    tracing::info!(
                        version = latest.version,
                        share,
                        "resuming the rollout the endpoint is in"
                    );
                    return self.run_rollout(pair, from).await;
                }
                let why = format!(
                    "v{} is not the latest Approved package (v{} is)",
                    pair.candidate.model_package_version, latest.version
                );
                tracing::warn!(%why, "ending the rollout the endpoint is in: back to the live variant");
                self.roll_back(&pair, &why, false).await?;
                state = self.endpoint_state().await?;
            }
            before = state
                .variants
                .iter()
                .map(|v| VariantVersion {
                    variant: v.name.clone(),
                    version: v.model_package_version,
                })
                .collect();
            if EndpointStatus::from(state.status.as_str()) == EndpointStatus::InService
                && in_sync(Some(&latest), &state)
            {
                return Ok(Deployment::None {
                    reason: "the latest Approved package is already live".into(),
                    endpoint: self.endpoint.clone(),
                    version: latest.version,
                    arn: latest.arn,
                });
            }
            live = match state.variants.as_slice() {
                [v] if v.model_package_version > 0 => Some(v.clone()),
                _ => None,
            };
        }

        let model_name = self.model_for(&latest.arn, latest.version).await?;
        if let Some(live) = live.filter(|_| self.strategy.kind != strategy::Kind::AllAtOnce) {
            let (was, now) = (&live.features, &latest.features);
            if was.is_empty() || now.is_empty() || was == now {
                return self
                    .start_rollout(&live, &latest.arn, latest.version, &model_name)
                    .await;
            }
            // Requests are validated against one schema: both versions cannot serve them.
            tracing::warn!(live = ?was, candidate = ?now, "the candidate takes other features than the live model: switching all at once");
        }
        let config_name = self
            .roll_out(&self.endpoint, &model_name, latest.version, exists)
            .await?;
        let switched = Switched {
            endpoint: self.endpoint.clone(),
            from: before,
            to: SwitchedTo {
                variant: format!("v{}", latest.version),
                version: latest.version,
                arn: latest.arn,
                model: model_name,
                endpoint_config: config_name,
            },
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok(if exists {
            Deployment::Updated(switched)
        } else {
            Deployment::Created(switched)
        })
    }

    /// A model for the package: the existing `{endpoint}-v{n}` when it serves that package.
    async fn model_for(&self, arn: &str, version: i64) -> Result<String, DeployError> {
        let name = truncate(&format!("{}-v{version}", self.endpoint), 63);
        let container = ContainerDefinition::builder()
            .model_package_name(arn)
            .build();
        self.ensure_model(
            name,
            container,
            |c| c.model_package_name() == Some(arn),
            arn,
        )
        .await
    }
}

#[cfg(test)]
mod tests;
