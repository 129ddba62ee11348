//! `mlops-deploy shadow`: the candidate awaiting a decision (the group's newest package, when
//! it is PendingManualApproval and newer than the latest Approved) gets an endpoint of its own,
//! `{endpoint}-shadow`, where the predictors mirror live requests to it without its answers
//! reaching anyone; with no such candidate (approved, rejected, or shadowing off) the shadow
//! endpoint, its config and its model (unless the live endpoint uses it) are removed.
//! Idempotent: run after every registry change (the Deploy stage does), it converges.
//!
//! Why an endpoint of its own rather than SageMaker's shadow variants: a shadow variant's
//! answers go to data capture in S3, never back to the caller, so the predictor could not put
//! the candidate's score beside the live one as requests happen; and adding or removing a
//! variant is an UpdateEndpoint of the live endpoint (a blue/green roll of the serving fleet)
//! for every candidate. A separate endpoint is created and deleted without touching the live
//! one, a slow or failing candidate cannot take capacity from it, and sagemaker-local runs it
//! exactly as SageMaker does.

use std::time::Instant;

use aws_sdk_sagemaker::types::ContainerDefinition;
use model_registry::poll::Poller;
use model_registry::status::shadowed;
use proto::registry::v1::{ModelPackage, Status};
use shadow_comparison::Comparison;

use crate::{
    DeployError, Deployer, aws,
    endpoint::in_transition,
    report::{
        AgainstLiveView, CandidateView, ComparisonView, EndpointRef, FigureDiff, ShadowChange,
        Shadowed, ShadowedCandidate,
    },
};

impl Deployer {
    /// Converges the shadow endpoint on the candidate (or on nothing when `enabled` is false
    /// or there is no candidate).
    pub async fn shadow(&self, enabled: bool) -> Result<ShadowChange, DeployError> {
        let started = Instant::now();
        let mut poller = self.poller();
        let latest = poller.latest_approved().await.map_err(Self::poll_error)?;
        let candidate = poller
            .candidate(latest.as_ref())
            .await
            .map_err(Self::poll_error)?
            .map(|(p, _)| p);
        let mut current = poller
            .endpoint_named(&self.shadow_endpoint)
            .await
            .map_err(Self::poll_error)?;
        if let Some(state) = &current
            && in_transition(&state.status.as_str().into())
        {
            tracing::info!(endpoint = %self.shadow_endpoint, status = %state.status, "waiting for the shadow endpoint's current change to finish");
            self.wait_settled(&self.shadow_endpoint).await?;
            current = poller
                .endpoint_named(&self.shadow_endpoint)
                .await
                .map_err(Self::poll_error)?;
        }
        // A Failed endpoint cannot be updated (SageMaker refuses): it is deleted, and created
        // again for the candidate of now. A candidate whose model cannot load fails again,
        // said in the reason; the next candidate gets a working shadow.
        if let Some(state) = &current
            && state.status == "Failed"
        {
            tracing::warn!(endpoint = %self.shadow_endpoint, reason = %state.failure_reason, "the shadow endpoint is Failed: deleting it");
            self.remove_shadow(state).await?;
            current = None;
        }
        let wanted = candidate.filter(|_| enabled);
        match (wanted, current) {
            (Some(c), current) => {
                let status = Status {
                    candidate: Some(c.clone()),
                    shadow: current.clone(),
                    ..Default::default()
                };
                if shadowed(&status).is_some() {
                    return Ok(ShadowChange::None {
                        reason: format!("v{} is already shadowed", c.version),
                        endpoint: Some(self.shadow_endpoint.clone()),
                        version: Some(c.version),
                    });
                }
                let exists = current.is_some();
                let model = self.shadow_model_for(&c.arn, c.version).await?;
                let config = self
                    .roll_out(&self.shadow_endpoint, &model, c.version, exists)
                    .await?;
                // The previous candidate's config and model are done with.
                if let Some(old) = current {
                    self.retire(&old, &model).await;
                }
                let shadowed = Shadowed {
                    endpoint: self.shadow_endpoint.clone(),
                    candidate: ShadowedCandidate {
                        version: c.version,
                        arn: c.arn,
                        model,
                        endpoint_config: config,
                    },
                    seconds: started.elapsed().as_secs_f64(),
                };
                Ok(if exists {
                    ShadowChange::ShadowUpdated(shadowed)
                } else {
                    ShadowChange::ShadowCreated(shadowed)
                })
            }
            (None, Some(state)) => {
                self.remove_shadow(&state).await?;
                Ok(ShadowChange::ShadowRemoved {
                    endpoint: self.shadow_endpoint.clone(),
                    reason: if enabled {
                        "no candidate awaits a decision"
                    } else {
                        "shadowing is off (SHADOW_CANDIDATES)"
                    },
                    was: state
                        .variants
                        .iter()
                        .map(|v| v.model_package_version)
                        .collect(),
                    seconds: started.elapsed().as_secs_f64(),
                })
            }
            (None, None) => Ok(ShadowChange::None {
                reason: if enabled {
                    "no candidate awaits a decision, and no shadow endpoint exists"
                } else {
                    "shadowing is off, and no shadow endpoint exists"
                }
                .into(),
                endpoint: None,
                version: None,
            }),
        }
    }

    /// Deletes the shadow endpoint, waits until it is gone, then its config and the models
    /// the live endpoint does not use.
    async fn remove_shadow(
        &self,
        state: &proto::registry::v1::EndpointState,
    ) -> Result<(), DeployError> {
        self.client
            .delete_endpoint()
            .endpoint_name(&self.shadow_endpoint)
            .send()
            .await
            .map_err(|e| aws("DeleteEndpoint", e))?;
        self.wait_gone(&self.shadow_endpoint).await?;
        self.retire(state, "").await;
        Ok(())
    }

    /// A model of the candidate's container: `{shadow endpoint}-v{n}`. SageMaker creates a
    /// model from a versioned package only once it is Approved, so the shadow's model names
    /// the package's image and artifact instead (the watcher matches it back to the package by
    /// its artifact, as for any model not made from a package).
    async fn shadow_model_for(&self, arn: &str, version: i64) -> Result<String, DeployError> {
        let name = crate::endpoint::truncate(&format!("{}-v{version}", self.shadow_endpoint), 63);
        let package = self.describe_package(arn).await?;
        let container = package
            .inference_specification()
            .and_then(|s| s.containers().first())
            .ok_or_else(|| DeployError::Failed(format!("{arn} names no container")))?;
        let data_url = container.model_data_url().unwrap_or_default();
        let definition = ContainerDefinition::builder()
            .set_image(container.image().map(str::to_owned))
            .model_data_url(data_url)
            .set_environment(container.environment().cloned())
            .build();
        self.ensure_model(
            name,
            definition,
            |c| c.model_data_url() == Some(data_url),
            data_url,
        )
        .await
    }

    /// Deletes what a shadow endpoint no longer uses: its config and its models, except `keep`
    /// and any the live endpoint serves. A failure is logged and left (nothing serves them).
    async fn retire(&self, old: &proto::registry::v1::EndpointState, keep: &str) {
        self.delete_config(&old.endpoint_config_name).await;
        let live = self
            .poller()
            .endpoint()
            .await
            .map(|e| {
                e.variants
                    .into_iter()
                    .map(|v| v.model_name)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for v in &old.variants {
            if v.model_name.is_empty() || v.model_name == keep || live.contains(&v.model_name) {
                continue;
            }
            if let Err(e) = self
                .client
                .delete_model()
                .model_name(&v.model_name)
                .send()
                .await
            {
                tracing::warn!(model = %v.model_name, error = %aws("DeleteModel", e), "could not delete a shadow's model; it is left");
            }
        }
    }

    async fn delete_config(&self, name: &str) {
        if name.is_empty() {
            return;
        }
        if let Err(e) = self
            .client
            .delete_endpoint_config()
            .endpoint_config_name(name)
            .send()
            .await
        {
            tracing::warn!(config = %name, error = %aws("DeleteEndpointConfig", e), "could not delete an endpoint config; it is left");
        }
    }

    /// The candidate awaiting a decision, whether it is shadowed, and the comparison stored
    /// with its package (what `status` and the pipeline's gate show).
    pub async fn candidate_view(&self) -> Result<Option<CandidateView>, DeployError> {
        let mut poller = self.poller();
        let latest = poller.latest_approved().await.map_err(Self::poll_error)?;
        self.candidate_seen_by(&mut poller, latest.as_ref()).await
    }

    /// `candidate_view` with the latest Approved package already read by `poller`.
    pub(crate) async fn candidate_seen_by(
        &self,
        poller: &mut Poller,
        latest: Option<&ModelPackage>,
    ) -> Result<Option<CandidateView>, DeployError> {
        let Some((candidate, metadata)) =
            poller.candidate(latest).await.map_err(Self::poll_error)?
        else {
            return Ok(None);
        };
        let shadow = poller
            .endpoint_named(&self.shadow_endpoint)
            .await
            .map_err(Self::poll_error)?;
        let comparison = match Comparison::from_metadata(|k| metadata.get(k).map(String::as_str)) {
            Ok(Some(c)) => Some(ComparisonView::Summary(Box::new(c.summary()))),
            Ok(None) => None,
            Err(e) => Some(ComparisonView::Unreadable {
                error: format!("the stored comparison does not read: {e}"),
            }),
        };
        let status = Status {
            candidate: Some(candidate.clone()),
            shadow: shadow.clone(),
            ..Default::default()
        };
        Ok(Some(CandidateView {
            version: candidate.version,
            arn: candidate.arn,
            shadowed: shadowed(&status).is_some(),
            shadow_endpoint: shadow.map(|s| EndpointRef {
                name: s.name,
                status: s.status,
            }),
            comparison,
            against_live: against_live(&metadata),
        }))
    }
}

/// Train's evaluation of the candidate and of the live model on the very same validation
/// rows, with the differences; or why the live model could not score them.
fn against_live(metadata: &std::collections::HashMap<String, String>) -> Option<AgainstLiveView> {
    use model_registry::evaluation::{AgainstLive, against_live};
    Some(
        match against_live(|k| metadata.get(k).map(String::as_str))? {
            AgainstLive::Unavailable { live_version, why } => AgainstLiveView::Unavailable {
                live_version,
                unavailable: why,
            },
            AgainstLive::Scored {
                live_version,
                rows,
                figures,
            } => AgainstLiveView::Scored {
                live_version,
                rows,
                figures: figures
                    .into_iter()
                    .map(|f| {
                        let diff = FigureDiff {
                            candidate: f.candidate,
                            live: f.live,
                            difference: f.difference(),
                        };
                        (f.name.to_owned(), diff)
                    })
                    .collect(),
            },
        },
    )
}
