//! Errors of the kernels that validate their input.

/// Why a kernel refused its input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// Two inputs that must have the same length do not.
    #[error("length mismatch: {what} has {found} elements, expected {expected}")]
    LengthMismatch {
        /// Which input.
        what: &'static str,
        /// Its length.
        found: usize,
        /// The length it must have.
        expected: usize,
    },
    /// The input holds nothing to compute over.
    #[error("empty input: {0}")]
    Empty(&'static str),
    /// A parameter is outside its documented range.
    #[error("{name} = {value} is outside {range}")]
    OutOfRange {
        /// The parameter.
        name: &'static str,
        /// Its value, printed.
        value: String,
        /// The allowed range, printed.
        range: &'static str,
    },
}

impl KernelError {
    /// `Ok` if `found == expected`, else [`KernelError::LengthMismatch`] naming `what`.
    pub(crate) fn check_len(what: &'static str, found: usize, expected: usize) -> Result<(), Self> {
        if found == expected {
            Ok(())
        } else {
            Err(Self::LengthMismatch {
                what,
                found,
                expected,
            })
        }
    }
}
