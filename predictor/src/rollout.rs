//! Progressive rollouts, on the answer path. While the endpoint serves two package versions
//! (see `registry_status::status::rollout`), the predictor picks the variant of each call
//! itself, by the endpoint's current weights, and names it as the `TargetVariant`: a call to
//! the candidate is made once, within half the caller's deadline and outside the breaker, and
//! any failure of it falls back to the live variant within the rest. A user sees the
//! candidate's answers, never its failures. What each variant did is reported to the
//! registry-watcher (`ReportRollout`), whose per-variant windows decide the rollout.

use proto::registry::v1::{
    ReportRolloutRequest, RolloutOutcome, registry_watcher_client::RegistryWatcherClient,
};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::{
    batch::{Invocations, Outcome, Rows},
    error::Error,
    invoke::Attempts,
};

/// Outcomes waiting for their batch; more are dropped (counted).
const QUEUE: usize = 8192;

/// Which variant a call goes to during a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub live: String,
    pub candidate: String,
    /// The candidate's package, whose rollout the outcomes are evidence for.
    pub candidate_arn: String,
    /// Call the candidate first.
    pub to_candidate: bool,
}

/// The route for a call during the rollout `status` shows, if it shows one with weight on
/// the candidate. `draw` is uniform in [0, 1).
pub fn route(status: &proto::registry::v1::Status, draw: f64) -> Option<Route> {
    let r = registry_status::status::rollout(status.endpoint.as_ref()?)?;
    let (cw, lw) = (
        r.candidate.current_weight.max(0.0),
        r.live.current_weight.max(0.0),
    );
    if cw + lw <= 0.0 || r.candidate.model_package_arn.is_empty() {
        return None;
    }
    Some(Route {
        live: r.live.name.clone(),
        candidate: r.candidate.name.clone(),
        candidate_arn: r.candidate.model_package_arn.clone(),
        to_candidate: draw < cw / (cw + lw),
    })
}

/// Reports outcomes to the watcher; `None` when there is none to report to.
pub struct Reporter(Option<mpsc::Sender<(String, RolloutOutcome)>>);

impl Reporter {
    pub fn start(watcher: Option<Endpoint>, shutdown: CancellationToken) -> Self {
        let Some(watcher) = watcher else {
            return Reporter(None);
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let client = RegistryWatcherClient::new(watcher.connect_lazy());
        tokio::spawn(crate::report::batches(
            rx,
            shutdown,
            move |arn, outcomes| {
                let mut client = client.clone();
                async move {
                    let n = outcomes.len() as u64;
                    let request = ReportRolloutRequest {
                        candidate_package_arn: arn,
                        outcomes,
                    };
                    if let Err(e) = client.report_rollout(request).await {
                        metrics::counter!("predictor_rollout_outcomes_dropped_total").increment(n);
                        tracing::warn!(error = %e.message(), outcomes = n, "the registry-watcher did not take rollout outcomes; dropped");
                    }
                }
            },
        ));
        Reporter(Some(tx))
    }

    fn send(&self, arn: &str, outcome: RolloutOutcome) {
        let Some(tx) = &self.0 else { return };
        if tx.try_send((arn.to_owned(), outcome)).is_err() {
            metrics::counter!("predictor_rollout_outcomes_dropped_total").increment(1);
        }
    }
}

/// Scores `rows` (whose target the route sets) as `route` says, reporting each variant's
/// outcome.
pub async fn score(
    invocations: &Invocations,
    reporter: &Reporter,
    route: Route,
    rows: Rows,
) -> Outcome {
    let n = rows.rows as u32;
    let outcome = |variant: &str, result: &Outcome, started: Instant| RolloutOutcome {
        variant: variant.to_owned(),
        rows: n,
        scores: result
            .as_ref()
            .map_or_else(|_| Vec::new(), |a| a.first_scores()),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        failed: result.is_err(),
    };
    let mut tried = None;
    if route.to_candidate {
        let now = Instant::now();
        let half = now + rows.deadline.saturating_duration_since(now) / 2;
        let started = Instant::now();
        let result = invocations
            .score(Rows {
                target_variant: Some(route.candidate.clone()),
                attempts: Attempts::Once,
                deadline: half,
                ..rows.clone()
            })
            .await;
        match result {
            Ok(_) => {
                reporter.send(
                    &route.candidate_arn,
                    outcome(&route.candidate, &result, started),
                );
                return result;
            }
            Err(ref e) => {
                metrics::counter!("predictor_rollout_fallbacks_total").increment(1);
                tracing::info!(error = %e, variant = %route.candidate, "the candidate failed; answering from the live variant");
                tried = Some((outcome(&route.candidate, &result, started), result));
            }
        }
    }
    let started = Instant::now();
    let mut result = invocations
        .score(Rows {
            target_variant: Some(route.live.clone()),
            attempts: Attempts::Live,
            ..rows.clone()
        })
        .await;
    if let Err(Error::NoSuchVariant(_)) = result {
        // The rollout ended since the route was chosen: the endpoint picks the variant.
        result = invocations
            .score(Rows {
                target_variant: None,
                attempts: Attempts::Live,
                ..rows
            })
            .await;
    }
    if let Some((candidate, candidate_result)) = tried {
        // Input both models refuse says nothing against the candidate.
        let both_refused = matches!(
            (&candidate_result, &result),
            (Err(Error::ModelRejected(_)), Err(Error::ModelRejected(_)))
        );
        if !both_refused {
            reporter.send(&route.candidate_arn, candidate);
        }
    }
    // The live variant's own refusals of bad input are not its failures either.
    if !matches!(result, Err(Error::ModelRejected(_))) {
        reporter.send(&route.candidate_arn, outcome(&route.live, &result, started));
    }
    result
}

#[cfg(test)]
mod tests {
    use proto::registry::v1::{EndpointState, Status, Variant};

    use super::*;

    fn variant(name: &str, version: i64, weight: f64) -> Variant {
        Variant {
            name: name.into(),
            current_weight: weight,
            model_package_arn: format!("arn:pkg/{version}"),
            model_package_version: version,
            ..Default::default()
        }
    }

    fn status(variants: Vec<Variant>) -> Status {
        Status {
            endpoint: Some(EndpointState {
                variants,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn calls_go_to_the_candidate_by_its_share_of_the_weights() {
        let s = status(vec![variant("v1", 1, 0.9), variant("v2", 2, 0.1)]);
        let r = route(&s, 0.05).unwrap();
        assert_eq!(
            (
                r.live.as_str(),
                r.candidate.as_str(),
                r.candidate_arn.as_str()
            ),
            ("v1", "v2", "arn:pkg/2")
        );
        assert!(r.to_candidate);
        assert!(!route(&s, 0.1).unwrap().to_candidate);
        assert!(!route(&s, 0.5).unwrap().to_candidate);
        let shares = (0..1000)
            .filter(|i| route(&s, *i as f64 / 1000.0).unwrap().to_candidate)
            .count();
        assert_eq!(shares, 100);
    }

    #[test]
    fn no_route_outside_a_rollout() {
        assert_eq!(route(&status(vec![variant("v1", 1, 1.0)]), 0.0), None);
        assert_eq!(
            route(
                &status(vec![variant("v1", 1, 0.0), variant("v2", 2, 0.0)]),
                0.0
            ),
            None,
            "no weight anywhere"
        );
        assert_eq!(route(&Status::default(), 0.0), None);
        // Rolled back: the candidate keeps its variant at weight 0 until the endpoint is
        // single-variant again; every call goes to the live one.
        let back = route(
            &status(vec![variant("v2", 2, 0.0), variant("v1", 1, 1.0)]),
            0.0,
        )
        .unwrap();
        assert!(!back.to_candidate);
        assert_eq!(back.live, "v1");
    }
}
