//! The MNIST loader: a folder of IDX files, plain or gzipped.
//!
//! Reads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` (each optionally
//! with `.gz`), so both the bundled 10k subset and the full 60k/10k set
//! work. Guarantees: `x` is f32 in `0..=1` (grey level / 255), shaped
//! `[N, 1, rows, cols]` or, flattened, `[N, rows * cols]`; `y` is i64 in
//! `0..=9`, shaped `[N]`. A wrong magic number, a truncated or over-long
//! file, image and label counts that disagree and a label out of range are
//! errors naming the file.

use std::path::Path;

use super::io::{find_maybe_gz, read_all};
use super::{DataError, Dataset, HostArray, Splits};

const IMAGES_MAGIC: u32 = 2051;
const LABELS_MAGIC: u32 = 2049;
const MAX_LABEL: u8 = 9;

/// Load the train and test splits of the MNIST folder `path`.
pub fn mnist(path: impl AsRef<Path>, flatten: bool) -> Result<Splits, DataError> {
    let dir = path.as_ref();
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            expected: "a folder of MNIST IDX files".into(),
        });
    }
    let train = split(dir, "train", flatten)?;
    let test = split(dir, "t10k", flatten)?;
    Ok(Splits {
        train,
        valid: None,
        test: Some(test),
        vocab: None,
        standardization: None,
    })
}

/// One split: `{prefix}-images-idx3-ubyte` and `{prefix}-labels-idx1-ubyte`.
fn split(dir: &Path, prefix: &str, flatten: bool) -> Result<Dataset, DataError> {
    let images_path = find_maybe_gz(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_maybe_gz(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (n, rows, cols, pixels) = read_images(&images_path)?;
    let labels = read_labels(&labels_path)?;
    if labels.len() != n {
        return Err(DataError::CountMismatch {
            images: images_path,
            labels: labels_path,
            n_images: n,
            n_labels: labels.len(),
        });
    }
    let x: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
    let shape = if flatten {
        vec![n, rows * cols]
    } else {
        vec![n, 1, rows, cols]
    };
    let y: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let bad = || DataError::malformed(&images_path, "consistent sizes", "a size overflow");
    let x = HostArray::f32(shape, x).ok_or_else(bad)?;
    let y = HostArray::i64(vec![n], y).ok_or_else(bad)?;
    Dataset::new(vec![("x".into(), x), ("y".into(), y)]).ok_or_else(bad)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Check the header (`header_len` bytes, magic first) and the exact length.
fn check_len(
    path: &Path,
    bytes: &[u8],
    header_len: usize,
    magic: u32,
    what: &str,
) -> Result<(), DataError> {
    if bytes.len() >= 4 {
        let found = be_u32(bytes, 0);
        if found != magic {
            return Err(DataError::malformed(
                path,
                format!("an IDX {what} file (magic number {magic})"),
                format!("magic number {found}"),
            ));
        }
    }
    if bytes.len() < header_len {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header_len as u64,
            found: bytes.len() as u64,
        });
    }
    Ok(())
}

fn check_body(path: &Path, bytes: &[u8], expected: u64) -> Result<(), DataError> {
    let found = bytes.len() as u64;
    if found < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    if found > expected {
        return Err(DataError::malformed(
            path,
            format!("{expected} bytes as the header says"),
            format!("{found} bytes ({} trailing)", found - expected),
        ));
    }
    Ok(())
}

/// `(n, rows, cols, pixels)` of an IDX3 image file.
fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>), DataError> {
    let mut bytes = read_all(path)?;
    check_len(path, &bytes, 16, IMAGES_MAGIC, "image")?;
    let n = be_u32(&bytes, 4) as u64;
    let rows = be_u32(&bytes, 8) as u64;
    let cols = be_u32(&bytes, 12) as u64;
    let size = n
        .checked_mul(rows)
        .and_then(|x| x.checked_mul(cols))
        .and_then(|x| x.checked_add(16))
        .filter(|_| usize::try_from(rows * cols).is_ok())
        .ok_or_else(|| {
            DataError::malformed(
                path,
                "image dimensions that fit in memory",
                format!("{n} images of {rows} x {cols}"),
            )
        })?;
    check_body(path, &bytes, size)?;
    bytes.drain(..16);
    Ok((n as usize, rows as usize, cols as usize, bytes))
}

/// The labels of an IDX1 label file, each checked to be in `0..=9`.
fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut bytes = read_all(path)?;
    check_len(path, &bytes, 8, LABELS_MAGIC, "label")?;
    let n = be_u32(&bytes, 4) as u64;
    check_body(path, &bytes, 8 + n)?;
    bytes.drain(..8);
    if let Some((index, &label)) = bytes.iter().enumerate().find(|(_, &l)| l > MAX_LABEL) {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label,
            max: MAX_LABEL,
        });
    }
    Ok(bytes)
}
