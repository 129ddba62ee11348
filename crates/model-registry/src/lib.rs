//! The model registry's rules, in one place, for every part that needs them: the watcher
//! (a server that reports them), `mlops-deploy` (which acts on them) and `mlops-pipeline`
//! (which listens for changes).
//!
//! - `poll`: one look at SageMaker: the group's latest Approved package, what the endpoint
//!   serves (variant by variant, down to the package), package versions from ARNs.
//! - `status`: whether they are in sync, and how a poll changes the watcher's status.
//! - `schema`: where a package keeps its feature names.
//! - `events`: the group's approval statuses as snapshots, and the changes between two that
//!   call for a deploy.

pub mod events;
pub mod poll;
pub mod schema;
pub mod status;

pub use poll::version_of;
