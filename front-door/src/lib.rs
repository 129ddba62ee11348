//! The one-process shape, for a single host: the gateway, the predictor and the interaction
//! logger of the microservices in one process. The gateway calls the predictor and the logger,
//! and the predictor records a shadowed candidate's answers through the logger, in process
//! (crate `hops`): the same service code behind the same traits, the typed messages passed as
//! they are, no encoding and no socket between them. The registry-watcher stays a service of
//! its own: it is the control plane (one per endpoint, deciding rollouts), which every front
//! door follows over `WatchStatus`, one process or many.
//!
//! Start: the logger claims and opens its spool first (nothing is served without it), then the
//! predictor is built, then the gateway serves. Stop (SIGTERM): the gateway stops taking
//! requests and finishes those in flight and its retry buffer, then the predictor's background
//! work stops, and the logger ships its spool within the grace period, last.

use std::sync::Arc;

use bootstrap::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Each part's configuration, read from the same variables as its own service's.
pub struct Parts {
    pub gateway: gateway::Config,
    pub predictor: predictor::Config,
    pub logger: interaction_logger::Config,
}

impl Parts {
    /// From the environment: every part by its service's variables (and defaults).
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Parts {
            gateway: from_env()?,
            predictor: from_env()?,
            logger: from_env()?,
        })
    }
}

#[derive(clap::Parser)]
struct FromEnv<T: clap::Args> {
    #[command(flatten)]
    config: T,
}

fn from_env<T: clap::Args>() -> anyhow::Result<T> {
    use clap::Parser;
    Ok(FromEnv::<T>::try_parse_from(["front-door"])?.config)
}

/// Variables the parts' services read that mean nothing in one process: the hops are in
/// process and the listeners are front-door's own. Set, they are named in a warning at start
/// ([`unused_variables`]), so a configuration written for the microservices is not applied by
/// half in silence.
pub const UNUSED_IN_ONE_PROCESS: [&str; 5] = [
    "PREDICTOR_URL",
    "LOGGER_URL",
    "PREDICTOR_LISTEN",
    "PREDICTOR_ADMIN_LISTEN",
    "LOGGER_LISTEN",
];

/// Which of [`UNUSED_IN_ONE_PROCESS`] the environment sets.
pub fn unused_variables() -> Vec<&'static str> {
    UNUSED_IN_ONE_PROCESS
        .into_iter()
        .filter(|name| std::env::var_os(name).is_some())
        .collect()
}

/// The `service` dimension of the process's EMF metrics: each part's series under its own
/// service's name, as the microservices publish them (the template's alarms and dashboard
/// read them so, in either shape); the process's own (the gRPC callers refused, the admin
/// port's) under `front-door`.
pub fn metric_owners() -> telemetry::emf::Owners {
    telemetry::emf::Owners::parts(
        "front-door",
        &[
            ("gateway_", "gateway"),
            ("predictor_", "predictor"),
            ("logger_", "interaction-logger"),
        ],
    )
}

/// The process's listeners: the gateway's HTTP and OIP gRPC ports, and the logger's admin
/// port (which serves the whole process's `/metrics`: one recorder).
pub struct Listeners {
    pub http: TcpListener,
    pub grpc: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(http: &str, grpc: &str, admin: &str) -> std::io::Result<Self> {
        Ok(Listeners {
            http: TcpListener::bind(http).await?,
            grpc: TcpListener::bind(grpc).await?,
            admin: TcpListener::bind(admin).await?,
        })
    }

    /// `http://… grpc=… admin=…`, what scripts and tests read to learn the ports.
    pub fn describe(&self) -> std::io::Result<String> {
        Ok(format!(
            "http://{} grpc={} admin={}",
            self.http.local_addr()?,
            self.grpc.local_addr()?,
            self.admin.local_addr()?
        ))
    }
}

/// Runs the three parts until `shutdown`, then stops them front to back (see the module's
/// documentation). An error when the logger's spool could not be claimed or opened, or stayed
/// unwritable (which also cancels `shutdown`: the whole process stops, as the logger would).
pub async fn run(
    listeners: Listeners,
    parts: Parts,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut logger = interaction_logger::Logger::open(parts.logger, &shutdown).await?;
    let logger_ready = Readiness::default();
    let (_, logger_health) = logger.health(logger_ready.clone(), shutdown.clone()).await;
    let logger_hop = hops::local_logger(Arc::new(logger.service()));

    let predictor_stop = CancellationToken::new();
    let predictor =
        predictor::service(&parts.predictor, Some(logger_hop.clone()), &predictor_stop).await?;
    let predictor_ready = Readiness::default();
    predictor_ready.set(true);
    let hops = gateway::Hops {
        predictor: hops::local_predictor(Arc::new(predictor)),
        // ready when both serve: a spool whose storage failed makes the process not ready
        predictor_health: hops::Health::Local(vec![predictor_ready.clone(), logger_ready.clone()]),
        logger: logger_hop,
    };
    let app = gateway::App::with(parts.gateway, hops, &shutdown)?;

    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(bootstrap::admin::serve_admin(
        listeners.admin,
        logger.admin_router(logger_ready.clone()),
        admin_stop.clone(),
    ));
    // not ready from the signal on, as each service's health turns not-serving first
    let not_ready = tokio::spawn({
        let (shutdown, ready) = (shutdown.clone(), [predictor_ready, logger_ready]);
        async move {
            shutdown.cancelled().await;
            ready.iter().for_each(|r| r.set(false));
        }
    });
    tracing::info!("front-door serving: gateway, predictor and interaction-logger in one process");
    let served = gateway::run(listeners.http, Some(listeners.grpc), app, shutdown.clone()).await;
    // the gateway is done (signalled, or failed): everything else stops too
    shutdown.cancel();
    predictor_stop.cancel();
    let drained = logger.drain().await;
    admin_stop.cancel();
    let _ = tokio::join!(admin, logger_health, not_ready);
    logger.release();
    served?;
    drained
}
