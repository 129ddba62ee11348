//! A package as the approval gate shows it: its evaluation as the Train step recorded it
//! (CustomerMetadataProperties, the ModelMetrics report) and its approval status.

use std::collections::BTreeMap;

pub use model_registry::version_of;

use aws_sdk_sagemaker::{error::ProvideErrorMetadata, types::ModelApprovalStatus};

#[derive(Debug, thiserror::Error)]
#[error("{call}: {message}")]
pub struct RegistryError {
    call: &'static str,
    message: String,
}

fn error<E: ProvideErrorMetadata + std::fmt::Debug>(call: &'static str, e: E) -> RegistryError {
    RegistryError {
        call,
        message: format!(
            "{}: {}",
            e.code().unwrap_or("error"),
            e.message().map_or_else(|| format!("{e:?}"), str::to_owned)
        ),
    }
}

/// A package as an approver sees it.
pub struct Evaluation {
    pub version: i64,
    pub status: ModelApprovalStatus,
    pub description: String,
    pub metadata: BTreeMap<String, String>,
    pub report: Option<String>,
}

impl Evaluation {
    fn get(&self, key: &str) -> &str {
        self.metadata.get(key).map_or("-", String::as_str)
    }

    /// One line per figure, the way the gate prints two packages side by side.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            ("status", self.status.as_str().to_owned()),
            ("validation AUC", self.get("validation_auc").to_owned()),
            (
                "validation accuracy",
                self.get("validation_accuracy").to_owned(),
            ),
            (
                "validation log loss",
                self.get("validation_logloss").to_owned(),
            ),
            (
                "rows (train / validation)",
                format!(
                    "{} / {}",
                    self.get("training_rows"),
                    self.get("validation_rows")
                ),
            ),
            ("features", self.get("features").to_owned()),
            ("source commit", self.get("source_commit").to_owned()),
            (
                "evaluation report",
                self.report.clone().unwrap_or_else(|| "-".into()),
            ),
        ]
    }
}

impl Evaluation {
    /// The candidate against the live model on the very same validation rows (Train scores
    /// both), with the difference; or why the live model could not score them.
    pub fn against_live(&self) -> Option<model_registry::evaluation::AgainstLive> {
        model_registry::evaluation::against_live(|k| self.metadata.get(k).map(String::as_str))
    }
}

pub async fn evaluation(
    client: &aws_sdk_sagemaker::Client,
    package: &str,
) -> Result<Evaluation, RegistryError> {
    let d = client
        .describe_model_package()
        .model_package_name(package)
        .send()
        .await
        .map_err(|e| error("DescribeModelPackage", e))?;
    Ok(Evaluation {
        version: d.model_package_version().map_or_else(
            || version_of(d.model_package_arn().unwrap_or_default()),
            i64::from,
        ),
        status: d
            .model_approval_status()
            .cloned()
            .unwrap_or(ModelApprovalStatus::PendingManualApproval),
        description: d.model_package_description().unwrap_or_default().to_owned(),
        metadata: d
            .customer_metadata_properties()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        report: d
            .model_metrics()
            .and_then(|m| m.model_quality())
            .and_then(|q| q.statistics())
            .and_then(|s| s.s3_uri())
            .map(str::to_owned),
    })
}
