//! Interactions logged one at a time within the linger ship together, once it has passed:
//! before that they all wait in the spool; afterwards every one has shipped.

mod common;

use std::time::{Duration, Instant};

use common::{http, metric};
use proto::interaction::v1::{
    Interaction, LogRequest, interaction_logger_client::InteractionLoggerClient,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_waits_out_the_linger_then_ships_whole() {
    let logger = common::start("my-mlops-user-interactions-v1", 1500).await;
    let mut client = InteractionLoggerClient::connect(format!("http://{}", logger.grpc))
        .await
        .unwrap();
    let first = Instant::now();
    for i in 0..3 {
        client
            .log(LogRequest {
                interactions: vec![Interaction {
                    features_csv: format!("{i},1,2,3,4,5,6,7"),
                    prediction: 0.25,
                    ..Default::default()
                }],
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waiting = http(&logger.admin, "GET", "/metrics").await;
    assert!(
        first.elapsed() < Duration::from_millis(1000),
        "the test itself was too slow to observe the linger"
    );
    assert_eq!(metric(&waiting, "logger_spool_depth"), 3.0, "{waiting}");
    assert_eq!(metric(&waiting, "logger_shipped_total"), 0.0, "{waiting}");

    let mut shipped = String::new();
    for _ in 0..100 {
        shipped = http(&logger.admin, "GET", "/metrics").await;
        if metric(&shipped, "logger_shipped_total") == 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&shipped, "logger_shipped_total"), 3.0, "{shipped}");
    assert_eq!(metric(&shipped, "logger_spool_depth"), 0.0, "{shipped}");
    assert!(first.elapsed() >= Duration::from_millis(1500));
    logger.stop().await;
}
