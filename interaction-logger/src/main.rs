use clap::Parser;

allocator::install!();

#[derive(Parser, Debug)]
#[command(
    version,
    about = "gRPC interaction logger: durable spool, shipped to the SageMaker Feature Store"
)]
struct Args {
    /// gRPC listen address.
    #[arg(long, env = "LOGGER_LISTEN", default_value = "0.0.0.0:50052")]
    listen: String,
    /// Admin HTTP (/metrics, /healthz, /readyz, /dead-letters) listen address.
    #[arg(long, env = "LOGGER_ADMIN_LISTEN", default_value = "0.0.0.0:9102")]
    admin_listen: String,
    #[command(flatten)]
    logging: telemetry::Logging,
    #[command(flatten)]
    config: interaction_logger::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::run_grpc_service(
        "interaction-logger",
        args.logging.log_format,
        &args.listen,
        &args.admin_listen,
        |grpc, admin, shutdown| interaction_logger::run(grpc, admin, args.config, shutdown),
    )
    .await
}
