//! HTTPS, as SageMaker's endpoints are: with `SAGEMAKER_LOCAL_TLS_CERT` and
//! `SAGEMAKER_LOCAL_TLS_KEY` (PEM files, e.g. `scripts/dev-ca`'s `sagemaker-local.crt` and
//! `.key`) the one port speaks TLS 1.2/1.3 and HTTP/1.1 (ALPN `http/1.1`, as SageMaker's
//! runtime), and clients trust the certificate's CA (`AWS_CA_BUNDLE` for the services and
//! boto3).
//!
//! Every completed handshake counts in `sagemaker_local_tls_handshakes_total` (failed ones in
//! `sagemaker_local_tls_handshake_failures_total`), on `/metrics`: how a benchmark or a test
//! tells a client that reuses its connections from one that handshakes per request.
//! Handshakes run on their own tasks, so a slow or silent client never holds up the others.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
    server::TlsStream,
};

/// A handshake that has not finished by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path}: {reason}")]
    Pem {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("the TLS certificate and key do not make a server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server's TLS configuration from a PEM certificate chain and its private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let pem = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.display().to_string(),
            source,
        })
    };
    let bad = |what, path: &Path, reason: String| TlsError::Pem {
        what,
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&pem("SAGEMAKER_LOCAL_TLS_CERT", cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("SAGEMAKER_LOCAL_TLS_CERT", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(
            "SAGEMAKER_LOCAL_TLS_CERT",
            cert,
            "no PEM certificate in it".into(),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&pem("SAGEMAKER_LOCAL_TLS_KEY", key)?)
        .map_err(|e| bad("SAGEMAKER_LOCAL_TLS_KEY", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    // HTTP/1.1 only, as SageMaker's runtime endpoint (its HTTP/2 API is a separate service,
    // `runtime.sagemaker` for bidirectional streams): a client opens a connection per request
    // in flight and reuses them, so bursts cost handshakes as they do against AWS.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TCP listener whose connections reach the server after their TLS handshake.
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // as axum's own listener: a full fd table passes, so wait and go on
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            metrics::counter!("sagemaker_local_tls_handshakes_total").increment(1);
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => failed(peer, &e.to_string()),
                        Err(_) => failed(peer, "timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            accepted,
            local,
            accepting,
        })
    }
}

fn failed(peer: SocketAddr, reason: &str) {
    metrics::counter!("sagemaker_local_tls_handshake_failures_total").increment(1);
    tracing::debug!(%peer, reason, "TLS handshake failed");
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort(); // the port closes with the server
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // the accepting task never ends while the listener lives
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate or key that cannot be used stops the start with the variable and the
    /// file named, never a plain-HTTP fallback.
    #[test]
    fn an_unreadable_or_non_pem_certificate_or_key_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("sml-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = acceptor(&dir.join("absent.crt"), &dir.join("absent.key"))
            .err()
            .unwrap();
        assert!(
            missing.to_string().starts_with("SAGEMAKER_LOCAL_TLS_CERT"),
            "{missing}"
        );
        std::fs::write(dir.join("text.crt"), "not PEM\n").unwrap();
        let empty = acceptor(&dir.join("text.crt"), &dir.join("absent.key"))
            .err()
            .unwrap();
        assert!(empty.to_string().contains("no PEM certificate"), "{empty}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
