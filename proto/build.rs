//! Compiles the `.proto` contracts with `protox` (pure Rust), so a machine with only cargo
//! builds them: no system `protoc`.
use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "mlops/predictor/v1/predictor.proto",
    "mlops/interaction/v1/interaction.proto",
    "mlops/registry/v1/registry.proto",
    "inference/open_inference.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=mlops");
    println!("cargo:rerun-if-changed=inference");
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("mlops_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
