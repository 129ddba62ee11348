//! OpenTelemetry traces: the `tracing` spans of a request exported by OTLP, continued across
//! every hop by W3C Trace Context (`traceparent`/`tracestate` in HTTP headers and gRPC
//! metadata). Off unless an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): then no layer is installed, no span context is read
//! or written, and [`span`] builds nothing.

use std::sync::{
    OnceLock,
    atomic::{AtomicBool, Ordering},
};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider},
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The exporter could not be built from the variables.
#[derive(Debug, thiserror::Error)]
#[error("cannot export traces to {endpoint}: {source}")]
pub struct TracingError {
    endpoint: String,
    source: opentelemetry_otlp::ExporterBuildError,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();

/// Whether traces are exported (an OTLP endpoint is set).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The `tracing` layer that turns spans into OpenTelemetry spans and exports them (batched,
/// on a thread of its own), or None when no endpoint is set. Must run inside a Tokio runtime
/// (the gRPC exporter's channel lives on it).
pub(crate) fn layer<S>(
    process: &str,
    config: &Tracing,
) -> Result<
    Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>,
    TracingError,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let Some(endpoint) = config.endpoint() else {
        return Ok(None);
    };
    let built = match config.otel_exporter_otlp_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&endpoint)
            .with_protocol(Protocol::Grpc)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(&endpoint)
            .with_protocol(Protocol::HttpBinary)
            .build(),
    };
    let exporter = built.map_err(|source| TracingError {
        endpoint: endpoint.clone(),
        source,
    })?;
    let service = config
        .otel_service_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| process.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampling::install(sampling::sampler(config)))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer(service);
    let _ = PROVIDER.set(provider);
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_location(false)
            // busy/idle time per span is a clock read and a lookup at every poll of every
            // instrumented future: the largest part of tracing's cost, for two attributes
            // nobody reads (a span has its start and end).
            .with_tracked_inactivity(false),
    ))
}

/// Exports what is still batched and stops the exporter (at the end of `main`).
pub async fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = flushed {
            eprintln!("traces: the last spans could not be exported: {e}");
        }
    }
}

/// The span `make` builds when traces are on; a disabled span (nothing built, nothing
/// recorded) when they are off. For spans that exist for the trace alone.
pub fn span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// A span for the trace alone, under `parent`: built only when traces are on and `parent`'s
/// trace is sampled (or there is no parent: a trace of its own). An unsampled request pays for
/// its root span only; its callees learn the decision from what [`inject`] propagates.
pub fn child_of(parent: &tracing::Span, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if enabled() && (parent.is_none() || parent.context().span().span_context().is_sampled()) {
        make()
    } else {
        tracing::Span::none()
    }
}

/// [`child_of`] the current span; nothing inside a trace [`decide`] did not sample (checked
/// first: no span is looked up for the nine requests in ten a 10% ratio leaves unsampled).
pub fn child(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if !enabled() || sampling::in_unsampled_trace() {
        return tracing::Span::none();
    }
    child_of(&tracing::Span::current(), make)
}

/// The current span when traces are on (to link or parent work done elsewhere to it).
pub fn current() -> tracing::Span {
    span(tracing::Span::current)
}

fn propagator() -> &'static TraceContextPropagator {
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

/// Builds `span` in the trace [`decide`] sampled (`Decision::Sampled`'s context: the caller's,
/// from its `traceparent`/`tracestate` headers or gRPC metadata, or a new one) and records the
/// trace id on it (so every log line in it carries `trace_id`). Does nothing when traces are off.
pub fn continue_in(span: &tracing::Span, parent: opentelemetry::Context) {
    if enabled() {
        let _ = span.set_parent(parent);
        let trace_id = span.context().span().span_context().trace_id();
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// Writes `span`'s context as `traceparent`/`tracestate` into `headers` (an answer's, or an
/// outgoing call's); when `span` was not built ([`child`] of an unsampled trace), the current
/// span's; when that is not traced either (none, or not seen in a trace [`decide`] did not
/// sample), the trace the call runs in, so the callee learns the decision. Does nothing when
/// traces are off.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if enabled() {
        write(span, &mut HeadersMut(headers));
    }
}

/// [`inject`] into an outgoing gRPC call's metadata.
pub fn inject_metadata(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    if enabled() {
        write(span, &mut MetadataMut(metadata));
    }
}

fn write(span: &tracing::Span, into: &mut dyn Injector) {
    if span.is_none() && sampling::in_unsampled_trace() {
        // no span anywhere: the call's trace is the current context
        return opentelemetry::Context::map_current(|cx| propagator().inject_context(cx, into));
    }
    let context = if span.is_none() {
        tracing::Span::current().context()
    } else {
        span.context()
    };
    if context.span().span_context().is_valid() {
        propagator().inject_context(&context, into);
    } else {
        opentelemetry::Context::map_current(|cx| propagator().inject_context(cx, into));
    }
}

/// `span`'s W3C `traceparent`, to be stored with work done later (None when traces are off
/// or the span is not traced: not built, or its trace not sampled, so nothing links to a
/// trace that is not exported).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !enabled() || span.is_none() || !span.context().span().span_context().is_sampled() {
        return None;
    }
    let mut one = Traceparent(None);
    write(span, &mut one);
    one.0
}

/// [`traceparent`] of the current span; None at once inside an unsampled trace.
pub fn current_traceparent() -> Option<String> {
    if !enabled() || sampling::in_unsampled_trace() {
        return None;
    }
    traceparent(&tracing::Span::current())
}

/// Links `span` to the span a stored `traceparent` names (work done for several traces at
/// once: a batch, a shipment).
pub fn link(span: &tracing::Span, traceparent: &str) {
    if !enabled() || traceparent.is_empty() {
        return;
    }
    link_from(span, &context_of(traceparent));
}

/// Work done for the requests whose stored `traceparent`s these are: `span` continues the
/// trace when they are all one request's, and is linked to each trace otherwise.
pub fn follow<'a>(span: &tracing::Span, traceparents: impl IntoIterator<Item = &'a str>) {
    if !enabled() {
        return;
    }
    let distinct = distinct(traceparents);
    match distinct[..] {
        [] => {}
        [one] => {
            let _ = span.set_parent(context_of(one));
        }
        _ => distinct.into_iter().for_each(|t| link(span, t)),
    }
}

/// Links `span` to each trace these stored `traceparent`s name, once each.
pub fn link_each<'a>(span: &tracing::Span, traceparents: impl IntoIterator<Item = &'a str>) {
    if enabled() {
        distinct(traceparents)
            .into_iter()
            .for_each(|t| link(span, t));
    }
}

fn distinct<'a>(traceparents: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut distinct: Vec<&str> = Vec::new();
    for t in traceparents {
        if !t.is_empty() && !distinct.contains(&t) {
            distinct.push(t);
        }
    }
    distinct
}

fn context_of(traceparent: &str) -> opentelemetry::Context {
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(traceparent) {
        headers.insert("traceparent", v);
    }
    extract(&headers)
}

/// The caller's context its `traceparent`/`tracestate` headers name (empty without them).
fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    propagator().extract(&Headers(headers))
}

/// Links `span` to `other`'s span (a request riding in a shared call).
pub fn link_span(span: &tracing::Span, other: &tracing::Span) {
    if enabled() {
        link_from(span, &other.context());
    }
}

fn link_from(span: &tracing::Span, cx: &opentelemetry::Context) {
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

// The injectors leave out empty values (a `tracestate` with no entries is not sent).
struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct MetadataMut<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Keeps the `traceparent` alone.
struct Traceparent(Option<String>);

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

mod config;
mod sampling;
pub use config::{OtlpProtocol, SamplerName, Tracing};
pub(crate) use sampling::in_unsampled_trace;
pub use sampling::{Decision, decide, for_stored};

#[cfg(test)]
mod tests;
