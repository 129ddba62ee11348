//! Who may call the API, and how often.
//!
//! - **API keys** (`GATEWAY_API_KEYS_FILE`, or `GATEWAY_API_KEYS` inline): JSON
//!   `{"keys": [{"name": "acme", "sha256": "<hex of the key's SHA-256>", "per_second": 50,
//!   "burst": 100}]}`. The gateway holds only the hashes. With keys configured, `POST
//!   /v1/predict` needs one (`Authorization: Bearer <key>` or `X-Api-Key: <key>`) or is
//!   answered 401 before anything is predicted or recorded; the recorded `client_id` is the
//!   key's name. The file is read again every `GATEWAY_API_KEYS_RELOAD_MS`: added, changed and
//!   revoked keys take effect without a restart (a file that cannot be read or parsed keeps the
//!   keys in force, loudly). With no keys configured the API is open, as before (the local
//!   default), and says so at start-up and in `/healthz`.
//! - **Rate limits**: a token bucket per key (its own `per_second`/`burst`, else
//!   `GATEWAY_KEY_RATE_PER_SEC`/`GATEWAY_KEY_BURST`), and per client address for anonymous
//!   callers (`GATEWAY_ANON_RATE_PER_SEC`/`GATEWAY_ANON_BURST`; unset: unlimited). The address
//!   is the peer's, or, when the peer is a trusted proxy (`GATEWAY_TRUSTED_PROXIES`, CIDRs),
//!   the nearest untrusted address in `X-Forwarded-For`. Over the limit: 429 with
//!   `Retry-After`; every limited answer carries `RateLimit-Policy` and `RateLimit`. The
//!   buckets are this process's (shared by all its threads): N gateway tasks admit up to N
//!   times a limit.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::RateLimiter;
use ipnet::IpNet;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::problem::Problem;
pub use keys::hash_key;
use limit::{AddressBuckets, Bucket, Limit, LimitHeaders, check};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct AccessConfig {
    /// A JSON file of API keys (their SHA-256 hashes, names and limits), read again while
    /// running. Set it (or GATEWAY_API_KEYS) and every prediction needs a key.
    #[arg(long, env = "GATEWAY_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// The same JSON inline (e.g. injected from Secrets Manager); read at start. Set but
    /// empty is an error (unset it for an open API).
    #[arg(long, env = "GATEWAY_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<secret::Secret>,
    /// How often the keys file is read again.
    #[arg(long, env = "GATEWAY_API_KEYS_RELOAD_MS", default_value_t = 2000)]
    pub api_keys_reload_ms: u64,
    /// Requests per second a key may make when its entry sets none.
    #[arg(long, env = "GATEWAY_KEY_RATE_PER_SEC", default_value_t = 100)]
    pub key_rate_per_sec: u32,
    /// The burst a key may make when its entry sets none.
    #[arg(long, env = "GATEWAY_KEY_BURST", default_value_t = 200)]
    pub key_burst: u32,
    /// Requests per second per client address without a key (unset: unlimited).
    #[arg(long, env = "GATEWAY_ANON_RATE_PER_SEC")]
    pub anon_rate_per_sec: Option<u32>,
    /// The burst per client address without a key (default: one second's worth).
    #[arg(long, env = "GATEWAY_ANON_BURST")]
    pub anon_burst: Option<u32>,
    /// Requests per second per client address that bring no valid key (answered 401); beyond
    /// it they are answered 429 without the key being looked at. 0: unlimited.
    #[arg(long, env = "GATEWAY_UNAUTHORIZED_RATE_PER_SEC", default_value_t = 5)]
    pub unauthorized_rate_per_sec: u32,
    /// The burst of unauthorized requests per client address.
    #[arg(long, env = "GATEWAY_UNAUTHORIZED_BURST", default_value_t = 20)]
    pub unauthorized_burst: u32,
    /// Proxies (CIDRs, comma-separated) whose X-Forwarded-For is believed, e.g. the load
    /// balancer's subnets.
    #[arg(long, env = "GATEWAY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,
}

/// One key's holder.
pub struct Client {
    pub name: String,
    limit: Limit,
    bucket: Bucket,
}

/// The keys in force, by the SHA-256 of the key.
type Keys = HashMap<[u8; 32], Arc<Client>>;

/// Who called, once admitted: what the interaction records.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The key's name; `None` for an anonymous caller (open mode).
    pub key_name: Option<String>,
}

pub struct Access {
    config: AccessConfig,
    /// `None`: open mode (no keys configured).
    keys: Option<RwLock<Keys>>,
    /// The keys file's last content, to reload only on change.
    last_file: RwLock<Option<Vec<u8>>>,
    anonymous: Option<(Limit, AddressBuckets)>,
    /// Per client address, for requests without a valid key: guessing keys is slow.
    unauthorized: Option<(Limit, AddressBuckets)>,
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("invalid API keys: {0}")]
    Invalid(String),
}

impl Access {
    pub fn new(config: AccessConfig) -> Result<Self, KeysError> {
        let anonymous = config.anon_rate_per_sec.and_then(|rate| {
            let limit = Limit::new(rate, config.anon_burst.unwrap_or(rate))?;
            Some((limit, RateLimiter::keyed(limit.quota()).with_middleware()))
        });
        let unauthorized = Limit::new(config.unauthorized_rate_per_sec, config.unauthorized_burst)
            .map(|limit| (limit, RateLimiter::keyed(limit.quota()).with_middleware()));
        let mut access = Access {
            keys: None,
            last_file: RwLock::new(None),
            anonymous,
            unauthorized,
            config,
        };
        let initial = match (&access.config.api_keys_file, &access.config.api_keys) {
            (Some(path), _) => {
                let bytes = std::fs::read(path).map_err(|e| KeysError::Read(path.clone(), e))?;
                let keys = access.parse(&bytes, &Keys::new())?;
                *access.last_file.write().expect("keys lock") = Some(bytes);
                Some(keys)
            }
            (None, Some(inline)) if inline.is_blank() => {
                return Err(KeysError::Invalid(
                    "GATEWAY_API_KEYS is set but empty: give the keys document, or unset it for an open API".into(),
                ));
            }
            (None, Some(inline)) => Some(access.parse(inline.expose().as_bytes(), &Keys::new())?),
            (None, None) => None,
        };
        match &initial {
            Some(keys) => tracing::info!(keys = keys.len(), "API keys required for predictions"),
            None => tracing::warn!(
                "no API keys configured: the prediction API is open to anyone who can reach it"
            ),
        }
        access.keys = initial.map(RwLock::new);
        Ok(access)
    }

    /// Whether predictions need a key.
    pub fn keys_required(&self) -> bool {
        self.keys.is_some()
    }

    /// Parses a keys document; a key whose hash and limits are unchanged keeps its bucket.
    /// The client's address: the peer's, or, behind trusted proxies, the nearest untrusted
    /// address they forwarded for.
    fn address(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        let trusted = |ip: &IpAddr| self.config.trusted_proxies.iter().any(|n| n.contains(ip));
        let peer = peer?;
        if !trusted(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        Some(
            forwarded
                .iter()
                .rev()
                .find(|ip| !trusted(ip))
                .or(forwarded.first())
                .copied()
                .unwrap_or(peer),
        )
    }

    /// Admits a request (its caller, and the rate-limit headers to send), or refuses it.
    pub fn admit(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<(Caller, LimitHeaders), Box<Problem>> {
        let Some(keys) = &self.keys else {
            let Some((limit, buckets)) = &self.anonymous else {
                return Ok((Caller { key_name: None }, Vec::new()));
            };
            let Some(address) = self.address(headers, peer) else {
                return Ok((Caller { key_name: None }, Vec::new()));
            };
            let headers = check(
                "anonymous",
                *limit,
                buckets
                    .check_key(&address)
                    .map(|s| s.remaining_burst_capacity()),
            )?;
            return Ok((Caller { key_name: None }, headers));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let Some(given) = given else {
            return Err(self.unauthorized(
                headers,
                peer,
                "an API key is required: Authorization: Bearer <key> or X-Api-Key: <key>",
            ));
        };
        let client = keys
            .read()
            .expect("keys lock")
            .get(&hash_key(given))
            .cloned();
        let Some(client) = client else {
            return Err(self.unauthorized(headers, peer, "the API key is not valid"));
        };
        let headers = check(
            &client.name,
            client.limit,
            client.bucket.check().map(|s| s.remaining_burst_capacity()),
        )?;
        Ok((
            Caller {
                key_name: Some(client.name.clone()),
            },
            headers,
        ))
    }
}

impl Access {
    /// A 401, or a 429 once the address has made too many requests without a valid key.
    fn unauthorized(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        detail: &str,
    ) -> Box<Problem> {
        if let (Some((limit, buckets)), Some(address)) =
            (&self.unauthorized, self.address(headers, peer))
            && let verdict @ Err(_) = buckets.check_key(&address).map(|_| 0)
            && let Err(limited) = check("unauthorized", *limit, verdict)
        {
            return limited;
        }
        metrics::counter!("gateway_client_requests_total", "client" => "unknown", "outcome" => "unauthorized").increment(1);
        Box::new(Problem {
            headers: vec![("www-authenticate", "Bearer".into())],
            ..Problem::new(StatusCode::UNAUTHORIZED, detail)
        })
    }
}

/// The middleware in front of the prediction API: admits the caller (adding [`Caller`] to the
/// request) or answers 401/429 before anything is predicted or recorded.
pub async fn guard(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match access.admit(request.headers(), peer) {
        Ok((caller, limit_headers)) => {
            request.extensions_mut().insert(caller);
            let mut response = next.run(request).await;
            for (name, value) in limit_headers {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, v);
                }
            }
            response
        }
        Err(problem) => problem.into_response(),
    }
}

mod keys;
mod limit;
#[cfg(test)]
mod tests;
