//! Codec errors.

use super::Shape;
use crate::wire::CodecDesc;

/// Why a tensor could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum CodecError {
    /// The input holds NaN or infinity (element `at`).
    #[error("tensor holds a non-finite value at element {at}")]
    NonFinite {
        /// First offending element.
        at: usize,
    },
    /// The data's length does not match its shape.
    #[error("{found} values do not fill a {}x{} tensor", .shape.rows, .shape.cols)]
    ShapeMismatch {
        /// The shape announced.
        shape: Shape,
        /// Values given.
        found: usize,
    },
    /// The shape has more than `MAX_ELEMENTS` elements.
    #[error("a {}x{} tensor is over the size limit", .0.rows, .0.cols)]
    ShapeTooLarge(Shape),
    /// This build cannot encode or decode the codec (or its parameters).
    #[error("unsupported codec {0:?}")]
    Unsupported(CodecDesc),
    /// Fewer bytes than the codec and shape need.
    #[error("encoded tensor truncated: {found} bytes, expected {expected}")]
    Truncated {
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// More bytes than the codec and shape produce.
    #[error("encoded tensor oversized: {found} bytes, expected {expected}")]
    Oversized {
        /// Bytes expected.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The bytes contradict themselves (e.g. a non-increasing TopK index, a negative
    /// scale, a non-finite value).
    #[error("encoded tensor inconsistent: {0}")]
    Inconsistent(&'static str),
    /// ACP encodes and decodes against the round's shared factor, which was not given.
    #[error("ACP needs the round's shared factor")]
    NeedsSharedFactor,
    /// No candidate met the target (chooser).
    #[error("no codec meets the target; best relative error {best_error:.3} at {best_bytes} bytes")]
    TargetUnreachable {
        /// Lowest error any candidate reached.
        best_error: f64,
        /// Its size.
        best_bytes: usize,
    },
    /// A kernel refused its input.
    #[error(transparent)]
    Kernel(#[from] tandem_kernels::KernelError),
}
