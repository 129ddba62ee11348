//! One look at SageMaker: the latest Approved package of the group (ListModelPackages,
//! newest first), and what the endpoint serves (DescribeEndpoint -> DescribeEndpointConfig ->
//! DescribeModel per variant). A variant's package comes from its container's
//! ModelPackageName, or is matched by ModelDataUrl against the group's packages.

use std::collections::HashMap;

use aws_sdk_sagemaker::{
    error::{ProvideErrorMetadata, SdkError},
    types::{ModelApprovalStatus, ModelPackageSortBy, SortOrder},
};
use proto::registry::v1::{EndpointState, ModelPackage, Variant};

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("SageMaker throttled the watcher: {0}")]
    Throttled(String),
    #[error("{0}")]
    Failed(String),
}

fn failed<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    what: &str,
    e: SdkError<E, R>,
) -> PollError {
    let code = e.code().map(str::to_owned);
    let message = match &e {
        SdkError::ServiceError(ctx) => ctx.err().message().unwrap_or_default().to_owned(),
        other => aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
    };
    match code.as_deref() {
        Some("ThrottlingException") => PollError::Throttled(format!("{what}: {message}")),
        Some(code) => PollError::Failed(format!("{what}: {code}: {message}")),
        None => PollError::Failed(format!("{what}: {message}")),
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
    /// Package ARN -> ModelDataUrl; a package's inference specification never changes.
    data_urls: HashMap<String, String>,
    /// Package ARN -> its feature names (its schema is fixed when it is registered).
    schemas: HashMap<String, Vec<String>>,
}

impl Poller {
    pub fn new(client: aws_sdk_sagemaker::Client, group: String, endpoint: String) -> Self {
        Poller {
            client,
            group,
            endpoint,
            data_urls: HashMap::new(),
            schemas: HashMap::new(),
        }
    }

    pub async fn latest_approved(&self) -> Result<Option<ModelPackage>, PollError> {
        let out = self
            .client
            .list_model_packages()
            .model_package_group_name(&self.group)
            .model_approval_status(ModelApprovalStatus::Approved)
            .sort_by(ModelPackageSortBy::CreationTime)
            .sort_order(SortOrder::Descending)
            .max_results(1)
            .send()
            .await
            .map_err(|e| failed("ListModelPackages", e))?;
        let Some(latest) = out.model_package_summary_list().first() else {
            return Ok(None);
        };
        let arn = latest.model_package_arn().unwrap_or_default().to_owned();
        let described = self
            .client
            .describe_model_package()
            .model_package_name(&arn)
            .send()
            .await
            .map_err(|e| failed("DescribeModelPackage", e))?;
        Ok(Some(ModelPackage {
            version: latest
                .model_package_version()
                .map_or_else(|| version_of(&arn), i64::from),
            arn,
            group: self.group.clone(),
            approval_status: "Approved".into(),
            created_at: latest.creation_time().map(timestamp),
            approved_at: described
                .last_modified_time()
                .or(described.creation_time())
                .map(timestamp),
            features: crate::schema::features_from_metadata(
                described.customer_metadata_properties(),
            ),
        }))
    }

    pub async fn endpoint(&mut self) -> Result<EndpointState, PollError> {
        let ep = self
            .client
            .describe_endpoint()
            .endpoint_name(&self.endpoint)
            .send()
            .await
            .map_err(|e| failed("DescribeEndpoint", e))?;
        let mut state = EndpointState {
            name: self.endpoint.clone(),
            status: ep
                .endpoint_status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            endpoint_config_name: ep.endpoint_config_name().unwrap_or_default().to_owned(),
            variants: Vec::new(),
            failure_reason: ep.failure_reason().unwrap_or_default().to_owned(),
        };
        if ep.production_variants().is_empty() || state.endpoint_config_name.is_empty() {
            return Ok(state);
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
                    Some(p) => Some(self.describe_arn(&p).await?),
                    None if !variant.model_data_url.is_empty() => {
                        self.match_data_url(&variant.model_data_url).await?
                    }
                    None => None,
                };
                if let Some(arn) = arn {
                    variant.model_package_version = version_of(&arn);
                    variant.features = self.features_of(&arn).await?;
                    variant.model_package_arn = arn;
                }
            }
            state.variants.push(variant);
        }
        Ok(state)
    }

    /// A package's feature names, described once per package.
    async fn features_of(&mut self, arn: &str) -> Result<Vec<String>, PollError> {
        if let Some(f) = self.schemas.get(arn) {
            return Ok(f.clone());
        }
        let d = self
            .client
            .describe_model_package()
            .model_package_name(arn)
            .send()
            .await
            .map_err(|e| failed("DescribeModelPackage", e))?;
        let features = crate::schema::features_from_metadata(d.customer_metadata_properties());
        self.schemas.insert(arn.to_owned(), features.clone());
        Ok(features)
    }

    async fn describe_arn(&self, name: &str) -> Result<String, PollError> {
        let d = self
            .client
            .describe_model_package()
            .model_package_name(name)
            .send()
            .await
            .map_err(|e| failed("DescribeModelPackage", e))?;
        Ok(d.model_package_arn().unwrap_or(name).to_owned())
    }

    /// The group's package whose artifact is `url`, if any.
    async fn match_data_url(&mut self, url: &str) -> Result<Option<String>, PollError> {
        if let Some((arn, _)) = self.data_urls.iter().find(|(_, u)| *u == url) {
            return Ok(Some(arn.clone()));
        }
        let mut pages = self
            .client
            .list_model_packages()
            .model_package_group_name(&self.group)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failed("ListModelPackages", e))?;
            for summary in page.model_package_summary_list() {
                let arn = summary.model_package_arn().unwrap_or_default().to_owned();
                if self.data_urls.contains_key(&arn) {
                    continue;
                }
                let d = self
                    .client
                    .describe_model_package()
                    .model_package_name(&arn)
                    .send()
                    .await
                    .map_err(|e| failed("DescribeModelPackage", e))?;
                let data = d
                    .inference_specification()
                    .and_then(|s| s.containers().first())
                    .and_then(|c| c.model_data_url())
                    .unwrap_or_default();
                self.data_urls.insert(arn, data.to_owned());
            }
        }
        Ok(self
            .data_urls
            .iter()
            .find(|(_, u)| *u == url)
            .map(|(arn, _)| arn.clone()))
    }
}
