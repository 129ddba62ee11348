//! The gRPC contracts of the inference service. The `.proto` files under `proto/` are the
//! source of truth; this crate only compiles them and exports the descriptor set that every
//! server registers with `tonic-reflection` (so `grpcurl` works without the files).

pub mod predictor {
    pub mod v1 {
        tonic::include_proto!("mlops.predictor.v1");
    }
}

pub mod interaction {
    pub mod v1 {
        tonic::include_proto!("mlops.interaction.v1");
    }
}

pub mod registry {
    pub mod v1 {
        tonic::include_proto!("mlops.registry.v1");
    }
}

/// The Open Inference Protocol's gRPC API (package `inference`), which the gateway serves.
pub mod inference {
    tonic::include_proto!("inference");
}

/// The most interactions one `InteractionLogger/Log` call may carry: the logger refuses more,
/// the gateway sends no more.
pub const MAX_INTERACTIONS_PER_LOG: usize = 1000;

/// The most bytes of interactions one `Log` call carries: under gRPC's default 4 MiB message
/// limit (which the logger keeps), with room for the envelope.
pub const MAX_LOG_CALL_BYTES: usize = 3 << 20;

/// Encoded `FileDescriptorSet` of every contract, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mlops_descriptor.bin"));
