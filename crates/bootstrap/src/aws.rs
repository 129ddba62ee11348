//! The AWS SDK configuration of every service, declared once: the standard chain for
//! credentials, region and endpoints (`AWS_*`, profile, ECS task role, web identity, IMDS),
//! one connect and one per-operation timeout, and the SDK's own retries off — each service
//! retries by its own policy (the predictor within the caller's deadline, the logger with
//! backoff until shipped, the watcher at its next poll). The pipeline's command-line tools
//! (`mlops-deploy`, `mlops-pipeline`) have no policy of their own around each call, so they
//! keep the SDK's standard retries ([`AwsClient::load_for_tool`]) under the same timeouts.
//!
//! `AWS_CA_BUNDLE` (the AWS CLI's and boto3's variable, read as they read it) names the PEM
//! certificates the SDK trusts instead of the system's roots: how the services reach an
//! endpoint whose certificate a private CA signed (sagemaker-local over HTTPS, with
//! `scripts/dev-ca`'s CA; a corporate TLS proxy, with a bundle holding its CA and AWS's roots).

use std::{path::PathBuf, time::Duration};

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_smithy_http_client::tls;
use tokio_rustls::rustls::{
    RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};

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
    /// PEM certificates to trust for AWS endpoints instead of the system's roots, as the AWS CLI
    /// and boto3 read it (e.g. `scripts/dev-ca`'s `ca.crt` for sagemaker-local over HTTPS).
    /// Unset: the system's roots.
    #[arg(long, env = "AWS_CA_BUNDLE")]
    pub aws_ca_bundle: Option<PathBuf>,
}

impl Default for AwsClient {
    fn default() -> Self {
        AwsClient {
            aws_connect_timeout_ms: CONNECT_TIMEOUT_MS,
            aws_operation_timeout_ms: OPERATION_TIMEOUT_MS,
            aws_ca_bundle: None,
        }
    }
}

/// An `AWS_CA_BUNDLE` that cannot be used: refused at start, never ignored.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("AWS_CA_BUNDLE {0}: {1}")]
    Read(String, std::io::Error),
    #[error("AWS_CA_BUNDLE {0}: not PEM certificates: {1}")]
    Pem(String, String),
    #[error("AWS_CA_BUNDLE {0}: no certificate in it")]
    Empty(String),
}

/// The bundle's certificates, each checked as a trust anchor (the SDK's TLS layer would panic
/// on one it cannot parse).
fn ca_bundle(path: &PathBuf) -> Result<Vec<u8>, CaBundleError> {
    let name = path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| CaBundleError::Read(name.clone(), e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaBundleError::Pem(name.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(CaBundleError::Empty(name));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| CaBundleError::Pem(name.clone(), e.to_string()))?;
    }
    Ok(pem)
}

/// Attempts per call of a command-line tool (the SDK's standard mode: backoff with jitter,
/// throttling and transient errors only).
pub const TOOL_ATTEMPTS: u32 = 3;

impl AwsClient {
    /// A service's configuration: the SDK's retries off.
    pub async fn load(&self) -> Result<SdkConfig, CaBundleError> {
        self.with_retries(RetryConfig::disabled()).await
    }

    /// A command-line tool's configuration: the SDK's standard retries.
    pub async fn load_for_tool(&self) -> Result<SdkConfig, CaBundleError> {
        self.with_retries(RetryConfig::standard().with_max_attempts(TOOL_ATTEMPTS))
            .await
    }

    async fn with_retries(&self, retry: RetryConfig) -> Result<SdkConfig, CaBundleError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(self.aws_connect_timeout_ms))
                    .operation_timeout(Duration::from_millis(self.aws_operation_timeout_ms))
                    .build(),
            );
        if let Some(path) = &self.aws_ca_bundle {
            let trust = tls::TrustStore::empty().with_pem_certificate(ca_bundle(path)?);
            let context = tls::TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .expect("a trust store makes a TLS context"); // infallible in the crate
            loader = loader.http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::AwsLc,
                    ))
                    .tls_context(context)
                    .build_https(),
            );
        }
        Ok(loader.load().await)
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
            aws_ca_bundle: None,
        }
        .load()
        .await
        .unwrap();
        assert_eq!(conf.retry_config().unwrap().max_attempts(), 1);
        let t = conf.timeout_config().unwrap();
        assert_eq!(t.connect_timeout(), Some(Duration::from_millis(1500)));
        assert_eq!(t.operation_timeout(), Some(Duration::from_millis(7000)));
        let tool = AwsClient::default().load_for_tool().await.unwrap();
        assert_eq!(tool.retry_config().unwrap().max_attempts(), TOOL_ATTEMPTS);
        assert_eq!(
            tool.timeout_config().unwrap().operation_timeout(),
            Some(Duration::from_millis(OPERATION_TIMEOUT_MS))
        );
    }

    /// A bundle the SDK could not use is refused at start with its path and reason, never
    /// ignored (or left for the TLS layer to panic on at the first call).
    #[tokio::test]
    async fn a_ca_bundle_that_is_missing_not_pem_or_empty_is_refused() {
        let dir = std::env::temp_dir().join(format!("mlops-ca-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let with = |path: PathBuf| AwsClient {
            aws_ca_bundle: Some(path),
            ..AwsClient::default()
        };
        let missing = with(dir.join("absent.crt")).load().await.unwrap_err();
        assert!(matches!(missing, CaBundleError::Read(..)), "{missing}");
        std::fs::write(dir.join("empty.crt"), "not a certificate\n").unwrap();
        let empty = with(dir.join("empty.crt")).load().await.unwrap_err();
        assert!(matches!(empty, CaBundleError::Empty(_)), "{empty}");
        std::fs::write(
            dir.join("garbage.crt"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let garbage = with(dir.join("garbage.crt")).load().await.unwrap_err();
        assert!(matches!(garbage, CaBundleError::Pem(..)), "{garbage}");
        assert!(garbage.to_string().contains("garbage.crt"), "{garbage}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
