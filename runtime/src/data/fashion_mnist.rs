//! Fashion-MNIST (Xiao et al. 2017) from IDX files: Debian's `dataset-fashion-mnist`
//! (`/usr/share/datasets/fashion-mnist/`, installed by `cargo xtask setup`) or a board's
//! own directory of the same four files, gzipped or not.
//!
//! Every size comes from the file, so every size is checked before anything is allocated:
//! 28 x 28 images only, at most [`MAX_ITEMS`] items, labels below [`CLASSES`], and the
//! byte count must match the header exactly.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Where Debian's package puts the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Image side in pixels.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;
/// Label classes (T-shirt/top .. ankle boot).
pub const CLASSES: usize = 10;
/// Items per file at most (the real training file has 60,000).
pub const MAX_ITEMS: usize = 1 << 20;

const IMAGES_MAGIC: u32 = 0x0803;
const LABELS_MAGIC: u32 = 0x0801;

/// Why a data set could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdxError {
    /// The file is not there (the set-up step installs Debian's copy).
    #[error(
        "{path}: not found (run `cargo xtask setup`, which installs Debian's dataset-fashion-mnist, or pass --data DIR)"
    )]
    Missing {
        /// The file looked for.
        path: PathBuf,
    },
    /// Reading failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The bytes are not an IDX file of the expected kind and size.
    #[error("{path}: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, for a person.
        what: String,
    },
}

/// Images and labels of one split.
#[derive(Clone, Debug, Default)]
pub struct Images {
    /// `len * PIXELS` pixels, row-major, 0..=255.
    pub pixels: Vec<u8>,
    /// One label per image, below [`CLASSES`].
    pub labels: Vec<u8>,
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Self {
        let mut out = Self {
            pixels: Vec::with_capacity(indices.len() * PIXELS),
            labels: Vec::with_capacity(indices.len()),
        };
        for &i in indices {
            out.pixels.extend_from_slice(self.image(i));
            out.labels.push(self.labels[i]);
        }
        out
    }
}

/// The training and test splits.
#[derive(Clone, Debug, Default)]
pub struct FashionMnist {
    /// 60,000 training images in the real set.
    pub train: Images,
    /// 10,000 test images.
    pub test: Images,
}

impl FashionMnist {
    /// Reads `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, IdxError> {
        Ok(Self {
            train: load_split(dir, "train")?,
            test: load_split(dir, "t10k")?,
        })
    }

    /// Debian's copy.
    pub fn default_dir() -> PathBuf {
        PathBuf::from(DEBIAN_DIR)
    }
}

/// Reads one split's image and label files from `dir`.
pub fn load_split(dir: &Path, prefix: &str) -> Result<Images, IdxError> {
    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_capped(&images_path, 16 + MAX_ITEMS * PIXELS)?;
    let labels = read_capped(&labels_path, 8 + MAX_ITEMS)?;
    parse(&images, &labels).map_err(|what| IdxError::Malformed {
        path: if what.starts_with("labels") {
            labels_path
        } else {
            images_path
        },
        what,
    })
}

/// `name.gz` or `name` in `dir`.
fn find(dir: &Path, name: &str) -> Result<PathBuf, IdxError> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.exists() {
        return Ok(gz);
    }
    let plain = dir.join(name);
    if plain.exists() {
        return Ok(plain);
    }
    Err(IdxError::Missing { path: gz })
}

/// The (decompressed) bytes of `path`, refusing more than `cap`.
fn read_capped(path: &Path, cap: usize) -> Result<Vec<u8>, IdxError> {
    let io = |error| IdxError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut bytes = Vec::new();
    reader
        .take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > cap {
        return Err(IdxError::Malformed {
            path: path.to_path_buf(),
            what: format!("more than {cap} bytes; not a Fashion-MNIST file"),
        });
    }
    Ok(bytes)
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Checks the two headers against each other and the byte counts, then takes the data.
pub fn parse(images: &[u8], labels: &[u8]) -> Result<Images, String> {
    let header = |bytes: &[u8], at| {
        be_u32(bytes, at).ok_or(if std::ptr::eq(bytes, labels) {
            "labels: truncated header"
        } else {
            "images: truncated header"
        })
    };
    if header(images, 0)? != IMAGES_MAGIC {
        return Err("images: not an IDX u8 3-D file (magic 0x00000803)".into());
    }
    if header(labels, 0)? != LABELS_MAGIC {
        return Err("labels: not an IDX u8 1-D file (magic 0x00000801)".into());
    }
    let count = header(images, 4)? as usize;
    let (rows, cols) = (header(images, 8)? as usize, header(images, 12)? as usize);
    if (rows, cols) != (SIDE, SIDE) {
        return Err(format!("images: {rows}x{cols}, expected {SIDE}x{SIDE}"));
    }
    if count > MAX_ITEMS {
        return Err(format!("images: {count} items, more than {MAX_ITEMS}"));
    }
    if images.len() != 16 + count * PIXELS {
        return Err(format!(
            "images: {} bytes for {count} images, expected {}",
            images.len(),
            16 + count * PIXELS
        ));
    }
    let label_count = header(labels, 4)? as usize;
    if label_count != count || labels.len() != 8 + count {
        return Err(format!(
            "labels: {label_count} labels in {} bytes for {count} images",
            labels.len()
        ));
    }
    let labels = labels[8..].to_vec();
    if let Some(at) = labels.iter().position(|&l| l as usize >= CLASSES) {
        return Err(format!(
            "labels: label {} at {at} is not below {CLASSES}",
            labels[at]
        ));
    }
    Ok(Images {
        pixels: images[16..].to_vec(),
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(count: u32, side: u32) -> (Vec<u8>, Vec<u8>) {
        let mut images = [IMAGES_MAGIC, count, side, side]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<_>>();
        images.extend((0..count as usize * (side * side) as usize).map(|i| (i % 251) as u8));
        let mut labels = [LABELS_MAGIC, count]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<_>>();
        labels.extend((0..count).map(|i| (i % 10) as u8));
        (images, labels)
    }

    #[test]
    fn reads_a_well_formed_pair_and_refuses_every_inconsistency() {
        let (images, labels) = idx(3, 28);
        let set = parse(&images, &labels).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.image(1)[0], (PIXELS % 251) as u8);
        assert_eq!(set.labels, [0, 1, 2]);
        assert_eq!(set.select(&[2, 0]).labels, [2, 0]);

        let (small, small_labels) = idx(3, 27);
        assert!(parse(&small, &small_labels).unwrap_err().contains("27x27"));
        assert!(parse(&images[..images.len() - 1], &labels).is_err());
        assert!(parse(&images, &labels[..labels.len() - 1]).is_err());
        assert!(parse(&labels, &images).is_err());
        let mut bad = labels.clone();
        bad[9] = 10;
        assert!(parse(&images, &bad).unwrap_err().contains("not below"));
        // A header announcing 2^32-1 images is refused before any allocation.
        let mut huge = images.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse(&huge, &labels).unwrap_err().contains("more than"));
        assert!(parse(&[], &[]).is_err());
    }

    #[test]
    fn missing_files_name_the_set_up_step() {
        let err = load_split(Path::new("/nonexistent-tandem-dir"), "train").unwrap_err();
        assert!(err.to_string().contains("cargo xtask setup"), "{err}");
    }
}
