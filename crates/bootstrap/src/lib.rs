//! How every service here starts, serves and stops, declared once: its arguments
//! ([`grpc_main!`]), its gRPC and admin listeners, the admin port (`/metrics`, `/healthz`,
//! `/readyz`, the admin token), health and reflection beside the gRPC API ([`grpc`]),
//! SIGTERM and the grace period ([`shutdown`]), and the AWS SDK's client policy ([`aws`]).
//! Logs and metrics themselves are crate `telemetry`.

pub mod admin;
pub mod aws;
pub mod grpc;
pub mod shutdown;

pub use admin::Readiness;
/// Re-exported for [`grpc_main!`]'s expansion.
pub use telemetry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The whole `main` of a gRPC service after its arguments are parsed: logging, traces and metrics,
/// the gRPC and admin listeners, the `{name} listening on grpc=… admin=…` line that scripts
/// and tests read to learn the ports, the SIGTERM/SIGINT token, and the EMF emitter
/// alongside `run`.
pub async fn run_grpc_service<E, F>(
    name: &str,
    observability: &telemetry::Observability,
    listen: &str,
    admin_listen: &str,
    run: impl FnOnce(TcpListener, TcpListener, CancellationToken) -> F,
) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: From<std::io::Error>,
{
    observability.init(name).map_err(std::io::Error::other)?;
    let grpc = TcpListener::bind(listen).await?;
    let admin = TcpListener::bind(admin_listen).await?;
    println!(
        "{name} listening on grpc={} admin={}",
        grpc.local_addr()?,
        admin.local_addr()?
    );
    let shutdown = shutdown::on_signal();
    let service = run(grpc, admin, shutdown.clone());
    observability.run(name, &shutdown, service).await
}

/// Declares a gRPC service's arguments, the same for every one: its gRPC and admin listen
/// addresses (each under the service's own documented variable), the logging block, then
/// the service's own `Config` (which flattens the shutdown-grace and AWS-client blocks); and
/// `main`, which runs it through `run_grpc_service`.
///
/// ```ignore
/// bootstrap::grpc_main!(
///     name = "predictor", about = "gRPC predictor in front of a SageMaker real-time endpoint",
///     listen = ("PREDICTOR_LISTEN", "0.0.0.0:50051"), admin = ("PREDICTOR_ADMIN_LISTEN", "127.0.0.1:9101"),
///     config = predictor::Config, run = predictor::run,
/// );
/// ```
#[macro_export]
macro_rules! grpc_main {
    (
        name = $name:literal, about = $about:literal,
        listen = ($listen_env:literal, $listen_default:literal),
        admin = ($admin_env:literal, $admin_default:literal),
        config = $config:ty, run = $run:path $(,)?
    ) => {
        #[derive(clap::Parser, Debug)]
        #[command(version, about = $about)]
        struct Args {
            /// gRPC listen address.
            #[arg(long, env = $listen_env, default_value = $listen_default)]
            listen: String,
            /// Admin HTTP (/metrics, /healthz, /readyz) listen address.
            #[arg(long, env = $admin_env, default_value = $admin_default)]
            admin_listen: String,
            #[command(flatten)]
            observability: $crate::telemetry::Observability,
            #[command(flatten)]
            config: $config,
        }

        #[tokio::main]
        async fn main() -> anyhow::Result<()> {
            let args = <Args as clap::Parser>::parse();
            $crate::run_grpc_service(
                $name,
                &args.observability,
                &args.listen,
                &args.admin_listen,
                |grpc, admin, shutdown| $run(grpc, admin, args.config, shutdown),
            )
            .await
        }
    };
}
