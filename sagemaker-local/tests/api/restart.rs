use crate::helpers::{demo_rows, spawn_at};

/// Everything survives a restart on the same data dir, endpoints keep serving, and an
/// endpoint caught mid-transition finishes after the restart.
#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_at(dir.path().to_owned()).await;
    let url = app.put_demo_model("v1");
    app.config("cfg", &[("AllTraffic", &url, 1.0)]).await;
    app.sm
        .create_endpoint()
        .endpoint_name("ep")
        .endpoint_config_name("cfg")
        .send()
        .await
        .unwrap();
    app.settle("ep").await;
    app.sm
        .create_model_package_group()
        .model_package_group_name("g")
        .send()
        .await
        .unwrap();
    app.sm
        .create_endpoint()
        .endpoint_name("caught-mid-create")
        .endpoint_config_name("cfg")
        .send()
        .await
        .unwrap();
    app.stop().await;

    let app = spawn_at(dir.path().to_owned()).await;
    let (rows, expected) = demo_rows(3);
    let (body, _) = app.invoke("ep", &rows).await.unwrap();
    let first: f64 = body.lines().next().unwrap().parse().unwrap();
    assert!((first - expected[0]).abs() < 1e-6);
    app.sm
        .describe_model_package_group()
        .model_package_group_name("g")
        .send()
        .await
        .unwrap();
    assert_eq!(
        app.settle("caught-mid-create")
            .await
            .endpoint_status()
            .unwrap()
            .as_str(),
        "InService"
    );
    app.stop().await;
}
