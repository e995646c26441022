//! Data sets as host arrays, and their batches as candle tensors.
//!
//! Owns [`Dataset`] (named fields such as `x` and `y`, each a host array
//! whose first dimension is the sample index), the batch iterator
//! [`Batches`], the loaders of the `train` block's `data` setting
//! ([`load`], [`mnist`], [`text`], [`csv`]) and their error type
//! [`DataError`].
//!
//! Guarantees:
//! - Every field of a data set has the same number of samples.
//! - Shuffling is a pure function of `(seed, epoch)` ([`epoch_order`]): the
//!   order of epoch `e` can be rebuilt after a restart with no RNG state, and
//!   it does not depend on the platform or on the version of any crate.
//! - Batches have `batch_size` samples except the last, which holds the
//!   remainder (`n % batch_size` samples, when that is not zero): the last
//!   partial batch is kept, never dropped or padded.
//! - Loaders never panic on user files: a missing, truncated or malformed
//!   file is a [`DataError`] naming the file and what was expected.

mod csv;
mod io;
mod mnist;
pub mod normalize;
pub mod subset;
mod text;

pub use self::csv::csv;
pub use self::mnist::mnist;
pub use self::text::{text, Vocab, EOS_TOKEN, UNK_TOKEN};

use std::path::PathBuf;

use candle_core::{Device, Tensor};

use crate::sema::spec::DataSpec;

/// Everything that can go wrong while loading a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not found; expected {expected}")]
    Missing { path: PathBuf, expected: String },
    #[error("{path}: expected {expected}, found {found}")]
    Malformed {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: truncated: expected {expected} bytes, found {found}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels")]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        n_images: usize,
        n_labels: usize,
    },
    #[error("{path}: label {label} of sample {index} is out of range; expected 0..={max}")]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        max: u8,
    },
    #[error("{path}:{line}: expected {expected} cells like the header, found {found}")]
    RaggedRow {
        path: PathBuf,
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("{path}:{line}: column `{column}`: expected a number, found `{cell}`")]
    NonNumeric {
        path: PathBuf,
        line: usize,
        column: String,
        cell: String,
    },
    #[error("data subset: {0}")]
    Subset(String),
    #[error("{path}: no target column `{target}`; the header has {columns:?}")]
    MissingTarget {
        path: PathBuf,
        target: String,
        columns: Vec<String>,
    },
}

impl DataError {
    pub(crate) fn malformed(
        path: impl Into<PathBuf>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> DataError {
        DataError::Malformed {
            path: path.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// The element type and values of one field, `shape[0]` samples.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// One field of a data set: values in row-major order and a shape whose
/// first dimension is the number of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct HostArray {
    pub shape: Vec<usize>,
    pub data: HostData,
}

impl HostArray {
    /// `None` when the number of values disagrees with the shape or the shape
    /// has no sample dimension.
    pub fn new(shape: Vec<usize>, data: HostData) -> Option<HostArray> {
        let len = match &data {
            HostData::F32(v) => v.len(),
            HostData::I64(v) => v.len(),
        };
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        (!shape.is_empty() && count == Some(len)).then_some(HostArray { shape, data })
    }

    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Option<HostArray> {
        HostArray::new(shape, HostData::F32(data))
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Option<HostArray> {
        HostArray::new(shape, HostData::I64(data))
    }

    /// Number of samples (the first dimension).
    pub fn len(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values of one sample.
    pub fn sample_size(&self) -> usize {
        self.shape.get(1..).unwrap_or_default().iter().product()
    }

    /// The samples `indices`, in that order, as a tensor of shape
    /// `[indices.len(), shape[1..]..]` on `device`.
    pub fn gather(&self, indices: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        let k = self.sample_size();
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = indices.len();
        }
        fn pick<T: Copy>(v: &[T], indices: &[usize], k: usize) -> candle_core::Result<Vec<T>> {
            let mut out = Vec::with_capacity(indices.len() * k);
            for &i in indices {
                let row = v.get(i * k..(i + 1) * k).ok_or_else(|| {
                    candle_core::Error::Msg(format!("sample index {i} out of range"))
                })?;
                out.extend_from_slice(row);
            }
            Ok(out)
        }
        match &self.data {
            HostData::F32(v) => Tensor::from_vec(pick(v, indices, k)?, shape, device),
            HostData::I64(v) => Tensor::from_vec(pick(v, indices, k)?, shape, device),
        }
    }
}

/// A data set split: named fields with the same number of samples. The
/// fields are in the order in which they feed the model; the last one is
/// the target of the loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    fields: Vec<(String, HostArray)>,
}

impl Dataset {
    /// `None` when there are no fields or their sample counts disagree.
    pub fn new(fields: Vec<(String, HostArray)>) -> Option<Dataset> {
        let n = fields.first()?.1.len();
        fields
            .iter()
            .all(|(_, a)| a.len() == n)
            .then_some(Dataset { fields })
    }

    pub fn fields(&self) -> &[(String, HostArray)] {
        &self.fields
    }

    pub fn field(&self, name: &str) -> Option<&HostArray> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }

    /// Mutable access to one field's values (its shape is fixed).
    pub(crate) fn field_mut(&mut self, name: &str) -> Option<&mut HostArray> {
        self.fields
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.fields.first().map_or(0, |(_, a)| a.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches per epoch, counting the last partial batch.
    pub fn num_batches(&self, batch_size: usize) -> usize {
        self.len().div_ceil(batch_size.max(1))
    }

    /// The batches of one epoch, in order (no shuffling).
    pub fn batches(&self, batch_size: usize, device: &Device) -> Batches<'_> {
        self.batches_in_order((0..self.len()).collect(), batch_size, device)
    }

    /// The batches of epoch `epoch`, shuffled by [`epoch_order`]`(n, seed,
    /// epoch)`. To resume in the middle of an epoch, call `.nth(k)` or
    /// `.skip(k)`: skipped batches are never built.
    pub fn shuffled_batches(
        &self,
        batch_size: usize,
        seed: u64,
        epoch: u64,
        device: &Device,
    ) -> Batches<'_> {
        self.batches_in_order(epoch_order(self.len(), seed, epoch), batch_size, device)
    }

    /// The batches of the samples `order`, in that order.
    pub fn batches_in_order(
        &self,
        order: Vec<usize>,
        batch_size: usize,
        device: &Device,
    ) -> Batches<'_> {
        Batches {
            data: self,
            order,
            batch_size: batch_size.max(1),
            next: 0,
            device: device.clone(),
        }
    }
}

/// One batch: the fields of the data set, in order, as tensors.
#[derive(Debug, Clone)]
pub struct Batch {
    pub fields: Vec<(String, Tensor)>,
}

impl Batch {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Number of samples in this batch.
    pub fn len(&self) -> usize {
        self.fields
            .first()
            .and_then(|(_, t)| t.dims().first().copied())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Iterator over the batches of one epoch (see [`Dataset::batches`]).
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Vec<usize>,
    batch_size: usize,
    /// Index in `order` of the first sample of the next batch.
    next: usize,
    device: Device,
}

impl Iterator for Batches<'_> {
    type Item = candle_core::Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let idx = &self.order[self.next..end];
        self.next = end;
        let fields = self
            .data
            .fields
            .iter()
            .map(|(name, a)| Ok((name.clone(), a.gather(idx, &self.device)?)))
            .collect::<candle_core::Result<Vec<_>>>();
        Some(fields.map(|fields| Batch { fields }))
    }

    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        self.next = self
            .next
            .saturating_add(n.saturating_mul(self.batch_size))
            .min(self.order.len());
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.next).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// SplitMix64: a tiny, well-known generator whose output is fixed forever,
/// so that epoch orders never change with a dependency upgrade.
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection (no modulo bias).
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// The order of the samples `0..n` in epoch `epoch` of a run seeded `seed`:
/// a Fisher-Yates shuffle driven by SplitMix64 seeded from `(seed, epoch)`.
/// A pure function of its arguments.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut mix = SplitMix64(seed ^ 0x6465_7163_7368_7566); // "deqcshuf"
    let s = mix.next_u64();
    let mut rng = SplitMix64(s ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// The splits of a data set. `train` is always there; `valid` only for text
/// (and a CSV folder that has one); `test` for MNIST, text, and a CSV folder
/// with a test file.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub valid: Option<Dataset>,
    pub test: Option<Dataset>,
    /// The vocabulary of a text data set (to save with a checkpoint).
    pub vocab: Option<Vocab>,
    /// How `x` was standardized (`normalize = true`), if it was.
    pub standardization: Option<normalize::Standardization>,
}

/// Load the data set of a `train` block, with its `classes`/`per_class`
/// subset drawn from `seed`, standardized (`normalize = true`) with the
/// statistics of that subset's training split.
pub fn load_seeded(spec: &DataSpec, seed: u64) -> Result<Splits, DataError> {
    let splits = load_raw(spec)?;
    let splits = match spec {
        DataSpec::Mnist { subset, .. } | DataSpec::Csv { subset, .. } => {
            subset::apply(splits, subset, seed)?
        }
        DataSpec::Text { .. } => splits,
    };
    standardize_if_asked(spec, splits)
}

/// Load the data set of a `train` block (every sample), standardized
/// (`normalize = true`) with the whole training split's statistics.
pub fn load(spec: &DataSpec) -> Result<Splits, DataError> {
    standardize_if_asked(spec, load_raw(spec)?)
}

fn standardize_if_asked(spec: &DataSpec, splits: Splits) -> Result<Splits, DataError> {
    match spec {
        DataSpec::Mnist {
            normalize: true, ..
        } => normalize::standardize(splits),
        DataSpec::Mnist { .. } | DataSpec::Csv { .. } | DataSpec::Text { .. } => Ok(splits),
    }
}

/// The files as they are: every sample, no standardization.
fn load_raw(spec: &DataSpec) -> Result<Splits, DataError> {
    match spec {
        DataSpec::Mnist { path, flatten, .. } => mnist(path, *flatten),
        DataSpec::Text {
            path,
            level,
            seq_len,
            vocab,
        } => text(path, *level, *seq_len, *vocab),
        DataSpec::Csv { path, target, .. } => csv(path, target),
    }
}

#[cfg(test)]
mod tests;
