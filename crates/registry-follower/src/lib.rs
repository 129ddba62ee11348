//! Follows `mlops.registry.v1.RegistryWatcher/WatchStatus` for as long as a service runs,
//! reconnecting with backoff, so the service always has the watcher's latest status: which
//! model package each variant serves, and whether that is the latest Approved one.

use std::time::Duration;

use proto::registry::v1::{
    Status, WatchStatusRequest, registry_watcher_client::RegistryWatcherClient,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

/// The latest status; `None` until the watcher first answers.
#[derive(Clone)]
pub struct Follower(watch::Receiver<Option<Status>>);

impl Follower {
    /// Starts following the watcher at `endpoint` (plaintext or TLS, as the caller built it)
    /// until `shutdown`.
    pub fn start(endpoint: Endpoint, shutdown: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(follow(endpoint, tx, shutdown));
        Follower(rx)
    }

    /// A follower that never hears anything (no watcher configured).
    pub fn none() -> Self {
        Follower(watch::channel(None).1)
    }

    pub fn latest(&self) -> Option<Status> {
        self.0.borrow().clone()
    }

    /// Looks at the latest status without copying it (keep `f` short: it holds a read lock).
    pub fn with<R>(&self, f: impl FnOnce(Option<&Status>) -> R) -> R {
        f(self.0.borrow().as_ref())
    }

    /// The feature names the live model takes: those of every variant serving traffic, when
    /// they all name the same ones (`None`: no status yet, no schema, or variants disagree,
    /// as for a moment during a switch).
    pub fn live_features(&self) -> Option<Vec<String>> {
        live_schema(self.0.borrow().as_ref()?).cloned()
    }

    /// How many features the live model takes (see `live_features`), without copying them.
    pub fn live_width(&self) -> Option<usize> {
        live_schema(self.0.borrow().as_ref()?).map(Vec::len)
    }

    /// The model package (ARN, version) the live variant `name` serves, without copying the
    /// rest of the variant (its schema and baselines): what every answer is tagged with. A
    /// variant the last status does not show yet (the endpoint changed since the watcher's
    /// poll) is known by its name when Deploy named it, `v{version}`, in the group the status
    /// shows.
    pub fn package_of(&self, name: &str) -> Option<(String, i64)> {
        self.with(|s| {
            let s = s?;
            let known = s
                .endpoint
                .as_ref()
                .and_then(|e| e.variants.iter().find(|v| v.name == name))
                .map(|v| (v.model_package_arn.clone(), v.model_package_version));
            known.or_else(|| by_deploy_name(s, name))
        })
    }
}

async fn follow(
    endpoint: Endpoint,
    tx: watch::Sender<Option<Status>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    let url = endpoint.uri().to_string();
    while !shutdown.is_cancelled() {
        let session = async {
            let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
            let mut client = RegistryWatcherClient::new(channel);
            let mut stream = client
                .watch_status(WatchStatusRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            while let Some(status) = stream.message().await.map_err(|e| e.to_string())? {
                tx.send_replace(Some(status));
            }
            Ok::<_, String>(())
        };
        tokio::select! {
            result = session => match result {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => tracing::warn!(error = %e, %url, "registry-watcher stream lost; reconnecting"),
            },
            _ = shutdown.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// `v{n}` -> package `n` of the group the status' latest Approved package is in.
fn by_deploy_name(status: &Status, name: &str) -> Option<(String, i64)> {
    let version: i64 = name.strip_prefix('v')?.parse().ok().filter(|v| *v > 0)?;
    let latest = status.latest_approved.as_ref()?;
    let (group, _) = latest.arn.rsplit_once('/')?;
    Some((format!("{group}/{version}"), version))
}

/// The schema every variant with traffic agrees on, if any.
pub fn live_schema(status: &Status) -> Option<&Vec<String>> {
    let mut serving = status
        .endpoint
        .as_ref()?
        .variants
        .iter()
        .filter(|v| v.current_weight > 0.0)
        .map(|v| &v.features);
    let first = serving.next()?;
    (!first.is_empty() && serving.all(|f| f == first)).then_some(first)
}

#[cfg(test)]
mod schema_tests {
    use proto::registry::v1::{EndpointState, Variant};

    use super::*;

    fn status(variants: &[(&[&str], f64)]) -> Status {
        Status {
            endpoint: Some(EndpointState {
                variants: variants
                    .iter()
                    .map(|(f, w)| Variant {
                        features: f.iter().map(|s| s.to_string()).collect(),
                        current_weight: *w,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_live_schema_is_what_every_serving_variant_agrees_on() {
        assert_eq!(
            live_schema(&status(&[(&["a", "b"], 1.0)])).unwrap(),
            &["a", "b"]
        );
        assert_eq!(
            live_schema(&status(&[(&["a", "b"], 0.5), (&["a", "b"], 0.5)])).unwrap(),
            &["a", "b"]
        );
        assert_eq!(
            live_schema(&status(&[(&["a", "b"], 1.0), (&["a", "b", "c"], 0.0)])).unwrap(),
            &["a", "b"],
            "a variant without traffic does not count"
        );
        assert!(live_schema(&status(&[(&["a"], 0.5), (&["a", "b"], 0.5)])).is_none());
        assert!(live_schema(&status(&[(&[], 1.0)])).is_none(), "no schema");
        assert!(live_schema(&Status::default()).is_none());
    }

    #[test]
    fn a_variant_the_status_does_not_show_yet_is_known_by_its_deploy_name() {
        let s = Status {
            latest_approved: Some(proto::registry::v1::ModelPackage {
                arn: "arn:aws:sagemaker:us-east-1:1:model-package/g/3".into(),
                version: 3,
                ..Default::default()
            }),
            ..status(&[(&["a"], 1.0)])
        };
        assert_eq!(
            by_deploy_name(&s, "v4"),
            Some(("arn:aws:sagemaker:us-east-1:1:model-package/g/4".into(), 4))
        );
        for other in ["AllTraffic", "v", "v0", "vx", "v-1"] {
            assert_eq!(by_deploy_name(&s, other), None, "{other}");
        }
        assert_eq!(by_deploy_name(&Status::default(), "v4"), None);
    }
}
