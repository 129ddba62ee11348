//! The AWS SDK configuration of every service, declared once: the standard chain for
//! credentials, region and endpoints (`AWS_*`, profile, ECS task role, web identity, IMDS),
//! one connect and one per-operation timeout, and the SDK's own retries off — each service
//! retries by its own policy (the predictor within the caller's deadline, the logger with
//! backoff until shipped, the watcher at its next poll).

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};

/// The AWS client flags, flattened into each service's arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct AwsClient {
    /// Most milliseconds to open a connection to an AWS endpoint.
    #[arg(long, env = "AWS_CONNECT_TIMEOUT_MS", default_value_t = 2000)]
    pub aws_connect_timeout_ms: u64,
    /// Most milliseconds one AWS call may take, all of it (the predictor's calls are bounded
    /// by the caller's deadline as well).
    #[arg(long, env = "AWS_OPERATION_TIMEOUT_MS", default_value_t = 10_000)]
    pub aws_operation_timeout_ms: u64,
}

impl Default for AwsClient {
    fn default() -> Self {
        AwsClient {
            aws_connect_timeout_ms: 2000,
            aws_operation_timeout_ms: 10_000,
        }
    }
}

impl AwsClient {
    pub async fn load(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(self.aws_connect_timeout_ms))
                    .operation_timeout(Duration::from_millis(self.aws_operation_timeout_ms))
                    .build(),
            )
            .load()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_policy_timeouts_set_and_sdk_retries_off() {
        let conf = AwsClient {
            aws_connect_timeout_ms: 1500,
            aws_operation_timeout_ms: 7000,
        }
        .load()
        .await;
        assert_eq!(conf.retry_config().unwrap().max_attempts(), 1);
        let t = conf.timeout_config().unwrap();
        assert_eq!(t.connect_timeout(), Some(Duration::from_millis(1500)));
        assert_eq!(t.operation_timeout(), Some(Duration::from_millis(7000)));
    }
}
