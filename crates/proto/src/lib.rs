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

/// Encoded `FileDescriptorSet` of every contract, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mlops_descriptor.bin"));
