//! Which model package each production variant serves, as the registry-watcher reports it
//! (`WatchStatus`). Without a watcher the ModelRef carries the endpoint and variant only.

use std::{collections::HashMap, sync::RwLock, time::Duration};

use proto::registry::v1::{WatchStatusRequest, registry_watcher_client::RegistryWatcherClient};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct ModelVersions {
    by_variant: RwLock<HashMap<String, (String, i64)>>,
}

impl ModelVersions {
    /// `(package ARN, version)` of the package `variant` serves, if known.
    pub fn get(&self, variant: &str) -> Option<(String, i64)> {
        self.by_variant
            .read()
            .expect("versions lock")
            .get(variant)
            .cloned()
    }

    pub fn replace(&self, map: HashMap<String, (String, i64)>) {
        *self.by_variant.write().expect("versions lock") = map;
    }
}

/// Follows the watcher's status stream for as long as the service runs, reconnecting.
pub async fn follow(
    url: String,
    versions: std::sync::Arc<ModelVersions>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let stream = async {
            let mut client = RegistryWatcherClient::connect(url.clone())
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = client
                .watch_status(WatchStatusRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            while let Some(status) = stream.message().await.map_err(|e| e.to_string())? {
                let map = status
                    .endpoint
                    .map(|e| {
                        e.variants
                            .into_iter()
                            .filter(|v| !v.model_package_arn.is_empty())
                            .map(|v| (v.name, (v.model_package_arn, v.model_package_version)))
                            .collect()
                    })
                    .unwrap_or_default();
                versions.replace(map);
            }
            Ok::<_, String>(())
        };
        tokio::select! {
            result = stream => if let Err(e) = result {
                tracing::warn!(error = %e, %url, "registry-watcher stream lost; reconnecting");
            },
            _ = shutdown.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {},
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
