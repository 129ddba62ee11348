//! What each `mlops-deploy` operation did, as types: the CLI prints them as one JSON line
//! each (`"action"` names what happened), the pipeline runner and the gate read their fields.
//! A renamed field is a compile error in every reader, not a blank in a printout.

use std::collections::BTreeMap;

use serde::Serialize;
use shadow_comparison::Summary;

/// A package, by ARN and version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageRef {
    pub arn: String,
    pub version: i64,
}

/// `register`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename = "registered")]
pub struct Registered {
    pub arn: String,
    pub version: i64,
    pub status: &'static str,
}

/// `approve` / `reject`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Approval {
    /// `--only-if-pending` and the package already has that status.
    None {
        reason: String,
        arn: String,
        version: i64,
    },
    Approved(PackageRef),
    Rejected(PackageRef),
}

/// A variant the endpoint serves, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveVariant {
    pub variant: String,
    pub weight: f64,
    pub version: i64,
    pub arn: String,
}

/// `status`: the group's latest Approved package, what the endpoint serves, the candidate
/// awaiting a decision and the rollout the endpoint is in.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub group: String,
    pub latest_approved: Option<PackageRef>,
    pub endpoint: String,
    pub endpoint_status: String,
    pub endpoint_config: String,
    pub failure_reason: String,
    pub live: Vec<LiveVariant>,
    pub in_sync: bool,
    pub candidate: Option<CandidateView>,
    pub rollout: Option<RolloutView>,
}

/// The candidate awaiting a decision.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateView {
    pub version: i64,
    pub arn: String,
    pub shadowed: bool,
    pub shadow_endpoint: Option<EndpointRef>,
    pub comparison: Option<ComparisonView>,
    pub against_live: Option<AgainstLiveView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointRef {
    pub name: String,
    pub status: String,
}

/// The comparison on shadowed live traffic stored with the candidate's package.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ComparisonView {
    Summary(Box<Summary>),
    Unreadable { error: String },
}

impl ComparisonView {
    pub fn summary(&self) -> Option<&Summary> {
        match self {
            ComparisonView::Summary(s) => Some(s),
            ComparisonView::Unreadable { .. } => None,
        }
    }
}

/// Train's evaluation of the candidate and of the live model on the same validation rows.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AgainstLiveView {
    /// As the package's metadata holds them.
    Unavailable {
        live_version: String,
        unavailable: String,
    },
    Scored {
        live_version: String,
        rows: String,
        /// By figure (`auc`, `accuracy`, ...).
        #[serde(flatten)]
        figures: BTreeMap<String, FigureDiff>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct FigureDiff {
    pub candidate: f64,
    pub live: f64,
    pub difference: f64,
}

/// A variant in a rollout.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutSide {
    pub variant: String,
    pub version: i64,
    pub weight: f64,
}

/// The rollout the endpoint is in: weights, the plan and promotion stored with the
/// candidate, and the evidence of the current step.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    pub live: RolloutSide,
    pub candidate: RolloutSide,
    pub plan: Option<String>,
    pub promote: Option<String>,
    pub evidence: Option<EvidenceView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvidenceView {
    pub since: f64,
    pub live: VariantEvidence,
    pub candidate: VariantEvidence,
    pub verdict: VerdictView,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantEvidence {
    pub requests: u64,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_score: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictView {
    Pass(String),
    Fail(String),
    Waiting(String),
}

/// `deploy`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Deployment {
    /// The latest Approved package is already live.
    None {
        reason: String,
        endpoint: String,
        version: i64,
        arn: String,
    },
    /// All at once, to a new endpoint.
    Created(Switched),
    /// All at once, on the existing endpoint.
    Updated(Switched),
    /// Progressively, every step passed (or promoted).
    RolledOut(RolledOut),
    /// The evidence failed (or the candidate could not come up): 100% back to the live model.
    RolledBack(RolledBack),
}

/// A variant and its version.
#[derive(Debug, Clone, Serialize)]
pub struct VariantVersion {
    pub variant: String,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Switched {
    pub endpoint: String,
    pub from: Vec<VariantVersion>,
    pub to: SwitchedTo,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwitchedTo {
    pub variant: String,
    pub version: i64,
    pub arn: String,
    pub model: String,
    pub endpoint_config: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolledOut {
    pub strategy: &'static str,
    pub endpoint: String,
    pub from: VariantVersion,
    pub to: RolledOutTo,
    pub steps: Vec<Step>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolledOutTo {
    pub variant: String,
    pub version: i64,
    pub arn: String,
    pub endpoint_config: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolledBack {
    pub endpoint: String,
    pub version: i64,
    pub arn: String,
    pub reason: String,
    /// The live version traffic went back to.
    pub live: i64,
    /// The steps that passed before (none when the candidate could not come up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Step>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// A baked step of a rollout and why it ended as it did.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub share: f64,
    #[serde(flatten)]
    pub outcome: StepOutcome,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOutcome {
    Passed(String),
    Promoted(String),
}

/// `shadow`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum ShadowChange {
    None {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<i64>,
    },
    ShadowCreated(Shadowed),
    ShadowUpdated(Shadowed),
    ShadowRemoved {
        endpoint: String,
        reason: &'static str,
        /// The versions it served.
        was: Vec<i64>,
        seconds: f64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Shadowed {
    pub endpoint: String,
    pub candidate: ShadowedCandidate,
    pub seconds: f64,
}

/// The shadowed candidate: its package, model and config.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowedCandidate {
    pub version: i64,
    pub arn: String,
    pub model: String,
    pub endpoint_config: String,
}

/// `rollout abort` / `rollout promote`: what the Deploy running the rollout is asked to do.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Steering {
    Aborted(Steered),
    Promoting(Steered),
}

#[derive(Debug, Clone, Serialize)]
pub struct Steered {
    pub version: i64,
    pub arn: String,
    pub reason: String,
}

/// One JSON line, as the CLI prints every result.
pub fn json_line<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("the result does not serialize: {e}") }).to_string()
    })
}

#[cfg(test)]
mod tests;
