//! The evidence of a progressive rollout: while the endpoint serves two versions, predictors
//! report each live request by the variant that served it (`ReportRollout`); the watcher folds
//! them into one window per step (the endpoint's weights, as its poll sees them: new weights,
//! new window) and stores it with the candidate's package (`rollout.*` metadata), where
//! `mlops-deploy` reads it to decide the step. Decisions the watcher sees (a candidate
//! promoted, or rolled back and Rejected) are counted in `watcher_rollout_decisions_total`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::registry::v1::{RolloutOutcome, Status};
use rollout_evidence::{Outcome, Window, weights_signature};
use tokio_util::sync::CancellationToken;

struct Current {
    arn: String,
    version: i64,
    window: Window,
    dirty: bool,
}

#[derive(Clone, Default)]
pub struct Rollouts {
    current: Arc<Mutex<Option<Current>>>,
    /// Candidates whose outcome (promoted, rolled back) was counted.
    decided: Arc<Mutex<HashSet<String>>>,
}

/// A report for a package that is not being rolled out.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not being rolled out")]
pub struct NotRollingOut(String);

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Rollouts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a poll: a rollout whose weights changed (or a new one) starts a new window; none
    /// ends the current one (what it stored stays with the package). `metadata` is the
    /// candidate package's.
    pub fn follow(&self, status: &Status, metadata: Option<&HashMap<String, String>>) {
        let rollout = status
            .endpoint
            .as_ref()
            .and_then(model_registry::status::rollout);
        let mut current = self.lock();
        let Some(r) = rollout else {
            if let Some(c) = current.take() {
                tracing::info!(candidate = c.version, "the rollout's evidence window ended");
            }
            return;
        };
        let signature = weights_signature([
            (r.live.name.as_str(), r.live.current_weight),
            (r.candidate.name.as_str(), r.candidate.current_weight),
        ]);
        let same = current.as_ref().is_some_and(|c| {
            c.arn == r.candidate.model_package_arn && c.window.weights == signature
        });
        if same {
            return;
        }
        // A restarted watcher continues the window the package holds for these weights.
        let stored = metadata
            .and_then(|m| {
                Window::from_metadata(|k| m.get(k).map(String::as_str))
                    .ok()
                    .flatten()
            })
            .filter(|w| w.weights == signature);
        let window = stored.unwrap_or_else(|| {
            Window::new(signature.clone(), now(), &r.live.name, &r.candidate.name)
        });
        tracing::info!(candidate = r.candidate.model_package_version, weights = %signature, "rollout step: a new evidence window");
        *current = Some(Current {
            arn: r.candidate.model_package_arn.clone(),
            version: r.candidate.model_package_version,
            window,
            dirty: true,
        });
    }

    /// A predictor's outcomes for the candidate `arn`; returns how many counted.
    pub fn report(&self, arn: &str, outcomes: &[RolloutOutcome]) -> Result<u64, NotRollingOut> {
        let mut current = self.lock();
        let Some(c) = current.as_mut().filter(|c| c.arn == arn) else {
            return Err(NotRollingOut(arn.to_owned()));
        };
        let mut counted = 0;
        for o in outcomes {
            counted += u64::from(c.window.add(&Outcome {
                variant: o.variant.clone(),
                rows: o.rows,
                scores: o.scores.clone(),
                latency_ms: o.latency_ms,
                failed: o.failed,
            }));
        }
        c.dirty |= counted > 0;
        metrics::counter!("watcher_rollout_outcomes_total").increment(counted);
        Ok(counted)
    }

    pub fn snapshot(&self) -> Option<(i64, String, Window)> {
        self.lock()
            .as_ref()
            .map(|c| (c.version, c.arn.clone(), c.window.clone()))
    }

    /// Counts a decision on `arn` once (`promoted` or `rolled_back`).
    pub fn decided(&self, arn: &str, decision: &'static str) {
        if self
            .decided
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(arn.to_owned())
        {
            metrics::counter!("watcher_rollout_decisions_total", "decision" => decision)
                .increment(1);
        }
    }

    /// Writes the window to the candidate's package when it changed.
    pub async fn save(&self, client: &aws_sdk_sagemaker::Client) -> Result<bool, String> {
        let (arn, window) = {
            let current = self.lock();
            match current.as_ref() {
                Some(c) if c.dirty => (c.arn.clone(), c.window.clone()),
                _ => return Ok(false),
            }
        };
        client
            .update_model_package()
            .model_package_arn(&arn)
            .set_customer_metadata_properties(Some(window.to_metadata().into_iter().collect()))
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_sagemaker::error::ProvideErrorMetadata;
                format!(
                    "UpdateModelPackage: {}: {}",
                    e.code().unwrap_or("error"),
                    e.message().unwrap_or_default()
                )
            })?;
        if let Some(c) = self.lock().as_mut().filter(|c| c.arn == arn) {
            c.dirty = c.window != window;
        }
        Ok(true)
    }

    /// Saves every `interval` until `stop`, and once more then.
    pub async fn save_loop(
        self,
        client: aws_sdk_sagemaker::Client,
        interval: Duration,
        stop: CancellationToken,
    ) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(interval) => false,
                _ = stop.cancelled() => true,
            };
            if let Err(e) = self.save(&client).await {
                metrics::counter!("watcher_rollout_save_errors_total").increment(1);
                tracing::warn!(error = %e, "could not store the rollout's evidence with the candidate; trying again");
            }
            if stopping {
                return;
            }
        }
    }

    /// The step under way's series, recorded at each scrape (they end with the rollout).
    pub fn record_metrics(&self) {
        let Some((version, _, w)) = self.snapshot() else {
            return;
        };
        let gauge =
            |name: &'static str, help: &'static str, live: Option<f64>, candidate: Option<f64>| {
                metrics::describe_gauge!(name, help);
                for (side, v) in [("live", live), ("candidate", candidate)] {
                    if let Some(v) = v {
                        metrics::gauge!(name, "candidate" => version.to_string(), "model" => side)
                            .set(v);
                    }
                }
            };
        let (l, c) = (&w.live, &w.candidate);
        gauge(
            "watcher_rollout_requests",
            "Live requests in the rollout step's window.",
            Some(l.requests as f64),
            Some(c.requests as f64),
        );
        gauge(
            "watcher_rollout_error_rate",
            "Share of the step's requests that failed.",
            l.error_rate(),
            c.error_rate(),
        );
        gauge(
            "watcher_rollout_latency_p99_ms",
            "99th percentile invocation latency in the step.",
            l.latency_p99_ms(),
            c.latency_p99_ms(),
        );
        gauge(
            "watcher_rollout_mean_score",
            "Mean score in the step.",
            l.mean_score(),
            c.mean_score(),
        );
    }
}

#[cfg(test)]
mod tests {
    use proto::registry::v1::{EndpointState, Variant};

    use super::*;

    fn status(weights: &[(i64, f64)]) -> Status {
        Status {
            endpoint: Some(EndpointState {
                status: "InService".into(),
                variants: weights
                    .iter()
                    .map(|(v, w)| Variant {
                        name: format!("v{v}"),
                        current_weight: *w,
                        model_package_version: *v,
                        model_package_arn: format!("arn:pkg/{v}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn outcome(variant: &str, failed: bool) -> RolloutOutcome {
        RolloutOutcome {
            variant: variant.into(),
            rows: 1,
            scores: if failed { vec![] } else { vec![0.4] },
            latency_ms: 2.0,
            failed,
        }
    }

    #[test]
    fn each_step_has_its_own_window_and_only_the_candidates_rollout_counts() {
        let r = Rollouts::default();
        assert!(
            r.report("arn:pkg/2", &[outcome("v2", false)]).is_err(),
            "no rollout yet"
        );
        r.follow(&status(&[(1, 0.9), (2, 0.1)]), None);
        assert_eq!(
            r.report(
                "arn:pkg/2",
                &[
                    outcome("v2", false),
                    outcome("v1", false),
                    outcome("v9", false)
                ]
            )
            .unwrap(),
            2
        );
        assert!(r.report("arn:pkg/1", &[outcome("v1", false)]).is_err());
        r.follow(&status(&[(1, 0.9), (2, 0.1)]), None);
        assert_eq!(
            r.snapshot().unwrap().2.candidate.requests,
            1,
            "same weights: same window"
        );
        r.follow(&status(&[(1, 0.5), (2, 0.5)]), None);
        let (_, _, w) = r.snapshot().unwrap();
        assert_eq!(
            (w.weights.as_str(), w.candidate.requests),
            ("v1=0.5000,v2=0.5000", 0),
            "new weights: new window"
        );
        // A restarted watcher continues the stored window of the same weights.
        r.report("arn:pkg/2", &[outcome("v2", true)]).unwrap();
        let stored: HashMap<String, String> =
            r.snapshot().unwrap().2.to_metadata().into_iter().collect();
        let fresh = Rollouts::default();
        fresh.follow(&status(&[(1, 0.5), (2, 0.5)]), Some(&stored));
        assert_eq!(fresh.snapshot().unwrap().2.candidate.errors, 1);
        r.follow(&status(&[(2, 1.0)]), None);
        assert!(
            r.snapshot().is_none() && telemetry::render_section(|| r.record_metrics()).is_empty(),
            "one variant: no rollout"
        );
    }
}
