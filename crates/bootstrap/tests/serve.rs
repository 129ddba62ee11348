//! A real tonic server on 127.0.0.1:0: the service's health follows `Health::set` and the
//! admin readiness with it; on shutdown both turn not-serving at once, and a call still in
//! flight (an open server stream) gets the grace period and no more.

use std::{pin::Pin, time::Duration};

use proto::registry::v1::{
    GetStatusRequest, ReportRolloutRequest, ReportRolloutResponse, ReportShadowRequest,
    ReportShadowResponse, Status, WatchStatusRequest,
    registry_watcher_client::RegistryWatcherClient,
    registry_watcher_server::{RegistryWatcher, RegistryWatcherServer},
};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A watcher whose status stream never ends (a call that stays in flight).
struct Endless;

type Statuses = Pin<Box<dyn Stream<Item = Result<Status, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl RegistryWatcher for Endless {
    async fn get_status(
        &self,
        _: tonic::Request<GetStatusRequest>,
    ) -> Result<tonic::Response<Status>, tonic::Status> {
        Ok(tonic::Response::new(Status::default()))
    }

    type WatchStatusStream = Statuses;

    async fn watch_status(
        &self,
        _: tonic::Request<WatchStatusRequest>,
    ) -> Result<tonic::Response<Statuses>, tonic::Status> {
        let first = tokio_stream::once(Ok(Status::default()));
        let never = tokio_stream::pending();
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::StreamExt::chain(first, never),
        )))
    }

    async fn report_shadow(
        &self,
        _: tonic::Request<ReportShadowRequest>,
    ) -> Result<tonic::Response<ReportShadowResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not part of this test"))
    }

    async fn report_rollout(
        &self,
        _: tonic::Request<ReportRolloutRequest>,
    ) -> Result<tonic::Response<ReportRolloutResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not part of this test"))
    }
}

const NAME: &str = "mlops.registry.v1.RegistryWatcher";

#[tokio::test]
async fn health_follows_the_service_and_shutdown_gives_in_flight_calls_the_grace_only() {
    let readiness = bootstrap::Readiness::default();
    let health =
        bootstrap::grpc::Health::new::<RegistryWatcherServer<Endless>>(readiness.clone(), false)
            .await;
    assert!(!readiness.is_ready());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let tls = grpc_tls::Tls::default();
    let serving = {
        let (health, shutdown) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            bootstrap::grpc::serve(
                listener,
                RegistryWatcherServer::new(Endless),
                &tls,
                &[],
                health,
                shutdown,
                Some(Duration::from_millis(300)),
            )
            .await
        })
    };
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut checker = HealthClient::new(channel.clone());
    let status = || HealthCheckRequest {
        service: NAME.into(),
    };
    let check = checker.check(status()).await.unwrap().into_inner().status;
    assert_eq!(
        check,
        ServingStatus::NotServing as i32,
        "not serving until told"
    );
    health.set(true).await;
    let check = checker.check(status()).await.unwrap().into_inner().status;
    assert_eq!(check, ServingStatus::Serving as i32);
    assert!(readiness.is_ready());
    // Reflection lists exactly what this server serves, in both versions, and describes it.
    let expected = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        NAME,
    ];
    assert_eq!(reflection::list_v1(channel.clone()).await, expected);
    assert_eq!(reflection::list_v1alpha(channel.clone()).await, expected);
    for symbol in expected {
        assert!(
            reflection::describes(channel.clone(), symbol).await,
            "{symbol} is listed but not described"
        );
    }

    // A call in flight: a status stream that never ends.
    let mut stream = RegistryWatcherClient::new(channel)
        .watch_status(WatchStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    let signalled = std::time::Instant::now();
    shutdown.cancel();
    let finished = serving.await.unwrap().unwrap();
    assert!(!finished, "the open stream outlived the grace period");
    assert!(!readiness.is_ready(), "readiness turned with health");
    let waited = signalled.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
}

/// A reflection client, as grpcurl and the Python `grpcio-reflection` client ask.
mod reflection {
    use tonic::transport::Channel;
    use tonic_reflection::pb::{v1, v1alpha};

    /// The services a reflection version lists, sorted.
    macro_rules! list {
        ($version:ident, $channel:expr) => {{
            use $version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut answers = ServerReflectionClient::new($channel)
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let Some(MessageResponse::ListServicesResponse(list)) =
                answers.message().await.unwrap().unwrap().message_response
            else {
                panic!("not a service list");
            };
            let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }};
    }

    pub async fn list_v1(channel: Channel) -> Vec<String> {
        list!(v1, channel)
    }

    pub async fn list_v1alpha(channel: Channel) -> Vec<String> {
        list!(v1alpha, channel)
    }

    /// Whether reflection (v1) returns the file that declares `symbol`.
    pub async fn describes(channel: Channel, symbol: &str) -> bool {
        use v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        matches!(
            answers.message().await.unwrap().unwrap().message_response,
            Some(MessageResponse::FileDescriptorResponse(f)) if !f.file_descriptor_proto.is_empty()
        )
    }
}
