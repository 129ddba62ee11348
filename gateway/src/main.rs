use clap::Parser;

allocator::install!();

#[derive(Parser, Debug)]
#[command(
    version,
    about = "HTTP gateway: web page and predict API in front of the predictor"
)]
struct Args {
    /// HTTP listen address.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    /// gRPC listen address of the Open Inference Protocol's API
    /// (`inference.GRPCInferenceService`, with health and reflection).
    #[arg(long, env = "GATEWAY_GRPC_LISTEN", default_value = "0.0.0.0:8081")]
    grpc_listen: String,
    #[command(flatten)]
    observability: telemetry::Observability,
    #[command(flatten)]
    config: gateway::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.observability.init("gateway")?;
    let shutdown = bootstrap::shutdown::on_signal();
    let app = gateway::App::new(args.config, &shutdown)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let grpc = tokio::net::TcpListener::bind(&args.grpc_listen).await?;
    println!(
        "gateway listening on http://{} grpc={}",
        listener.local_addr()?,
        grpc.local_addr()?
    );
    let service = gateway::run(listener, Some(grpc), app, shutdown.clone());
    args.observability.run("gateway", &shutdown, service).await
}
