//! Densities in training: dequantized pixels, bits per dimension, and the
//! figures of a model whose outputs are class scores and a log-density.
//!
//! Owns three things:
//! - [`dequantize`]: `mnist(..., dequantize = true)` turns grey level `k`
//!   into `(k + u) / 256`, `u` uniform in `[0, 1)`, drawn per row from a
//!   key ([`train_key`]: the run's seed, the step and the row, so every
//!   training step sees fresh noise; [`eval_key`]: the seed and the
//!   sample's index in its split, so an evaluation is the same whatever
//!   the batch size).
//! - [`BitsScale`]: bits per dimension of a log-density of the model's
//!   input, on the 256-level scale of the pixels (the convention of
//!   RealNVP, Glow, i-ResNet and Residual Flows): `bpd = -log p(x) / (D ln
//!   2) + log2(256)` for `x = (k + u) / 256` in `[0, 1]^D`, since the
//!   density of `k + u` is `256^-D` times that of `x`.
//! - [`Figures`]: running accuracy, cross-entropy and negative
//!   log-likelihood over batches, read from the model's outputs by their
//!   roles (`outputs = [scores, log_density]`).
//!
//! Guarantees: the noise is a pure function of its key (SplitMix64, fixed
//! forever), and only the input `x` is changed; the figures weigh each
//! batch by its samples.

use candle_core::{DType, Tensor, D};

use super::data::SplitMix64;
use super::metrics::{self, Mean};
use super::trainer::mix;
use crate::sema::spec::{DataSpec, OutputRole, TrainConfig};

/// Grey levels of 8-bit pixels.
pub const LEVELS: f64 = 256.0;

const TRAIN_TAG: u64 = 0x6465_7175_616e_7472; // "dequantr"
const EVAL_TAG: u64 = 0x6465_7175_616e_7465; // "dequante"

/// The noise key of row `row` of the batch of training step `step`.
pub fn train_key(seed: u64, step: u64, row: usize) -> u64 {
    mix(mix(seed ^ TRAIN_TAG, step), row as u64)
}

/// The noise key of sample `index` of an evaluated split.
pub fn eval_key(seed: u64, index: usize) -> u64 {
    mix(seed ^ EVAL_TAG, index as u64)
}

/// Uniform in `[0, 1)` with 24 bits, the resolution of an f32.
fn uniform(rng: &mut SplitMix64) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

/// Dequantize pixels `x = k / 255` (any shape, samples first): row `r`
/// becomes `(k + u) / 256` with `u` drawn from `key(r)`.
pub fn dequantize(x: &Tensor, key: impl Fn(usize) -> u64) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let rows = dims.first().copied().unwrap_or(1);
    let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let per_row = values.len() / rows.max(1);
    let mut out = Vec::with_capacity(values.len());
    for (r, row) in values.chunks(per_row.max(1)).enumerate() {
        let mut rng = SplitMix64(key(r));
        out.extend(row.iter().map(|v| {
            let k = (v * 255.0).round().clamp(0.0, 255.0);
            (k + uniform(&mut rng)) / LEVELS as f32
        }));
    }
    Tensor::from_vec(out, dims, x.device())?.to_dtype(x.dtype())
}

/// Whether a data source asks for dequantized pixels.
pub fn dequantizes(data: &DataSpec) -> bool {
    matches!(
        data,
        DataSpec::Mnist {
            dequantize: true,
            ..
        }
    )
}

/// How bits per dimension are read from a log-density in nats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BitsScale {
    /// `D`: values per sample of the model's input.
    pub dims: usize,
    /// `-log2` of one grey level in the model's units, added per dimension
    /// (8 for dequantized pixels in `[0, 1]`).
    pub offset_bits: f64,
}

impl BitsScale {
    /// The scale for a data source whose samples have `dims` values:
    /// dequantized MNIST `log2(256)`; plain MNIST `log2(255)` (levels
    /// `k / 255`), plus `log2(std)` when standardized; other data 0 (bits
    /// per dimension of the density in the data's own units).
    pub fn for_data(data: &DataSpec, dims: usize, std: Option<f64>) -> BitsScale {
        let offset_bits = match data {
            DataSpec::Mnist {
                dequantize: true, ..
            } => LEVELS.log2(),
            DataSpec::Mnist { .. } => 255f64.log2() + std.map_or(0.0, f64::log2),
            DataSpec::Text { .. } | DataSpec::Csv { .. } => 0.0,
        };
        BitsScale { dims, offset_bits }
    }

    /// Bits per dimension of a mean negative log-likelihood (nats per
    /// sample).
    pub fn bits_per_dim(&self, nll: f64) -> f64 {
        nll / (self.dims.max(1) as f64 * std::f64::consts::LN_2) + self.offset_bits
    }
}

/// The mean cross-entropy (nats) of scores `[.., C]` against class ids.
pub fn cross_entropy(scores: &Tensor, target: &Tensor) -> candle_core::Result<f64> {
    let s = scores.to_dtype(DType::F64)?;
    let max = s.max_keepdim(D::Minus1)?;
    let lse = (s
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max)?;
    let picked = s.gather(
        &target.to_dtype(DType::I64)?.unsqueeze(D::Minus1)?,
        D::Minus1,
    )?;
    (lse - picked)?.mean_all()?.to_scalar::<f64>()
}

/// The log-density output of a batch, one f64 per sample.
pub fn log_densities(logp: &Tensor) -> candle_core::Result<Vec<f64>> {
    logp.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// Running figures over batches, read from the model outputs by role.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub correct: usize,
    pub judged: usize,
    /// Mean cross-entropy of the scores (nats per sample).
    pub ce: Mean,
    /// Mean `-log p(x)` (nats per sample).
    pub nll: Mean,
}

impl Figures {
    /// Add one batch: `outputs` are the model's outputs in order, `roles`
    /// their roles, `target` the loss's target. `parts`: also the
    /// cross-entropy of the scores (with a log-density beside it, it is
    /// one part of the loss).
    pub fn add(
        &mut self,
        outputs: &[Tensor],
        roles: &[OutputRole],
        target: &Tensor,
        parts: bool,
    ) -> candle_core::Result<()> {
        let n = target.dims().first().copied().unwrap_or(1) as f64;
        for (out, role) in outputs.iter().zip(roles) {
            match role {
                OutputRole::Scores => {
                    let (c, t) = metrics::count_correct(out, target)?;
                    self.correct += c;
                    self.judged += t;
                    if parts {
                        self.ce.add(cross_entropy(out, target)?, n);
                    }
                }
                OutputRole::LogDensity => {
                    let lp = log_densities(out)?;
                    let mean = lp.iter().sum::<f64>() / lp.len().max(1) as f64;
                    self.nll.add(-mean, lp.len() as f64);
                }
                OutputRole::Other => {}
            }
        }
        Ok(())
    }

    pub fn accuracy(&self) -> Option<f64> {
        (self.judged > 0).then(|| self.correct as f64 / self.judged as f64)
    }

    /// The loss parts and bits per dimension, as named numbers for a
    /// metrics record: `cross_entropy`, `nll`, `bits_per_dim` (those that
    /// were measured).
    pub fn extra(&self, scale: &BitsScale) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        if self.ce.weight() > 0.0 {
            out.push(("cross_entropy".to_string(), self.ce.mean()));
        }
        if self.nll.weight() > 0.0 {
            out.push(("nll".to_string(), self.nll.mean()));
            out.push((
                "bits_per_dim".to_string(),
                scale.bits_per_dim(self.nll.mean()),
            ));
        }
        out
    }

    /// `, bits/dim 1.234` when a log-density was measured, else empty.
    pub fn bits_text(&self, scale: &BitsScale) -> String {
        if self.nll.weight() > 0.0 {
            format!(", bits/dim {:.4}", scale.bits_per_dim(self.nll.mean()))
        } else {
            String::new()
        }
    }
}

/// `run.json`'s `density`: how bits per dimension are computed.
pub fn scale_facts(scale: &BitsScale, data: &DataSpec) -> serde_json::Value {
    serde_json::json!({
        "dims": scale.dims,
        "offset_bits": scale.offset_bits,
        "bits_per_dim": "-log p(x) / (dims * ln 2) + offset_bits",
        "dequantize": dequantizes(data),
    })
}

/// `run.json`'s `test`: the last test figures, at `(epoch, step)`.
pub fn test_facts(
    (epoch, step): (usize, u64),
    loss: f64,
    accuracy: Option<f64>,
    extra: &[(String, f64)],
) -> serde_json::Value {
    let mut facts = serde_json::Map::new();
    facts.insert("epoch".into(), epoch.into());
    facts.insert("step".into(), step.into());
    facts.insert("loss".into(), serde_json::json!(loss));
    if let Some(a) = accuracy {
        facts.insert("accuracy".into(), serde_json::json!(a));
    }
    for (k, v) in extra {
        facts.insert(k.clone(), serde_json::json!(v));
    }
    serde_json::Value::Object(facts)
}

/// Whether the train block reports loss parts (it gives `outputs` and one
/// of them is a log-density).
pub fn reports_parts(cfg: &TrainConfig) -> bool {
    cfg.outputs.iter().any(|o| o.0 == OutputRole::LogDensity)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn dequantized_pixels_stay_in_their_level() {
        let dev = Device::Cpu;
        let k = [0f32, 1.0, 128.0, 255.0, 17.0, 200.0];
        let x = Tensor::from_vec(k.iter().map(|k| k / 255.0).collect(), (2, 3), &dev).unwrap();
        let a = dequantize(&x, |r| eval_key(3, r)).unwrap();
        let b = dequantize(&x, |r| eval_key(3, r)).unwrap();
        let c = dequantize(&x, |r| train_key(3, 1, r)).unwrap();
        let av: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let cv: Vec<f32> = c.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(av, b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_ne!(av, cv);
        for (v, k) in av.iter().chain(&cv).zip(k.iter().chain(&k)) {
            let level = v * 256.0;
            assert!(level >= *k && level < k + 1.0, "{v} from level {k}");
        }
    }

    #[test]
    fn uniform_noise_has_mean_one_half() {
        let mut rng = SplitMix64(7);
        let n = 100_000;
        let mean = (0..n).map(|_| f64::from(uniform(&mut rng))).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
    }

    #[test]
    fn bits_per_dim_on_the_256_level_scale() {
        // A uniform density on [0, 1]^D has log p = 0: 8 bits per pixel.
        let s = BitsScale {
            dims: 784,
            offset_bits: LEVELS.log2(),
        };
        assert!((s.bits_per_dim(0.0) - 8.0).abs() < 1e-12);
        // -log p = D ln 2 nats is one more bit per dimension.
        let nll = 784.0 * std::f64::consts::LN_2;
        assert!((s.bits_per_dim(nll) - 9.0).abs() < 1e-12);
    }

    #[test]
    fn cross_entropy_of_scores() {
        let dev = Device::Cpu;
        let s = Tensor::new(&[[0f32, 0.0], [2.0, 0.0]], &dev).unwrap();
        let y = Tensor::new(&[0i64, 1], &dev).unwrap();
        let want = (2f64.ln() + (1.0 + 2f64.exp()).ln() - 0.0) / 2.0;
        assert!((cross_entropy(&s, &y).unwrap() - want).abs() < 1e-9);
    }
}
