//! Loading the pretrained weights from the cache that `cargo xtask setup` fills.

use burn::module::Module;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use std::path::{Path, PathBuf};

/// Tensors in all-MiniLM-L6-v2's checkpoint that are parameters (its 104 entries less
/// the `position_ids` buffer).
pub const CHECKPOINT_TENSORS: usize = 103;

/// Why the model could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The cache lacks a file: the set-up step has not run.
    #[error(
        "{path} is missing: run `cargo xtask setup` (it downloads all-MiniLM-L6-v2 into the cache)"
    )]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// The file is there but burn-store could not read it.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// burn-store's or the tokenizer's error.
        reason: String,
    },
    /// The checkpoint does not fit the model: tensors missing, unused or misshapen.
    #[error("{path} is not all-MiniLM-L6-v2: {reason}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What did not fit.
        reason: String,
    },
}

/// Where the model lives: `<cache>/minilm`.
pub fn model_dir() -> PathBuf {
    crate::paths::cache_dir().join("minilm")
}

/// `dir/name`, or [`ModelError::Missing`].
pub(super) fn existing(dir: &Path, name: &str) -> Result<PathBuf, ModelError> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::Missing { path })
    }
}

/// Applies `dir/model.safetensors` to `model`; every parameter must be loaded and
/// every checkpoint tensor but `position_ids` used.
pub(super) fn load<M: Module + ModuleSnapshot>(mut model: M, dir: &Path) -> Result<M, ModelError> {
    let path = existing(dir, "model.safetensors")?;
    let mut store = SafetensorsStore::from_file(&path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .with_key_remapping(r"\.LayerNorm\.", ".layer_norm.")
        .with_key_remapping(r"attention\.self\.", "attention.self_attn.")
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|err| ModelError::Unreadable {
            path: path.clone(),
            reason: err.to_string(),
        })?;
    let unused: Vec<_> = result
        .unused
        .iter()
        .filter(|key| !key.ends_with("position_ids"))
        .collect();
    let mismatch = |reason: String| ModelError::Mismatch {
        path: path.clone(),
        reason,
    };
    if !result.errors.is_empty() {
        return Err(mismatch(format!("{:?}", result.errors.first())));
    }
    if !result.missing.is_empty() || !unused.is_empty() {
        return Err(mismatch(format!(
            "{} parameters not in the file (first {:?}), {} tensors unused (first {:?})",
            result.missing.len(),
            result.missing.first().map(|m| &m.0),
            unused.len(),
            unused.first()
        )));
    }
    if result.applied.len() != CHECKPOINT_TENSORS {
        return Err(mismatch(format!(
            "{} tensors applied, expected {CHECKPOINT_TENSORS}",
            result.applied.len()
        )));
    }
    Ok(model)
}
