//! Adam's and AdamW's update of one parameter.
//!
//! Owns [`update`], which runs [`one_pass`] where it can and [`by_ops`]
//! elsewhere. `by_ops` is the update as candle ops (any device). `one_pass`
//! computes the same with its bits: each candle op there is one operation
//! per element here, in the same order and the tensor's own type, with
//! every scalar rounded to that type as candle rounds it (`affine(mul,
//! add)` is `v * mul + add`, the `+ 0` included, which turns `-0` into
//! `+0`).
//!
//! Why: those dozen ops each made a single-threaded pass over every
//! parameter (candle's own pool is off, see `threads::one_pool`) and
//! allocated a tensor: 7% of the DEQ-MLP's training step. Here one pass
//! reads the parameter, gradient and moments once and writes the three
//! new tensors, split across the pool for large parameters (elementwise,
//! so the split changes no bits).
//!
//! `one_pass` returns `None` (not on the CPU, not contiguous, not f32/f64,
//! shapes that differ) to leave the update to `by_ops`.

use std::mem::MaybeUninit;

use candle_core::{DType, Device, Tensor, WithDType};

use crate::exec::slices::with_cpu_slices;
use rayon::prelude::*;

/// The scalars of one Adam step, as `optim.rs` derives them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamStep {
    pub b1: f64,
    pub b2: f64,
    /// `1 - b1^t` and `1 - b2^t`.
    pub bc1: f64,
    pub bc2: f64,
    pub lr: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW: the decay scales the parameter instead of joining the gradient.
    pub decoupled: bool,
}

/// Elements below which a parameter is updated on the calling thread.
const SERIAL_BELOW: usize = 1 << 15;
/// Elements per task on the pool.
const CHUNK: usize = 1 << 14;

/// A float type's square root (the one operation `WithDType` lacks).
trait Real: WithDType {
    fn sqrt(self) -> Self;
}

impl Real for f32 {
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Real for f64 {
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// The new `(parameter, first moment, second moment)` after one step with
/// gradient `g`.
pub(crate) fn update(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: AdamStep,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    match one_pass(p, &g.contiguous()?, m, v, s) {
        Some(r) => Ok(r),
        None => by_ops(p, g, m, v, s),
    }
}

/// The update as candle ops: PyTorch's formulas, one op at a time.
pub(crate) fn by_ops(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: AdamStep,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let mut g = g.clone();
    let mut q = p.clone();
    if s.weight_decay != 0.0 {
        if s.decoupled {
            q = q.affine(1.0 - s.lr * s.weight_decay, 0.0)?;
        } else {
            g = g.add(&p.affine(s.weight_decay, 0.0)?)?;
        }
    }
    let m = m.affine(s.b1, 0.0)?.add(&g.affine(1.0 - s.b1, 0.0)?)?;
    let v = v
        .affine(s.b2, 0.0)?
        .add(&g.sqr()?.affine(1.0 - s.b2, 0.0)?)?;
    let denom = v.sqrt()?.affine(1.0 / s.bc2.sqrt(), s.eps)?;
    let p = q.sub(&m.div(&denom)?.affine(s.lr / s.bc1, 0.0)?)?;
    Ok((p, m, v))
}

/// [`by_ops`] in one pass, or `None` when the tensors are not all
/// contiguous CPU tensors of one float type and shape.
pub(crate) fn one_pass(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: AdamStep,
) -> Option<(Tensor, Tensor, Tensor)> {
    let all = [p, g, m, v];
    if all
        .iter()
        .any(|t| t.dims() != p.dims() || t.dtype() != p.dtype())
    {
        return None;
    }
    let (p2, m2, v2) = match p.dtype() {
        DType::F32 => tensors(
            with_cpu_slices::<f32, _>(&all, |x| pass_over(x, s))?,
            p.dims(),
        )?,
        DType::F64 => tensors(
            with_cpu_slices::<f64, _>(&all, |x| pass_over(x, s))?,
            p.dims(),
        )?,
        _ => return None,
    };
    Some((p2, m2, v2))
}

type Three<T> = (Vec<T>, Vec<T>, Vec<T>);

fn tensors<T: WithDType>((p, m, v): Three<T>, dims: &[usize]) -> Option<(Tensor, Tensor, Tensor)> {
    let t = |x: Vec<T>| Tensor::from_vec(x, dims, &Device::Cpu).ok();
    Some((t(p)?, t(m)?, t(v)?))
}

/// One pass over `[p, g, m, v]`.
fn pass_over<T: Real>(x: &[&[T]], s: AdamStep) -> Three<T> {
    let n = x[0].len();
    let mut out: [Vec<T>; 3] = std::array::from_fn(|_| Vec::with_capacity(n));
    {
        let [po, mo, vo] = &mut out;
        let (po, mo, vo) = (
            &mut po.spare_capacity_mut()[..n],
            &mut mo.spare_capacity_mut()[..n],
            &mut vo.spare_capacity_mut()[..n],
        );
        let piece = |k: usize, (po, (mo, vo)): Outs<'_, T>| {
            let at = k * CHUNK..k * CHUNK + po.len();
            let ins = [
                &x[0][at.clone()],
                &x[1][at.clone()],
                &x[2][at.clone()],
                &x[3][at],
            ];
            run(ins, po, mo, vo, s);
        };
        if n < SERIAL_BELOW {
            piece(0, (po, (mo, vo)));
        } else {
            po.par_chunks_mut(CHUNK)
                .zip(mo.par_chunks_mut(CHUNK).zip(vo.par_chunks_mut(CHUNK)))
                .enumerate()
                .for_each(|(k, outs)| piece(k, outs));
        }
    }
    for o in &mut out {
        // SAFETY: `run` wrote every one of the `n` elements of each output.
        unsafe { o.set_len(n) };
    }
    let [p, m, v] = out;
    (p, m, v)
}

type Outs<'a, T> = (
    &'a mut [MaybeUninit<T>],
    (&'a mut [MaybeUninit<T>], &'a mut [MaybeUninit<T>]),
);

/// The update of one piece; each line is one op of [`by_ops`].
fn run<T: Real>(
    [p, g, m, v]: [&[T]; 4],
    po: &mut [MaybeUninit<T>],
    mo: &mut [MaybeUninit<T>],
    vo: &mut [MaybeUninit<T>],
    s: AdamStep,
) {
    let c = T::from_f64;
    let zero = c(0.0);
    let (shrink, wd) = (c(1.0 - s.lr * s.weight_decay), c(s.weight_decay));
    let (b1, one_b1, b2, one_b2) = (c(s.b1), c(1.0 - s.b1), c(s.b2), c(1.0 - s.b2));
    let (inv_bc2, eps, step) = (c(1.0 / s.bc2.sqrt()), c(s.eps), c(s.lr / s.bc1));
    let decay = s.weight_decay != 0.0;
    for i in 0..po.len() {
        let (mut q, mut gi) = (p[i], g[i]);
        if decay && s.decoupled {
            q = q * shrink + zero;
        } else if decay {
            gi += p[i] * wd + zero;
        }
        let m2 = (m[i] * b1 + zero) + (gi * one_b1 + zero);
        let v2 = (v[i] * b2 + zero) + ((gi * gi) * one_b2 + zero);
        let denom = v2.sqrt() * inv_bc2 + eps;
        po[i].write(q - ((m2 / denom) * step + zero));
        mo[i].write(m2);
        vo[i].write(v2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn bits(t: &Tensor) -> Vec<u64> {
        let t = t.flatten_all().expect("flat");
        match t.dtype() {
            DType::F32 => t
                .to_vec1::<f32>()
                .expect("f32")
                .iter()
                .map(|x| x.to_bits() as u64)
                .collect(),
            _ => t
                .to_vec1::<f64>()
                .expect("f64")
                .iter()
                .map(|x| x.to_bits())
                .collect(),
        }
    }

    /// Values of many magnitudes, with zeros of both signs.
    fn values(n: usize, rng: &mut rand::rngs::StdRng, dtype: DType) -> Tensor {
        let v: Vec<f64> = (0..n)
            .map(|i| match i % 97 {
                0 => 0.0,
                1 => -0.0,
                _ => rng.random_range(-1.0..1.0) * 10f64.powi(rng.random_range(-12..3)),
            })
            .collect();
        Tensor::from_vec(v, n, &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .expect("values")
    }

    /// Five steps from zero moments, one pass against the ops, bit for bit:
    /// both types, all three decay rules, on one thread and split.
    #[test]
    fn one_pass_gives_the_bits_of_the_ops() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for dtype in [DType::F32, DType::F64] {
            for (weight_decay, decoupled) in [(0.0, false), (0.01, false), (0.01, true)] {
                for n in [1000, 3 * SERIAL_BELOW + 17] {
                    let mut p = values(n, &mut rng, dtype);
                    let zeros = p.zeros_like().expect("zeros");
                    let (mut m, mut v) = (zeros.clone(), zeros);
                    for t in 1..=5 {
                        let g = values(n, &mut rng, dtype);
                        let (b1, b2) = (0.9, 0.999);
                        let s = AdamStep {
                            b1,
                            b2,
                            bc1: 1.0 - f64::powi(b1, t),
                            bc2: 1.0 - f64::powi(b2, t),
                            lr: 1e-3,
                            eps: 1e-8,
                            weight_decay,
                            decoupled,
                        };
                        let want = by_ops(&p, &g, &m, &v, s).expect("ops");
                        let got = one_pass(&p, &g, &m, &v, s).expect("one pass");
                        for (a, b) in [(&got.0, &want.0), (&got.1, &want.1), (&got.2, &want.2)] {
                            assert_eq!(
                                bits(a),
                                bits(b),
                                "{dtype:?} wd {weight_decay} {decoupled} n {n} t {t}"
                            );
                        }
                        (p, m, v) = got;
                    }
                }
            }
        }
    }

    /// What one pass cannot take goes to the ops.
    #[test]
    fn other_layouts_and_types_fall_back() {
        let s = AdamStep {
            b1: 0.9,
            b2: 0.999,
            bc1: 0.1,
            bc2: 0.001,
            lr: 1e-3,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        };
        let p = Tensor::ones((3, 4), DType::F32, &Device::Cpu).expect("p");
        let strided = p.t().expect("t");
        assert!(one_pass(&strided, &strided, &strided, &strided, s).is_none());
        let half = p.to_dtype(DType::F16).expect("f16");
        assert!(one_pass(&half, &half, &half, &half, s).is_none());
        let (q, _, _) = update(&half, &half, &half, &half, s).expect("ops");
        assert_eq!(q.dtype(), DType::F16);
        // A strided gradient is laid out and takes the one pass.
        let g = Tensor::ones((4, 3), DType::F32, &Device::Cpu)
            .and_then(|t| t.t())
            .expect("g");
        let (a, _, _) = update(&p, &g, &p, &p, s).expect("update");
        let (b, _, _) = by_ops(&p, &g, &p, &p, s).expect("ops");
        assert_eq!(bits(&a), bits(&b));
    }
}
