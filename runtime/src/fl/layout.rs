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

    /// The layout of task `fmnist`'s LeNet-5 (61,706 parameters; burn's `Linear` keeps
    /// its weight as `[in, out]`), known without building the model: for benchmarks of
    /// the update codecs in builds without burn. `fmnist`'s tests check it against the
    /// model.
    pub fn lenet5() -> Self {
        let specs = [
            ("conv1.weight", &[6, 1, 5, 5][..]),
            ("conv1.bias", &[6]),
            ("conv2.weight", &[16, 6, 5, 5]),
            ("conv2.bias", &[16]),
            ("fc1.weight", &[400, 120]),
            ("fc1.bias", &[120]),
            ("fc2.weight", &[120, 84]),
            ("fc2.bias", &[84]),
            ("fc3.weight", &[84, 10]),
            ("fc3.bias", &[10]),
        ];
        Self::from_shapes(&specs)
    }

    /// The layout of `(name, shape)` pairs, in that order (panics as [`Layout::new`]).
    pub fn from_shapes(specs: &[(&str, &[usize])]) -> Self {
        Self::new(
            specs
                .iter()
                .map(|(name, shape)| TensorSpec {
                    name: (*name).to_string(),
                    shape: shape.to_vec(),
                })
                .collect(),
        )
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
