//! The pipeline on one machine: Train -> approval gate -> Deploy, then listening for the
//! registry's decisions the way the AWS side's EventBridge rule does, so that approving or
//! rejecting a package anywhere (the gate's command, the console, any SDK) deploys by itself.
//! Deploys take a file lock first: two runners on one machine (the main stack's listener and
//! a `run` in a terminal) deploy one after the other, like the Deploy CodeBuild project's
//! concurrency limit of one.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use aws_sdk_sagemaker::types::ModelApprovalStatus;
use tokio_util::sync::CancellationToken;

use crate::{
    registry::{self, RegistryError},
    stage::{self, Stage, StageError},
};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Snapshot(#[from] model_registry::events::SnapshotError),
    #[error("Train succeeded but exported no MODEL_PACKAGE_ARN")]
    NothingRegistered,
    #[error("the deploy lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error("stopped by a signal")]
    Interrupted,
}

/// How a run ended when no stage failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Finish {
    Deployed,
    Rejected,
    GateTimedOut,
}

pub struct Pipeline {
    pub client: aws_sdk_sagemaker::Client,
    /// For "what is live, is it in sync" — the same rules `mlops-deploy status` applies.
    pub deployer: deploy::Deployer,
    pub stages: stage::Runner,
    pub train: Stage,
    pub deploy: Stage,
    pub poll: Duration,
    pub gate_timeout: Option<Duration>,
    pub lock_file: PathBuf,
    /// How the approver runs `mlops-deploy` here, for the command the gate prints.
    pub approve_command: String,
    /// `SHADOW_CANDIDATES`: a new candidate is shadowed on live traffic while it awaits a
    /// decision (the Deploy stage's `mlops-deploy shadow`), and the gate shows the comparison.
    pub shadow_candidates: bool,
}

pub(crate) fn banner(text: &str) {
    println!("\n== {text}");
}

fn report_failure(e: &PipelineError) {
    println!("   FAILED: {e}");
    if let PipelineError::Stage(s) = e
        && !s.tail().is_empty()
    {
        println!("   its last output:");
        for line in s.tail() {
            println!("   | {line}");
        }
    }
}

impl Pipeline {
    fn group(&self) -> &str {
        &self.deployer.group
    }

    /// Train, the gate, Deploy. Returns how it ended; a failed stage is an error (after its
    /// report was printed), and nothing after it runs.
    pub async fn run(&self, shutdown: &CancellationToken) -> Result<Finish, PipelineError> {
        let arn = self.train_stage().await?;
        if self.shadow_candidates {
            // A failed shadow is reported and the gate goes on without the comparison.
            let _ = self
                .deploy_stage("shadow the candidate on live traffic", &BTreeMap::new())
                .await;
        }
        let decision = self.gate(&arn, shutdown).await?;
        match decision {
            ModelApprovalStatus::Approved => {
                let overrides = BTreeMap::from([("MODEL_PACKAGE_ARN".to_owned(), arn)]);
                self.deploy_stage("the candidate was approved", &overrides)
                    .await?;
                Ok(Finish::Deployed)
            }
            ModelApprovalStatus::Rejected => {
                banner(&format!(
                    "Pipeline stopped: v{} was rejected at the gate; nothing was deployed",
                    registry::version_of(&arn)
                ));
                Ok(Finish::Rejected)
            }
            _ => {
                banner(&format!(
                    "Pipeline stopped: no decision on v{} within the gate's timeout; nothing was deployed",
                    registry::version_of(&arn)
                ));
                Ok(Finish::GateTimedOut)
            }
        }
    }

    /// Runs Train; returns the ARN of the package it registered.
    pub async fn train_stage(&self) -> Result<String, PipelineError> {
        banner(&format!(
            "Train ({}): group {}",
            self.train.buildspec.display(),
            self.group()
        ));
        let outcome = match self.stages.run(&self.train, &BTreeMap::new()).await {
            Ok(o) => o,
            Err(e) => {
                let e = PipelineError::from(e);
                report_failure(&e);
                banner("Pipeline stopped: Train failed; nothing was deployed");
                return Err(e);
            }
        };
        let arn = outcome
            .exported
            .get("MODEL_PACKAGE_ARN")
            .filter(|a| !a.is_empty())
            .cloned()
            .ok_or(PipelineError::NothingRegistered)?;
        banner(&format!(
            "Train succeeded in {:.1} s: registered v{} ({arn}) PendingManualApproval",
            outcome.elapsed.as_secs_f64(),
            registry::version_of(&arn)
        ));
        Ok(arn)
    }

    /// Runs Deploy under the deploy lock.
    pub async fn deploy_stage(
        &self,
        why: &str,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), PipelineError> {
        banner(&format!(
            "Deploy ({}): {why}",
            self.deploy.buildspec.display()
        ));
        let _lock = self.lock().await?;
        let mut overrides = overrides.clone();
        overrides
            .entry("SHADOW_CANDIDATES".to_owned())
            .or_insert_with(|| self.shadow_candidates.to_string());
        match self.stages.run(&self.deploy, &overrides).await {
            Ok(o) => {
                banner(&format!(
                    "Deploy succeeded in {:.1} s",
                    o.elapsed.as_secs_f64()
                ));
                Ok(())
            }
            Err(e) => {
                let e = PipelineError::from(e);
                report_failure(&e);
                banner("Deploy failed: the endpoint keeps (or rolled back to) what it served");
                Err(e)
            }
        }
    }

    /// Whether no Deploy holds the lock now.
    fn lock_is_free(&self) -> bool {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.lock_file)
            .map(|f| f.try_lock().is_ok())
            .unwrap_or(true)
    }

    async fn lock(&self) -> Result<std::fs::File, PipelineError> {
        let path = self.lock_file.clone();
        let lock_err = |source| PipelineError::Lock {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(lock_err)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
            Err(std::fs::TryLockError::WouldBlock) => {
                println!("   another deploy holds {}; waiting for it", path.display())
            }
        }
        tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| lock_err(std::io::Error::other(e)))?
            .map_err(lock_err)
    }

    /// Follows the registry until `shutdown`: every approval or rejection in the group (and
    /// an out-of-sync endpoint at start, a decision made while nobody listened) runs Deploy.
    /// A failed Deploy is reported and listening goes on.
    pub async fn listen(&self, shutdown: &CancellationToken) -> Result<(), PipelineError> {
        let mut last = loop {
            match model_registry::events::snapshot(&self.client, self.group()).await {
                Ok(s) => break s,
                Err(e) => println!("   (the registry did not answer: {e}; trying again)"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        };
        // Said once the first look at the registry is taken: decisions from here on are acted on.
        println!(
            "\nmlops-pipeline listening on group={} endpoint={} (approvals and rejections deploy; checking every {:.1} s)",
            self.group(),
            self.deployer.endpoint,
            self.poll.as_secs_f64()
        );
        let in_sync = self
            .deployer
            .status()
            .await
            .map(|s| s.in_sync)
            .unwrap_or(false);
        if !in_sync {
            let _ = self
                .deploy_stage(
                    "the endpoint does not serve the latest Approved package",
                    &BTreeMap::new(),
                )
                .await;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
            let now = match model_registry::events::snapshot(&self.client, self.group()).await {
                Ok(s) => s,
                Err(e) => {
                    println!("   (the registry did not answer: {e}; trying again)");
                    continue;
                }
            };
            let mut changes: Vec<String> = model_registry::events::decisions(&last, &now)
                .iter()
                .map(|(v, s)| format!("v{v} {s}"))
                .collect();
            if self.shadow_candidates {
                changes.extend(
                    model_registry::events::registrations(&last, &now)
                        .iter()
                        .map(|v| format!("v{v} registered PendingManualApproval (to shadow)")),
                );
            }
            last = now;
            if changes.is_empty() {
                // A rollout nobody runs (its Deploy was killed): resumed or rolled back.
                if self.deployer.in_rollout().await.unwrap_or(false) && self.lock_is_free() {
                    let _ = self
                        .deploy_stage(
                            "the endpoint is in a rollout no Deploy is running",
                            &BTreeMap::new(),
                        )
                        .await;
                }
                continue;
            }
            let why = changes.join(", ");
            let _ = self
                .deploy_stage(
                    &format!("model package state change: {why}"),
                    &BTreeMap::new(),
                )
                .await;
        }
    }
}
