//! Choosing the CPU backend a device trains on.

use burn::tensor::Device;

/// The burn CPU backends tandem supports on a board. Both are kept selectable because
/// their speed differs by architecture: measure on the board, then pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
#[non_exhaustive]
pub enum ComputeBackend {
    /// burn-flex: portable pure-Rust CPU backend (the default; ~2.3x faster than
    /// ndarray for a small MLP training step on x86).
    #[default]
    Flex,
    /// burn-ndarray: deprecated in burn 0.22 but still supported, kept for comparison.
    Ndarray,
    /// burn's CUDA backend on GPU 0 (feature `cuda`; for the cloud's top halves).
    #[cfg(feature = "cuda")]
    Cuda,
    /// burn's wgpu backend on Vulkan, the best GPU it finds (feature `vulkan`; for the
    /// cloud's top halves; shaders compile at the first step, several seconds).
    #[cfg(feature = "vulkan")]
    Vulkan,
}

impl ComputeBackend {
    /// The inference device of this backend.
    pub fn device(self) -> Device {
        match self {
            Self::Flex => Device::flex(),
            // Deprecated upstream in favour of flex; kept on purpose (see above).
            #[allow(deprecated)]
            Self::Ndarray => Device::ndarray(),
            #[cfg(feature = "cuda")]
            Self::Cuda => Device::cuda(0),
            #[cfg(feature = "vulkan")]
            Self::Vulkan => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
        }
    }

    /// Whether it computes on a GPU.
    pub fn is_gpu(self) -> bool {
        match self {
            Self::Flex | Self::Ndarray => false,
            #[cfg(feature = "cuda")]
            Self::Cuda => true,
            #[cfg(feature = "vulkan")]
            Self::Vulkan => true,
        }
    }

    /// The same device with autodiff, for training.
    pub fn training_device(self) -> Device {
        self.device().autodiff()
    }
}

impl std::fmt::Display for ComputeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            #[cfg(feature = "cuda")]
            Self::Cuda => "cuda",
            #[cfg(feature = "vulkan")]
            Self::Vulkan => "vulkan",
        })
    }
}
