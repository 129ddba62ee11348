use clap::Parser;

allocator::install!();

#[derive(Parser, Debug)]
#[command(
    version,
    about = "gRPC predictor in front of a SageMaker real-time endpoint"
)]
struct Args {
    /// gRPC listen address.
    #[arg(long, env = "PREDICTOR_LISTEN", default_value = "0.0.0.0:50051")]
    listen: String,
    /// Admin HTTP (/metrics, /healthz, /readyz) listen address.
    #[arg(long, env = "PREDICTOR_ADMIN_LISTEN", default_value = "0.0.0.0:9101")]
    admin_listen: String,
    #[command(flatten)]
    logging: telemetry::Logging,
    #[command(flatten)]
    config: predictor::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::run_grpc_service(
        "predictor",
        args.logging.log_format,
        &args.listen,
        &args.admin_listen,
        |grpc, admin, shutdown| predictor::run(grpc, admin, args.config, shutdown),
    )
    .await
}
