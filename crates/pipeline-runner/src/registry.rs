//! What the runner reads from the model registry: every package's approval status (the
//! listener compares snapshots, as EventBridge reports "Model Package State Change"), and a
//! package's evaluation as the Train step recorded it, for the approval gate.

use std::collections::BTreeMap;

pub use deploy::version_of;

use aws_sdk_sagemaker::{
    error::ProvideErrorMetadata,
    types::{ModelApprovalStatus, ModelPackageSortBy, SortOrder},
};

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

/// Package version -> approval status, for one group.
pub type Snapshot = BTreeMap<i64, ModelApprovalStatus>;

pub async fn snapshot(
    client: &aws_sdk_sagemaker::Client,
    group: &str,
) -> Result<Snapshot, RegistryError> {
    let mut out = Snapshot::new();
    let mut token = None;
    loop {
        let page = client
            .list_model_packages()
            .model_package_group_name(group)
            .sort_by(ModelPackageSortBy::CreationTime)
            .sort_order(SortOrder::Ascending)
            .max_results(100)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| error("ListModelPackages", e))?;
        for p in page.model_package_summary_list() {
            let version = p.model_package_version().map_or_else(
                || version_of(p.model_package_arn().unwrap_or_default()),
                i64::from,
            );
            if let Some(status) = p.model_approval_status() {
                out.insert(version, status.clone());
            }
        }
        token = page
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// The state changes EventBridge would report between two snapshots that start a deploy:
/// a package that became (or was registered as) Approved or Rejected, or left Approved.
pub fn decisions(before: &Snapshot, after: &Snapshot) -> Vec<(i64, String)> {
    after
        .iter()
        .filter_map(|(version, now)| {
            let was = before.get(version);
            let decided = matches!(
                now,
                ModelApprovalStatus::Approved | ModelApprovalStatus::Rejected
            ) || was == Some(&ModelApprovalStatus::Approved);
            (was != Some(now) && decided).then(|| (*version, now.as_str().to_owned()))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use ModelApprovalStatus::{Approved, PendingManualApproval as Pending, Rejected};

    #[test]
    fn decisions_are_the_changes_that_move_what_should_serve() {
        let before = Snapshot::from([(1, Approved), (2, Pending), (3, Approved)]);
        // a new pending package is no decision; approving 2 and rejecting 3 are
        let after = Snapshot::from([(1, Approved), (2, Approved), (3, Rejected), (4, Pending)]);
        assert_eq!(
            decisions(&before, &after),
            [(2, "Approved".to_owned()), (3, "Rejected".to_owned())]
        );
        // Approved back to pending also changes the latest Approved
        let after = Snapshot::from([(1, Pending), (2, Pending), (3, Approved)]);
        assert_eq!(
            decisions(&before, &after),
            [(1, "PendingManualApproval".to_owned())]
        );
        // registered straight as Approved
        let after = Snapshot::from([(1, Approved), (2, Pending), (3, Approved), (4, Approved)]);
        assert_eq!(decisions(&before, &after), [(4, "Approved".to_owned())]);
        assert!(decisions(&before, &before).is_empty());
    }
}
