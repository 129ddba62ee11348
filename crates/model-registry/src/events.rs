//! Registry changes the way EventBridge reports them ("SageMaker Model Package State
//! Change"): a listener keeps a snapshot of the group's approval statuses and compares the
//! next one with it; the changes that move what should serve call for a deploy.

use std::collections::BTreeMap;

use aws_sdk_sagemaker::{
    error::ProvideErrorMetadata,
    types::{ModelApprovalStatus, ModelPackageSortBy, SortOrder},
};

use crate::poll::version_of;

#[derive(Debug, thiserror::Error)]
#[error("ListModelPackages: {0}")]
pub struct SnapshotError(String);

/// Package version -> approval status, for one group.
pub type Snapshot = BTreeMap<i64, ModelApprovalStatus>;

pub async fn snapshot(
    client: &aws_sdk_sagemaker::Client,
    group: &str,
) -> Result<Snapshot, SnapshotError> {
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
            .map_err(|e| {
                SnapshotError(format!(
                    "{}: {}",
                    e.code().unwrap_or("error"),
                    e.message().map_or_else(|| format!("{e:?}"), str::to_owned)
                ))
            })?;
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

/// Packages registered PendingManualApproval since `before`: candidates to shadow.
pub fn registrations(before: &Snapshot, after: &Snapshot) -> Vec<i64> {
    after
        .iter()
        .filter(|(v, s)| {
            **s == ModelApprovalStatus::PendingManualApproval && !before.contains_key(v)
        })
        .map(|(v, _)| *v)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ModelApprovalStatus::{Approved, PendingManualApproval as Pending, Rejected};

    #[test]
    fn registrations_are_new_pending_packages() {
        let before = Snapshot::from([(1, Approved), (2, Pending)]);
        let after = Snapshot::from([(1, Approved), (2, Approved), (3, Pending), (4, Rejected)]);
        assert_eq!(registrations(&before, &after), [3]);
        assert!(registrations(&after, &after).is_empty());
    }

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
