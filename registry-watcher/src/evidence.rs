//! The evidence about the shadowed candidate: predictors report the outcomes of live requests
//! mirrored to it (`ReportShadow`), the watcher folds them into one `Comparison` and keeps it
//! with the candidate's package (CustomerMetadataProperties, `shadow.*`), where
//! `mlops-deploy status`, the pipeline's gate and the console read it. A watcher that
//! restarts continues from what the package holds. When the candidate is decided (or another
//! one is registered) its comparison stays in its package, as it was last saved, and a new
//! one starts for the next candidate.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::registry::v1::{ModelPackage, ShadowOutcome};
use shadow_comparison::{Comparison, Outcome};
use tokio_util::sync::CancellationToken;

struct Current {
    arn: String,
    version: i64,
    comparison: Comparison,
    /// `shadow.state.<i>` keys the package holds (to remove those a shorter state leaves).
    saved_parts: usize,
    dirty: bool,
    /// Train's figures for the candidate and the live model on the same rows.
    against_live: Option<model_registry::evaluation::AgainstLive>,
}

#[derive(Clone)]
pub struct Evidence {
    threshold: f64,
    current: Arc<Mutex<Option<Current>>>,
}

/// A report for a package that is not the candidate being shadowed.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not the candidate being shadowed (the current one is {1})")]
pub struct NotTheCandidate(String, String);

impl Evidence {
    /// Train's figures for the current candidate against the live model on the same rows.
    pub fn against_live(&self) -> Option<model_registry::evaluation::AgainstLive> {
        self.lock().as_ref().and_then(|c| c.against_live.clone())
    }

    pub fn new(threshold: f64) -> Self {
        Evidence {
            threshold,
            current: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The candidate of the latest poll, with its package's metadata; starts (or continues
    /// from the package) a comparison when it is new.
    pub fn follow(&self, candidate: Option<(&ModelPackage, &HashMap<String, String>)>) {
        let mut current = self.lock();
        match (candidate, current.as_ref()) {
            (Some((p, _)), Some(c)) if c.arn == p.arn => {}
            (Some((p, metadata)), _) => {
                let stored = Comparison::from_metadata(|k| metadata.get(k).map(String::as_str));
                let comparison = match stored {
                    Ok(Some(c)) => {
                        tracing::info!(
                            candidate = p.version,
                            rows = c.rows,
                            "continuing the comparison the package holds"
                        );
                        c
                    }
                    Ok(None) => Comparison::new(self.threshold),
                    Err(e) => {
                        tracing::warn!(candidate = p.version, error = %e, "the package's stored comparison does not read; starting anew");
                        Comparison::new(self.threshold)
                    }
                };
                let saved_parts = metadata
                    .get(shadow_comparison::PARTS_KEY)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                tracing::info!(candidate = p.version, arn = %p.arn, "candidate awaiting a decision");
                *current = Some(Current {
                    arn: p.arn.clone(),
                    version: p.version,
                    comparison,
                    saved_parts,
                    dirty: false,
                    against_live: model_registry::evaluation::against_live(|k| {
                        metadata.get(k).map(String::as_str)
                    }),
                });
            }
            (None, Some(c)) => {
                tracing::info!(
                    candidate = c.version,
                    rows = c.comparison.rows,
                    "no candidate awaiting a decision any more; its comparison stays in its package"
                );
                *current = None;
            }
            (None, None) => {}
        }
    }

    /// Folds in outcomes reported for `arn`; returns how many were taken.
    pub fn report(&self, arn: &str, outcomes: &[ShadowOutcome]) -> Result<u64, NotTheCandidate> {
        let mut current = self.lock();
        let c = match current.as_mut() {
            Some(c) if c.arn == arn => c,
            other => {
                metrics::counter!("watcher_shadow_reports_refused_total").increment(1);
                return Err(NotTheCandidate(
                    arn.to_owned(),
                    other.map_or_else(|| "none".to_owned(), |c| c.arn.clone()),
                ));
            }
        };
        for o in outcomes {
            c.comparison.add(&Outcome {
                live: o.live.clone(),
                candidate: o.candidate.clone(),
                live_latency_ms: o.live_latency_ms,
                candidate_latency_ms: o.candidate_latency_ms,
                live_failed: o.live_failed,
                candidate_failed: o.candidate_failed,
            });
        }
        c.dirty |= !outcomes.is_empty();
        metrics::counter!("watcher_shadow_outcomes_total").increment(outcomes.len() as u64);
        Ok(outcomes.len() as u64)
    }

    /// The candidate's version, ARN and comparison so far.
    pub fn snapshot(&self) -> Option<(i64, String, Comparison)> {
        self.lock()
            .as_ref()
            .map(|c| (c.version, c.arn.clone(), c.comparison.clone()))
    }

    /// Writes the comparison to the candidate's package when it changed; returns whether it
    /// wrote.
    pub async fn save(&self, client: &aws_sdk_sagemaker::Client) -> Result<bool, String> {
        let (arn, comparison, saved_parts) = {
            let current = self.lock();
            match current.as_ref() {
                Some(c) if c.dirty => (c.arn.clone(), c.comparison.clone(), c.saved_parts),
                _ => return Ok(false),
            }
        };
        let metadata = comparison.to_metadata()?;
        let parts = metadata
            .get(shadow_comparison::PARTS_KEY)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let stale = Comparison::stale_keys(saved_parts, parts);
        client
            .update_model_package()
            .model_package_arn(&arn)
            .set_customer_metadata_properties(Some(metadata.into_iter().collect()))
            .set_customer_metadata_properties_to_remove((!stale.is_empty()).then_some(stale))
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
        let mut current = self.lock();
        if let Some(c) = current.as_mut().filter(|c| c.arn == arn) {
            c.saved_parts = parts;
            // Outcomes that arrived while writing keep it dirty.
            c.dirty = c.comparison != comparison;
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
            match self.save(&client).await {
                Ok(true) => metrics::counter!("watcher_shadow_saves_total").increment(1),
                Ok(false) => {}
                Err(e) => {
                    metrics::counter!("watcher_shadow_save_errors_total").increment(1);
                    tracing::warn!(error = %e, "could not store the comparison with the candidate; trying again");
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// The comparison so far as series, recorded at each scrape (they end with the
    /// candidate).
    pub fn record_metrics(&self) {
        let Some((version, _, c)) = self.snapshot() else {
            return;
        };
        let s = c.summary();
        let candidate = version.to_string();
        let gauge = |name: &'static str,
                     help: &'static str,
                     values: &[(Option<&'static str>, Option<f64>)]| {
            let mut described = false;
            for (model, v) in values {
                let Some(v) = v else { continue };
                if !described {
                    metrics::describe_gauge!(name, help);
                    described = true;
                }
                match model {
                    Some(m) => {
                        metrics::gauge!(name, "candidate" => candidate.clone(), "model" => *m)
                            .set(*v)
                    }
                    None => metrics::gauge!(name, "candidate" => candidate.clone()).set(*v),
                }
            }
        };
        let one = |v: Option<f64>| [(None, v)];
        gauge(
            "watcher_shadow_rows",
            "Rows both the live model and the shadowed candidate scored.",
            &one(Some(s.rows as f64)),
        );
        gauge(
            "watcher_shadow_requests",
            "Live requests mirrored to the candidate.",
            &one(Some(s.requests as f64)),
        );
        gauge(
            "watcher_shadow_mean_diff",
            "Mean of candidate - live score.",
            &one(s.mean_diff),
        );
        gauge(
            "watcher_shadow_mean_abs_diff",
            "Mean of |candidate - live| score.",
            &one(s.mean_abs_diff),
        );
        gauge(
            "watcher_shadow_abs_diff_p50",
            "Median |candidate - live| score.",
            &one(s.abs_diff_p50),
        );
        gauge(
            "watcher_shadow_abs_diff_p99",
            "99th percentile of |candidate - live| score.",
            &one(s.abs_diff_p99),
        );
        gauge(
            "watcher_shadow_agreement",
            "Share of rows with the same decision at the threshold.",
            &one(s.agreement),
        );
        let sides = |f: fn(&shadow_comparison::Side) -> Option<f64>| {
            [
                (Some("candidate"), f(&s.candidate)),
                (Some("live"), f(&s.live)),
            ]
        };
        gauge(
            "watcher_shadow_error_rate",
            "Share of mirrored requests the model failed.",
            &sides(|x| x.error_rate),
        );
        gauge(
            "watcher_shadow_latency_p50_ms",
            "Median invocation latency over mirrored requests.",
            &sides(|x| x.latency_p50_ms),
        );
        gauge(
            "watcher_shadow_latency_p99_ms",
            "99th percentile invocation latency over mirrored requests.",
            &sides(|x| x.latency_p99_ms),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(arn: &str, version: i64) -> ModelPackage {
        ModelPackage {
            arn: arn.into(),
            version,
            ..Default::default()
        }
    }

    fn outcome(live: f64, candidate: f64) -> ShadowOutcome {
        ShadowOutcome {
            live: vec![live],
            candidate: vec![candidate],
            live_latency_ms: 1.0,
            candidate_latency_ms: Some(2.0),
            ..Default::default()
        }
    }

    #[test]
    fn outcomes_count_only_for_the_candidate_and_a_stored_comparison_is_continued() {
        let e = Evidence::new(0.5);
        assert!(
            e.report("a", &[outcome(0.1, 0.2)]).is_err(),
            "no candidate yet"
        );
        e.follow(Some((&package("a", 2), &HashMap::new())));
        assert_eq!(
            e.report("a", &[outcome(0.1, 0.2), outcome(0.7, 0.4)])
                .unwrap(),
            2
        );
        let refused = e.report("b", &[outcome(0.1, 0.2)]).unwrap_err();
        assert!(
            refused.to_string().contains("the current one is a"),
            "{refused}"
        );
        let (version, _, c) = e.snapshot().unwrap();
        assert_eq!((version, c.rows, c.agree), (2, 2, 1));

        // Another candidate whose package already holds a comparison (a restarted watcher).
        let mut stored = Comparison::new(0.5);
        stored.add(&shadow_comparison::Outcome {
            live: vec![0.3],
            candidate: vec![0.35],
            ..Default::default()
        });
        let metadata: HashMap<String, String> = stored.to_metadata().unwrap().into_iter().collect();
        e.follow(Some((&package("b", 3), &metadata)));
        e.report("b", &[outcome(0.9, 0.8)]).unwrap();
        let (_, _, c) = e.snapshot().unwrap();
        assert_eq!((c.rows, c.requests), (2, 2), "continued from the package");

        e.follow(None);
        assert!(e.snapshot().is_none());
        assert!(
            telemetry::render_section(|| e.record_metrics()).is_empty(),
            "no series without a candidate"
        );
    }

    #[test]
    fn metrics_name_each_series_once() {
        let e = Evidence::new(0.5);
        e.follow(Some((&package("a", 2), &HashMap::new())));
        e.report("a", &[outcome(0.1, 0.2)]).unwrap();
        let text = telemetry::render_section(|| e.record_metrics());
        assert_eq!(
            text.matches("# TYPE watcher_shadow_error_rate gauge")
                .count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("watcher_shadow_rows{candidate=\"2\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("watcher_shadow_latency_p50_ms{candidate=\"2\",model=\"live\"}"),
            "{text}"
        );
    }
}
