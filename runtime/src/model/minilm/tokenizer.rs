//! The model's WordPiece tokenizer (its cached `tokenizer.json`), producing right-padded
//! batches sized to their longest sequence.

use super::load::{ModelError, existing};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// A tokenized, right-padded batch. Padding id is 0 (`[PAD]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// `seq_lens.len() * seq` token ids, row-major.
    pub ids: Vec<i64>,
    /// Real tokens in each sequence (the attention mask), each >= 1.
    pub seq_lens: Vec<usize>,
    /// Padded length: the longest sequence.
    pub seq: usize,
}

impl Batch {
    /// The rows of token ids, right-padded with 0 to the longest.
    pub fn padded<R: AsRef<[u32]>>(rows: &[R]) -> Self {
        let seq = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * seq);
        let mut seq_lens = Vec::with_capacity(rows.len());
        for row in rows {
            let row = row.as_ref();
            seq_lens.push(row.len());
            ids.extend(row.iter().map(|&id| i64::from(id)));
            ids.resize(ids.len() + seq - row.len(), 0);
        }
        Self { ids, seq_lens, seq }
    }

    /// Sequences in the batch.
    pub fn len(&self) -> usize {
        self.seq_lens.len()
    }

    /// Whether the batch has no sequences.
    pub fn is_empty(&self) -> bool {
        self.seq_lens.is_empty()
    }

    /// Real (unpadded) tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.seq_lens.iter().sum()
    }
}

/// all-MiniLM-L6-v2's tokenizer, with its fixed padding to 128 turned off.
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`; sequences are cut at `max_len` tokens (special
    /// tokens included).
    pub fn load(dir: &Path, max_len: usize) -> Result<Self, ModelError> {
        let path = existing(dir, "tokenizer.json")?;
        let unreadable = |reason: String| ModelError::Unreadable {
            path: path.clone(),
            reason,
        };
        let mut inner = Tokenizer::from_file(&path).map_err(|e| unreadable(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len.max(2),
                ..TruncationParams::default()
            }))
            .map_err(|e| unreadable(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Tokenizes `texts` (with `[CLS]` and `[SEP]`) and pads them to the longest.
    pub fn batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Batch, ModelError> {
        let rows = texts
            .iter()
            .map(|text| self.ids(text.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batch::padded(&rows))
    }

    /// The token ids of `text`, with `[CLS]` and `[SEP]`, cut at the tokenizer's length.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Unreadable {
                path: "tokenizer.json".into(),
                reason: e.to_string(),
            })?;
        Ok(encoding.get_ids().to_vec())
    }
}
