//! Feature Store records: newest EventTime wins online, every write offline, invalid records
//! refused with the feature named; the helpers the other feature-store tests share.

use aws_sdk_sagemaker::types::{
    FeatureDefinition, FeatureType, OfflineStoreConfig, OnlineStoreConfig, S3StorageConfig,
};
use aws_sdk_sagemakerfeaturestoreruntime::{error::ProvideErrorMetadata, types::FeatureValue};

use crate::helpers::{App, spawn_app};

pub(crate) async fn create_group(app: &App, name: &str) {
    let defs = [
        ("id", FeatureType::String),
        ("ts", FeatureType::String),
        ("score", FeatureType::Fractional),
        ("count", FeatureType::Integral),
        ("note", FeatureType::String),
    ];
    let mut req = app
        .sm
        .create_feature_group()
        .feature_group_name(name)
        .record_identifier_feature_name("id")
        .event_time_feature_name("ts")
        .online_store_config(
            OnlineStoreConfig::builder()
                .enable_online_store(true)
                .build(),
        )
        .offline_store_config(
            OfflineStoreConfig::builder()
                .s3_storage_config(
                    S3StorageConfig::builder()
                        .s3_uri("s3://offline-bucket/prefix")
                        .build(),
                )
                .build(),
        );
    for (n, t) in defs {
        req = req.feature_definitions(
            FeatureDefinition::builder()
                .feature_name(n)
                .feature_type(t)
                .build(),
        );
    }
    req.send().await.unwrap();
}

pub(crate) fn value(name: &str, v: &str) -> FeatureValue {
    FeatureValue::builder()
        .feature_name(name)
        .value_as_string(v)
        .build()
}

pub(crate) fn record(id: &str, ts: &str, score: &str) -> Vec<FeatureValue> {
    vec![
        value("id", id),
        value("ts", ts),
        value("score", score),
        value("count", "3"),
    ]
}

/// PutRecord of `record(id, ts, score)` into `group`; it must succeed.
pub(crate) async fn put(app: &App, group: &str, id: &str, ts: &str, score: &str) {
    app.fs
        .put_record()
        .feature_group_name(group)
        .set_record(Some(record(id, ts, score)))
        .send()
        .await
        .unwrap();
}

pub(crate) async fn get(app: &App, group: &str, id: &str) -> Option<Vec<(String, String)>> {
    let out = app
        .fs
        .get_record()
        .feature_group_name(group)
        .record_identifier_value_as_string(id)
        .send()
        .await
        .unwrap();
    let r = out.record();
    (!r.is_empty()).then(|| {
        r.iter()
            .map(|v| {
                (
                    v.feature_name().unwrap_or_default().to_owned(),
                    v.value_as_string().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    })
}

pub(crate) fn feature<'a>(rec: &'a [(String, String)], name: &str) -> Option<&'a str> {
    rec.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn newest_event_time_wins_online_and_every_write_reaches_the_offline_store() {
    let app = spawn_app().await;
    create_group(&app, "fg").await;
    let described = app
        .sm
        .describe_feature_group()
        .feature_group_name("fg")
        .send()
        .await
        .unwrap();
    let resolved = described
        .offline_store_config()
        .unwrap()
        .s3_storage_config()
        .unwrap()
        .resolved_output_s3_uri()
        .unwrap()
        .to_owned();
    assert!(
        resolved.starts_with(
            "s3://offline-bucket/prefix/000000000000/sagemaker/us-east-1/offline-store/fg-"
        ),
        "{resolved}"
    );
    assert!(resolved.ends_with("/data"));
    let dup = app
        .sm
        .create_feature_group()
        .feature_group_name("fg")
        .record_identifier_feature_name("id")
        .event_time_feature_name("ts")
        .feature_definitions(
            FeatureDefinition::builder()
                .feature_name("id")
                .feature_type(FeatureType::String)
                .build(),
        )
        .feature_definitions(
            FeatureDefinition::builder()
                .feature_name("ts")
                .feature_type(FeatureType::String)
                .build(),
        )
        .online_store_config(
            OnlineStoreConfig::builder()
                .enable_online_store(true)
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_sagemaker::error::ProvideErrorMetadata::code(&dup),
        Some("ResourceInUse")
    );

    put(&app, "fg", "a", "2024-01-02T03:04:05.000Z", "0.5").await;
    put(&app, "fg", "a", "2024-01-02T03:04:06Z", "0.6").await;
    // Older: historic, offline only; the online record keeps the newer value.
    put(&app, "fg", "a", "2024-01-01T00:00:00.000Z", "0.1").await;
    let rec = get(&app, "fg", "a").await.unwrap();
    assert_eq!(feature(&rec, "score"), Some("0.6"));
    // PutRecord is a full overwrite: a feature left out is gone.
    app.fs
        .put_record()
        .feature_group_name("fg")
        .set_record(Some(vec![
            value("id", "a"),
            value("ts", "2024-01-03T00:00:00Z"),
        ]))
        .send()
        .await
        .unwrap();
    let rec = get(&app, "fg", "a").await.unwrap();
    assert_eq!(feature(&rec, "score"), None);
    assert!(
        get(&app, "fg", "never-written").await.is_none(),
        "unknown ids give 200 without a Record"
    );

    // Only the named features.
    let some = app
        .fs
        .get_record()
        .feature_group_name("fg")
        .record_identifier_value_as_string("a")
        .feature_names("ts")
        .send()
        .await
        .unwrap();
    assert_eq!(some.record().len(), 1);

    let rows = app.state.flush_offline().unwrap();
    assert_eq!(
        rows, 4,
        "every put, historic ones included, is written offline"
    );
    let data_dir = app.state.settings.data_dir.join("s3/offline-bucket/prefix");
    let files: Vec<_> = walk(&data_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(!files.is_empty());
    assert!(
        files.iter().any(|f| f
            .to_string_lossy()
            .contains("/year=2024/month=01/day=02/hour=03/20240102T030406Z_")),
        "{files:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[tokio::test]
async fn invalid_records_are_refused_with_the_feature_named() {
    let app = spawn_app().await;
    create_group(&app, "fg").await;
    let cases: Vec<(Vec<FeatureValue>, &str)> = vec![
        (
            vec![
                value("id", "x"),
                value("ts", "2024-01-01T00:00:00Z"),
                value("count", "three"),
            ],
            "count",
        ),
        (
            vec![
                value("id", "x"),
                value("ts", "2024-01-01T00:00:00Z"),
                value("score", "high"),
            ],
            "score",
        ),
        (
            vec![
                value("id", "x"),
                value("ts", "2024-01-01T00:00:00Z"),
                value("mystery", "1"),
            ],
            "mystery",
        ),
        (vec![value("id", "x"), value("ts", "yesterday")], "ts"),
        (vec![value("ts", "2024-01-01T00:00:00Z")], "id"),
        (vec![value("id", "x")], "ts"),
    ];
    for (rec, named) in cases {
        let err = app
            .fs
            .put_record()
            .feature_group_name("fg")
            .set_record(Some(rec))
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("ValidationError"));
        assert!(
            err.message().unwrap().contains(named),
            "{named}: {:?}",
            err.message()
        );
    }
    let err = app
        .fs
        .put_record()
        .feature_group_name("nope")
        .set_record(Some(record("x", "2024-01-01T00:00:00Z", "1")))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
    assert!(err.message().unwrap().contains("can't find a FeatureGroup"));
    let err = app
        .fs
        .get_record()
        .feature_group_name("nope")
        .record_identifier_value_as_string("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFound"));
    assert_eq!(
        app.state.flush_offline().unwrap(),
        0,
        "nothing refused was stored"
    );
}
