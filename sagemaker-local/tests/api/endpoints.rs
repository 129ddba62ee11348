use aws_sdk_sagemakerruntime::error::ProvideErrorMetadata;

use crate::helpers::{demo_rows, spawn_app};

fn close(got: &str, expected: &[f64]) {
    let values: Vec<f64> = got
        .split(['\n', ','])
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(values.len(), expected.len(), "{got}");
    for (g, e) in values.iter().zip(expected) {
        assert!((g - e).abs() < 1e-6, "got {g}, xgboost says {e}");
    }
}

#[tokio::test]
async fn create_invoke_update_and_delete_an_endpoint() {
    let app = spawn_app().await;
    let v1 = app.put_demo_model("churn-v1");
    app.config("cfg-v1", &[("AllTraffic", &v1, 1.0)]).await;
    app.sm
        .create_endpoint()
        .endpoint_name("churn")
        .endpoint_config_name("cfg-v1")
        .send()
        .await
        .unwrap();
    let creating = app
        .sm
        .describe_endpoint()
        .endpoint_name("churn")
        .send()
        .await
        .unwrap();
    assert_eq!(creating.endpoint_status().unwrap().as_str(), "Creating");
    let err = app.invoke("churn", "1,2,3,4,5,6,7,8").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some("ValidationError"),
        "not serving while Creating"
    );

    let live = app.settle("churn").await;
    assert_eq!(live.endpoint_status().unwrap().as_str(), "InService");
    let variant = &live.production_variants()[0];
    assert_eq!(variant.variant_name(), Some("AllTraffic"));
    assert_eq!(variant.current_weight(), Some(1.0));
    assert!(
        variant.deployed_images()[0]
            .resolved_image()
            .unwrap()
            .contains("@sha256:")
    );

    // Real inference: the same numbers as xgboost's predict, one value per line.
    let (rows, expected) = demo_rows(25);
    let (body, served_by) = app.invoke("churn", &rows).await.unwrap();
    assert_eq!(served_by, "AllTraffic");
    assert!(body.ends_with('\n') && body.lines().count() == 25, "{body}");
    close(&body, &expected);

    // JSON when asked.
    let out = app
        .rt
        .invoke_endpoint()
        .endpoint_name("churn")
        .content_type("text/csv")
        .accept("application/json")
        .body(aws_smithy_types::Blob::new(
            rows.lines().next().unwrap().as_bytes().to_vec(),
        ))
        .send()
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(out.body().unwrap().as_ref()).unwrap();
    assert!((json["predictions"][0]["score"].as_f64().unwrap() - expected[0]).abs() < 1e-6);

    // Bad payloads: ModelError 424 with the container's status.
    for (payload, original) in [
        ("1,2,3", 400),
        ("a,b,c,d,e,f,g,h", 415),
        ("1,2,3,4,5,6,7,8\n1,2", 415),
    ] {
        let err = app.invoke("churn", payload).await.unwrap_err();
        assert_eq!(err.code(), Some("ModelError"), "{payload}");
        let raw = err.raw_response().unwrap();
        assert_eq!(raw.status().as_u16(), 424);
        let body: serde_json::Value = serde_json::from_slice(raw.body().bytes().unwrap()).unwrap();
        assert_eq!(body["OriginalStatusCode"], original, "{payload}");
        match err.into_service_error() {
            aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError::ModelError(m) => {
                assert_eq!(m.original_status_code(), Some(original));
                assert!(m.log_stream_arn().unwrap().starts_with("arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/churn"));
            }
            other => panic!("expected ModelError, got {other:?}"),
        }
    }

    // An update whose model cannot load rolls back; the old config serves throughout.
    let broken = app.put_object("models/broken/model.tar.gz", b"not a model");
    app.config("cfg-broken", &[("AllTraffic", &broken, 1.0)])
        .await;
    app.sm
        .update_endpoint()
        .endpoint_name("churn")
        .endpoint_config_name("cfg-broken")
        .send()
        .await
        .unwrap();
    let updating = app
        .sm
        .describe_endpoint()
        .endpoint_name("churn")
        .send()
        .await
        .unwrap();
    assert_eq!(updating.endpoint_status().unwrap().as_str(), "Updating");
    close(&app.invoke("churn", &rows).await.unwrap().0, &expected);
    let rolled_back = app.settle("churn").await;
    assert_eq!(rolled_back.endpoint_status().unwrap().as_str(), "InService");
    assert_eq!(rolled_back.endpoint_config_name(), Some("cfg-v1"));
    assert!(
        rolled_back
            .failure_reason()
            .unwrap()
            .contains("rolled back"),
        "{rolled_back:?}"
    );
    close(&app.invoke("churn", &rows).await.unwrap().0, &expected);

    // Creating with a model that cannot load fails.
    app.sm
        .create_endpoint()
        .endpoint_name("doomed")
        .endpoint_config_name("cfg-broken")
        .send()
        .await
        .unwrap();
    let failed = app.settle("doomed").await;
    assert_eq!(failed.endpoint_status().unwrap().as_str(), "Failed");
    assert!(
        failed.failure_reason().unwrap().contains("AllTraffic"),
        "{failed:?}"
    );

    app.sm
        .delete_endpoint()
        .endpoint_name("churn")
        .send()
        .await
        .unwrap();
    let gone = app
        .sm
        .describe_endpoint()
        .endpoint_name("churn")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        aws_sdk_sagemaker::error::ProvideErrorMetadata::code(&gone),
        Some("ValidationException")
    );
    let err = app.invoke("churn", "1,2,3,4,5,6,7,8").await.unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
    assert!(err.message().unwrap().contains("not found"));
}

#[tokio::test]
async fn traffic_follows_variant_weights_and_target_variant() {
    let app = spawn_app().await;
    let a = app.put_demo_model("a");
    let b = app.put_demo_model("b");
    app.config(
        "ab",
        &[("Blue", &a, 3.0), ("Green", &b, 1.0), ("Dark", &b, 0.0)],
    )
    .await;
    app.sm
        .create_endpoint()
        .endpoint_name("ab")
        .endpoint_config_name("ab")
        .send()
        .await
        .unwrap();
    assert_eq!(
        app.settle("ab").await.endpoint_status().unwrap().as_str(),
        "InService"
    );

    let (row, _) = demo_rows(1);
    let mut blue = 0;
    for _ in 0..400 {
        let (_, variant) = app.invoke("ab", &row).await.unwrap();
        assert_ne!(variant, "Dark", "a zero-weight variant gets no traffic");
        blue += usize::from(variant == "Blue");
    }
    // 3:1 weights: 300 expected; 240..360 is far outside chance for 400 draws.
    assert!((240..=360).contains(&blue), "Blue served {blue} of 400");

    let targeted = app
        .rt
        .invoke_endpoint()
        .endpoint_name("ab")
        .content_type("text/csv")
        .target_variant("Dark")
        .body(aws_smithy_types::Blob::new(row.clone().into_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(targeted.invoked_production_variant(), Some("Dark"));
    let err = app
        .rt
        .invoke_endpoint()
        .endpoint_name("ab")
        .content_type("text/csv")
        .target_variant("Nope")
        .body(aws_smithy_types::Blob::new(row.into_bytes()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
}
