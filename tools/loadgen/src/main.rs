//! `loadgen {http,invoke,log,oip-grpc} ...`: drives one target for a fixed time, either with N
//! closed-loop workers (`--concurrency`) or open-loop at a fixed rate (`--rate`, latency
//! measured from each request's scheduled start, so a stall is not hidden). Prints one JSON
//! object: requests, errors, rps, p50/p90/p99/max in milliseconds.
//!
//! `loadgen http --answers FILE` also writes every answer's interaction ids and probabilities,
//! and `loadgen verify --answers FILE` checks afterwards that the feature store holds each one
//! with the prediction the client got (the soak's "every acknowledged interaction arrived").

mod answers;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

allocator::install!();

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    target: Target,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0, global = true)]
    seconds: f64,
    /// Closed-loop workers (ignored with --rate).
    #[arg(long, default_value_t = 16, global = true)]
    concurrency: usize,
    /// Open loop: requests per second.
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// Open loop: most requests in flight at once; a request due while that many are out
    /// waits (its latency still counts from when it was due), so a stall of the target shows
    /// as latency, not as an ever larger pile of open requests. Unset: no bound.
    #[arg(long, global = true)]
    max_in_flight: Option<usize>,
}

#[derive(Subcommand, Clone)]
enum Target {
    /// POST a body to a URL (the gateway).
    Http {
        #[arg(long)]
        url: String,
        /// The body, as given.
        #[arg(
            long,
            required_unless_present = "body_file",
            conflicts_with = "body_file"
        )]
        body: Option<String>,
        /// The body, the bytes of this file (e.g. an Open Inference Protocol binary tensor
        /// request, with `--header "inference-header-content-length: N"`).
        #[arg(long)]
        body_file: Option<std::path::PathBuf>,
        #[arg(long, default_value = "application/json")]
        content_type: String,
        /// Another request header, `name: value` (repeatable), e.g. an API key.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Append `interaction_id,probability` of every row of every 200 answer to this file.
        #[arg(long)]
        answers: Option<std::path::PathBuf>,
    },
    /// InvokeEndpoint through aws-sdk-rust (endpoint and credentials from the AWS environment).
    Invoke {
        #[arg(long)]
        endpoint_name: String,
        #[arg(long)]
        body: String,
    },
    /// The Open Inference Protocol's ModelInfer over gRPC (the gateway's gRPC API), one row
    /// per call sent as `raw_input_contents` little-endian FP32, as `tritonclient.grpc` does.
    OipGrpc {
        #[arg(long)]
        url: String,
        /// The model's name (the endpoint's).
        #[arg(long)]
        model: String,
        /// The row, comma-separated numbers.
        #[arg(long)]
        row: String,
    },
    /// InteractionLogger/Log with one interaction per call.
    Log {
        #[arg(long)]
        url: String,
    },
    /// Checks that every answer written by `http --answers` is in the feature group, with the
    /// prediction the client got (BatchGetRecord; endpoint and credentials from the AWS
    /// environment). Prints one JSON object; exits non-zero when any is missing or differs.
    Verify {
        #[arg(long)]
        answers: std::path::PathBuf,
        #[arg(long, default_value = names::INTERACTIONS_FEATURE_GROUP)]
        feature_group: String,
    },
}

type Call = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync,
>;

async fn make_call(target: Target) -> anyhow::Result<Call> {
    Ok(match target {
        Target::Http {
            url,
            body,
            body_file,
            content_type,
            headers,
            answers,
        } => {
            let answers = answers.map(answers::Writer::create).transpose()?;
            let headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)> = headers
                .iter()
                .map(|h| {
                    let (n, v) = h
                        .split_once(':')
                        .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected `name: value`"))?;
                    Ok((n.trim().parse()?, v.trim().parse()?))
                })
                .collect::<anyhow::Result<_>>()?;
            let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1024)
                .build_http();
            let uri: hyper::Uri = url.parse()?;
            let body = match (body, body_file) {
                (Some(body), _) => bytes::Bytes::from(body),
                (None, Some(path)) => bytes::Bytes::from(
                    std::fs::read(&path)
                        .map_err(|e| anyhow::anyhow!("--body-file {}: {e}", path.display()))?,
                ),
                (None, None) => anyhow::bail!("--body or --body-file"),
            };
            Arc::new(move || {
                let mut request =
                    hyper::Request::post(uri.clone()).header("content-type", content_type.clone());
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                let request = request
                    .body(Full::new(body.clone()))
                    .expect("valid request");
                let (client, answers) = (client.clone(), answers.clone());
                Box::pin(async move {
                    let Ok(r) = client.request(request).await else {
                        return false;
                    };
                    let ok = r.status().is_success();
                    match r.into_body().collect().await {
                        Ok(body) if ok => {
                            if let Some(answers) = &answers {
                                answers.record(&body.to_bytes());
                            }
                            true
                        }
                        _ => false,
                    }
                })
            })
        }
        Target::Invoke {
            endpoint_name,
            body,
        } => {
            let client = aws_sdk_sagemakerruntime::Client::new(&aws().await?);
            Arc::new(move || {
                let call = client
                    .invoke_endpoint()
                    .endpoint_name(&endpoint_name)
                    .content_type("text/csv")
                    .body(aws_smithy_types::Blob::new(body.clone()))
                    .send();
                Box::pin(async move { call.await.is_ok() })
            })
        }
        Target::Verify { .. } => anyhow::bail!("verify is not a load target"),
        Target::OipGrpc { url, model, row } => {
            use proto::inference::{
                ModelInferRequest, grpc_inference_service_client::GrpcInferenceServiceClient,
                model_infer_request::InferInputTensor,
            };
            let values = row
                .split(',')
                .map(|v| v.trim().parse::<f32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--row {row:?}: {e}"))?;
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let request = ModelInferRequest {
                model_name: model,
                inputs: vec![InferInputTensor {
                    name: "features".into(), // the gateway's model metadata names it so
                    datatype: "FP32".into(),
                    shape: vec![1, values.len() as i64],
                    ..Default::default()
                }],
                raw_input_contents: vec![raw.into()],
                ..Default::default()
            };
            let channel = tonic::transport::Endpoint::from_shared(url)?
                .connect()
                .await?;
            let client = GrpcInferenceServiceClient::new(channel);
            Arc::new(move || {
                let (mut client, request) = (client.clone(), request.clone());
                Box::pin(async move { client.model_infer(request).await.is_ok() })
            })
        }
        Target::Log { url } => {
            let channel = tonic::transport::Endpoint::from_shared(url)?
                .connect()
                .await?;
            let client =
                proto::interaction::v1::interaction_logger_client::InteractionLoggerClient::new(
                    channel,
                );
            Arc::new(move || {
                let mut client = client.clone();
                Box::pin(async move {
                    let interaction = proto::interaction::v1::Interaction {
                        features_csv: "63,40,29.01,0,4,0,2,1".into(),
                        prediction: 0.006,
                        endpoint_name: names::ENDPOINT_NAME.into(),
                        variant_name: "AllTraffic".into(),
                        ..Default::default()
                    };
                    client
                        .log(proto::interaction::v1::LogRequest {
                            interactions: vec![interaction],
                        })
                        .await
                        .is_ok()
                })
            })
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Target::Verify {
        answers,
        feature_group,
    } = &args.target
    {
        return answers::verify(answers, feature_group).await;
    }
    let call = make_call(args.target.clone()).await?;
    // Warm up connections.
    for _ in 0..args.concurrency.min(64) {
        call().await;
    }
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let duration = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let record = {
        let (latencies, errors) = (Arc::clone(&latencies), Arc::clone(&errors));
        move |since: Instant, ok: bool| {
            latencies
                .lock()
                .expect("latencies")
                .push(since.elapsed().as_micros() as u64);
            if !ok {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
    match args.rate {
        Some(rate) => {
            let period = Duration::from_secs_f64(1.0 / rate);
            let slots = Arc::new(tokio::sync::Semaphore::new(
                args.max_in_flight
                    .unwrap_or(tokio::sync::Semaphore::MAX_PERMITS),
            ));
            let mut tasks = tokio::task::JoinSet::new();
            let mut n = 0u64;
            loop {
                let scheduled = started + period.mul_f64(n as f64);
                if scheduled >= started + duration {
                    break;
                }
                tokio::time::sleep_until(scheduled.into()).await;
                let slot = Arc::clone(&slots)
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let (call, record) = (Arc::clone(&call), record.clone());
                tasks.spawn(async move {
                    let ok = call().await;
                    drop(slot);
                    record(scheduled, ok);
                });
                n += 1;
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
        None => {
            let mut workers = Vec::new();
            for _ in 0..args.concurrency {
                let (call, record) = (Arc::clone(&call), record.clone());
                workers.push(tokio::spawn(async move {
                    while started.elapsed() < duration {
                        let t = Instant::now();
                        let ok = call().await;
                        record(t, ok);
                    }
                }));
            }
            for w in workers {
                w.await?;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().expect("latencies").clone();
    l.sort_unstable();
    let pct = |p: f64| {
        if l.is_empty() {
            f64::NAN
        } else {
            l[((l.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "requests": l.len(),
            "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
            "seconds": elapsed,
            "rps": l.len() as f64 / elapsed,
            "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        })
    );
    Ok(())
}

/// The SDK's configuration from the environment (`AWS_*`), trusting `AWS_CA_BUNDLE` as the
/// services do (sagemaker-local over HTTPS), with the tools' retries and timeouts.
pub(crate) async fn aws() -> anyhow::Result<aws_config::SdkConfig> {
    let client = bootstrap::aws::AwsClient {
        aws_ca_bundle: std::env::var_os("AWS_CA_BUNDLE").map(std::path::PathBuf::from),
        ..Default::default()
    };
    Ok(client.load_for_tool().await?)
}
