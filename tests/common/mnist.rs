//! MNIST subsets for the training and attack tests: the first samples of
//! the bundled 10k set written back as plain IDX files.

use std::io::Write;
use std::path::Path;

use deqc::train::data::{self, Dataset, HostData};

/// Write the first `n` samples of a split as plain IDX files.
pub fn write_idx(dir: &Path, prefix: &str, ds: &Dataset, n: usize) {
    let x = ds.field("x").unwrap();
    let y = ds.field("y").unwrap();
    let (HostData::F32(px), HostData::I64(labels)) = (&x.data, &y.data) else {
        panic!("mnist fields")
    };
    let mut images = Vec::new();
    for v in [2051u32, n as u32, 28, 28] {
        images.extend(v.to_be_bytes());
    }
    images.extend(px[..n * 784].iter().map(|p| (p * 255.0).round() as u8));
    let mut labs = Vec::new();
    for v in [2049u32, n as u32] {
        labs.extend(v.to_be_bytes());
    }
    labs.extend(labels[..n].iter().map(|l| *l as u8));
    std::fs::File::create(dir.join(format!("{prefix}-images-idx3-ubyte")))
        .unwrap()
        .write_all(&images)
        .unwrap();
    std::fs::File::create(dir.join(format!("{prefix}-labels-idx1-ubyte")))
        .unwrap()
        .write_all(&labs)
        .unwrap();
}

/// The first `train` training and `test` test samples of the bundled MNIST
/// set, as an IDX folder at `dir` (created).
pub fn write_subset(dir: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let full = data::mnist("data/mnist-10k", true).expect("bundled MNIST");
    write_idx(dir, "train", &full.train, train);
    write_idx(dir, "t10k", full.test.as_ref().unwrap(), test);
}
