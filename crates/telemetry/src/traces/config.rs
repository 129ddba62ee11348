//! The variables traces are configured by: the OpenTelemetry SDK's standard ones.

/// Where and how traces are exported: the OpenTelemetry SDK's standard variables.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Tracing {
    /// OTLP collector (e.g. http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for
    /// http/protobuf, which appends /v1/traces). Traces are exported only when this or the
    /// traces-specific variable is set; unset, nothing is traced and nothing is paid.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// OTLP traces endpoint, used as given (overrides the one above for traces).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,
    /// OTLP transport: grpc or http/protobuf.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        value_enum,
        default_value = "http/protobuf"
    )]
    pub otel_exporter_otlp_protocol: OtlpProtocol,
    /// The service name on every span (default: the process's own name).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
    /// Which traces are kept: always_on, always_off, traceidratio, parentbased_always_on,
    /// parentbased_always_off or parentbased_traceidratio (a caller's sampled flag decides
    /// for the parentbased ones).
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        value_enum,
        default_value = "parentbased_always_on"
    )]
    pub otel_traces_sampler: SamplerName,
    /// The ratio (0 to 1) of the traceidratio samplers.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0, value_parser = ratio)]
    pub otel_traces_sampler_arg: f64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[value(name = "grpc")]
    Grpc,
    #[default]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[clap(rename_all = "snake_case")]
pub enum SamplerName {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    #[default]
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

pub(super) fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

impl Tracing {
    /// The traces endpoint, if traces are on: the traces-specific one as given, else the
    /// generic one (with `/v1/traces` appended for HTTP, as the specification says).
    pub fn endpoint(&self) -> Option<String> {
        fn set(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        if let Some(e) = set(&self.otel_exporter_otlp_traces_endpoint) {
            return Some(e.to_owned());
        }
        let base = set(&self.otel_exporter_otlp_endpoint)?;
        Some(match self.otel_exporter_otlp_protocol {
            OtlpProtocol::Grpc => base.to_owned(),
            OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        })
    }
}
