allocator::install!();

bootstrap::grpc_main!(
    name = "interaction-logger",
    about = "gRPC interaction logger: durable spool, shipped to the SageMaker Feature Store",
    listen = ("LOGGER_LISTEN", "0.0.0.0:50052"),
    admin = ("LOGGER_ADMIN_LISTEN", "127.0.0.1:9102"),
    config = interaction_logger::Config,
    run = interaction_logger::run,
);
