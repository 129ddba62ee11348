//! Objectives: how xgboost turns the stored `base_score` into a starting margin, and the
//! margin into the value `predict` returns. Computed in f32, as xgboost does.

use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// `reg:squarederror` and the other identity-link regressions, `rank:*`.
    Identity,
    /// `binary:logistic`, `reg:logistic`: base_score is a probability.
    Logistic,
    /// `binary:logitraw`: base_score is a probability, the output is the raw margin.
    LogitRaw,
    /// `binary:hinge`: 1 when the margin is positive, else 0.
    Hinge,
    /// `count:poisson`, `reg:gamma`, `reg:tweedie`, `survival:cox`, `survival:aft`: log link.
    Exp,
    /// `multi:softprob`: one probability per class.
    SoftProb,
    /// `multi:softmax`: the index of the most likely class.
    SoftMax,
}

impl Objective {
    pub fn from_name(name: &str) -> Result<Self, Error> {
        Ok(match name {
            "reg:squarederror"
            | "reg:linear"
            | "reg:squaredlogerror"
            | "reg:pseudohubererror"
            | "reg:absoluteerror"
            | "reg:quantileerror"
            | "rank:pairwise"
            | "rank:ndcg"
            | "rank:map" => Objective::Identity,
            "binary:logistic" | "reg:logistic" => Objective::Logistic,
            "binary:logitraw" => Objective::LogitRaw,
            "binary:hinge" => Objective::Hinge,
            "count:poisson" | "reg:gamma" | "reg:tweedie" | "survival:cox" | "survival:aft" => {
                Objective::Exp
            }
            "multi:softprob" => Objective::SoftProb,
            "multi:softmax" => Objective::SoftMax,
            other => return Err(Error::Unsupported(format!("objective {other:?}"))),
        })
    }

    /// The starting margin for one output group, from the stored base_score.
    pub(crate) fn base_margin(self, base_score: f32) -> f32 {
        match self {
            Objective::Logistic | Objective::LogitRaw => -(1.0f32 / base_score - 1.0f32).ln(),
            Objective::Exp => base_score.ln(),
            _ => base_score,
        }
    }

    /// How many values `predict` returns per row for a model with `groups` output groups.
    pub(crate) fn outputs(self, groups: usize) -> usize {
        match self {
            Objective::SoftMax => 1,
            _ => groups,
        }
    }

    /// Turns the margins of one row into the returned values (`out.len() == outputs()`).
    pub(crate) fn transform(self, margins: &[f32], out: &mut [f32]) {
        match self {
            Objective::Identity | Objective::LogitRaw => out.copy_from_slice(margins),
            Objective::Logistic => {
                for (o, &m) in out.iter_mut().zip(margins) {
                    *o = sigmoid(m);
                }
            }
            Objective::Hinge => {
                for (o, &m) in out.iter_mut().zip(margins) {
                    *o = if m > 0.0 { 1.0 } else { 0.0 };
                }
            }
            Objective::Exp => {
                for (o, &m) in out.iter_mut().zip(margins) {
                    *o = m.exp();
                }
            }
            Objective::SoftProb => softmax(margins, out),
            Objective::SoftMax => {
                let mut best = 0;
                for (i, &m) in margins.iter().enumerate() {
                    if m > margins[best] {
                        best = i;
                    }
                }
                out[0] = best as f32;
            }
        }
    }
}

/// xgboost's `common::Sigmoid`.
fn sigmoid(x: f32) -> f32 {
    const EPS: f32 = 1e-16;
    1.0f32 / ((-x).exp() + 1.0f32 + EPS)
}

/// xgboost's `common::Softmax`: subtract the max, exponentiate, normalise, in f32.
fn softmax(margins: &[f32], out: &mut [f32]) {
    let max = margins.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (o, &m) in out.iter_mut().zip(margins) {
        *o = (m - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}
