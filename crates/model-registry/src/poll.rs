//! One look at SageMaker: the latest Approved package of the group (ListModelPackages,
//! newest first), and what the endpoint serves (DescribeEndpoint -> DescribeEndpointConfig ->
//! DescribeModel per variant). A variant's package comes from its container's
//! ModelPackageName, or is matched by ModelDataUrl against the group's packages.

use std::collections::HashMap;

use aws_sdk_sagemaker::{
    error::{ProvideErrorMetadata, SdkError},
    types::{ModelApprovalStatus, ModelPackageSortBy, ModelPackageSummary, SortOrder},
};
use proto::registry::v1::{EndpointState, FeatureBaseline, ModelPackage, Variant};

type Source = Box<dyn std::error::Error + Send + Sync>;

/// Why a look at the registry or the endpoint failed, with the SDK's error as its source.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("SageMaker throttled the watcher: {operation}: {message}")]
    Throttled {
        operation: String,
        message: String,
        #[source]
        source: Source,
    },
    #[error("{operation}: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Failed {
        operation: String,
        code: Option<String>,
        message: String,
        #[source]
        source: Source,
    },
    #[error("DescribeEndpoint: no endpoint {0}")]
    NoEndpoint(String),
}

fn failed<E, R>(what: &str, e: SdkError<E, R>) -> PollError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = e.code().map(str::to_owned);
    let message = match &e {
        SdkError::ServiceError(ctx) => ctx.err().message().unwrap_or_default().to_owned(),
        other => aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
    };
    let operation = what.to_owned();
    let source = Box::new(e);
    match code.as_deref() {
        Some("ThrottlingException") => PollError::Throttled {
            operation,
            message,
            source,
        },
        _ => PollError::Failed {
            operation,
            code,
            message,
            source,
        },
    }
}

pub fn timestamp(t: &aws_smithy_types::DateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.secs(),
        nanos: t.subsec_nanos() as i32,
    }
}

/// `…:model-package/{group}/{version}` -> version.
pub fn version_of(arn: &str) -> i64 {
    arn.rsplit('/')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub struct Poller {
    pub client: aws_sdk_sagemaker::Client,
    pub group: String,
    pub endpoint: String,
    /// Package ARN -> (ModelDataUrl, feature names): fixed when a package is registered.
    facts: HashMap<String, Facts>,
}

#[derive(Clone, Default)]
struct Facts {
    data_url: String,
    features: Vec<String>,
    baselines: Vec<FeatureBaseline>,
}

impl Poller {
    pub fn new(client: aws_sdk_sagemaker::Client, group: String, endpoint: String) -> Self {
        Poller {
            client,
            group,
            endpoint,
            facts: HashMap::new(),
        }
    }

    /// The group's newest package (of `status` when given), with its ARN and version.
    async fn newest(
        &self,
        status: Option<ModelApprovalStatus>,
    ) -> Result<Option<(ModelPackageSummary, String, i64)>, PollError> {
        let out = self
            .client
            .list_model_packages()
            .model_package_group_name(&self.group)
            .set_model_approval_status(status)
            .sort_by(ModelPackageSortBy::CreationTime)
            .sort_order(SortOrder::Descending)
            .max_results(1)
            .send()
            .await
            .map_err(|e| failed("ListModelPackages", e))?;
        Ok(out.model_package_summary_list().first().map(|p| {
            let arn = p.model_package_arn().unwrap_or_default().to_owned();
            let version = p
                .model_package_version()
                .map_or_else(|| version_of(&arn), i64::from);
            (p.clone(), arn, version)
        }))
    }

    pub async fn latest_approved(&mut self) -> Result<Option<ModelPackage>, PollError> {
        let Some((latest, arn, version)) = self.newest(Some(ModelApprovalStatus::Approved)).await?
        else {
            return Ok(None);
        };
        let created_at = latest.creation_time().map(timestamp);
        // Described every poll: its approval time is what can change.
        let described = self.describe(&arn).await?;
        Ok(Some(ModelPackage {
            version,
            arn,
            group: self.group.clone(),
            approval_status: "Approved".into(),
            created_at,
            approved_at: described
                .last_modified_time()
                .or(described.creation_time())
                .map(timestamp),
            features: crate::schema::features_from_metadata(
                described.customer_metadata_properties(),
            ),
        }))
    }

    /// The group's newest package when it is PendingManualApproval and newer than `approved`
    /// (the candidate an approver decides on), with its metadata as stored now.
    pub async fn candidate(
        &mut self,
        approved: Option<&ModelPackage>,
    ) -> Result<Option<(ModelPackage, HashMap<String, String>)>, PollError> {
        let Some((newest, arn, version)) = self.newest(None).await? else {
            return Ok(None);
        };
        let pending =
            newest.model_approval_status() == Some(&ModelApprovalStatus::PendingManualApproval);
        if !pending || approved.is_some_and(|a| a.version >= version) {
            return Ok(None);
        }
        let described = self.describe(&arn).await?;
        let metadata = described
            .customer_metadata_properties()
            .cloned()
            .unwrap_or_default();
        Ok(Some((
            ModelPackage {
                version,
                group: self.group.clone(),
                approval_status: "PendingManualApproval".into(),
                created_at: newest.creation_time().map(timestamp),
                approved_at: None,
                features: crate::schema::features_from_metadata(Some(&metadata)),
                arn,
            },
            metadata,
        )))
    }

    /// What the endpoint serves.
    pub async fn endpoint(&mut self) -> Result<EndpointState, PollError> {
        let name = self.endpoint.clone();
        self.endpoint_named(&name)
            .await?
            .ok_or_else(|| PollError::NoEndpoint(name.to_owned()))
    }

    /// What the endpoint `name` serves; `None` when there is no such endpoint.
    pub async fn endpoint_named(&mut self, name: &str) -> Result<Option<EndpointState>, PollError> {
        let ep = match self
            .client
            .describe_endpoint()
            .endpoint_name(name)
            .send()
            .await
        {
            Ok(ep) => ep,
            Err(e)
                if e.code() == Some("ValidationException")
                    && e.message().is_some_and(|m| m.contains("Could not find")) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(failed("DescribeEndpoint", e)),
        };
        let mut state = EndpointState {
            name: name.to_owned(),
            status: ep
                .endpoint_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            endpoint_config_name: ep.endpoint_config_name().unwrap_or_default().to_owned(),
            variants: Vec::new(),
            failure_reason: ep.failure_reason().unwrap_or_default().to_owned(),
        };
        if ep.production_variants().is_empty() || state.endpoint_config_name.is_empty() {
            return Ok(Some(state));
        }
        let config = self
            .client
            .describe_endpoint_config()
            .endpoint_config_name(&state.endpoint_config_name)
            .send()
            .await
            .map_err(|e| failed("DescribeEndpointConfig", e))?;
        let models: HashMap<String, String> = config
            .production_variants()
            .iter()
            .map(|v| {
                (
                    v.variant_name().unwrap_or_default().to_owned(),
                    v.model_name().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        for live in ep.production_variants() {
            let name = live.variant_name().unwrap_or_default().to_owned();
            let model_name = models.get(&name).cloned().unwrap_or_default();
            let mut variant = Variant {
                name,
                current_weight: live.current_weight().unwrap_or(0.0) as f64,
                model_name: model_name.clone(),
                ..Default::default()
            };
            if !model_name.is_empty() {
                let model = self
                    .client
                    .describe_model()
                    .model_name(&model_name)
                    .send()
                    .await
                    .map_err(|e| failed("DescribeModel", e))?;
                let container = model
                    .primary_container()
                    .or_else(|| model.containers().first());
                let package = container
                    .and_then(|c| c.model_package_name())
                    .map(str::to_owned);
                variant.model_data_url = container
                    .and_then(|c| c.model_data_url())
                    .unwrap_or_default()
                    .to_owned();
                let arn = match package {
                    Some(p) if p.starts_with("arn:") => Some(p),
                    Some(p) => Some(
                        self.describe(&p)
                            .await?
                            .model_package_arn()
                            .unwrap_or(&p)
                            .to_owned(),
                    ),
                    None if !variant.model_data_url.is_empty() => {
                        self.match_data_url(&variant.model_data_url).await?
                    }
                    None => None,
                };
                if let Some(arn) = arn {
                    let facts = self.facts(&arn).await?;
                    variant.model_package_version = version_of(&arn);
                    variant.features = facts.features;
                    variant.baselines = facts.baselines;
                    variant.model_package_arn = arn;
                }
            }
            state.variants.push(variant);
        }
        Ok(Some(state))
    }

    /// DescribeModelPackage, keeping the package's fixed facts.
    async fn describe(
        &mut self,
        name: &str,
    ) -> Result<
        aws_sdk_sagemaker::operation::describe_model_package::DescribeModelPackageOutput,
        PollError,
    > {
        let d = self
            .client
            .describe_model_package()
            .model_package_name(name)
            .send()
            .await
            .map_err(|e| failed("DescribeModelPackage", e))?;
        if let Some(arn) = d.model_package_arn() {
            let data_url = d
                .inference_specification()
                .and_then(|s| s.containers().first())
                .and_then(|c| c.model_data_url())
                .unwrap_or_default()
                .to_owned();
            let metadata = d.customer_metadata_properties();
            let features = crate::schema::features_from_metadata(metadata);
            let baselines = crate::schema::baselines_from_metadata(&features, metadata);
            self.facts.insert(
                arn.to_owned(),
                Facts {
                    data_url,
                    features,
                    baselines,
                },
            );
        }
        Ok(d)
    }

    /// A package's facts, described once per package.
    async fn facts(&mut self, arn: &str) -> Result<Facts, PollError> {
        if !self.facts.contains_key(arn) {
            self.describe(arn).await?;
        }
        Ok(self.facts.get(arn).cloned().unwrap_or_default())
    }

    /// The group's package whose artifact is `url`, if any.
    async fn match_data_url(&mut self, url: &str) -> Result<Option<String>, PollError> {
        let found = |facts: &HashMap<String, Facts>| {
            facts
                .iter()
                .find(|(_, f)| f.data_url == url)
                .map(|(arn, _)| arn.clone())
        };
        if let Some(arn) = found(&self.facts) {
            return Ok(Some(arn));
        }
        let mut arns = Vec::new();
        let mut pages = self
            .client
            .list_model_packages()
            .model_package_group_name(&self.group)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failed("ListModelPackages", e))?;
            arns.extend(
                page.model_package_summary_list()
                    .iter()
                    .filter_map(|p| p.model_package_arn())
                    .map(str::to_owned),
            );
        }
        for arn in arns {
            self.facts(&arn).await?;
        }
        Ok(found(&self.facts))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointError;

    use super::*;

    #[test]
    fn a_failed_call_names_the_operation_and_keeps_the_sdk_error_as_its_source() {
        let e: SdkError<DescribeEndpointError, ()> = SdkError::timeout_error("no answer in 10 s");
        let p = failed("DescribeEndpoint", e);
        assert!(matches!(p, PollError::Failed { .. }), "{p:?}");
        assert!(p.to_string().starts_with("DescribeEndpoint: "), "{p}");
        let source = p.source().expect("the SDK error is kept");
        assert!(source.to_string().contains("timed out"), "{source}");
    }
}
