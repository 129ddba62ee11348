use aws_sdk_sagemaker::error::ProvideErrorMetadata;

use crate::helpers::{clients, spawn_app};

#[tokio::test]
async fn requests_must_be_signed_with_the_configured_key_pair() {
    let app = spawn_app().await;
    let (wrong_secret, _, wrong_secret_fs) = clients(&app.url, "sagemaker-local", "not-the-secret");
    let err = wrong_secret.list_model_packages().send().await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidSignatureException"));
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
    let err = wrong_secret_fs
        .get_record()
        .feature_group_name("g")
        .record_identifier_value_as_string("1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);

    let (unknown_key, ..) = clients(&app.url, "someone-else", "sagemaker-local-secret");
    let err = unknown_key.list_model_packages().send().await.unwrap_err();
    assert_eq!(err.code(), Some("UnrecognizedClientException"));

    // No signature at all.
    let response = reqwest_free_post(&app.url).await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(
        response.contains("MissingAuthenticationTokenException"),
        "{response}"
    );

    // The right pair works.
    app.sm.list_model_packages().send().await.unwrap();
}

/// A raw unsigned request over a TCP socket.
async fn reqwest_free_post(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nX-Amz-Target: SageMaker.ListModelPackages\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
