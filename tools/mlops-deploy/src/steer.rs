//! People stay in control of a rollout: `status`'s view of it, `rollout abort` and
//! `rollout promote`, carried out by the Deploy running it (or the next one).

use aws_sdk_sagemaker::types::ModelApprovalStatus;
use proto::registry::v1::EndpointState;
use rollout_evidence::{Verdict, weights_signature};

use crate::{
    DeployError, Deployer, aws,
    progressive::{PLAN_KEY, PROMOTE_KEY, Pair, evidence},
    report::{
        EvidenceView, RolloutSide, RolloutView, Steered, Steering, VariantEvidence, VerdictView,
    },
};

impl Deployer {
    /// `status`'s view of the rollout `state` shows: strategy, step, weights, when the step is
    /// due, each variant's evidence and what it says now.
    pub(crate) async fn rollout_view(
        &self,
        state: &EndpointState,
    ) -> Result<Option<RolloutView>, DeployError> {
        let Some(pair) = Pair::of(state) else {
            return Ok(None);
        };
        let package = self
            .describe_package(&pair.candidate.model_package_arn)
            .await?;
        let metadata = package
            .customer_metadata_properties()
            .cloned()
            .unwrap_or_default();
        let weights = weights_signature([
            (pair.live.name.as_str(), pair.live.current_weight),
            (pair.candidate.name.as_str(), pair.candidate.current_weight),
        ]);
        let window = evidence(&metadata, &weights);
        let side = |s: &rollout_evidence::VariantStats| VariantEvidence {
            requests: s.requests,
            error_rate: s.error_rate(),
            p50_ms: s.latency_p50_ms(),
            p99_ms: s.latency_p99_ms(),
            mean_score: s.mean_score(),
        };
        let of = |v: &proto::registry::v1::Variant| RolloutSide {
            variant: v.name.clone(),
            version: v.model_package_version,
            weight: v.current_weight,
        };
        Ok(Some(RolloutView {
            live: of(&pair.live),
            candidate: of(&pair.candidate),
            plan: metadata.get(PLAN_KEY).cloned(),
            promote: metadata.get(PROMOTE_KEY).cloned(),
            evidence: window.as_ref().map(|w| EvidenceView {
                since: w.started,
                live: side(&w.live),
                candidate: side(&w.candidate),
                verdict: match self.strategy.thresholds.judge(w) {
                    Verdict::Pass(why) => VerdictView::Pass(why),
                    Verdict::Fail(why) => VerdictView::Fail(why),
                    Verdict::Waiting(why) => VerdictView::Waiting(why),
                },
            }),
        }))
    }

    /// `rollout abort`: the candidate being rolled out is Rejected with `reason`; the Deploy
    /// running the rollout (or the next one) rolls back.
    pub async fn abort(&self, reason: &str) -> Result<Steering, DeployError> {
        let pair = self.rollout_in_progress().await?;
        let arn = &pair.candidate.model_package_arn;
        self.client
            .update_model_package()
            .model_package_arn(arn)
            .model_approval_status(ModelApprovalStatus::Rejected)
            .approval_description(format!("rollout aborted: {reason}"))
            .send()
            .await
            .map_err(|e| aws("UpdateModelPackage", e))?;
        Ok(Steering::Aborted(Steered {
            version: pair.candidate.model_package_version,
            arn: arn.clone(),
            reason: reason.to_owned(),
        }))
    }

    /// `rollout promote`: the Deploy running the rollout (or the next one) skips its
    /// remaining steps.
    pub async fn promote(&self, reason: &str) -> Result<Steering, DeployError> {
        let pair = self.rollout_in_progress().await?;
        let arn = &pair.candidate.model_package_arn;
        self.record(arn, PROMOTE_KEY, reason).await?;
        Ok(Steering::Promoting(Steered {
            version: pair.candidate.model_package_version,
            arn: arn.clone(),
            reason: reason.to_owned(),
        }))
    }

    /// Whether the endpoint is in a rollout (two versions serving).
    pub async fn in_rollout(&self) -> Result<bool, DeployError> {
        Ok(Pair::of(&self.endpoint_state().await?).is_some())
    }

    async fn rollout_in_progress(&self) -> Result<Pair, DeployError> {
        let state = self.endpoint_state().await?;
        Pair::of(&state)
            .ok_or_else(|| DeployError::Failed(format!("{} is not in a rollout", self.endpoint)))
    }

    /// Stores `key` = `value` in the package's metadata (merged with what is there).
    pub(crate) async fn record(
        &self,
        arn: &str,
        key: &str,
        value: &str,
    ) -> Result<(), DeployError> {
        self.client
            .update_model_package()
            .model_package_arn(arn)
            .customer_metadata_properties(key, metadata_value(value))
            .send()
            .await
            .map_err(|e| aws("UpdateModelPackage", e))?;
        Ok(())
    }
}

/// A metadata value is at most 256 characters.
fn metadata_value(s: &str) -> String {
    s.chars().take(256).collect()
}
