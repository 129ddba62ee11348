allocator::install!();

bootstrap::grpc_main!(
    name = "predictor",
    about = "gRPC predictor in front of a SageMaker real-time endpoint",
    listen = ("PREDICTOR_LISTEN", "0.0.0.0:50051"),
    admin = ("PREDICTOR_ADMIN_LISTEN", "127.0.0.1:9101"),
    config = predictor::Config,
    run = predictor::run,
);
