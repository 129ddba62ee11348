//! Feature Store record lifetime: TTL expiry, BatchGetRecord, soft and hard deletes.

use aws_sdk_sagemakerfeaturestoreruntime::{
    error::ProvideErrorMetadata,
    types::{
        BatchGetRecordIdentifier, DeletionMode, ExpirationTimeResponse, TtlDuration,
        TtlDurationUnit,
    },
};

use crate::{
    featurestore::{create_group, feature, get, put, record},
    helpers::spawn_app,
};

#[tokio::test]
async fn ttl_batch_get_and_deletes() {
    let app = spawn_app().await;
    create_group(&app, "fg").await;
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    // Event time an hour ago with a 30 minute TTL: already expired.
    app.fs
        .put_record()
        .feature_group_name("fg")
        .set_record(Some(record(
            "old",
            &fmt(now - chrono::Duration::hours(1)),
            "1",
        )))
        .ttl_duration(
            TtlDuration::builder()
                .unit(TtlDurationUnit::Minutes)
                .value(30)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        get(&app, "fg", "old").await.is_none(),
        "expired records are not returned"
    );
    app.fs
        .put_record()
        .feature_group_name("fg")
        .set_record(Some(record("fresh", &fmt(now), "2")))
        .ttl_duration(
            TtlDuration::builder()
                .unit(TtlDurationUnit::Hours)
                .value(2)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let out = app
        .fs
        .get_record()
        .feature_group_name("fg")
        .record_identifier_value_as_string("fresh")
        .expiration_time_response(ExpirationTimeResponse::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.expires_at(),
        Some(fmt(now + chrono::Duration::hours(2)).as_str())
    );

    let batch = app
        .fs
        .batch_get_record()
        .identifiers(
            BatchGetRecordIdentifier::builder()
                .feature_group_name("fg")
                .record_identifiers_value_as_string("fresh")
                .record_identifiers_value_as_string("old")
                .build(),
        )
        .identifiers(
            BatchGetRecordIdentifier::builder()
                .feature_group_name("missing-group")
                .record_identifiers_value_as_string("x")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(batch.records().len(), 1);
    assert_eq!(
        batch.records()[0].record_identifier_value_as_string(),
        Some("fresh")
    );
    assert_eq!(batch.errors().len(), 1);
    assert_eq!(
        batch.errors()[0].feature_group_name(),
        Some("missing-group")
    );

    // Soft delete at a later time hides the record; a later put brings it back.
    let later = fmt(now + chrono::Duration::seconds(10));
    app.fs
        .delete_record()
        .feature_group_name("fg")
        .record_identifier_value_as_string("fresh")
        .event_time(&later)
        .send()
        .await
        .unwrap();
    assert!(get(&app, "fg", "fresh").await.is_none());
    // A put older than the delete stays hidden.
    put(
        &app,
        "fg",
        "fresh",
        &fmt(now + chrono::Duration::seconds(5)),
        "3",
    )
    .await;
    assert!(get(&app, "fg", "fresh").await.is_none());
    put(
        &app,
        "fg",
        "fresh",
        &fmt(now + chrono::Duration::seconds(20)),
        "4",
    )
    .await;
    assert_eq!(
        feature(&get(&app, "fg", "fresh").await.unwrap(), "score"),
        Some("4")
    );

    // HardDelete not later than the record is refused; later removes it.
    let err = app
        .fs
        .delete_record()
        .feature_group_name("fg")
        .record_identifier_value_as_string("fresh")
        .event_time(fmt(now))
        .deletion_mode(DeletionMode::HardDelete)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
    assert!(get(&app, "fg", "fresh").await.is_some());
    app.fs
        .delete_record()
        .feature_group_name("fg")
        .record_identifier_value_as_string("fresh")
        .event_time(fmt(now + chrono::Duration::seconds(30)))
        .deletion_mode(DeletionMode::HardDelete)
        .send()
        .await
        .unwrap();
    assert!(get(&app, "fg", "fresh").await.is_none());
}
