//! The design's resource names: the defaults of `SAGEMAKER_ENDPOINT_NAME`,
//! `MODEL_PACKAGE_GROUP`, `TRAINING_FG_NAME` and `USER_INTERACTION_FG_NAME` in every service and
//! tool, and the names of sagemaker-local's demo world, so a stack started with no settings
//! finds what the demo created.

/// The production endpoint.
pub const ENDPOINT_NAME: &str = "my-mlops-prod-endpoint";
/// The model package group.
pub const MODEL_PACKAGE_GROUP: &str = "my-mlops-prod-pkg";
/// The feature group Train reads.
pub const TRAINING_FEATURE_GROUP: &str = "my-mlops-feature-group-v2";
/// The feature group every interaction is recorded in.
pub const INTERACTIONS_FEATURE_GROUP: &str = "my-mlops-user-interactions-v1";
