//! BatchWriteRecord: many records, one commit, per-entry errors.

use aws_sdk_sagemakerfeaturestoreruntime::types::FeatureValue;

use crate::{
    featurestore::{create_group, feature, get, record, value},
    helpers::{spawn_app, spawn_app_with},
};

#[tokio::test]
async fn batch_write_writes_the_valid_entries_and_reports_the_rest() {
    use aws_sdk_sagemakerfeaturestoreruntime::types::BatchWriteRecordEntry;
    let app = spawn_app().await;
    create_group(&app, "fg").await;
    let entry = |rec: Vec<FeatureValue>| {
        BatchWriteRecordEntry::builder()
            .feature_group_name("fg")
            .set_record(Some(rec))
            .build()
    };
    let out = app
        .fs
        .batch_write_record()
        .entries(entry(record("b1", "2024-01-01T00:00:00Z", "0.1")))
        .entries(entry(vec![
            value("id", "bad"),
            value("ts", "2024-01-01T00:00:00Z"),
            value("count", "many"),
        ]))
        .entries(entry(record("b2", "2024-01-01T00:00:00Z", "0.2")))
        .entries(
            BatchWriteRecordEntry::builder()
                .feature_group_name("no-such-group")
                .set_record(Some(record("x", "2024-01-01T00:00:00Z", "1")))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.errors().len(), 2);
    assert_eq!(out.errors()[0].error_code(), Some("ValidationError"));
    assert!(out.errors()[0].error_message().unwrap().contains("count"));
    let echoed = out.errors()[0].entry().unwrap();
    assert!(
        echoed
            .record()
            .iter()
            .any(|v| v.value_as_string() == Some("bad")),
        "the failed entry comes back"
    );
    assert_eq!(
        out.errors()[1].entry().unwrap().feature_group_name(),
        Some("no-such-group")
    );
    assert!(out.unprocessed_entries().is_empty());
    assert_eq!(
        feature(&get(&app, "fg", "b1").await.unwrap(), "score"),
        Some("0.1")
    );
    assert_eq!(
        feature(&get(&app, "fg", "b2").await.unwrap(), "score"),
        Some("0.2")
    );
    assert!(get(&app, "fg", "bad").await.is_none());
    assert_eq!(app.state.flush_offline().unwrap(), 2);
}

#[tokio::test]
async fn batch_write_takes_at_most_25_entries_as_aws_does() {
    use aws_sdk_sagemakerfeaturestoreruntime::{
        error::ProvideErrorMetadata, types::BatchWriteRecordEntry,
    };
    let app = spawn_app().await;
    create_group(&app, "fg").await;
    let entries = |n: usize| {
        (0..n)
            .map(|i| {
                BatchWriteRecordEntry::builder()
                    .feature_group_name("fg")
                    .set_record(Some(record(&format!("r{i}"), "2024-01-01T00:00:00Z", "1")))
                    .build()
            })
            .collect::<Vec<_>>()
    };
    let err = app
        .fs
        .batch_write_record()
        .set_entries(Some(entries(26)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"), "{err:?}");
    assert!(
        get(&app, "fg", "r0").await.is_none(),
        "nothing of it is written"
    );
    let out = app
        .fs
        .batch_write_record()
        .set_entries(Some(entries(25)))
        .send()
        .await
        .unwrap();
    assert!(out.errors().is_empty());
    assert!(get(&app, "fg", "r24").await.is_some());
}

#[tokio::test]
async fn a_denied_batch_write_is_refused_as_iam_refuses_it() {
    use aws_sdk_sagemakerfeaturestoreruntime::{
        error::ProvideErrorMetadata, types::BatchWriteRecordEntry,
    };
    let app = spawn_app_with(|s| s.denied_operations = vec!["BatchWriteRecord".into()]).await;
    create_group(&app, "fg").await;
    let err = app
        .fs
        .batch_write_record()
        .entries(
            BatchWriteRecordEntry::builder()
                .feature_group_name("fg")
                .set_record(Some(record("d1", "2024-01-01T00:00:00Z", "1")))
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AccessDeniedException"), "{err:?}");
    assert!(
        err.message()
            .unwrap()
            .contains("sagemaker:BatchWriteRecord")
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    assert!(get(&app, "fg", "d1").await.is_none());
}
