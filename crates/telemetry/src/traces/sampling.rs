//! Sampling decided before a server span is built. Most requests are not sampled (at 10%, nine
//! in ten), and an OpenTelemetry span costs the same to build whether its trace is exported or
//! not, since the SDK decides when the span starts. [`decide`] asks the configured sampler
//! first, from the caller's `traceparent` alone: a sampled call gets its server span; an
//! unsampled one gets no span at all, only the context of its trace with the sampled flag off,
//! which its calls propagate (`traceparent` flag `00`) so the services behind it decide alike.

use std::sync::OnceLock;

use opentelemetry::{
    Context, KeyValue,
    trace::{
        Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    },
};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SamplingResult, ShouldSample,
};

use super::{SamplerName, Tracing};

/// The sampler the variables name, as the SDK's sampler and [`decide`] both apply it.
pub(super) fn sampler(config: &Tracing) -> Sampler {
    let ratio = config.otel_traces_sampler_arg;
    match config.otel_traces_sampler {
        SamplerName::AlwaysOn => Sampler::AlwaysOn,
        SamplerName::AlwaysOff => Sampler::AlwaysOff,
        SamplerName::Traceidratio => Sampler::TraceIdRatioBased(ratio),
        SamplerName::ParentbasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerName::ParentbasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerName::ParentbasedTraceidratio => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
        }
    }
}

static SAMPLER: OnceLock<Sampler> = OnceLock::new();

/// The SDK's sampler: the configured one, except for a root span [`decide`] already sampled
/// (its trace id was not known then, so asking again could answer otherwise).
pub(super) fn install(sampler: Sampler) -> Predecided {
    let _ = SAMPLER.set(sampler.clone());
    Predecided(sampler)
}

/// What a root span's parent context carries when [`decide`] sampled it.
#[derive(Clone, Copy, Debug)]
struct SampledRoot;

#[derive(Clone, Debug)]
pub(super) struct Predecided(Sampler);

impl ShouldSample for Predecided {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let decided_root = parent.is_some_and(|cx| {
            cx.get::<SampledRoot>().is_some() && !cx.span().span_context().is_valid()
        });
        if decided_root {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: TraceState::default(),
            };
        }
        self.0
            .should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

/// A server call's sampling, decided before anything is built for it.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Traces are off.
    Off,
    /// Build the server span with this parent ([`super::continue_in`]).
    Sampled(Context),
    /// Build nothing: run the call in this context (`with_context`), which [`super::inject`]
    /// propagates and in which [`super::child`] builds nothing.
    Unsampled(Context),
}

impl Decision {
    /// The call's server span: `make`'s, in the caller's trace, when sampled; none otherwise.
    /// Build it before entering it (entering starts it, its parent fixed).
    pub fn span(&self, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
        match self {
            Decision::Sampled(parent) => {
                let span = make();
                super::continue_in(&span, parent.clone());
                span
            }
            Decision::Off | Decision::Unsampled(_) => tracing::Span::none(),
        }
    }

    /// Runs `call` as decided: in `span` ([`Decision::span`]) when sampled, in the unsampled
    /// trace's context otherwise, as it is when traces are off.
    pub async fn run<F: std::future::Future>(self, span: tracing::Span, call: F) -> F::Output {
        use opentelemetry::context::FutureExt;
        use tracing::Instrument;
        match self {
            Decision::Off => call.await,
            Decision::Sampled(_) => call.instrument(span).await,
            Decision::Unsampled(trace) => call.with_context(trace).await,
        }
    }
}

/// The decision for a call that came with `headers` (its caller's `traceparent`, if any).
pub fn decide(headers: &http::HeaderMap) -> Decision {
    match SAMPLER.get().filter(|_| super::enabled()) {
        Some(sampler) => decide_with(sampler, headers),
        None => Decision::Off,
    }
}

fn decide_with(sampler: &Sampler, headers: &http::HeaderMap) -> Decision {
    let parent = if headers.contains_key("traceparent") {
        super::extract(headers)
    } else {
        Context::new()
    };
    let caller = parent.span().span_context().clone();
    let ids = RandomIdGenerator::default();
    let trace_id = if caller.is_valid() {
        caller.trace_id()
    } else {
        ids.new_trace_id()
    };
    let result = sampler.should_sample(Some(&parent), trace_id, "", &SpanKind::Server, &[], &[]);
    match result.decision {
        SamplingDecision::RecordAndSample if caller.is_valid() => Decision::Sampled(parent),
        SamplingDecision::RecordAndSample => Decision::Sampled(parent.with_value(SampledRoot)),
        SamplingDecision::Drop | SamplingDecision::RecordOnly => {
            let span_id = if caller.is_valid() {
                caller.span_id()
            } else {
                ids.new_span_id()
            };
            Decision::Unsampled(unsampled(trace_id, span_id, result.trace_state))
        }
    }
}

/// Runs `call`, made later for stored requests (a batch of their interactions), in an
/// unsampled trace of its own when none of them was sampled (`sampled` false: no stored
/// `traceparent`), so nothing is built for it here or in the service it calls; as it is
/// otherwise (its spans follow the stored traces).
pub async fn for_stored<F: std::future::Future>(sampled: bool, call: F) -> F::Output {
    use opentelemetry::context::FutureExt;
    if sampled || !super::enabled() {
        return call.await;
    }
    let ids = RandomIdGenerator::default();
    let trace = unsampled(ids.new_trace_id(), ids.new_span_id(), TraceState::default());
    call.with_context(trace).await
}

/// The context of a trace that is not sampled (flag `00`), as a caller's: what an unsampled
/// call runs in and propagates.
fn unsampled(trace_id: TraceId, span_id: SpanId, state: TraceState) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::default(),
        true,
        state,
    ))
}

/// Whether the current OpenTelemetry context is a trace [`decide`] did not sample (or a
/// caller's unsampled one): the traces layer sees no span in it, and [`super::child`] builds
/// none.
pub(crate) fn in_unsampled_trace() -> bool {
    Context::map_current(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid() && !sc.is_sampled()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", traceparent.parse().unwrap());
        h
    }

    fn ratio(r: f64) -> Sampler {
        Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
    }

    const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331";

    fn span_context(cx: &Context) -> SpanContext {
        cx.span().span_context().clone()
    }

    #[test]
    fn a_caller_decides_for_the_parent_based_samplers() {
        let sampled = headers(&format!("{CALLER}-01"));
        match decide_with(&ratio(0.0), &sampled) {
            Decision::Sampled(cx) => {
                assert_eq!(span_context(&cx).span_id().to_string(), "b7ad6b7169203331");
                assert!(cx.get::<SampledRoot>().is_none(), "not a root");
            }
            other => panic!("the caller sampled it: {other:?}"),
        }
        match decide_with(&ratio(1.0), &headers(&format!("{CALLER}-00"))) {
            Decision::Unsampled(cx) => {
                let sc = span_context(&cx);
                assert_eq!(
                    sc.trace_id().to_string(),
                    "0af7651916cd43dd8448eb211c80319c"
                );
                assert!(sc.is_valid() && !sc.is_sampled());
            }
            other => panic!("the caller did not sample it: {other:?}"),
        }
        assert!(matches!(
            decide_with(&Sampler::AlwaysOff, &sampled),
            Decision::Unsampled(_)
        ));
    }

    #[test]
    fn a_root_is_decided_once() {
        let none = http::HeaderMap::new();
        let Decision::Sampled(cx) = decide_with(&ratio(1.0), &none) else {
            panic!("ratio 1 samples every root");
        };
        assert!(!span_context(&cx).is_valid(), "a root: no parent span");
        // the SDK's sampler keeps the decision, whatever the trace id it draws
        let sdk = Predecided(Sampler::AlwaysOff);
        let kept = sdk.should_sample(
            Some(&cx),
            TraceId::from(7),
            "r",
            &SpanKind::Server,
            &[],
            &[],
        );
        assert_eq!(kept.decision, SamplingDecision::RecordAndSample);
        let other = sdk.should_sample(
            Some(&Context::new()),
            TraceId::from(7),
            "r",
            &SpanKind::Server,
            &[],
            &[],
        );
        assert_eq!(
            other.decision,
            SamplingDecision::Drop,
            "other spans: the configured sampler"
        );
        let Decision::Unsampled(cx) = decide_with(&ratio(0.0), &none) else {
            panic!("ratio 0 samples no root");
        };
        let sc = span_context(&cx);
        assert!(
            sc.is_valid() && !sc.is_sampled(),
            "a new trace, propagated unsampled"
        );
        let shares = (0..2000)
            .filter(|_| matches!(decide_with(&ratio(0.1), &none), Decision::Sampled(_)))
            .count();
        assert!(
            (100..300).contains(&shares),
            "about one root in ten: {shares}"
        );
    }
}
