//! The SLC edge service. The HTTP layer lands with the edge-service issue.

pub mod cli;

/// Whether libtorch can see a CUDA device from this binary.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}
