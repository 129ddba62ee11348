//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, our own `.proto`
//! under `proto/inference/`) on the gateway's second listener (`GATEWAY_GRPC_LISTEN`): the same
//! model, versions, keys (`authorization` or `x-api-key` metadata), limits, validation,
//! recording (source `oip-grpc`), metrics and error table as the REST APIs. Tensors come as
//! typed contents or `raw_input_contents`; the answer uses the same form the request did
//! (`tritonclient.grpc` sends and reads only raw bytes).

use std::{sync::Arc, time::Instant};

use proto::{
    inference::{
        InferTensorContents, ModelInferRequest, ModelInferResponse, ModelMetadataRequest,
        ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse, ServerLiveRequest,
        ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest,
        ServerReadyResponse, grpc_inference_service_server::GrpcInferenceService,
        infer_parameter::ParameterChoice, model_infer_response::InferOutputTensor,
        model_metadata_response::TensorMetadata,
    },
    interaction::v1::Source,
};
use tonic::{Request, Response, Status};

use super::{EXTENSIONS, INPUT, OUTPUT, resolve, tensor};
use crate::{App, api, interactions::Origin, problem::Problem};

pub struct Oip {
    pub app: Arc<App>,
}

fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

#[tonic::async_trait]
impl GrpcInferenceService for Oip {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = crate::predictor_ready(&self.app).await.is_ok();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = resolve(&self.app, &r.name, version(&r.version)).is_ok()
            && crate::predictor_ready(&self.app).await.is_ok();
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: super::SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let m = super::model(&self.app, &r.name, version(&r.version)).map_err(|p| p.to_status())?;
        let tensor = |name: &str, shape: Vec<i64>| TensorMetadata {
            name: name.into(),
            datatype: "FP32".into(),
            shape,
        };
        Ok(Response::new(ModelMetadataResponse {
            name: r.name,
            versions: m.versions,
            platform: super::PLATFORM.into(),
            inputs: vec![tensor(INPUT, vec![-1, m.width as i64])],
            outputs: vec![tensor(OUTPUT, vec![-1])],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let started = Instant::now();
        let headers = request.metadata().clone().into_headers();
        let peer = request.remote_addr().map(|a| a.ip());
        let request_id = api::request_id(&headers);
        let result = async {
            let (caller, _) = self.app.access.admit(&headers, peer).map_err(|p| *p)?;
            let r = request.into_inner();
            let target = resolve(&self.app, &r.model_name, version(&r.model_version))?;
            let (rows, raw) = api::validating().in_scope(|| rows(&self.app, &r))?;
            let origin = Origin::of(&caller, &headers, Source::OipGrpc);
            let id = if r.id.is_empty() {
                request_id.clone()
            } else {
                r.id.clone()
            };
            let scored = api::score(&self.app, &request_id, rows, &origin, target, started).await?;
            Ok::<_, Problem>(answer(r.model_name, id, scored, raw))
        }
        .await;
        api::observe(started, &result);
        result.map(Response::new).map_err(|p| p.to_status())
    }
}

/// The request's rows, and whether it sent them raw (the answer does the same).
fn rows(app: &App, r: &ModelInferRequest) -> Result<(Vec<Vec<f64>>, bool), Problem> {
    let width = app.schema().features.len();
    let input = tensor::one_input(&r.inputs, width)?;
    let (rows, cols) = tensor::shape(&input.name, &input.shape, width, app.config.max_rows)?;
    let size = tensor::element_size(&input.name, &input.datatype)?;
    let raw = !r.raw_input_contents.is_empty();
    let values = match (r.raw_input_contents.as_slice(), &input.contents) {
        ([bytes], _) => {
            if bytes.len() != rows * cols * size {
                return Err(Problem::bad_input(
                    "raw_input_contents",
                    format!(
                        "{} bytes for {} {} values ({} bytes)",
                        bytes.len(),
                        rows * cols,
                        input.datatype,
                        rows * cols * size
                    ),
                ));
            }
            tensor::decode(bytes, size)
        }
        ([], Some(c)) if size == 4 => c.fp32_contents.iter().map(|x| f64::from(*x)).collect(),
        ([], Some(c)) => c.fp64_contents.clone(),
        ([], None) => {
            return Err(Problem::bad_input(
                format!("inputs[{}].contents", input.name),
                "contents (or raw_input_contents) are required",
            ));
        }
        (more, _) => {
            return Err(Problem::bad_input(
                "raw_input_contents",
                format!("one entry per input: {} for 1", more.len()),
            ));
        }
    };
    tensor::known_outputs(r.outputs.iter().map(|o| o.name.as_str()))?;
    Ok((tensor::to_rows(&input.name, values, rows, cols)?, raw))
}

fn answer(model: String, id: String, scored: api::Scored, raw: bool) -> ModelInferResponse {
    let info = scored.answer.model.clone().unwrap_or_default();
    let scores = tensor::scores(&scored.answer);
    let string = |s: String| proto::inference::InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(s)),
    };
    let mut output = InferOutputTensor {
        name: OUTPUT.into(),
        datatype: "FP32".into(),
        shape: vec![scores.len() as i64],
        ..Default::default()
    };
    let mut raw_output_contents = Vec::new();
    if raw {
        raw_output_contents.push(scores.iter().flat_map(|s| s.to_le_bytes()).collect());
    } else {
        output.contents = Some(InferTensorContents {
            fp32_contents: scores,
            ..Default::default()
        });
    }
    ModelInferResponse {
        model_name: model,
        model_version: if info.model_package_version > 0 {
            info.model_package_version.to_string()
        } else {
            String::new()
        },
        id,
        parameters: [
            (
                "interaction_ids".to_owned(),
                string(scored.interaction_ids.join(",")),
            ),
            ("variant".to_owned(), string(info.variant_name)),
        ]
        .into(),
        outputs: vec![output],
        raw_output_contents,
    }
}
