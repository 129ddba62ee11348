//! The model pipeline's local runner (`mlops-pipeline`): the same buildspec files CodeBuild
//! runs for the Train and Deploy stages, run here in bash against sagemaker-local (or AWS,
//! with the standard credential chain), with the manual approval gate between them and a
//! listener that deploys on every approval or rejection in the registry — the local stand-in
//! for the AWS side's CodePipeline and EventBridge rule (`infra/aws/pipeline.yaml`).

pub mod buildspec;
mod gate;
pub mod pipeline;
pub mod registry;
pub mod stage;
