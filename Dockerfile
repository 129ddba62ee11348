# One image for the whole inference service: every binary of the workspace, the service chosen
# by the command (`gateway`, `predictor`, `interaction-logger`, `registry-watcher`, `front-door`,
# `sagemaker-local`, `mlops-deploy`). Why one image: the binaries share one build and most of
# their dependency code, one tag is what a deployment rolls (every service provably runs the
# same commit), and the compose file and the ECS task definitions only differ by command.
#
#   docker build -t mlops-inference .                          # from source (default target)
#   docker build --target prebuilt -t mlops-inference CTX      # binaries in CTX/docker/prebuilt/
#
# Base images are parameters. The `prebuilt` target serves machines that cannot pull a Rust
# image: docker/build-image builds the binaries on the host and a Debian base with debootstrap.
# Stage order matters for the classic builder, which builds every stage before its target:
# `prebuilt` comes before the Rust build so that `--target prebuilt` never compiles, and it
# copies a folder the repository has (docker/prebuilt/) so that the default build passes it.

# checkov:skip=CKV_DOCKER_7: the base images are build arguments; their defaults carry version tags (checkov reads the unexpanded ${...}).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- what every image is: a non-root user, CA certificates (real AWS is HTTPS), labels ------
FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="mlops-inference" \
      org.opencontainers.image.description="Inference front door for SageMaker-hosted models: gateway, predictor, interaction-logger, registry-watcher, front-door, sagemaker-local" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/mlops/inference"
RUN set -eu; \
    if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --system --gid 10001 mlops; \
    useradd --system --uid 10001 --gid mlops --home-dir /var/lib/mlops --no-create-home \
        --shell /usr/sbin/nologin mlops; \
    install -d -o mlops -g mlops -m 0750 /var/lib/mlops /var/lib/mlops/sagemaker-local /var/lib/mlops/spool \
        /var/lib/mlops/spools
# Logs are JSON lines on stdout (what CloudWatch Logs and `docker logs` collect); state lives
# under /var/lib/mlops, which compose and ECS mount as volumes.
ENV LOG_FORMAT=json \
    LOGGER_SPOOL_DIR=/var/lib/mlops/spool \
    SAGEMAKER_LOCAL_DATA_DIR=/var/lib/mlops/sagemaker-local \
    HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
WORKDIR /var/lib/mlops
USER 10001:10001
# Each service sets HEALTHCHECK_URL to its own admin /healthz (the default is the gateway's).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["mlops-healthcheck"]
EXPOSE 8080 50051 50052 50053 9000 9101 9102 9103
# Exec form, no shell and no init: the service is PID 1 and receives SIGTERM itself, and it
# handles it (drain, then exit 0).
CMD ["gateway"]

# ---- binaries built elsewhere (CTX/docker/prebuilt/), for machines without a Rust image ----
FROM runtime AS prebuilt
COPY --chown=root:root docker/prebuilt/ /usr/local/bin/

# ---- the build ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tools tools
COPY sagemaker-local sagemaker-local
COPY gateway gateway
COPY predictor predictor
COPY interaction-logger interaction-logger
COPY registry-watcher registry-watcher
COPY front-door front-door
COPY proto proto
COPY demo demo
RUN cargo build --locked --release --workspace --bins \
 && mkdir /out \
 && cp target/release/sagemaker-local target/release/predictor target/release/gateway \
       target/release/interaction-logger target/release/registry-watcher target/release/front-door \
       target/release/mlops-deploy target/release/mlops-healthcheck /out/ \
 && strip /out/*

# ---- the default: the image built from source ---------------------------------------------
FROM runtime AS release
COPY --from=builder --chown=root:root /out/ /usr/local/bin/
