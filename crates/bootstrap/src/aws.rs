//! The AWS SDK configuration of every service, declared once: the standard chain for
//! credentials, region and endpoints (`AWS_*`, profile, ECS task role, web identity, IMDS),
//! one connect and one per-operation timeout, and the SDK's own retries off — each service
//! retries by its own policy (the predictor within the caller's deadline, the logger with
//! backoff until shipped, the watcher at its next poll). The pipeline's command-line tools
//! (`mlops-deploy`, `mlops-pipeline`) have no policy of their own around each call, so they
//! keep the SDK's standard retries ([`AwsClient::load_for_tool`]) under the same timeouts.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};

/// Default of `AWS_CONNECT_TIMEOUT_MS`.
pub const CONNECT_TIMEOUT_MS: u64 = 2000;
/// Default of `AWS_OPERATION_TIMEOUT_MS`.
pub const OPERATION_TIMEOUT_MS: u64 = 10_000;

/// The AWS client flags, flattened into each service's arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct AwsClient {
    /// Most milliseconds to open a connection to an AWS endpoint.
    #[arg(long, env = "AWS_CONNECT_TIMEOUT_MS", default_value_t = CONNECT_TIMEOUT_MS)]
    pub aws_connect_timeout_ms: u64,
    /// Most milliseconds one AWS call may take, all of it (the predictor's calls are bounded
    /// by the caller's deadline as well).
    #[arg(long, env = "AWS_OPERATION_TIMEOUT_MS", default_value_t = OPERATION_TIMEOUT_MS)]
    pub aws_operation_timeout_ms: u64,
}

impl Default for AwsClient {
    fn default() -> Self {
        AwsClient {
            aws_connect_timeout_ms: CONNECT_TIMEOUT_MS,
            aws_operation_timeout_ms: OPERATION_TIMEOUT_MS,
        }
    }
}

/// Attempts per call of a command-line tool (the SDK's standard mode: backoff with jitter,
/// throttling and transient errors only).
pub const TOOL_ATTEMPTS: u32 = 3;

impl AwsClient {
    /// A service's configuration: the SDK's retries off.
    pub async fn load(&self) -> SdkConfig {
        self.with_retries(RetryConfig::disabled()).await
    }

    /// A command-line tool's configuration: the SDK's standard retries.
    pub async fn load_for_tool(&self) -> SdkConfig {
        self.with_retries(RetryConfig::standard().with_max_attempts(TOOL_ATTEMPTS))
            .await
    }

    async fn with_retries(&self, retry: RetryConfig) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry)
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
        let tool = AwsClient::default().load_for_tool().await;
        assert_eq!(tool.retry_config().unwrap().max_attempts(), TOOL_ATTEMPTS);
        assert_eq!(
            tool.timeout_config().unwrap().operation_timeout(),
            Some(Duration::from_millis(OPERATION_TIMEOUT_MS))
        );
    }
}
