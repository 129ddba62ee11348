//! Token buckets and what they answer: the `RateLimit`/`RateLimit-Policy` headers of an
//! admitted request, or a 429 with `Retry-After`.

use std::{net::IpAddr, num::NonZeroU32};

use axum::http::StatusCode;
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::{InMemoryState, NotKeyed, keyed::DefaultKeyedStateStore},
};

use crate::problem::Problem;

pub(super) type Bucket =
    RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;
pub(super) type AddressBuckets =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Limit {
    pub(super) per_second: NonZeroU32,
    pub(super) burst: NonZeroU32,
}

impl Limit {
    pub(super) fn new(per_second: u32, burst: u32) -> Option<Self> {
        Some(Limit {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    pub(super) fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }

    /// `RateLimit-Policy`: the bucket's size over the time it takes to refill.
    fn policy(self, name: &str) -> String {
        let window = self.burst.get().div_ceil(self.per_second.get());
        format!("\"{name}\";q={};w={window}", self.burst)
    }
}

/// The rate-limit headers an admitted request's answer carries.
pub(super) type LimitHeaders = Vec<(&'static str, String)>;

/// The bucket's verdict as headers, or a 429.
pub(super) fn check(
    client: &str,
    limit: Limit,
    verdict: Result<u32, governor::NotUntil<<DefaultClock as Clock>::Instant>>,
) -> Result<LimitHeaders, Box<Problem>> {
    let policy = limit.policy("default");
    match verdict {
        Ok(remaining) => {
            metrics::counter!("gateway_client_requests_total", "client" => client.to_owned(), "outcome" => "allowed").increment(1);
            let reset = (limit.burst.get() - remaining).div_ceil(limit.per_second.get());
            Ok(vec![
                ("ratelimit-policy", policy),
                ("ratelimit", format!("\"default\";r={remaining};t={reset}")),
            ])
        }
        Err(not_until) => {
            metrics::counter!("gateway_client_requests_total", "client" => client.to_owned(), "outcome" => "limited").increment(1);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            Err(Box::new(Problem {
                retry_after: Some(seconds.max(1)),
                headers: vec![
                    ("ratelimit-policy", policy),
                    ("ratelimit", format!("\"default\";r=0;t={}", seconds.max(1))),
                ],
                ..Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("{client} is over its rate limit; retry after the time given"),
                )
            }))
        }
    }
}
