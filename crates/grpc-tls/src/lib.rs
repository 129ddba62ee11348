//! TLS on the internal gRPC hops, optional and off unless configured. Every service reads the
//! same block:
//!
//! - `GRPC_TLS_CERT` / `GRPC_TLS_KEY` (PEM): this service's certificate. A gRPC server serves
//!   TLS with it; a client presents it to servers that require client certificates.
//! - `GRPC_TLS_CA` (PEM): the CA that signs the services' certificates. Clients verify servers
//!   against it (any `https://` URL); servers verify clients against it when
//!   `GRPC_TLS_REQUIRE_CLIENT_CERT=true` (mutual TLS: a client without a certificate that CA
//!   signed is refused during the handshake).
//!
//! A peer URL's scheme chooses: `https://predictor:50051` is TLS, `http://` is plaintext.
//!
//! Each file may instead be given by its content, `GRPC_TLS_CERT_PEM`, `GRPC_TLS_KEY_PEM`,
//! `GRPC_TLS_CA_PEM` (what ECS injects from Secrets Manager).

mod callers;

pub use callers::{Callers, identity};

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Tls {
    /// This service's certificate (PEM): served by its gRPC server, presented to peers that
    /// require client certificates.
    #[arg(long = "tls-cert", env = "GRPC_TLS_CERT")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of GRPC_TLS_CERT.
    #[arg(long = "tls-key", env = "GRPC_TLS_KEY")]
    pub key: Option<PathBuf>,
    /// The CA (PEM) the services' certificates are signed by: https:// peers are verified
    /// against it, and so are clients when client certificates are required.
    #[arg(long = "tls-ca", env = "GRPC_TLS_CA")]
    pub ca: Option<PathBuf>,
    /// GRPC_TLS_CERT's content instead of its path.
    #[arg(
        long = "tls-cert-pem",
        env = "GRPC_TLS_CERT_PEM",
        hide_env_values = true,
        conflicts_with = "cert"
    )]
    pub cert_pem: Option<String>,
    /// GRPC_TLS_KEY's content instead of its path.
    #[arg(
        long = "tls-key-pem",
        env = "GRPC_TLS_KEY_PEM",
        hide_env_values = true,
        conflicts_with = "key"
    )]
    pub key_pem: Option<secret::Secret>,
    /// GRPC_TLS_CA's content instead of its path.
    #[arg(
        long = "tls-ca-pem",
        env = "GRPC_TLS_CA_PEM",
        hide_env_values = true,
        conflicts_with = "ca"
    )]
    pub ca_pem: Option<String>,
    /// Mutual TLS: this service's gRPC server refuses clients without a certificate signed by
    /// GRPC_TLS_CA.
    #[arg(long = "tls-require-client-cert", env = "GRPC_TLS_REQUIRE_CLIENT_CERT", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_client_cert: bool,
    /// With mutual TLS: who may call which method, replacing the service's own policy per
    /// method (`Method=cn,cn;Method=cn`; a caller is its certificate's subject CN).
    #[arg(long = "tls-allow", env = "GRPC_TLS_ALLOW")]
    pub allow: Option<String>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// A PEM given by path or by content (empty content counts as not given).
fn pem(
    path: &Option<PathBuf>,
    content: &Option<String>,
    what: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    match (path, content.as_deref().filter(|c| !c.trim().is_empty())) {
        (_, Some(c)) => Ok(Some(c.as_bytes().to_vec())),
        (Some(p), None) => read(p, what).map(Some),
        (None, None) => Ok(None),
    }
}

impl Tls {
    fn identity(&self) -> anyhow::Result<Option<Identity>> {
        match (
            pem(&self.cert, &self.cert_pem, "GRPC_TLS_CERT")?,
            pem(
                &self.key,
                &self.key_pem.as_ref().map(|k| k.expose().to_owned()),
                "GRPC_TLS_KEY",
            )?,
        ) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(Identity::from_pem(cert, key))),
            _ => bail!("GRPC_TLS_CERT and GRPC_TLS_KEY are given together, or neither"),
        }
    }

    fn ca(&self, why: &str) -> anyhow::Result<Certificate> {
        let ca = pem(&self.ca, &self.ca_pem, "GRPC_TLS_CA")?
            .with_context(|| format!("{why} needs GRPC_TLS_CA"))?;
        Ok(Certificate::from_pem(ca))
    }

    /// The server's TLS settings; `None`: plaintext (no certificate configured).
    pub fn server(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let Some(identity) = self.identity()? else {
            if self.require_client_cert {
                bail!("GRPC_TLS_REQUIRE_CLIENT_CERT needs GRPC_TLS_CERT and GRPC_TLS_KEY");
            }
            return Ok(None);
        };
        let mut config = ServerTlsConfig::new().identity(identity);
        if self.require_client_cert {
            config = config.client_ca_root(self.ca("GRPC_TLS_REQUIRE_CLIENT_CERT")?);
        }
        Ok(Some(config))
    }

    /// A server builder with these TLS settings applied (plaintext when none).
    pub fn server_builder(&self) -> anyhow::Result<tonic::transport::Server> {
        let builder = tonic::transport::Server::builder();
        Ok(match self.server()? {
            Some(config) => builder
                .tls_config(config)
                .context("the gRPC server's TLS settings")?,
            None => builder,
        })
    }

    /// The callers policy this server enforces: `policy` with `GRPC_TLS_ALLOW` applied, or
    /// `None` when clients have no certificates to tell them apart (no mutual TLS).
    pub fn callers(&self, policy: &[(&str, &[&str])]) -> anyhow::Result<Option<Callers>> {
        if !self.require_client_cert {
            return Ok(None);
        }
        Callers::new(policy)
            .overridden(self.allow.as_deref())
            .map(Some)
    }

    /// What the server's start-up log says about it.
    pub fn describe(&self) -> &'static str {
        let has_cert = self.cert.is_some()
            || self
                .cert_pem
                .as_deref()
                .is_some_and(|c| !c.trim().is_empty());
        match (has_cert, self.require_client_cert) {
            (false, _) => "plaintext",
            (true, false) => "tls",
            (true, true) => "mutual tls",
        }
    }

    /// An endpoint for `url`: TLS for `https://` (the server verified against GRPC_TLS_CA,
    /// this service's certificate presented if it has one), plaintext for `http://`.
    pub fn endpoint(&self, url: &str) -> anyhow::Result<Endpoint> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("invalid gRPC URL {url}"))?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        let mut config = ClientTlsConfig::new().ca_certificate(self.ca(url)?);
        if let Some(identity) = self.identity()? {
            config = config.identity(identity);
        }
        endpoint
            .tls_config(config)
            .with_context(|| format!("TLS settings for {url}"))
    }
}
