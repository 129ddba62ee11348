//! End-to-end tests: sagemaker-local on 127.0.0.1:0, driven by the real aws-sdk-rust
//! clients of all three APIs (one test binary, so it links once).

mod auth;
mod batch_write;
mod endpoints;
mod expiry_and_deletes;
mod featurestore;
mod helpers;
mod registry;
mod restart;
