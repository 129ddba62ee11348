//! Progressive rollouts (`DEPLOY_STRATEGY` = `canary` or `linear`). The endpoint config
//! carries both variants, the live one and the candidate (each named after its version); each
//! step moves traffic with `UpdateEndpointWeightsAndCapacities` and bakes while the
//! registry-watcher gathers each variant's live outcomes into the candidate's package
//! (`rollout.*` metadata, see `rollout_evidence`). The step's verdict decides: pass, the next
//! step; fail, back to 100% on the live variant at once and the candidate `Rejected` with the
//! evidence as the reason. The last step leaves a single-variant config of the new version.
//!
//! Everything a rollout needs is on the endpoint (two variants and their weights) and in the
//! registry (the candidate's status and metadata), so a Deploy that was killed mid-rollout is
//! resumed by the next one: the step is the first whose share is at least the candidate's
//! current weight.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aws_sdk_sagemaker::types::{
    ModelApprovalStatus, ProductionVariant, ProductionVariantInstanceType,
};
use proto::registry::v1::{EndpointState, Variant};
use rollout_evidence::{Verdict, Window, weights_signature};

use crate::{
    DeployError, Deployer, aws,
    report::{Deployment, RolledBack, RolledOut, RolledOutTo, Step, StepOutcome, VariantVersion},
    strategy::{Quiet, round4},
};

/// Metadata key: what the rollout is doing (strategy, step, weights, when the step is due).
pub const PLAN_KEY: &str = "rollout.plan";
/// Metadata key: promote the candidate now, skipping the remaining steps (its value: why).
pub const PROMOTE_KEY: &str = "rollout.promote";
/// Metadata key: how the rollout ended, and why.
pub const DECISION_KEY: &str = "rollout.decision";

fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// How a bake ended.
enum Bake {
    Advance(String),
    Promote(String),
    RollBack(String),
}

/// The two variants of a rollout, as the endpoint holds them.
pub(crate) struct Pair {
    pub live: Variant,
    pub candidate: Variant,
}

impl Pair {
    pub(crate) fn of(state: &EndpointState) -> Option<Pair> {
        let r = model_registry::status::rollout(state)?;
        Some(Pair {
            live: r.live.clone(),
            candidate: r.candidate.clone(),
        })
    }
}

impl Deployer {
    /// Starts a progressive rollout of package `arn` (`version`, model `model`) from the
    /// single live variant `live`, then runs it to its end.
    pub(crate) async fn start_rollout(
        &self,
        live: &Variant,
        arn: &str,
        version: i64,
        model: &str,
    ) -> Result<Deployment, DeployError> {
        let shares = self.strategy.shares()?;
        let first = shares[0];
        let described = self.describe_endpoint(&self.endpoint).await?;
        let config = self
            .client
            .describe_endpoint_config()
            .endpoint_config_name(described.endpoint_config_name().unwrap_or_default())
            .send()
            .await
            .map_err(|e| aws("DescribeEndpointConfig", e))?;
        let live_config = config
            .production_variants()
            .iter()
            .find(|v| v.variant_name() == Some(live.name.as_str()))
            .cloned()
            .ok_or_else(|| {
                DeployError::Failed(format!("the endpoint config has no variant {}", live.name))
            })?;
        // The candidate is sized as the live variant is now (it may have scaled).
        let count = described
            .production_variants()
            .iter()
            .find(|v| v.variant_name() == Some(live.name.as_str()))
            .and_then(|v| v.current_instance_count())
            .or(live_config.initial_instance_count())
            .unwrap_or(self.instance_count);
        let live_variant = ProductionVariant::builder()
            .variant_name(&live.name)
            .model_name(live_config.model_name().unwrap_or(&live.model_name))
            .set_instance_type(live_config.instance_type().cloned())
            .initial_instance_count(count)
            .initial_variant_weight((1.0 - first) as f32)
            .build();
        let candidate_variant = ProductionVariant::builder()
            .variant_name(format!("v{version}"))
            .model_name(model)
            .instance_type(ProductionVariantInstanceType::from(
                self.instance_type.as_str(),
            ))
            .initial_instance_count(count)
            .initial_variant_weight(first as f32)
            .build();
        tracing::info!(
            from = live.model_package_version,
            to = version,
            strategy = self.strategy.name(),
            share = first,
            "starting a progressive rollout"
        );
        if let Err(e) = self
            .apply_config(
                &self.endpoint,
                &format!("{}-v{version}-rollout", self.endpoint),
                vec![live_variant, candidate_variant],
                true,
            )
            .await
        {
            // The candidate could not come up: that is failing evidence too.
            let reason = format!("its variant could not come up: {e}");
            self.reject(arn, &reason).await?;
            self.record(arn, DECISION_KEY, &format!("rolled_back: {reason}"))
                .await?;
            tracing::warn!(version, %reason, "rolled back");
            return Ok(Deployment::RolledBack(RolledBack {
                endpoint: self.endpoint.clone(),
                version,
                arn: arn.to_owned(),
                reason,
                live: live.model_package_version,
                steps: None,
                seconds: None,
            }));
        }
        let state = self.endpoint_state().await?;
        let pair = Pair::of(&state).ok_or_else(|| {
            DeployError::Failed("the endpoint does not show the two variants it was given".into())
        })?;
        self.run_rollout(pair, 0).await
    }

    /// Runs the rollout the endpoint is in from step `from`.
    pub(crate) async fn run_rollout(
        &self,
        pair: Pair,
        from: usize,
    ) -> Result<Deployment, DeployError> {
        let started = Instant::now();
        let shares = self.strategy.shares()?;
        let arn = pair.candidate.model_package_arn.clone();
        let version = pair.candidate.model_package_version;
        let mut steps = Vec::new();
        for (i, share) in shares.iter().enumerate().skip(from) {
            let weights = [
                (pair.live.name.as_str(), round4(1.0 - share)),
                (pair.candidate.name.as_str(), *share),
            ];
            self.set_weights(&weights).await?;
            let due = epoch_secs() + self.strategy.bake_secs as f64;
            self.record(
                &arn,
                PLAN_KEY,
                &format!(
                    "strategy={} step={}/{} weights={} due={due:.0}",
                    self.strategy.name(),
                    i + 1,
                    shares.len() + 1,
                    weights_signature(weights)
                ),
            )
            .await?;
            tracing::info!(
                version,
                step = i + 1,
                steps = shares.len() + 1,
                share,
                bake_secs = self.strategy.bake_secs,
                "baking"
            );
            let bake = self.bake(&pair, &weights_signature(weights)).await?;
            match bake {
                Bake::Advance(why) => {
                    tracing::info!(version, step = i + 1, %why, "step passed");
                    steps.push(Step {
                        share: *share,
                        outcome: StepOutcome::Passed(why),
                    });
                }
                Bake::Promote(why) => {
                    steps.push(Step {
                        share: *share,
                        outcome: StepOutcome::Promoted(why),
                    });
                    break;
                }
                Bake::RollBack(why) => {
                    tracing::warn!(version, step = i + 1, %why, "rolling back");
                    self.roll_back(&pair, &why, true).await?;
                    return Ok(Deployment::RolledBack(RolledBack {
                        endpoint: self.endpoint.clone(),
                        version,
                        arn,
                        reason: why,
                        live: pair.live.model_package_version,
                        steps: Some(steps),
                        seconds: Some(started.elapsed().as_secs_f64()),
                    }));
                }
            }
        }
        let config = self.finish(&pair.candidate).await?;
        self.record(&arn, DECISION_KEY, "promoted").await?;
        Ok(Deployment::RolledOut(RolledOut {
            strategy: self.strategy.name(),
            endpoint: self.endpoint.clone(),
            from: VariantVersion {
                variant: pair.live.name.clone(),
                version: pair.live.model_package_version,
            },
            to: RolledOutTo {
                variant: pair.candidate.name.clone(),
                version,
                arn,
                endpoint_config: config,
            },
            steps,
            seconds: started.elapsed().as_secs_f64(),
        }))
    }

    /// Waits out a step: until the evidence fails it (at once), or the bake is over and it
    /// passes; a rejection or a promotion of the candidate meanwhile ends it too.
    async fn bake(&self, pair: &Pair, weights: &str) -> Result<Bake, DeployError> {
        let until = Instant::now() + Duration::from_secs(self.strategy.bake_secs);
        let arn = &pair.candidate.model_package_arn;
        loop {
            let package = self.describe_package(arn).await?;
            if package.model_approval_status() != Some(&ModelApprovalStatus::Approved) {
                return Ok(Bake::RollBack(format!(
                    "{} during the rollout: {}",
                    package
                        .model_approval_status()
                        .map_or("no longer Approved", |s| s.as_str()),
                    package.approval_description().unwrap_or("no reason given")
                )));
            }
            let metadata = package
                .customer_metadata_properties()
                .cloned()
                .unwrap_or_default();
            if let Some(why) = metadata.get(PROMOTE_KEY) {
                return Ok(Bake::Promote(why.clone()));
            }
            let verdict = evidence(&metadata, weights)
                .map(|w| self.strategy.thresholds.judge(&w))
                .unwrap_or_else(|| Verdict::Waiting("no evidence for these weights yet".into()));
            let over = Instant::now() >= until;
            match verdict {
                Verdict::Fail(why) => return Ok(Bake::RollBack(why)),
                Verdict::Pass(why) if over => return Ok(Bake::Advance(why)),
                Verdict::Waiting(why) if over => {
                    return Ok(match self.strategy.quiet {
                        Quiet::Advance => {
                            tracing::warn!(%why, "too little traffic to judge the step; advancing (DEPLOY_QUIET_STEP=advance)");
                            Bake::Advance(format!("too little traffic to judge ({why}); advanced"))
                        }
                        Quiet::Rollback => Bake::RollBack(format!(
                            "too little traffic to judge ({why}; DEPLOY_QUIET_STEP=rollback)"
                        )),
                    });
                }
                _ => {}
            }
            tokio::time::sleep(self.poll.min(Duration::from_secs(5))).await;
        }
    }

    /// Back to the live variant: all traffic at once, the candidate `Rejected` with `why`
    /// (when `reject`), then a single-variant config of the live version.
    pub(crate) async fn roll_back(
        &self,
        pair: &Pair,
        why: &str,
        reject: bool,
    ) -> Result<(), DeployError> {
        self.set_weights(&[
            (pair.live.name.as_str(), 1.0),
            (pair.candidate.name.as_str(), 0.0),
        ])
        .await?;
        let arn = &pair.candidate.model_package_arn;
        if reject {
            self.reject(arn, why).await?;
        }
        self.record(arn, DECISION_KEY, &format!("rolled_back: {why}"))
            .await?;
        self.finish(&pair.live).await?;
        Ok(())
    }

    /// A single-variant config of `keep`, sized as the endpoint's variants are now.
    async fn finish(&self, keep: &Variant) -> Result<String, DeployError> {
        let described = self.describe_endpoint(&self.endpoint).await?;
        let count = described
            .production_variants()
            .iter()
            .filter_map(|v| v.current_instance_count())
            .max()
            .unwrap_or(self.instance_count);
        let variant = ProductionVariant::builder()
            .variant_name(&keep.name)
            .model_name(&keep.model_name)
            .instance_type(ProductionVariantInstanceType::from(
                self.instance_type.as_str(),
            ))
            .initial_instance_count(count)
            .initial_variant_weight(1.0)
            .build();
        let name = format!("{}-v{}", self.endpoint, keep.model_package_version);
        self.apply_config(&self.endpoint, &name, vec![variant], true)
            .await
    }

    async fn reject(&self, arn: &str, why: &str) -> Result<(), DeployError> {
        let current = self.describe_package(arn).await?;
        if current.model_approval_status() == Some(&ModelApprovalStatus::Rejected) {
            return Ok(()); // a person's rejection keeps its reason
        }
        self.client
            .update_model_package()
            .model_package_arn(arn)
            .model_approval_status(ModelApprovalStatus::Rejected)
            .approval_description(truncate_reason(&format!("rolled back: {why}")))
            .send()
            .await
            .map_err(|e| aws("UpdateModelPackage", e))?;
        Ok(())
    }
}

/// SageMaker keeps at most 1024 characters of an approval description.
fn truncate_reason(s: &str) -> String {
    s.chars().take(1024).collect()
}

/// The step's evidence the package holds, if it is for `weights`.
pub(crate) fn evidence(metadata: &HashMap<String, String>, weights: &str) -> Option<Window> {
    match Window::from_metadata(|k| metadata.get(k).map(String::as_str)) {
        Ok(Some(w)) if w.weights == weights => Some(w),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "the candidate's rollout evidence is unreadable");
            None
        }
    }
}
