//! A real tonic server (the gRPC health service) and real clients over TLS, with certificates
//! made here by a throwaway CA: TLS verifies the server; mutual TLS refuses a client without a
//! certificate, and one whose certificate another CA signed.

use std::path::Path;

use grpc_tls::Tls;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert,
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A leaf for `localhost` / 127.0.0.1 signed by `ca`, written to `dir/{name}.{crt,key}`.
fn leaf(ca: &Ca, dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

async fn serve(tls: &Tls) -> std::net::SocketAddr {
    let (_, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some(config) = tls.server().unwrap() {
        builder = builder.tls_config(config).unwrap();
    }
    let router = builder.add_service(health);
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn check(client: &Tls, addr: std::net::SocketAddr) -> Result<(), String> {
    let channel = client
        .endpoint(&format!("https://localhost:{}", addr.port()))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("call: {e}"))
}

#[tokio::test]
async fn tls_verifies_the_server_and_mutual_tls_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ours = ca();
    let ca_path = dir.path().join("ca.crt");
    std::fs::write(&ca_path, ours.cert.pem()).unwrap();
    let (server_cert, server_key) = leaf(&ours, dir.path(), "server");
    let (client_cert, client_key) = leaf(&ours, dir.path(), "client");
    let other = ca();
    let (rogue_cert, rogue_key) = leaf(&other, dir.path(), "rogue");
    let other_ca = dir.path().join("other-ca.crt");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();

    let server = |require_client_cert| Tls {
        cert: Some(server_cert.clone()),
        key: Some(server_key.clone()),
        ca: Some(ca_path.clone()),
        require_client_cert,
        ..Default::default()
    };
    let client = |cert: Option<(&Path, &Path)>, ca: &Path| Tls {
        cert: cert.map(|c| c.0.to_owned()),
        key: cert.map(|c| c.1.to_owned()),
        ca: Some(ca.to_owned()),
        ..Default::default()
    };

    // TLS: any client trusting the CA gets through; one trusting another CA does not.
    let addr = serve(&server(false)).await;
    check(&client(None, &ca_path), addr).await.unwrap();
    assert!(
        check(&client(None, &other_ca), addr).await.is_err(),
        "an unverified server was trusted"
    );
    // Plaintext to a TLS server fails.
    let plain = Tls::default()
        .endpoint(&format!("http://127.0.0.1:{}", addr.port()))
        .unwrap();
    let refused = match plain.connect().await {
        Ok(ch) => HealthClient::new(ch)
            .check(HealthCheckRequest::default())
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "a plaintext client was served");

    // The same files given by their content (as ECS injects secrets) work the same.
    let by_content = Tls {
        ca_pem: Some(std::fs::read_to_string(&ca_path).unwrap()),
        ..Default::default()
    };
    check(&by_content, addr).await.unwrap();

    // Mutual TLS: a client certificate signed by the CA is required.
    let addr = serve(&server(true)).await;
    check(&client(Some((&client_cert, &client_key)), &ca_path), addr)
        .await
        .unwrap();
    let without = check(&client(None, &ca_path), addr).await;
    assert!(
        without.is_err(),
        "a client without a certificate was served"
    );
    let rogue = check(&client(Some((&rogue_cert, &rogue_key)), &ca_path), addr).await;
    assert!(
        rogue.is_err(),
        "a client certificate from another CA was accepted"
    );
}

#[test]
fn half_configurations_are_refused_at_start() {
    let only_cert = Tls {
        cert: Some("x.crt".into()),
        ..Default::default()
    };
    assert!(only_cert.server().is_err());
    let mtls_without_cert = Tls {
        require_client_cert: true,
        ..Default::default()
    };
    assert!(mtls_without_cert.server().is_err());
    assert!(
        Tls::default().server().unwrap().is_none(),
        "plaintext by default"
    );
    assert!(
        Tls::default().endpoint("https://predictor:50051").is_err(),
        "https without a CA"
    );
}
