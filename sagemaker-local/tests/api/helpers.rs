use std::{path::PathBuf, sync::Arc, time::Duration};

use aws_credential_types::Credentials;
use aws_sdk_sagemaker::config::{BehaviorVersion, Region};
use sagemaker_local::{AppState, Settings};
use tokio::sync::oneshot;

pub const MODEL_JSON: &[u8] = include_bytes!("../../../demo/model/xgboost-model.json");

/// A running sagemaker-local with typed clients; stops when dropped.
pub struct App {
    pub url: String,
    pub state: Arc<AppState>,
    pub sm: aws_sdk_sagemaker::Client,
    pub rt: aws_sdk_sagemakerruntime::Client,
    pub fs: aws_sdk_sagemakerfeaturestoreruntime::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn spawn_app() -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_at(dir.path().to_owned()).await;
    app._dir = Some(dir);
    app
}

pub async fn spawn_at(data_dir: PathBuf) -> App {
    spawn_configured(data_dir, |_| {}).await
}

/// [`spawn_app`] with the test's settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_configured(dir.path().to_owned(), configure).await;
    app._dir = Some(dir);
    app
}

async fn spawn_configured(data_dir: PathBuf, configure: impl FnOnce(&mut Settings)) -> App {
    let mut settings = Settings::new(data_dir);
    settings.endpoint_delay = Duration::from_millis(300);
    settings.offline_flush_interval = Duration::from_secs(3600);
    configure(&mut settings);
    let state = AppState::open(settings).expect("open state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(sagemaker_local::run(listener, Arc::clone(&state), async {
        let _ = stopped.await;
    }));
    let server = tokio::spawn(async move {
        server.await.expect("server task").expect("server ran");
    });
    let (sm, rt, fs) = clients(&url, "sagemaker-local", "sagemaker-local-secret");
    App {
        url,
        state,
        sm,
        rt,
        fs,
        stop: Some(stop),
        server: Some(server),
        _dir: None,
    }
}

pub fn clients(
    url: &str,
    key: &str,
    secret: &str,
) -> (
    aws_sdk_sagemaker::Client,
    aws_sdk_sagemakerruntime::Client,
    aws_sdk_sagemakerfeaturestoreruntime::Client,
) {
    let creds = Credentials::new(key, secret, None, None, "tests");
    let region = Region::new("us-east-1");
    let sm = aws_sdk_sagemaker::Client::from_conf(
        aws_sdk_sagemaker::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region.clone())
            .endpoint_url(url)
            .credentials_provider(creds.clone())
            .build(),
    );
    let rt = aws_sdk_sagemakerruntime::Client::from_conf(
        aws_sdk_sagemakerruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region.clone())
            .endpoint_url(url)
            .credentials_provider(creds.clone())
            .build(),
    );
    let fs = aws_sdk_sagemakerfeaturestoreruntime::Client::from_conf(
        aws_sdk_sagemakerfeaturestoreruntime::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region)
            .endpoint_url(url)
            .credentials_provider(creds)
            .build(),
    );
    (sm, rt, fs)
}

impl App {
    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    /// Puts `bytes` at `s3://bucket/key` (the data dir's s3/ folder) and returns the URL.
    pub fn put_object(&self, bucket_key: &str, bytes: &[u8]) -> String {
        let path = self.state.settings.data_dir.join("s3").join(bucket_key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        format!("s3://{bucket_key}")
    }

    /// The demo model as `model.tar.gz` at `s3://models/{name}/model.tar.gz`.
    pub fn put_demo_model(&self, name: &str) -> String {
        let url = format!("s3://models/{name}/model.tar.gz");
        let path =
            sagemaker_local::runtime::artifact::resolve_s3(&self.state.settings.data_dir, &url)
                .unwrap();
        sagemaker_local::runtime::artifact::write_tar_gz(&path, MODEL_JSON).unwrap();
        url
    }

    /// CreateModel + CreateEndpointConfig (one variant per `(variant, model url, weight)`).
    pub async fn config(&self, config: &str, variants: &[(&str, &str, f32)]) {
        let mut pvs = Vec::new();
        for (variant, url, weight) in variants {
            let model = format!("{config}-{variant}").to_lowercase();
            self.sm
                .create_model()
                .model_name(&model)
                .primary_container(
                    aws_sdk_sagemaker::types::ContainerDefinition::builder()
                        .image("xgboost:1.7-1")
                        .model_data_url(*url)
                        .build(),
                )
                .execution_role_arn("arn:aws:iam::000000000000:role/r")
                .send()
                .await
                .unwrap();
            pvs.push(
                aws_sdk_sagemaker::types::ProductionVariant::builder()
                    .variant_name(*variant)
                    .model_name(model)
                    .initial_instance_count(1)
                    .instance_type(
                        aws_sdk_sagemaker::types::ProductionVariantInstanceType::MlM5Large,
                    )
                    .initial_variant_weight(*weight)
                    .build(),
            );
        }
        self.sm
            .create_endpoint_config()
            .endpoint_config_name(config)
            .set_production_variants(Some(pvs))
            .send()
            .await
            .unwrap();
    }

    /// Polls DescribeEndpoint until the status is not `Creating`/`Updating`.
    pub async fn settle(
        &self,
        endpoint: &str,
    ) -> aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointOutput {
        for _ in 0..100 {
            let out = self
                .sm
                .describe_endpoint()
                .endpoint_name(endpoint)
                .send()
                .await
                .unwrap();
            let status = out.endpoint_status().unwrap().as_str().to_owned();
            if status != "Creating" && status != "Updating" {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("endpoint {endpoint} never settled");
    }

    pub async fn invoke(
        &self,
        endpoint: &str,
        body: &str,
    ) -> Result<
        (String, String),
        aws_sdk_sagemakerruntime::error::SdkError<
            aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError,
        >,
    > {
        let out = self
            .rt
            .invoke_endpoint()
            .endpoint_name(endpoint)
            .content_type("text/csv")
            .body(aws_smithy_types::Blob::new(body.as_bytes().to_vec()))
            .send()
            .await?;
        Ok((
            String::from_utf8(out.body().unwrap().as_ref().to_vec()).unwrap(),
            out.invoked_production_variant()
                .unwrap_or_default()
                .to_owned(),
        ))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The first `n` demo customers as CSV rows, and xgboost's own predictions for them.
pub fn demo_rows(n: usize) -> (String, Vec<f64>) {
    // Embedded at build time, as MODEL_JSON is.
    let data = include_str!("../../../demo/data/customers.csv");
    let expected = include_str!("../../../demo/model/expected.csv");
    let rows: Vec<String> = data
        .lines()
        .skip(1)
        .take(n)
        .map(|l| l.split(',').skip(1).take(8).collect::<Vec<_>>().join(","))
        .collect();
    (
        rows.join("\n"),
        expected
            .lines()
            .take(n)
            .map(|l| l.parse().unwrap())
            .collect(),
    )
}
