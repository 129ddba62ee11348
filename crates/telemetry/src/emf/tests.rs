use super::*;
use metrics_exporter_prometheus::PrometheusBuilder;

fn docs(emf: &mut Emf, text: &str) -> Vec<serde_json::Value> {
    emf.documents(text, 1_700_000_000_000)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [serde_json::Value], metric: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d.get(metric).is_some())
        .unwrap_or_else(|| panic!("no document has {metric}: {docs:?}"))
}

#[test]
fn quantiles_come_from_the_bucket_bounds() {
    let b = [
        (0.001, 10.0),
        (0.01, 98.0),
        (0.1, 100.0),
        (f64::INFINITY, 100.0),
    ];
    assert_eq!(quantile(&b, 0.5), 0.01);
    assert_eq!(quantile(&b, 0.99), 0.1);
    let overflow = [(0.1, 1.0), (f64::INFINITY, 100.0)];
    assert_eq!(quantile(&overflow, 0.99), 0.1);
}

/// The real registry type the services use, rendered and converted twice: counters are
/// sent as increases, gauges as values, histograms as count + quantiles of the interval.
#[test]
fn converts_a_real_render_into_interval_documents() {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.01, 0.1])
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let mut emf = Emf::new("mlops/inference", "gateway");
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("gateway_predict_requests_total", "status" => "200").increment(5);
        metrics::counter!("gateway_predict_requests_total", "status" => "500").increment(1);
        metrics::gauge!("logger_spool_depth").set(7.0);
        for _ in 0..99 {
            metrics::histogram!("gateway_predict_seconds").record(0.005);
        }
        metrics::histogram!("gateway_predict_seconds").record(0.05);
    });
    let first = docs(&mut emf, &handle.render());
    let ok = first
        .iter()
        .find(|d| d["status"] == "200")
        .expect("a document for status=200");
    assert_eq!(ok["gateway_predict_requests_total"], 5.0);
    assert_eq!(ok["service"], "gateway");
    let meta = &ok["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(meta["Namespace"], "mlops/inference");
    assert_eq!(
        meta["Dimensions"],
        serde_json::json!([["service", "status"]])
    );
    assert_eq!(meta["Metrics"][0]["Unit"], "Count");
    assert_eq!(ok["_aws"]["Timestamp"], 1_700_000_000_000u64);
    let plain = find(&first, "gateway_predict_seconds_count");
    assert_eq!(plain["gateway_predict_seconds_count"], 100.0);
    assert_eq!(plain["gateway_predict_seconds_p50"], 0.01);
    assert_eq!(plain["gateway_predict_seconds_p99"], 0.01);
    assert_eq!(plain["logger_spool_depth"], 7.0);
    assert_eq!(
        plain["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["service"]])
    );
    assert!(plain.get("gateway_predict_seconds_sum").is_none());

    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("gateway_predict_requests_total", "status" => "200").increment(2);
        metrics::histogram!("gateway_predict_seconds").record(0.05);
        metrics::gauge!("logger_spool_depth").set(3.0);
    });
    let second = docs(&mut emf, &handle.render());
    let ok = second.iter().find(|d| d["status"] == "200").unwrap();
    assert_eq!(
        ok["gateway_predict_requests_total"], 2.0,
        "the increase, not the total"
    );
    let failed = second.iter().find(|d| d["status"] == "500").unwrap();
    assert_eq!(failed["gateway_predict_requests_total"], 0.0);
    let plain = find(&second, "gateway_predict_seconds_count");
    assert_eq!(plain["gateway_predict_seconds_count"], 1.0);
    assert_eq!(
        plain["gateway_predict_seconds_p99"], 0.1,
        "this interval's observation only"
    );
    assert_eq!(plain["logger_spool_depth"], 3.0);

    let third = docs(&mut emf, &handle.render());
    let plain = find(&third, "gateway_predict_seconds_count");
    assert_eq!(plain["gateway_predict_seconds_count"], 0.0);
    assert!(
        plain.get("gateway_predict_seconds_p99").is_none(),
        "no quantile of nothing"
    );
}

/// One process running several services' parts publishes each part's series under that
/// service's name, as the microservices do (the alarms and the dashboard name them so),
/// and anything else under the process's.
#[test]
fn a_process_of_parts_publishes_each_metric_under_its_parts_service() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let owners = Owners::parts(
        "front-door",
        &[("gateway_", "gateway"), ("logger_", "interaction-logger")],
    );
    let mut emf = Emf::new("ns", owners);
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("gateway_predict_requests_total", "status" => "200").increment(1);
        metrics::gauge!("logger_spool_depth").set(2.0);
        metrics::histogram!("logger_commit_seconds").record(0.01);
        metrics::counter!("grpc_callers_refused_total").increment(1);
    });
    let all = docs(&mut emf, &handle.render());
    let service = |metric: &str| find(&all, metric)["service"].clone();
    assert_eq!(service("gateway_predict_requests_total"), "gateway");
    assert_eq!(service("logger_spool_depth"), "interaction-logger");
    assert_eq!(service("logger_commit_seconds_count"), "interaction-logger");
    assert_eq!(service("grpc_callers_refused_total"), "front-door");
    for d in &all {
        let named: Vec<_> = d["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap().to_owned())
            .collect();
        let owner = emf.owners.of(&named[0]).to_owned();
        assert!(
            named.iter().all(|n| emf.owners.of(n) == owner),
            "one document, one service: {named:?}"
        );
    }
}
