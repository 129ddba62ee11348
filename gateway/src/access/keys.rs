//! The API keys in force: the keys file (or inline JSON) parsed, checked and read again while
//! running, only when it changed; a bad file keeps the keys in force.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    sha256: String,
    per_second: Option<u32>,
    burst: Option<u32>,
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Access {
    pub(super) fn parse(&self, bytes: &[u8], current: &Keys) -> Result<Keys, KeysError> {
        let file: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| KeysError::Invalid(e.to_string()))?;
        let mut keys = Keys::new();
        for entry in file.keys {
            if entry.name.is_empty() || entry.name.len() > 128 {
                return Err(KeysError::Invalid(format!(
                    "key name {:?}: 1 to 128 characters",
                    entry.name
                )));
            }
            let hash = parse_hex(&entry.sha256).ok_or_else(|| {
                KeysError::Invalid(format!(
                    "key {}: sha256 must be 64 hex digits (the SHA-256 of the key)",
                    entry.name
                ))
            })?;
            let limit = Limit::new(
                entry.per_second.unwrap_or(self.config.key_rate_per_sec),
                entry.burst.unwrap_or(self.config.key_burst),
            )
            .ok_or_else(|| {
                KeysError::Invalid(format!("key {}: limits must be above 0", entry.name))
            })?;
            let client = match current.get(&hash) {
                Some(c) if c.name == entry.name && c.limit == limit => Arc::clone(c),
                _ => Arc::new(Client {
                    name: entry.name,
                    limit,
                    bucket: RateLimiter::direct(limit.quota()).with_middleware(),
                }),
            };
            if keys.insert(hash, client).is_some() {
                return Err(KeysError::Invalid("the same key appears twice".into()));
            }
        }
        Ok(keys)
    }

    /// Reads the keys file again if it changed. A file that is gone revokes every key (every
    /// prediction is then 401 until it is back: deleting the file is how all keys are
    /// revoked at once); one that cannot be read or parsed leaves the keys in force.
    pub fn reload(&self) {
        let (Some(path), Some(keys)) = (&self.config.api_keys_file, &self.keys) else {
            return;
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let had = std::mem::take(&mut *keys.write().expect("keys lock")).len();
                *self.last_file.write().expect("keys lock") = None;
                if had > 0 {
                    tracing::error!(path = %path.display(), revoked = had, "the API keys file is gone: every key is revoked until it is back");
                }
                metrics::counter!("gateway_api_keys_reload_errors_total").increment(1);
                return;
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the API keys file; the keys in force stay");
                metrics::counter!("gateway_api_keys_reload_errors_total").increment(1);
                return;
            }
        };
        if self.last_file.read().expect("keys lock").as_deref() == Some(bytes.as_slice()) {
            return;
        }
        let current = keys.read().expect("keys lock").clone();
        match self.parse(&bytes, &current) {
            Ok(new) => {
                tracing::info!(keys = new.len(), was = current.len(), "API keys reloaded");
                metrics::counter!("gateway_api_keys_reloads_total").increment(1);
                *keys.write().expect("keys lock") = new;
                *self.last_file.write().expect("keys lock") = Some(bytes);
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "the API keys file is invalid; the keys in force stay");
                metrics::counter!("gateway_api_keys_reload_errors_total").increment(1);
            }
        }
    }

    /// Reloads the keys and forgets idle address buckets until `stop`.
    pub async fn maintain(self: Arc<Self>, stop: CancellationToken) {
        let every = Duration::from_millis(self.config.api_keys_reload_ms.max(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            let me = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || me.reload()).await;
            for (_, buckets) in [&self.anonymous, &self.unauthorized].into_iter().flatten() {
                buckets.retain_recent();
                buckets.shrink_to_fit();
            }
        }
    }
}
