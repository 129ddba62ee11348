//! Serves a service's gRPC API the way every service here does: `grpc.health.v1` and server
//! reflection (v1 and v1alpha, so `grpcurl` needs no `.proto` files; it lists exactly what the
//! server serves) beside it, TLS or mutual
//! TLS as `GRPC_TLS_*` say (crate `grpc-tls`), TCP_NODELAY, a server span per sampled call
//! when traces are on. On shutdown the service's health
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
    readiness: crate::Readiness,
}

impl Health {
    /// Health for the gRPC service `S`, serving from the start or not (until `set(true)`).
    pub async fn new<S: NamedService>(readiness: crate::Readiness, serving: bool) -> Self {
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
/// (`grace` None: the caller bounds what follows itself). With mutual TLS each of the
/// service's methods admits only the callers `policy` names (see `grpc_tls::Callers`); health
/// and reflection admit any certificate the CA signed.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    tls: &grpc_tls::Tls,
    policy: &[(&str, &[&str])],
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
    let (reflection, reflection_v1alpha) = (
        reflection(S::NAME).build_v1()?,
        reflection(S::NAME).build_v1alpha()?,
    );
    let health_service =
        HealthServer::new(HealthService::from_health_reporter(health.reporter.clone()));
    let stop = shutdown.clone();
    let service = Authorized {
        inner: service,
        callers: tls.callers(policy)?.map(std::sync::Arc::new),
    };
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
        Some(grace) => match crate::shutdown::within_grace(&shutdown, grace, serving).await {
            Some(served) => served.map(|()| true).map_err(Into::into),
            None => Ok(false),
        },
    }
}

/// A service whose methods check the caller's certificate against the policy first (a
/// caller it does not name gets PERMISSION_DENIED, counted and logged, and the method never
/// runs), then run in the call's server span, which answers with its `traceparent`.
#[derive(Clone)]
struct Authorized<S> {
    inner: S,
    callers: Option<std::sync::Arc<grpc_tls::Callers>>,
}

impl<S: NamedService> NamedService for Authorized<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Authorized<S>
where
    S: Service<http::Request<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if let Some(callers) = &self.callers {
            let caller =
                request
                    .extensions()
                    .get::<tonic::transport::server::TlsConnectInfo<
                        tonic::transport::server::TcpConnectInfo,
                    >>()
                    .and_then(|info| info.peer_certs())
                    .and_then(|certs| certs.first().and_then(|leaf| grpc_tls::identity(leaf)));
            let path = request.uri().path().to_owned();
            let admitted = caller.as_deref().is_some_and(|c| callers.admits(&path, c));
            if !admitted {
                let who = caller.unwrap_or_else(|| "a caller without an identity".into());
                tracing::warn!(caller = %who, method = %path, "refused: this caller may not call this method (GRPC_TLS_ALLOW)");
                metrics::counter!("grpc_callers_refused_total", "method" => path.rsplit('/').next().unwrap_or_default().to_owned()).increment(1);
                let status = tonic::Status::permission_denied(format!("{who} may not call {path}"));
                return Box::pin(async move { Ok(status.into_http::<axum::body::Body>()) });
            }
        }
        // sampling decided first: an unsampled call builds no span, only runs in its trace
        let decision = telemetry::traces::decide(request.headers());
        let span = decision.span(|| server_span(&request));
        let call = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(decision.run(span, async move {
            use axum::response::IntoResponse;
            let Ok(response) = call.await;
            let mut response = response.into_response();
            telemetry::traces::inject(&tracing::Span::none(), response.headers_mut());
            Ok(response)
        }))
    }
}

/// A sampled call's server span (`rpc.service`/`rpc.method`, in the caller's trace from its
/// `traceparent` metadata); the service's own spans are its children.
fn server_span(request: &http::Request<Body>) -> tracing::Span {
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    tracing::info_span!(
        "grpc",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        trace_id = tracing::field::Empty,
    )
}

/// What every server's reflection lists: exactly what it serves — its one service, health,
/// and reflection itself in both versions (`v1` for grpcurl and current clients, `v1alpha` for
/// the official Python `grpcio-reflection` client and the tools built on it) — each one
/// describable, from the contracts' descriptor set and tonic's own.
fn served_services(service: &str) -> [&str; 4] {
    [service, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA]
}

const HEALTH: &str = "grpc.health.v1.Health";
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

fn reflection(service: &str) -> tonic_reflection::server::Builder<'static> {
    served_services(service).into_iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ),
        |builder, name| builder.with_service_name(name),
    )
}
