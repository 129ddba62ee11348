//! Follows `mlops.registry.v1.RegistryWatcher/WatchStatus` for as long as a service runs,
//! reconnecting with backoff, so the service always has the watcher's latest status: which
//! model package each variant serves, and whether that is the latest Approved one.

use std::time::Duration;

use proto::registry::v1::{
    Status, Variant, WatchStatusRequest, registry_watcher_client::RegistryWatcherClient,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The latest status; `None` until the watcher first answers.
#[derive(Clone)]
pub struct Follower(watch::Receiver<Option<Status>>);

impl Follower {
    /// Starts following the watcher at `url` until `shutdown`.
    pub fn start(url: String, shutdown: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(follow(url, tx, shutdown));
        Follower(rx)
    }

    /// A follower that never hears anything (no watcher configured).
    pub fn none() -> Self {
        Follower(watch::channel(None).1)
    }

    pub fn latest(&self) -> Option<Status> {
        self.0.borrow().clone()
    }

    /// The live variant `name`, with the model package it serves.
    pub fn variant(&self, name: &str) -> Option<Variant> {
        self.0
            .borrow()
            .as_ref()?
            .endpoint
            .as_ref()?
            .variants
            .iter()
            .find(|v| v.name == name)
            .cloned()
    }
}

async fn follow(url: String, tx: watch::Sender<Option<Status>>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let session = async {
            let mut client = RegistryWatcherClient::connect(url.clone())
                .await
                .map_err(|e| e.to_string())?;
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
