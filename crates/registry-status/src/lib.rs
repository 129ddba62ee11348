//! The registry's rules that need no AWS client, for every part that follows the watcher's
//! status (the predictor, the logger, the gateway's follower) as well as those that poll
//! SageMaker (`model-registry`, which re-exports these):
//!
//! - `status`: whether the endpoint is in sync with the latest Approved package, how a poll
//!   changes the watcher's status, whether a candidate is shadowed, and the two variants of a
//!   progressive rollout.
//! - `schema`: where a package keeps its feature names and training baselines.
//! - `evaluation`: the candidate against the live model on the same validation rows.

pub mod evaluation;
pub mod schema;
pub mod status;
