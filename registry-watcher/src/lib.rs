//! The registry-watcher: polls the model registry and the endpoint, and tells whether the
//! latest Approved model package is what the endpoint serves. `GetStatus` returns the last
//! status; `WatchStatus` streams it (the current one first, then every change). Health is
//! NOT_SERVING until the first successful poll; an unreachable SageMaker API shows up in
//! `last_error` while the last good status keeps being served.

pub mod evidence;
mod page;
pub mod rollout;

pub use model_registry::{poll, status};

use std::{pin::Pin, time::Duration};

use proto::registry::v1::{
    GetStatusRequest, ReportRolloutRequest, ReportRolloutResponse, ReportShadowRequest,
    ReportShadowResponse, Status, WatchStatusRequest,
    registry_watcher_server::{RegistryWatcher, RegistryWatcherServer},
};
use rand::Rng;
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// The model package group whose latest Approved package should be live.
    #[arg(long, env = "MODEL_PACKAGE_GROUP", default_value = names::MODEL_PACKAGE_GROUP)]
    pub group: String,
    /// The endpoint that should serve it.
    #[arg(
        long,
        env = "SAGEMAKER_ENDPOINT_NAME",
        default_value = names::ENDPOINT_NAME
    )]
    pub endpoint_name: String,
    /// Milliseconds between polls (±10% jitter; doubled, up to 60 s, while throttled).
    #[arg(long, env = "WATCHER_POLL_MS", default_value_t = 5000)]
    pub poll_ms: u64,
    /// The endpoint a pending candidate is shadowed on (default `{endpoint}-shadow`, what
    /// `mlops-deploy shadow` creates).
    #[arg(long, env = "SHADOW_ENDPOINT_NAME")]
    pub shadow_endpoint_name: Option<String>,
    /// The score at and above which a row is decided positive: where the comparison counts
    /// whether live model and candidate agree.
    #[arg(long, env = "SHADOW_DECISION_THRESHOLD", default_value_t = 0.5)]
    pub shadow_threshold: f64,
    /// Milliseconds between writes of the comparison to the candidate's package (when it
    /// changed).
    #[arg(long, env = "WATCHER_SHADOW_SAVE_MS", default_value_t = 5000)]
    pub shadow_save_ms: u64,
    /// What the approver's page says of a rollout's evidence: the Deploy step's thresholds
    /// (the same variables).
    #[command(flatten)]
    pub rollout_thresholds: rollout_evidence::Thresholds,
    #[command(flatten)]
    pub tls: grpc_tls::Tls,
    #[command(flatten)]
    pub grace: bootstrap::shutdown::Grace,
    #[command(flatten)]
    pub aws: bootstrap::aws::AwsClient,
}

pub struct WatcherService {
    status: watch::Receiver<Status>,
    evidence: evidence::Evidence,
    rollouts: rollout::Rollouts,
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<Status, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl RegistryWatcher for WatcherService {
    async fn get_status(
        &self,
        _: tonic::Request<GetStatusRequest>,
    ) -> Result<tonic::Response<Status>, tonic::Status> {
        Ok(tonic::Response::new(self.status.borrow().clone()))
    }

    type WatchStatusStream = StatusStream;

    async fn watch_status(
        &self,
        _: tonic::Request<WatchStatusRequest>,
    ) -> Result<tonic::Response<StatusStream>, tonic::Status> {
        let stream = WatchStream::new(self.status.clone()).map(Ok);
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn report_shadow(
        &self,
        request: tonic::Request<ReportShadowRequest>,
    ) -> Result<tonic::Response<ReportShadowResponse>, tonic::Status> {
        let r = request.into_inner();
        let accepted = self
            .evidence
            .report(&r.candidate_package_arn, &r.outcomes)
            .map_err(|e| tonic::Status::failed_precondition(e.to_string()))?;
        Ok(tonic::Response::new(ReportShadowResponse { accepted }))
    }

    async fn report_rollout(
        &self,
        request: tonic::Request<ReportRolloutRequest>,
    ) -> Result<tonic::Response<ReportRolloutResponse>, tonic::Status> {
        let r = request.into_inner();
        let accepted = self
            .rollouts
            .report(&r.candidate_package_arn, &r.outcomes)
            .map_err(|e| tonic::Status::failed_precondition(e.to_string()))?;
        Ok(tonic::Response::new(ReportRolloutResponse { accepted }))
    }
}

fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

fn publish_metrics(s: &Status) {
    metrics::gauge!("watcher_in_sync").set(if s.in_sync { 1.0 } else { 0.0 });
    metrics::gauge!("watcher_approved_version")
        .set(s.latest_approved.as_ref().map_or(0.0, |p| p.version as f64));
    let out = s
        .out_of_sync_since
        .as_ref()
        .map_or(0.0, |t| (now().seconds - t.seconds).max(0) as f64);
    metrics::gauge!("watcher_out_of_sync_seconds").set(out);
}

/// `watcher_live_version{variant}`, recorded from the current status at every scrape: one
/// series per variant live now (a recorder gauge would keep every variant ever live).
fn live_versions(status: &Status) {
    metrics::describe_gauge!(
        "watcher_live_version",
        "The model package version each live variant serves."
    );
    for v in status.endpoint.iter().flat_map(|e| &e.variants) {
        metrics::gauge!("watcher_live_version", "variant" => v.name.clone())
            .set(v.model_package_version as f64);
    }
}

/// Follows the rollout the status shows (its evidence window), and counts how one ended:
/// the endpoint serving the candidate alone (promoted), or not (rolled back).
fn follow_rollout(rollouts: &rollout::Rollouts, s: &Status, rolling_out: &mut Option<String>) {
    rollouts.follow(s, None);
    let endpoint = s.endpoint.as_ref();
    let now = endpoint
        .and_then(model_registry::status::rollout)
        .map(|r| r.candidate.model_package_arn.clone());
    if let Some(was) = rolling_out.take_if(|was| now.as_ref() != Some(was)) {
        let serves_it_alone = endpoint
            .is_some_and(|e| e.variants.len() == 1 && e.variants[0].model_package_arn == was);
        rollouts.decided(
            &was,
            if serves_it_alone {
                "promoted"
            } else {
                "rolled_back"
            },
        );
    }
    if now.is_some() {
        *rolling_out = now;
    }
}

/// Polls until `stop`; `on_first_success` runs once, after the first good poll.
#[allow(clippy::too_many_arguments)]
async fn poll_loop(
    mut poller: poll::Poller,
    shadow_endpoint: String,
    evidence: evidence::Evidence,
    rollouts: rollout::Rollouts,
    tx: watch::Sender<Status>,
    interval: Duration,
    stop: CancellationToken,
    on_first_success: impl FnOnce() + Send,
) {
    let mut first = Some(on_first_success);
    let mut wait = interval;
    let mut rolling_out: Option<String> = None;
    loop {
        let result = async {
            let latest = poller.latest_approved().await?;
            let endpoint = poller.endpoint().await?;
            let candidate = poller.candidate(latest.as_ref()).await?;
            let shadow = poller.endpoint_named(&shadow_endpoint).await?;
            Ok::<_, poll::PollError>((latest, endpoint, candidate, shadow))
        }
        .await;
        match result {
            Ok((latest, endpoint, candidate, shadow)) => {
                wait = interval;
                evidence.follow(candidate.as_ref().map(|(p, m)| (p, m)));
                tx.send_if_modified(|s| {
                    let changed = status::apply_success(s, latest, endpoint, now())
                        | status::apply_candidate(s, candidate.map(|(p, _)| p), shadow);
                    if changed {
                        tracing::info!(candidate = s.candidate.as_ref().map(|p| p.version), shadowing = status::shadowed(s).is_some(), in_sync = s.in_sync, approved = s.latest_approved.as_ref().map(|p| p.version), live = ?s.endpoint.as_ref().map(|e| e.variants.iter().map(|v| (v.name.clone(), v.model_package_version)).collect::<Vec<_>>()), "status changed");
                    }
                    changed
                });
                follow_rollout(&rollouts, &tx.borrow(), &mut rolling_out);
                if let Some(f) = first.take() {
                    f();
                }
            }
            Err(e) => {
                metrics::counter!("watcher_poll_errors_total").increment(1);
                if matches!(e, poll::PollError::Throttled { .. }) {
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
                tracing::warn!(error = %e, "poll failed; serving the last status");
                tx.send_if_modified(|s| status::apply_failure(s, e.to_string()));
            }
        }
        publish_metrics(&tx.borrow());
        let jittered = wait.mul_f64(rand::rng().random_range(0.9..1.1));
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// With mutual TLS, who may call what: the status is read by the services that follow it;
/// the shadow comparison is fed by the predictors alone (the internet-facing gateway must not
/// be able to forge an approver's evidence). `GRPC_TLS_ALLOW` replaces it per method.
pub const CALLERS: &[(&str, &[&str])] = &[
    ("GetStatus", &["gateway", "predictor", "interaction-logger"]),
    (
        "WatchStatus",
        &["gateway", "predictor", "interaction-logger"],
    ),
    ("ReportShadow", &["predictor"]),
    ("ReportRollout", &["predictor"]),
];

/// Serves gRPC on `grpc` and the admin HTTP endpoints on `admin` until `shutdown`.
pub async fn run(
    grpc: TcpListener,
    admin: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let aws = config.aws.load().await?;
    let client = aws_sdk_sagemaker::Client::new(&aws);
    let poller = poll::Poller::new(
        client.clone(),
        config.group.clone(),
        config.endpoint_name.clone(),
    );
    let shadow_endpoint = config
        .shadow_endpoint_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| status::shadow_endpoint_name(&config.endpoint_name));
    let evidence = evidence::Evidence::new(config.shadow_threshold);
    let rollouts = rollout::Rollouts::default();
    let (tx, rx) = watch::channel(Status::default());
    telemetry::add_section({
        let rx = rx.clone();
        move || live_versions(&rx.borrow())
    });
    telemetry::add_section({
        let evidence = evidence.clone();
        move || evidence.record_metrics()
    });
    telemetry::add_section({
        let rollouts = rollouts.clone();
        move || rollouts.record_metrics()
    });
    let saving_rollouts = tokio::spawn(rollouts.clone().save_loop(
        client.clone(),
        Duration::from_millis(config.shadow_save_ms.max(100)),
        shutdown.child_token(),
    ));
    let saving = tokio::spawn(evidence.clone().save_loop(
        client,
        Duration::from_millis(config.shadow_save_ms.max(100)),
        shutdown.child_token(),
    ));

    let readiness = bootstrap::Readiness::default();
    // Not serving until the first poll has given a status to serve.
    let health = bootstrap::grpc::Health::new::<RegistryWatcherServer<WatcherService>>(
        readiness.clone(),
        false,
    )
    .await;
    let ready = {
        let health = health.clone();
        move || {
            tokio::spawn(async move { health.set(true).await });
        }
    };
    let polling = tokio::spawn(poll_loop(
        poller,
        shadow_endpoint.clone(),
        evidence.clone(),
        rollouts.clone(),
        tx,
        Duration::from_millis(config.poll_ms.max(50)),
        shutdown.child_token(),
        ready,
    ));
    let admin_task = tokio::spawn(bootstrap::admin::serve_admin(
        admin,
        bootstrap::admin::admin_router(readiness).merge(page::routes(
            evidence.clone(),
            rollouts.clone(),
            config.rollout_thresholds,
            rx.clone(),
        )),
        shutdown.child_token(),
    ));

    tracing::info!(addr = %grpc.local_addr()?, group = %config.group, endpoint = %config.endpoint_name, %shadow_endpoint, transport = config.tls.describe(), "registry-watcher serving");
    // Open WatchStatus streams end when polling stops; the grace period bounds the wait.
    let finished = bootstrap::grpc::serve(
        grpc,
        RegistryWatcherServer::new(WatcherService {
            status: rx,
            evidence,
            rollouts,
        }),
        &config.tls,
        CALLERS,
        health,
        shutdown.clone(),
        Some(config.grace.duration()),
    )
    .await?;
    if !finished {
        tracing::warn!("grace period over; closing the remaining streams");
    }
    let _ = tokio::join!(polling, admin_task, saving, saving_rollouts);
    tracing::info!("registry-watcher stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use proto::registry::v1::{EndpointState, Variant};

    use super::*;

    fn status(variants: &[(&str, i64)]) -> Status {
        Status {
            endpoint: Some(EndpointState {
                variants: variants
                    .iter()
                    .map(|(name, version)| Variant {
                        name: name.to_string(),
                        model_package_version: *version,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn live_versions_name_only_the_variants_live_now() {
        let render = |s: Status| telemetry::render_section(|| live_versions(&s));
        let both = render(status(&[("v1", 1), ("v2", 2)]));
        assert!(
            both.contains("watcher_live_version{variant=\"v1\"} 1\n"),
            "{both}"
        );
        assert!(
            both.contains("watcher_live_version{variant=\"v2\"} 2\n"),
            "{both}"
        );
        let after = render(status(&[("v2", 2)]));
        assert!(!after.contains("\"v1\""), "a variant gone is gone: {after}");
        assert!(after.contains("# TYPE watcher_live_version gauge"));
        assert!(
            render(status(&[("a\"b", 3)])).contains(r#"variant="a\"b""#),
            "escaped"
        );
    }
}
