//! Parameter initializers (`param w: [..] = init;`).
//!
//! Owns the values of a fresh parameter for each [`Init`]. Guarantees:
//! deterministic, a pure function of `(init, shape, seed, path)` where
//! `path` is the parameter's checkpoint name (`inject.w`): two parameters of
//! one run get independent streams, and the same run seed always gives the
//! same values (random numbers from `rand`'s `StdRng`, pinned by
//! `Cargo.lock`, seeded by SplitMix64 of the seed and the FNV-1a hash of the
//! path). Values follow PyTorch's initializers:
//! - `kaiming_uniform(fan_in, a)`: `U(-b, b)`, `b = gain * sqrt(3 / fan_in)`,
//!   `gain = sqrt(2 / (1 + a^2))` (`kaiming_uniform_` with leaky_relu gain);
//! - `xavier_uniform(fan_in, fan_out)`: `U(-b, b)`,
//!   `b = sqrt(6 / (fan_in + fan_out))`;
//! - `orthogonal(gain)`: the shape seen as a matrix `[shape[0],
//!   prod(shape[1..])]` (at least two dimensions) whose rows (when there are
//!   fewer rows than columns) or columns are orthonormal, times `gain`: the
//!   Q of a Gaussian matrix by modified Gram-Schmidt (twice, in f64);
//! - `eye`: a two-dimensional (possibly rectangular) identity;
//! - `normal(std)`: `N(0, std^2)`; `uniform(lo, hi)`: `U(lo, hi)`.
//!
//! Invalid settings (a non-positive fan, a negative std, `lo > hi`, a shape
//! the initializer cannot fill) are [`InitError`]s, never panics.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::data::SplitMix64;
use crate::sema::spec::Init;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("parameter `{path}`: {init} cannot fill shape {shape:?}: {reason}")]
    Shape {
        path: String,
        init: String,
        shape: Vec<usize>,
        reason: String,
    },
    #[error("parameter `{path}`: invalid initializer {init}: {reason}")]
    Invalid {
        path: String,
        init: String,
        reason: String,
    },
    #[error("parameter `{path}`: {source}")]
    Candle {
        path: String,
        source: candle_core::Error,
    },
}

/// FNV-1a, 64 bits: a stable hash of a parameter path.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The random stream of parameter `path` in a run seeded `seed`.
pub fn param_rng(seed: u64, path: &str) -> StdRng {
    let mut mix = SplitMix64(seed ^ fnv1a(path));
    StdRng::seed_from_u64(mix.next_u64())
}

/// The initial values of a parameter of `shape`, row-major, as f32.
pub fn init_values(
    init: &Init,
    shape: &[usize],
    seed: u64,
    path: &str,
) -> Result<Vec<f32>, InitError> {
    let n: usize = shape.iter().product();
    let invalid = |reason: String| InitError::Invalid {
        path: path.to_string(),
        init: init.to_string(),
        reason,
    };
    let bad_shape = |reason: &str| InitError::Shape {
        path: path.to_string(),
        init: init.to_string(),
        shape: shape.to_vec(),
        reason: reason.to_string(),
    };
    let mut rng = param_rng(seed, path);
    let uniform = |rng: &mut StdRng, lo: f64, hi: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (hi - lo) * rng.random::<f64>()) as f32)
            .collect()
    };
    Ok(match *init {
        Init::Zeros => vec![0.0; n],
        Init::Ones => vec![1.0; n],
        Init::Normal { std } => {
            if !(std >= 0.0 && std.is_finite()) {
                return Err(invalid(format!("expected std >= 0, found {std}")));
            }
            (0..n)
                .map(|_| (std * rng.sample::<f64, _>(StandardNormal)) as f32)
                .collect()
        }
        Init::Uniform { lo, hi } => {
            if !(lo <= hi && lo.is_finite() && hi.is_finite()) {
                return Err(invalid(format!(
                    "expected finite lo <= hi, found {lo}, {hi}"
                )));
            }
            uniform(&mut rng, lo, hi)
        }
        Init::KaimingUniform { fan_in, a } => {
            if fan_in <= 0 || !a.is_finite() {
                return Err(invalid(format!("expected fan_in > 0, found {fan_in}")));
            }
            let gain = (2.0 / (1.0 + a * a)).sqrt();
            let bound = gain * (3.0 / fan_in as f64).sqrt();
            uniform(&mut rng, -bound, bound)
        }
        Init::XavierUniform { fan_in, fan_out } => {
            if fan_in <= 0 || fan_out <= 0 {
                return Err(invalid(format!(
                    "expected positive fans, found fan_in = {fan_in}, fan_out = {fan_out}"
                )));
            }
            let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
            uniform(&mut rng, -bound, bound)
        }
        Init::Orthogonal { gain } => {
            if shape.len() < 2 {
                return Err(bad_shape("expected at least two dimensions"));
            }
            orthogonal(&mut rng, shape[0], n / shape[0].max(1), gain)
        }
        Init::Eye => {
            let [r, c] = shape else {
                return Err(bad_shape("expected two dimensions"));
            };
            let mut v = vec![0.0; n];
            for i in 0..(*r).min(*c) {
                v[i * c + i] = 1.0;
            }
            v
        }
    })
}

/// The initial value of a parameter as an f32 tensor on `device`.
pub fn init_tensor(
    init: &Init,
    shape: &[usize],
    seed: u64,
    path: &str,
    device: &Device,
) -> Result<Tensor, InitError> {
    let v = init_values(init, shape, seed, path)?;
    Tensor::from_vec(v, shape, device).map_err(|source| InitError::Candle {
        path: path.to_string(),
        source,
    })
}

/// A `rows x cols` matrix (row-major) with orthonormal rows or columns,
/// whichever are fewer, times `gain`.
fn orthogonal(rng: &mut StdRng, rows: usize, cols: usize, gain: f64) -> Vec<f32> {
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    // Orthonormalize the k short vectors of length m, then lay them out.
    let (m, k) = (rows.max(cols), rows.min(cols));
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(k);
    while q.len() < k {
        let mut v: Vec<f64> = (0..m).map(|_| rng.sample(StandardNormal)).collect();
        for _ in 0..2 {
            for u in &q {
                let d: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(x, a)| *x -= d * a);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-8 {
            v.iter_mut().for_each(|x| *x /= norm);
            q.push(v);
        }
    }
    let mut out = vec![0.0f32; rows * cols];
    for (j, u) in q.iter().enumerate() {
        for (i, x) in u.iter().enumerate() {
            let at = if rows >= cols {
                i * cols + j // column j
            } else {
                j * cols + i // row j
            };
            out[at] = (gain * x) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(init: Init, shape: &[usize]) -> Vec<f32> {
        init_values(&init, shape, 7, "layer.w").unwrap()
    }

    #[test]
    fn constants_and_eye() {
        assert_eq!(vals(Init::Zeros, &[2, 3]), [0.0; 6]);
        assert_eq!(vals(Init::Ones, &[4]), [1.0; 4]);
        assert_eq!(vals(Init::Eye, &[2, 3]), [1., 0., 0., 0., 1., 0.]);
        assert_eq!(vals(Init::Eye, &[3, 2]), [1., 0., 0., 1., 0., 0.]);
        assert!(init_values(&Init::Eye, &[2, 2, 2], 0, "e").is_err());
    }

    #[test]
    fn deterministic_per_seed_and_path() {
        let init = Init::Normal { std: 1.0 };
        let a = init_values(&init, &[64], 1, "a.w").unwrap();
        assert_eq!(a, init_values(&init, &[64], 1, "a.w").unwrap());
        assert_ne!(a, init_values(&init, &[64], 2, "a.w").unwrap());
        assert_ne!(a, init_values(&init, &[64], 1, "b.w").unwrap());
    }

    #[test]
    fn kaiming_matches_pytorch_bound() {
        let a = 5f64.sqrt();
        let v = vals(Init::KaimingUniform { fan_in: 100, a }, &[100, 100]);
        // gain = sqrt(2 / 6), bound = gain * sqrt(3 / 100) = 1 / sqrt(100)
        let bound = 0.1f32;
        assert!(v.iter().all(|x| x.abs() <= bound));
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.99 * bound, "{max}");
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.005, "{mean}");
        let v = vals(Init::KaimingUniform { fan_in: 3, a: 0.0 }, &[1000]);
        let bound = (2.0f32).sqrt(); // sqrt(2) * sqrt(3 / 3)
        assert!(v.iter().all(|x| x.abs() <= bound));
        assert!(v.iter().any(|x| x.abs() > 0.95 * bound));
    }

    #[test]
    fn xavier_uniform_and_normal_statistics() {
        let v = vals(
            Init::XavierUniform {
                fan_in: 20,
                fan_out: 40,
            },
            &[40, 20],
        );
        let bound = (6.0f32 / 60.0).sqrt();
        assert!(v.iter().all(|x| x.abs() <= bound));
        assert!(v.iter().any(|x| x.abs() > 0.95 * bound));
        let v = vals(Init::Normal { std: 0.5 }, &[20000]);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.02, "{var}");
        let v = vals(Init::Uniform { lo: 2.0, hi: 3.0 }, &[1000]);
        assert!(v.iter().all(|&x| (2.0..=3.0).contains(&x)));
    }

    fn gram(v: &[f32], rows: usize, cols: usize, by_rows: bool) -> Vec<Vec<f64>> {
        let (k, m) = if by_rows { (rows, cols) } else { (cols, rows) };
        let at = |a: usize, i: usize| {
            if by_rows {
                v[a * cols + i] as f64
            } else {
                v[i * cols + a] as f64
            }
        };
        (0..k)
            .map(|a| {
                (0..k)
                    .map(|b| (0..m).map(|i| at(a, i) * at(b, i)).sum())
                    .collect()
            })
            .collect()
    }

    fn assert_orthonormal(g: &[Vec<f64>], gain: f64) {
        for (a, row) in g.iter().enumerate() {
            for (b, x) in row.iter().enumerate() {
                let want = if a == b { gain * gain } else { 0.0 };
                assert!((x - want).abs() < 1e-5, "G[{a}][{b}] = {x}");
            }
        }
    }

    #[test]
    fn orthogonal_rows_or_columns() {
        let v = vals(Init::Orthogonal { gain: 1.0 }, &[8, 3]);
        assert_orthonormal(&gram(&v, 8, 3, false), 1.0);
        let v = vals(Init::Orthogonal { gain: 2.0 }, &[3, 8]);
        assert_orthonormal(&gram(&v, 3, 8, true), 2.0);
        let v = vals(Init::Orthogonal { gain: 1.0 }, &[16, 16]);
        assert_orthonormal(&gram(&v, 16, 16, true), 1.0);
        assert_orthonormal(&gram(&v, 16, 16, false), 1.0);
        // [4, 2, 3] is a 4 x 6 matrix with orthonormal rows.
        let v = vals(Init::Orthogonal { gain: 1.0 }, &[4, 2, 3]);
        assert_orthonormal(&gram(&v, 4, 6, true), 1.0);
        assert!(init_values(&Init::Orthogonal { gain: 1.0 }, &[5], 0, "o").is_err());
    }

    #[test]
    fn invalid_settings_are_errors() {
        let err = init_values(&Init::KaimingUniform { fan_in: 0, a: 1.0 }, &[2], 0, "l.w")
            .unwrap_err()
            .to_string();
        assert!(err.contains("l.w") && err.contains("fan_in"), "{err}");
        assert!(init_values(&Init::Uniform { lo: 1.0, hi: 0.0 }, &[2], 0, "u").is_err());
        assert!(init_values(&Init::Normal { std: -1.0 }, &[2], 0, "n").is_err());
        let t = init_tensor(&Init::Ones, &[2, 2], 0, "t", &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [2, 2]);
    }
}
