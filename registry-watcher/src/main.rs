use clap::Parser;

allocator::install!();

#[derive(Parser, Debug)]
#[command(
    version,
    about = "gRPC registry watcher: is the latest Approved model the one serving?"
)]
struct Args {
    /// gRPC listen address.
    #[arg(long, env = "WATCHER_LISTEN", default_value = "0.0.0.0:50053")]
    listen: String,
    /// Admin HTTP (/metrics, /healthz, /readyz) listen address.
    #[arg(long, env = "WATCHER_ADMIN_LISTEN", default_value = "0.0.0.0:9103")]
    admin_listen: String,
    #[command(flatten)]
    logging: telemetry::Logging,
    #[command(flatten)]
    config: registry_watcher::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::run_grpc_service(
        "registry-watcher",
        args.logging.log_format,
        &args.listen,
        &args.admin_listen,
        |grpc, admin, shutdown| registry_watcher::run(grpc, admin, args.config, shutdown),
    )
    .await
}
