use clap::Parser;

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
    /// json (production) or pretty.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    log_format: String,
    #[command(flatten)]
    config: predictor::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(&args.log_format);
    let grpc = tokio::net::TcpListener::bind(&args.listen).await?;
    let admin = tokio::net::TcpListener::bind(&args.admin_listen).await?;
    // Scripts and tests read this line to learn the ports when listening on :0.
    println!(
        "predictor listening on grpc={} admin={}",
        grpc.local_addr()?,
        admin.local_addr()?
    );
    let shutdown = shutdown::on_signal();
    let service = predictor::run(grpc, admin, args.config, shutdown.clone());
    telemetry::emf::alongside("predictor", &shutdown, service).await
}
