//! The model registry's rules, in one place, for every part that needs them: the watcher
//! (a server that reports them), `mlops-deploy` (which acts on them) and `mlops-pipeline`
//! (which listens for changes).
//!
//! - `poll`: one look at SageMaker: the group's latest Approved package, what the endpoint
//!   serves (variant by variant, down to the package), package versions from ARNs.
//! - `status`, `schema`: the rules that need no AWS client, from `registry-status`
//!   (re-exported: in sync, shadowed, rolling out; a package's schema and baselines).
//! - `events`: the group's approval statuses as snapshots, and the changes between two that
//!   call for a deploy.

pub mod events;
pub mod poll;

pub use registry_status::{evaluation, schema, status};

pub use poll::version_of;
