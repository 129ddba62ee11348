//! Serves a service's gRPC API the way every service here does: `grpc.health.v1` and server
//! reflection (v1 and v1alpha, so `grpcurl` needs no `.proto` files) beside it, TLS or mutual
//! TLS as `GRPC_TLS_*` say (crate `grpc-tls`), TCP_NODELAY. On shutdown the service's health
//! and the admin port's `/readyz` turn not-serving first, no new connection is taken, and the
//! calls in flight get the grace period.

use std::{convert::Infallible, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    codegen::{Service, http},
    server::NamedService,
    transport::server::TcpIncoming,
};
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

/// Whether the service serves, as both `grpc.health.v1` (for its service name) and the admin
/// port's `/readyz` report it: they change together.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    name: &'static str,
    readiness: telemetry::Readiness,
}

impl Health {
    /// Health for the gRPC service `S`, serving from the start or not (until `set(true)`).
    pub async fn new<S: NamedService>(readiness: telemetry::Readiness, serving: bool) -> Self {
        let health = Health {
            reporter: HealthReporter::new(),
            name: S::NAME,
            readiness,
        };
        health.set(serving).await;
        health
    }

    pub async fn set(&self, serving: bool) {
        self.readiness.set(serving);
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(self.name, status).await;
    }
}

/// Serves `service` on `listener` until `shutdown`, then until the calls in flight finish:
/// within `grace` after the signal (`Ok(false)`: some did not), or however long they take
/// (`grace` None: the caller bounds what follows itself).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    tls: &grpc_tls::Tls,
    health: Health,
    shutdown: CancellationToken,
    grace: Option<Duration>,
) -> anyhow::Result<bool>
where
    S: Service<http::Request<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let (reflection, reflection_v1alpha) =
        (proto::reflection::v1()?, proto::reflection::v1alpha()?);
    let health_service =
        HealthServer::new(HealthService::from_health_reporter(health.reporter.clone()));
    let stop = shutdown.clone();
    let serving = tls
        .server_builder()?
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                stop.cancelled().await;
                health.set(false).await;
            },
        );
    match grace {
        None => serving.await.map(|()| true).map_err(Into::into),
        Some(grace) => match shutdown::within_grace(&shutdown, grace, serving).await {
            Some(served) => served.map(|()| true).map_err(Into::into),
            None => Ok(false),
        },
    }
}
