allocator::install!();

bootstrap::grpc_main!(
    name = "registry-watcher",
    about = "gRPC registry watcher: is the latest Approved model the one serving?",
    listen = ("WATCHER_LISTEN", "0.0.0.0:50053"),
    admin = ("WATCHER_ADMIN_LISTEN", "127.0.0.1:9103"),
    config = registry_watcher::Config,
    run = registry_watcher::run,
);
