//! The names and shapes of a model's parameters, laid end to end in one flat `f32`
//! vector: what both sides of a federated round agree on before any update counts.

use crate::codec::{MAX_ELEMENTS, Shape};
use crate::fnv;
use std::ops::Range;

/// One parameter tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Its path in the model, e.g. `conv1.weight`.
    pub name: String,
    /// Its dimensions, outermost first.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Elements in the tensor.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensor as a matrix for the codecs: the first dimension by the rest (a conv
    /// kernel `[out, in, k, k]` is `out x in*k*k`); a vector is one row.
    pub fn matrix(&self) -> Shape {
        match self.shape.split_first() {
            Some((&rows, rest)) if !rest.is_empty() => Shape::new(rows, rest.iter().product()),
            _ => Shape::new(1, self.elements()),
        }
    }
}

/// Every parameter tensor of a model, in a fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    specs: Vec<TensorSpec>,
    offsets: Vec<usize>,
    len: usize,
}

impl Layout {
    /// The layout of `specs`, in that order.
    ///
    /// # Panics
    /// If the model has more than [`MAX_ELEMENTS`] parameters (a model is built by the
    /// program, never taken from the network).
    pub fn new(specs: Vec<TensorSpec>) -> Self {
        let mut offsets = Vec::with_capacity(specs.len());
        let mut len = 0usize;
        for spec in &specs {
            offsets.push(len);
            len += spec.elements();
        }
        assert!(len <= MAX_ELEMENTS, "a model of {len} parameters");
        Self {
            specs,
            offsets,
            len,
        }
    }

    /// The tensors.
    pub fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }

    /// Parameters in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where tensor `i` lies in the flat vector.
    pub fn range(&self, i: usize) -> Range<usize> {
        self.offsets[i]..self.offsets[i] + self.specs[i].elements()
    }

    /// A fingerprint of the names and shapes (FNV-1a 64), to refuse state or updates
    /// made for another model.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = fnv::fnv1a64(&[]);
        for spec in &self.specs {
            hash = fnv::extend(hash, spec.name.as_bytes());
            hash = fnv::extend(hash, &[0]);
            for &d in &spec.shape {
                hash = fnv::extend(hash, &(d as u64).to_le_bytes());
            }
        }
        hash
    }
}
