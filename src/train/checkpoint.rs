//! Checkpoints: parameters and training state as safetensors files.
//!
//! A checkpoint folder holds [`MODEL_FILE`] (`model.safetensors`: one f32
//! tensor per parameter, keyed by its path such as `inject.w`),
//! [`STATE_FILE`] (`train_state.safetensors`: the optimizer's state tensors
//! keyed `"{kind}/{param}"`, and in the safetensors metadata the counters
//! `step`, `epoch`, `batch`, `seed`, `optim_step` plus free-form entries)
//! and, for text data, [`VOCAB_FILE`] (`vocab.json`).
//!
//! Guarantees:
//! - Every write is atomic: the bytes go to a temporary file in the same
//!   folder, which is fsynced and then renamed over the target (and the
//!   folder fsynced where the platform allows), so a crash leaves either the
//!   old or the new file, never a torn one.
//! - Loading against expected names and shapes fails with one
//!   [`CheckpointError::Mismatch`] listing every missing, unexpected and
//!   mis-shaped key.
//! - A corrupt or truncated file is a [`CheckpointError`], never a panic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors, View};

use super::data::Vocab;
use super::optim::OptimState;

pub const MODEL_FILE: &str = "model.safetensors";
pub const STATE_FILE: &str = "train_state.safetensors";
pub const VOCAB_FILE: &str = "vocab.json";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid checkpoint file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: the tensors do not match the model:{}", mismatch_list(.missing, .unexpected, .misshaped))]
    Mismatch {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        /// `(key, expected shape, found shape)`.
        misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
    #[error("{path}: {source}")]
    Candle {
        path: PathBuf,
        source: candle_core::Error,
    },
}

fn mismatch_list(
    missing: &[String],
    unexpected: &[String],
    misshaped: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    let mut s = String::new();
    for k in missing {
        let _ = write!(s, "\n  missing: `{k}`");
    }
    for k in unexpected {
        let _ = write!(s, "\n  unexpected: `{k}`");
    }
    for (k, want, found) in misshaped {
        let _ = write!(s, "\n  `{k}`: expected shape {want:?}, found {found:?}");
    }
    s
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// Named tensors, as stored: `(key, tensor)`.
pub type NamedTensors = Vec<(String, Tensor)>;
/// The string metadata of a safetensors file.
pub type Metadata = BTreeMap<String, String>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn candle_err(path: &Path) -> impl FnOnce(candle_core::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Candle {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    // Make the rename itself durable (not possible on every platform).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A tensor's bytes, little-endian, for `safetensors::serialize`.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// A flat tensor's elements as little-endian bytes.
fn le_bytes<T: candle_core::WithDType, const N: usize>(
    flat: &Tensor,
    bytes: fn(T) -> [u8; N],
) -> candle_core::Result<Vec<u8>> {
    Ok(flat.to_vec1::<T>()?.into_iter().flat_map(bytes).collect())
}

fn to_raw(t: &Tensor) -> candle_core::Result<Raw> {
    let flat = t.flatten_all()?.to_device(&Device::Cpu)?;
    let (dtype, bytes) = match t.dtype() {
        DType::F64 => (Dtype::F64, le_bytes(&flat, f64::to_le_bytes)?),
        DType::I64 => (Dtype::I64, le_bytes(&flat, i64::to_le_bytes)?),
        _ => (
            Dtype::F32,
            le_bytes(&flat.to_dtype(DType::F32)?, f32::to_le_bytes)?,
        ),
    };
    Ok(Raw {
        dtype,
        shape: t.dims().to_vec(),
        bytes,
    })
}

/// Save named tensors (f32, or f64/i64 as they are; other dtypes as f32)
/// and string metadata to `path`, atomically.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let raws = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), to_raw(t)?)))
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(candle_err(path))?;
    let meta = (!metadata.is_empty()).then(|| metadata.clone().into_iter().collect());
    let bytes =
        safetensors::serialize(raws.iter().map(|(k, r)| (k.as_str(), r)), meta).map_err(|e| {
            CheckpointError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("cannot serialize: {e}"),
            }
        })?;
    write_atomic(path, &bytes).map_err(io_err(path))
}

/// All tensors of a safetensors file (in key order) and its metadata.
pub fn read_tensors(path: &Path, device: &Device) -> Result<(NamedTensors, Metadata)> {
    let buf = std::fs::read(path).map_err(io_err(path))?;
    let corrupt = |e: safetensors::SafeTensorError| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let (_, meta) = SafeTensors::read_metadata(&buf).map_err(corrupt)?;
    let st = SafeTensors::deserialize(&buf).map_err(corrupt)?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let shape = view.shape().to_vec();
        let t = match view.dtype() {
            Dtype::F32 => Tensor::from_vec(le::<4, f32>(data, f32::from_le_bytes), shape, device),
            Dtype::F64 => Tensor::from_vec(le::<8, f64>(data, f64::from_le_bytes), shape, device),
            Dtype::I64 => Tensor::from_vec(le::<8, i64>(data, i64::from_le_bytes), shape, device),
            other => {
                return Err(CheckpointError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "tensor `{name}` has dtype {other:?}; expected F32, F64 or I64"
                    ),
                })
            }
        }
        .map_err(candle_err(path))?;
        out.push((name, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok((out, metadata))
}

fn le<const N: usize, T>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

/// Check found names and shapes against expected ones: every difference
/// at once.
pub fn check_keys(
    path: &Path,
    found: &[(String, Vec<usize>)],
    expected: &[(String, Vec<usize>)],
) -> Result<()> {
    let found: BTreeMap<&str, &Vec<usize>> = found.iter().map(|(k, s)| (k.as_str(), s)).collect();
    let want: BTreeMap<&str, &Vec<usize>> = expected.iter().map(|(k, s)| (k.as_str(), s)).collect();
    let missing: Vec<String> = want
        .keys()
        .filter(|k| !found.contains_key(*k))
        .map(|k| k.to_string())
        .collect();
    let unexpected: Vec<String> = found
        .keys()
        .filter(|k| !want.contains_key(*k))
        .map(|k| k.to_string())
        .collect();
    let misshaped: Vec<_> = want
        .iter()
        .filter_map(|(k, w)| {
            let f = found.get(k)?;
            (f != w).then(|| (k.to_string(), (*w).clone(), (*f).clone()))
        })
        .collect();
    if missing.is_empty() && unexpected.is_empty() && misshaped.is_empty() {
        Ok(())
    } else {
        Err(CheckpointError::Mismatch {
            path: path.to_path_buf(),
            missing,
            unexpected,
            misshaped,
        })
    }
}

/// Read `path` and check it holds exactly the `expected` keys and shapes;
/// the tensors come back in the order of `expected`.
pub fn load_tensors(
    path: &Path,
    expected: &[(String, Vec<usize>)],
    device: &Device,
) -> Result<(NamedTensors, Metadata)> {
    let (mut tensors, meta) = read_tensors(path, device)?;
    let found: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    check_keys(path, &found, expected)?;
    let mut ordered = Vec::with_capacity(expected.len());
    for (k, _) in expected {
        if let Some(i) = tensors.iter().position(|(n, _)| n == k) {
            ordered.push(tensors.swap_remove(i));
        }
    }
    Ok((ordered, meta))
}

/// Save the parameters to `dir/model.safetensors` (creating `dir`).
pub fn save_model(
    dir: &Path,
    params: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    save_tensors(&dir.join(MODEL_FILE), params, metadata)
}

/// Load `dir/model.safetensors`, checked against the expected parameters.
pub fn load_model(
    dir: &Path,
    expected: &[(String, Vec<usize>)],
    device: &Device,
) -> Result<Vec<(String, Tensor)>> {
    Ok(load_tensors(&dir.join(MODEL_FILE), expected, device)?.0)
}

/// Save a vocabulary to `dir/vocab.json`, atomically.
pub fn save_vocab(dir: &Path, vocab: &Vocab) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(VOCAB_FILE);
    write_atomic(&path, vocab.to_json().as_bytes()).map_err(io_err(&path))
}

pub fn load_vocab(dir: &Path) -> Result<Vocab> {
    let path = dir.join(VOCAB_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    Vocab::from_json(&text).map_err(|reason| CheckpointError::Corrupt { path, reason })
}

/// Where a run stands, to resume it exactly.
#[derive(Debug, Clone)]
pub struct TrainState {
    /// Optimizer steps taken over the whole run.
    pub step: u64,
    /// The epoch in progress (0-based).
    pub epoch: u64,
    /// Batches of `epoch` already done.
    pub batch: u64,
    pub seed: u64,
    pub optimizer: OptimState,
    /// Free-form entries (the reserved counters above take precedence).
    pub extra: BTreeMap<String, String>,
}

const COUNTERS: [&str; 5] = ["step", "epoch", "batch", "seed", "optim_step"];

/// Save `state` to `dir/train_state.safetensors`, atomically.
pub fn save_train_state(dir: &Path, state: &TrainState) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut meta = state.extra.clone();
    let values = [
        state.step,
        state.epoch,
        state.batch,
        state.seed,
        state.optimizer.step,
    ];
    for (k, v) in COUNTERS.iter().zip(values) {
        meta.insert(k.to_string(), v.to_string());
    }
    save_tensors(&dir.join(STATE_FILE), &state.optimizer.tensors, &meta)
}

/// Load `dir/train_state.safetensors`; with `expected`, its optimizer
/// tensors are checked against those keys and shapes (see
/// [`crate::train::optim::Optim::state_shapes`]; an optimizer that has not
/// stepped yet saves none, which is accepted).
pub fn load_train_state(
    dir: &Path,
    expected: Option<&[(String, Vec<usize>)]>,
    device: &Device,
) -> Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let (tensors, mut meta) = read_tensors(&path, device)?;
    if let Some(expected) = expected {
        if !tensors.is_empty() {
            let found: Vec<_> = tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.dims().to_vec()))
                .collect();
            check_keys(&path, &found, expected)?;
        }
    }
    let mut counter = |key: &str| -> Result<u64> {
        let v = meta.remove(key).ok_or_else(|| CheckpointError::Corrupt {
            path: path.clone(),
            reason: format!("no `{key}` in the metadata"),
        })?;
        v.parse().map_err(|_| CheckpointError::Corrupt {
            path: path.clone(),
            reason: format!("metadata `{key}` = {v:?} is not a count"),
        })
    };
    let step = counter("step")?;
    let epoch = counter("epoch")?;
    let batch = counter("batch")?;
    let seed = counter("seed")?;
    let optim_step = counter("optim_step")?;
    Ok(TrainState {
        step,
        epoch,
        batch,
        seed,
        optimizer: OptimState {
            step: optim_step,
            tensors,
        },
        extra: meta,
    })
}

#[cfg(test)]
mod tests;
