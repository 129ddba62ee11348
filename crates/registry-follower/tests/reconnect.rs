//! The follower keeps up with the registry-watcher through its absence: it connects once a
//! watcher comes up after it started, keeps the last status while a stream is broken, and
//! picks up the next one when the stream comes back. A real tonic server plays the watcher.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use proto::registry::v1::{
    GetStatusRequest, ModelPackage, ReportRolloutRequest, ReportRolloutResponse,
    ReportShadowRequest, ReportShadowResponse, Status, WatchStatusRequest,
    registry_watcher_server::{RegistryWatcher, RegistryWatcherServer},
};
use registry_follower::Follower;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

fn status(version: i64) -> Status {
    Status {
        latest_approved: Some(ModelPackage {
            version,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Streams the status its n-th connection is scripted with (version n+1), then breaks the
/// stream with UNAVAILABLE after `break_after`, as a watcher restarting would.
#[derive(Clone)]
struct Watcher {
    connections: Arc<AtomicUsize>,
    break_after: Duration,
}

type Statuses = Pin<Box<dyn Stream<Item = Result<Status, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl RegistryWatcher for Watcher {
    async fn get_status(
        &self,
        _: tonic::Request<GetStatusRequest>,
    ) -> Result<tonic::Response<Status>, tonic::Status> {
        Ok(tonic::Response::new(status(0)))
    }

    type WatchStatusStream = Statuses;

    async fn watch_status(
        &self,
        _: tonic::Request<WatchStatusRequest>,
    ) -> Result<tonic::Response<Statuses>, tonic::Status> {
        let n = self.connections.fetch_add(1, Ordering::SeqCst) as i64;
        let pause = self.break_after;
        let stream = async_stream(n + 1, pause);
        Ok(tonic::Response::new(Box::pin(stream)))
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

fn async_stream(
    version: i64,
    pause: Duration,
) -> impl Stream<Item = Result<Status, tonic::Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let _ = tx.send(Ok(status(version))).await;
        tokio::time::sleep(pause).await;
        let _ = tx
            .send(Err(tonic::Status::unavailable("watcher restarting")))
            .await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn wait_for(follower: &Follower, version: i64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while follower
            .latest()
            .and_then(|s| s.latest_approved)
            .map(|p| p.version)
            != Some(version)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the follower never saw version {version}: {:?}",
            follower.latest()
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_through_a_late_watcher_and_broken_streams() {
    // A port with nothing behind it yet.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let stop = CancellationToken::new();
    let follower = Follower::start(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap(),
        stop.child_token(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(follower.latest().is_none(), "nothing to follow yet");

    // The watcher comes up: the follower connects by itself.
    let watcher = Watcher {
        connections: Arc::new(AtomicUsize::new(0)),
        break_after: Duration::from_millis(300),
    };
    let connections = Arc::clone(&watcher.connections);
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistryWatcherServer::new(watcher))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    wait_for(&follower, 1).await;

    // Its stream breaks: the follower keeps what it knew, then reconnects and follows on.
    wait_for(&follower, 2).await;
    wait_for(&follower, 3).await;
    assert!(connections.load(Ordering::SeqCst) >= 3);
    stop.cancel();
}
