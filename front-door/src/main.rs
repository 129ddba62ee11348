use clap::Parser;

allocator::install!();

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The front door in one process: the gateway, the predictor and the interaction logger, \
             calling each other in process. Each part reads its own variables, as its service does \
             (docs/configuration.md); the flags here are the listeners and the process's logs, \
             traces and metrics."
)]
struct Args {
    /// HTTP listen address (the gateway's).
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    /// gRPC listen address of the Open Inference Protocol's API (the gateway's).
    #[arg(long, env = "GATEWAY_GRPC_LISTEN", default_value = "0.0.0.0:8081")]
    grpc_listen: String,
    /// Admin HTTP listen address (the logger's: /metrics of the whole process, /healthz,
    /// /readyz, /drift, the dead-letter routes).
    #[arg(long, env = "LOGGER_ADMIN_LISTEN", default_value = "127.0.0.1:9102")]
    admin_listen: String,
    #[command(flatten)]
    observability: telemetry::Observability,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let parts = front_door::Parts::from_env()?;
    args.observability.init("front-door")?;
    let unused = front_door::unused_variables();
    if !unused.is_empty() {
        tracing::warn!(
            variables = ?unused,
            "set but unused in one process: the parts call each other in process and listen on \
             front-door's addresses (GATEWAY_LISTEN, GATEWAY_GRPC_LISTEN, LOGGER_ADMIN_LISTEN)"
        );
    }
    let listeners =
        front_door::Listeners::bind(&args.listen, &args.grpc_listen, &args.admin_listen).await?;
    println!("front-door listening on {}", listeners.describe()?);
    let shutdown = bootstrap::shutdown::on_signal();
    let service = front_door::run(listeners, parts, shutdown.clone());
    args.observability
        .run(front_door::metric_owners(), &shutdown, service)
        .await
}
