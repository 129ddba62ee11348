//! Drift of live inputs from what a model was trained on: each package carries a baseline of
//! its training features (`baseline`: bins per feature, the registry format), and a
//! `Tracker` keeps rolling windows of live values in those bins and reports, per feature,
//! the population stability index (PSI) and the missing-value rate. Incremental and bounded:
//! a row costs one binary search per feature, the window is a fixed ring of time slots.

pub mod baseline;
pub mod window;

pub use baseline::{Baseline, Column, psi};
pub use window::{FeatureDrift, Report, Tracker};
