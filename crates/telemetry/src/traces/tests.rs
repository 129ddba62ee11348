use super::*;
use config::ratio;

fn tracing(endpoint: Option<&str>, traces: Option<&str>, protocol: OtlpProtocol) -> Tracing {
    Tracing {
        otel_exporter_otlp_endpoint: endpoint.map(str::to_owned),
        otel_exporter_otlp_traces_endpoint: traces.map(str::to_owned),
        otel_exporter_otlp_protocol: protocol,
        ..Tracing::default()
    }
}

#[test]
fn endpoints_follow_the_specification() {
    use OtlpProtocol::*;
    assert_eq!(tracing(None, None, Grpc).endpoint(), None, "off when unset");
    assert_eq!(
        tracing(Some(" "), None, Grpc).endpoint(),
        None,
        "off when empty"
    );
    assert_eq!(
        tracing(Some("http://c:4317"), None, Grpc)
            .endpoint()
            .as_deref(),
        Some("http://c:4317")
    );
    assert_eq!(
        tracing(Some("http://c:4318/"), None, HttpProtobuf)
            .endpoint()
            .as_deref(),
        Some("http://c:4318/v1/traces"),
        "the signal's path appended to the generic endpoint"
    );
    assert_eq!(
        tracing(Some("http://c:4318"), Some("http://t/x"), HttpProtobuf)
            .endpoint()
            .as_deref(),
        Some("http://t/x"),
        "the traces endpoint as given"
    );
}

#[test]
fn ratios_are_checked() {
    assert_eq!(ratio("0.1"), Ok(0.1));
    assert!(ratio("1.5").is_err());
    assert!(ratio("x").is_err());
}

#[test]
fn nothing_is_done_when_off() {
    assert!(!enabled());
    let span = span(|| panic!("not built when off"));
    assert!(span.is_none());
    let mut headers = http::HeaderMap::new();
    inject(&tracing::Span::current(), &mut headers);
    assert!(headers.is_empty());
    assert_eq!(traceparent(&tracing::Span::current()), None);
}
