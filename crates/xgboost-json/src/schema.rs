//! The parts of xgboost's JSON model format (`save_model("m.json")`, 1.x to 3.x) that
//! prediction needs. Numbers inside `learner_model_param` and `*_param` objects are strings.

use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct Document {
    pub learner: Learner,
}

#[derive(Deserialize)]
pub(crate) struct Learner {
    #[serde(default)]
    pub feature_names: Vec<String>,
    #[serde(default)]
    pub feature_types: Vec<String>,
    pub gradient_booster: GradientBooster,
    pub learner_model_param: LearnerModelParam,
    pub objective: ObjectiveDoc,
}

#[derive(Deserialize)]
pub(crate) struct LearnerModelParam {
    pub base_score: String,
    #[serde(default)]
    pub num_class: Option<String>,
    #[serde(default)]
    pub num_feature: Option<String>,
    #[serde(default)]
    pub num_target: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct ObjectiveDoc {
    pub name: String,
}

/// `gbtree` keeps its trees at `model`; `dart` nests a gbtree at `gbtree` and adds
/// `weight_drop`; `gblinear` keeps a weight matrix at `model.weights`.
#[derive(Deserialize)]
pub(crate) struct GradientBooster {
    pub name: String,
    #[serde(default)]
    pub model: Option<serde_json::Value>,
    #[serde(default)]
    pub gbtree: Option<Box<GradientBooster>>,
    #[serde(default)]
    pub weight_drop: Option<Vec<f32>>,
}

#[derive(Deserialize)]
pub(crate) struct GbTreeModel {
    pub trees: Vec<TreeDoc>,
    pub tree_info: Vec<usize>,
}

#[derive(Deserialize)]
pub(crate) struct GbLinearModel {
    pub weights: Vec<f32>,
}

#[derive(Deserialize)]
pub(crate) struct TreeDoc {
    pub left_children: Vec<i32>,
    pub right_children: Vec<i32>,
    pub split_indices: Vec<u32>,
    pub split_conditions: Vec<f32>,
    pub default_left: Vec<u8>,
    #[serde(default)]
    pub split_type: Vec<u8>,
    #[serde(default)]
    pub base_weights: Vec<f32>,
    pub tree_param: TreeParam,
}

#[derive(Deserialize)]
pub(crate) struct TreeParam {
    pub num_nodes: String,
    #[serde(default)]
    pub size_leaf_vector: Option<String>,
}

/// Parses `"5E-1"` (1.x/2.x) and `"[3.9E-1]"` / `"[1E-1,2E-1]"` (3.x).
pub(crate) fn parse_base_score(raw: &str) -> Result<Vec<f32>, String> {
    let inner = raw.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .map_err(|e| format!("base_score {raw:?}: {e}"))
        })
        .collect()
}

pub(crate) fn parse_count(field: &str, raw: Option<&String>) -> Result<usize, String> {
    match raw {
        None => Ok(0),
        Some(v) => v.trim().parse().map_err(|e| format!("{field} {v:?}: {e}")),
    }
}
