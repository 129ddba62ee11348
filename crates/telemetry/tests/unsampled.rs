//! In a trace the front door did not sample, nothing is built for the traces: a span the
//! service makes (an `info_span!`, an `#[instrument]`) exists only if the log lines want it.
//! Its own process: the subscriber and the traces' switch are global.

use telemetry::traces::{Decision, SamplerName, Tracing, decide};

#[tokio::test]
async fn an_unsampled_request_builds_no_span_the_logs_do_not_want() {
    // SAFETY: the only thread of this test binary's one test, before anything reads it
    unsafe { std::env::set_var("RUST_LOG", "warn") };
    let tracing = Tracing {
        otel_exporter_otlp_endpoint: Some("http://127.0.0.1:9".into()),
        otel_traces_sampler: SamplerName::Traceidratio,
        otel_traces_sampler_arg: 0.0,
        ..Tracing::default()
    };
    telemetry::init("unsampled-test", telemetry::LogFormat::Json, &tracing).unwrap();
    let decision = decide(&http::HeaderMap::new());
    assert!(matches!(decision, Decision::Unsampled(_)), "{decision:?}");
    let built = decision
        .run(tracing::Span::none(), async {
            let plain = tracing::info_span!("predict", request_id = "r1");
            let instrumented = instrumented().await;
            (!plain.is_none(), instrumented)
        })
        .await;
    assert_eq!(built, (false, false), "spans built in an unsampled trace");
    // outside any trace a span is built (a root the sampler decides for)
    assert!(!tracing::info_span!("background").is_none());
    // and what no layer can ever want stays off for good: `never`, cached, not asked again at
    // every use (anything else from the gate would make it a dynamic callsite)
    assert!(tracing::debug_span!("verbose").is_none());
    let interest = tracing::dispatcher::get_default(|d| d.register_callsite(debug_metadata()));
    assert!(interest.is_never(), "{interest:?}");
}

fn debug_metadata() -> &'static tracing::Metadata<'static> {
    static CALLSITE: tracing::callsite::DefaultCallsite =
        tracing::callsite::DefaultCallsite::new(&META);
    static META: tracing::Metadata<'static> = tracing::Metadata::new(
        "verbose",
        "unsampled",
        tracing::Level::DEBUG,
        None,
        None,
        None,
        tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
        tracing::metadata::Kind::SPAN,
    );
    &META
}

#[tracing::instrument(name = "log", skip_all, fields(request_id = "r2"))]
async fn instrumented() -> bool {
    !tracing::Span::current().is_none()
}
