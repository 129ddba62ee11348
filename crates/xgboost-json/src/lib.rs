//! Evaluates XGBoost models saved in xgboost's JSON format, giving the same numbers as
//! `Booster.predict`: f32 features and splits, f32 accumulation in tree order, and the
//! objective's own output transform.
//!
//! Supported: `gbtree`, `dart` (per-tree `weight_drop`), `gblinear`; scalar and vector leaves
//! (`multi_strategy="multi_output_tree"`); every objective listed in [`Objective`].
//! Categorical splits are refused with [`Error::Unsupported`].

mod objective;
mod schema;
mod tree;

pub use objective::Objective;
use schema::{Document, GbLinearModel, GbTreeModel, parse_base_score, parse_count};
use tree::Forest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not an XGBoost JSON model: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported XGBoost model: {0}")]
    Unsupported(String),
    #[error("invalid XGBoost model: {0}")]
    Invalid(String),
}

/// Batches at least this large are predicted on several threads.
pub const PARALLEL_ROWS: usize = 512;

/// The cores a large batch is split across (at most 8), looked up once.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |t| t.get())
            .min(8)
    })
}

/// A loaded model, ready to predict. Cheap to share across threads.
#[derive(Debug)]
pub struct Model {
    objective: Objective,
    /// Starting margin of each output group.
    base_margin: Vec<f32>,
    num_feature: usize,
    feature_names: Vec<String>,
    booster: Booster,
}

#[derive(Debug)]
enum Booster {
    Trees(Forest),
    /// `(num_feature + 1) * groups` weights, feature-major, the bias row last.
    Linear(Vec<f32>),
}

impl Model {
    /// Loads a model from the bytes of an XGBoost JSON file.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let doc: Document = serde_json::from_slice(bytes)?;
        let learner = doc.learner;
        let objective = Objective::from_name(&learner.objective.name)?;
        if learner.feature_types.iter().any(|t| t == "c") {
            return Err(Error::Unsupported("categorical features".into()));
        }
        let param = &learner.learner_model_param;
        let num_class =
            parse_count("num_class", param.num_class.as_ref()).map_err(Error::Invalid)?;
        let num_target =
            parse_count("num_target", param.num_target.as_ref()).map_err(Error::Invalid)?;
        let num_feature =
            parse_count("num_feature", param.num_feature.as_ref()).map_err(Error::Invalid)?;
        let groups = num_class.max(num_target).max(1);

        let base_scores = parse_base_score(&param.base_score).map_err(Error::Invalid)?;
        let base_margin: Vec<f32> = match base_scores.len() {
            1 => vec![objective.base_margin(base_scores[0]); groups],
            n if n == groups => base_scores
                .iter()
                .map(|&b| objective.base_margin(b))
                .collect(),
            n => {
                return Err(Error::Invalid(format!(
                    "base_score has {n} values for {groups} output groups"
                )));
            }
        };

        let booster = load_booster(&learner.gradient_booster, groups, num_feature)?;
        Ok(Model {
            objective,
            base_margin,
            num_feature,
            feature_names: learner.feature_names,
            booster,
        })
    }

    /// Number of features a row must have.
    pub fn num_features(&self) -> usize {
        self.num_feature
    }

    /// Feature names, when the model was trained with named columns.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// Values returned per row: 1, or K for `multi:softprob` / multi-target models.
    pub fn num_outputs(&self) -> usize {
        self.objective.outputs(self.base_margin.len())
    }

    /// Predicts one row (`row.len() == num_features()`, NaN = missing) into
    /// `out` (`out.len() == num_outputs()`).
    pub fn predict_row(&self, row: &[f32], out: &mut [f32]) {
        let mut margins = [0f32; 16];
        let groups = self.base_margin.len();
        if groups <= margins.len() {
            self.predict_with(row, &mut margins[..groups], out);
        } else {
            self.predict_with(row, &mut vec![0f32; groups], out);
        }
    }

    /// Predicts `rows.len() / num_features()` rows stored row-major; returns
    /// `num_outputs()` values per row.
    /// Batches of [`PARALLEL_ROWS`] rows or more are split across the machine's cores.
    pub fn predict(&self, rows: &[f32]) -> Vec<f32> {
        let width = self.num_feature.max(1);
        let outputs = self.num_outputs();
        let n = rows.len() / width;
        let mut out = vec![0f32; n * outputs];
        // Small batches never ask: `available_parallelism` reads cgroup files on every call.
        let threads = if n < PARALLEL_ROWS { 1 } else { cores() };
        if threads < 2 {
            self.predict_into(&rows[..n * width], &mut out);
            return out;
        }
        let per = n.div_ceil(threads);
        std::thread::scope(|scope| {
            for (rows, out) in rows[..n * width]
                .chunks(per * width)
                .zip(out.chunks_mut(per * outputs))
            {
                scope.spawn(move || self.predict_into(rows, out));
            }
        });
        out
    }

    fn predict_into(&self, rows: &[f32], out: &mut [f32]) {
        let width = self.num_feature.max(1);
        let mut margins = vec![0f32; self.base_margin.len()];
        for (row, dst) in rows
            .chunks_exact(width)
            .zip(out.chunks_exact_mut(self.num_outputs()))
        {
            self.predict_with(row, &mut margins, dst);
        }
    }

    fn predict_with(&self, row: &[f32], margins: &mut [f32], out: &mut [f32]) {
        margins.copy_from_slice(&self.base_margin);
        match &self.booster {
            Booster::Trees(forest) => forest.accumulate(row, margins),
            Booster::Linear(weights) => {
                let groups = margins.len();
                for (g, m) in margins.iter_mut().enumerate() {
                    let mut psum = weights[self.num_feature * groups + g];
                    for (i, &x) in row.iter().enumerate() {
                        if !x.is_nan() {
                            psum += x * weights[i * groups + g];
                        }
                    }
                    *m += psum;
                }
            }
        }
        self.objective.transform(margins, out);
    }
}

fn load_booster(
    gb: &schema::GradientBooster,
    groups: usize,
    num_feature: usize,
) -> Result<Booster, Error> {
    let model_of = |gb: &schema::GradientBooster| {
        gb.model
            .clone()
            .ok_or_else(|| Error::Invalid(format!("{} booster without a model", gb.name)))
    };
    match gb.name.as_str() {
        "gbtree" => {
            let model: GbTreeModel = serde_json::from_value(model_of(gb)?)?;
            Ok(Booster::Trees(Forest::build(&model, None, groups)?))
        }
        "dart" => {
            let inner = gb
                .gbtree
                .as_deref()
                .ok_or_else(|| Error::Invalid("dart booster without gbtree".into()))?;
            let model: GbTreeModel = serde_json::from_value(model_of(inner)?)?;
            let weights = gb.weight_drop.as_deref().unwrap_or(&[]);
            Ok(Booster::Trees(Forest::build(
                &model,
                Some(weights),
                groups,
            )?))
        }
        "gblinear" => {
            let model: GbLinearModel = serde_json::from_value(model_of(gb)?)?;
            let expected = (num_feature + 1) * groups;
            if model.weights.len() != expected {
                return Err(Error::Invalid(format!(
                    "gblinear has {} weights, expected {expected}",
                    model.weights.len()
                )));
            }
            Ok(Booster::Linear(model.weights))
        }
        other => Err(Error::Unsupported(format!("booster {other:?}"))),
    }
}

#[cfg(test)]
mod tests;
