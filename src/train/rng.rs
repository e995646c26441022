//! Seeded randomness of a run: the counter mix that keys every per-step
//! draw (probes, dequantization noise, corruptions) and the Gaussian
//! probes of the Jacobian regularizer.
//!
//! Guarantees: both are pure functions of their arguments.

use candle_core::{DType as CDType, Device, Tensor};

use super::TrainError;

/// A deterministic 64-bit mix of a seed and a counter.
pub(crate) fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn probe(
    ty_shape: &[usize],
    seed: u64,
    device: &Device,
    dtype: CDType,
) -> Result<Tensor, TrainError> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = rand_distr::StandardNormal;
    let n: usize = ty_shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| Distribution::<f32>::sample(&normal, &mut rng))
        .collect();
    Ok(Tensor::from_vec(v, ty_shape, device)?.to_dtype(dtype)?)
}
