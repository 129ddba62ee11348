//! Records the Feature Store refuses as invalid become dead letters, with the reason, visible in
//! metrics, listed and replayed over the admin port. Real sagemaker-local and the real logger,
//! both on 127.0.0.1:0; the logger writes to the demo's *training* feature group, whose schema
//! has none of the interaction features, so every write is a ValidationError.

mod common;

use std::time::Duration;

use common::{http, metric};
use proto::interaction::v1::{
    Interaction, LogRequest, interaction_logger_client::InteractionLoggerClient,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_records_are_dead_lettered_listed_and_replayed() {
    let logger = common::start("my-mlops-feature-group-v2", 20).await;
    let admin_addr = logger.admin.clone();

    let mut client = InteractionLoggerClient::connect(format!("http://{}", logger.grpc))
        .await
        .unwrap();
    let interaction = Interaction {
        features_csv: "1,2,3".into(),
        prediction: 0.5,
        ..Default::default()
    };
    let ids = client
        .log(LogRequest {
            interactions: vec![interaction],
        })
        .await
        .unwrap()
        .into_inner()
        .interaction_ids;
    assert_eq!(ids.len(), 1);

    let mut listed = String::new();
    for _ in 0..100 {
        listed = http(&admin_addr, "GET", "/dead-letters").await;
        if listed.contains(&ids[0]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letters: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&listed).unwrap()["dead_letters"].take();
    assert_eq!(letters.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(letters[0]["interaction_id"], ids[0]);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not defined"),
        "{listed}"
    );
    // Counted once the shipper hears the dead letter is stored, a moment after it is listed.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http(&admin_addr, "GET", "/metrics").await;
        if metric(&metrics, "logger_dead_lettered_total") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(&metrics, "logger_dead_lettered_total"),
        1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "logger_spool_depth"), 0.0);

    // The admin routes need the token: none, or a wrong one, is refused and changes nothing.
    for token in [None, Some("not-the-token")] {
        for (method, path) in [("POST", "/dead-letters/replay"), ("GET", "/dead-letters")] {
            let (status, body) = common::http_as(&admin_addr, method, path, token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
        }
    }
    let (status, _) = common::http_as(&admin_addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200, "metrics stay open");

    // Replay: queued again with the same id; still refused, so dead-lettered a second time.
    let replayed = http(&admin_addr, "POST", "/dead-letters/replay").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&replayed).unwrap()["replayed"],
        1
    );
    for _ in 0..100 {
        if metric(
            &http(&admin_addr, "GET", "/metrics").await,
            "logger_dead_lettered_total",
        ) == 2.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let letters: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&http(&admin_addr, "GET", "/dead-letters").await)
            .unwrap()["dead_letters"]
            .take();
    assert_eq!(letters.as_array().unwrap().len(), 1);
    assert_eq!(
        letters[0]["interaction_id"], ids[0],
        "the same interaction, not a copy"
    );

    // Bad input is refused at the door.
    let bad = Interaction {
        event_time: "yesterday".into(),
        ..Default::default()
    };
    let err = client
        .log(LogRequest {
            interactions: vec![bad],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        client
            .log(LogRequest {
                interactions: vec![]
            })
            .await
            .is_err()
    );

    logger.stop().await;
}
