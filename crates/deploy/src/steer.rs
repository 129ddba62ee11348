//! People stay in control of a rollout: `status`'s view of it, `rollout abort` and
//! `rollout promote`, carried out by the Deploy running it (or the next one).

use aws_sdk_sagemaker::types::ModelApprovalStatus;
use proto::registry::v1::EndpointState;
use rollout_evidence::{Verdict, weights_signature};
use serde_json::{Value, json};

use crate::{
    DeployError, Deployer, aws,
    progressive::{PLAN_KEY, PROMOTE_KEY, Pair, evidence},
};

impl Deployer {
    /// `status`'s view of the rollout `state` shows: strategy, step, weights, when the step is
    /// due, each variant's evidence and what it says now.
    pub(crate) async fn rollout_view(
        &self,
        state: &EndpointState,
    ) -> Result<Option<Value>, DeployError> {
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
        let side = |s: &rollout_evidence::VariantStats| {
            json!({
                "requests": s.requests, "error_rate": s.error_rate(), "p50_ms": s.latency_p50_ms(),
                "p99_ms": s.latency_p99_ms(), "mean_score": s.mean_score(),
            })
        };
        Ok(Some(json!({
            "live": { "variant": pair.live.name, "version": pair.live.model_package_version, "weight": pair.live.current_weight },
            "candidate": { "variant": pair.candidate.name, "version": pair.candidate.model_package_version, "weight": pair.candidate.current_weight },
            "plan": metadata.get(PLAN_KEY),
            "promote": metadata.get(PROMOTE_KEY),
            "evidence": window.as_ref().map(|w| json!({
                "since": w.started, "live": side(&w.live), "candidate": side(&w.candidate),
                "verdict": match self.strategy.thresholds.judge(w) {
                    Verdict::Pass(why) => json!({ "pass": why }),
                    Verdict::Fail(why) => json!({ "fail": why }),
                    Verdict::Waiting(why) => json!({ "waiting": why }),
                },
            })),
        })))
    }

    /// `rollout abort`: the candidate being rolled out is Rejected with `reason`; the Deploy
    /// running the rollout (or the next one) rolls back.
    pub async fn abort(&self, reason: &str) -> Result<Value, DeployError> {
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
        Ok(
            json!({ "action": "aborted", "version": pair.candidate.model_package_version, "arn": arn, "reason": reason }),
        )
    }

    /// `rollout promote`: the Deploy running the rollout (or the next one) skips its
    /// remaining steps.
    pub async fn promote(&self, reason: &str) -> Result<Value, DeployError> {
        let pair = self.rollout_in_progress().await?;
        let arn = &pair.candidate.model_package_arn;
        self.record(arn, PROMOTE_KEY, reason).await?;
        Ok(
            json!({ "action": "promoting", "version": pair.candidate.model_package_version, "arn": arn, "reason": reason }),
        )
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
