//! The gateway's callees, the predictor and the interaction logger, as crate `hops` holds
//! them: over gRPC (the microservices), or in process (the one-process shape, `front-door`).

use std::time::Duration;

use tonic::transport::Channel;

use crate::Config;

/// The gateway's callees: the predictor (and whether it serves) and the interaction logger.
pub struct Hops {
    pub predictor: hops::Predictor,
    pub predictor_health: hops::Health,
    pub logger: hops::Logger,
}

impl Hops {
    /// Over gRPC, at `PREDICTOR_URL` and `LOGGER_URL` (the microservices).
    pub fn remote(config: &Config) -> anyhow::Result<Self> {
        let predictor = channel(
            &config.tls,
            &config.predictor_url,
            config.upstream_connections,
        )?;
        Ok(Hops {
            predictor: hops::remote_predictor(predictor.clone()),
            predictor_health: hops::Health::Grpc {
                channel: predictor,
                service: "mlops.predictor.v1.Predictor",
            },
            logger: hops::remote_logger(channel(
                &config.tls,
                &config.logger_url,
                config.upstream_connections,
            )?),
        })
    }
}

fn channel(tls: &grpc_tls::Tls, url: &str, connections: usize) -> anyhow::Result<Channel> {
    let endpoint = tls
        .endpoint(url)?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    Ok(Channel::balance_list(std::iter::repeat_n(
        endpoint,
        connections.max(1),
    )))
}
