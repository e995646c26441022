//! Convolutions and their two gradients on the CPU, as im2col + gemm.
//!
//! candle's CPU convolutions are slow where the MDEQ lives (few channels,
//! many pixels): the input gradient goes through a direct transposed
//! convolution, the weight gradient through a convolution whose "kernel" is
//! the whole cotangent image. Here all three are one lowering: per sample
//! and group, the input patches are unfolded into a `[ci_g * kh * kw, oh *
//! ow]` matrix (im2col) and multiplied with the weight by the `gemm` crate;
//! the input gradient multiplies by the transposed weight and folds the
//! patches back (col2im, adding overlaps).
//!
//! Guarantees: the same numbers as candle's kernels up to summation order
//! (tested: f64 within 1e-12 relative, f32 within 1e-5, over strides,
//! padding, dilation, groups, 1-d and 2-d); only contiguous f32/f64 CPU
//! tensors with consistent shapes are taken, anything else returns `None`
//! and stays on candle's device-generic path (CUDA included). Samples run in
//! parallel on rayon's pool; the weight gradient sums fixed blocks of
//! samples in order, so results do not depend on the thread count.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor, WithDType};
use rayon::prelude::*;

use crate::ir::ConvAttrs;

/// Samples per partial weight gradient (fixed, so the summation order does
/// not depend on the number of threads).
const WEIGHT_GRAD_BLOCK: usize = 8;

/// One convolution in 2-d form: a 1-d convolution has `h = kh = oh = 1`,
/// no padding and unit stride along that axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    batch: usize,
    groups: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    dh: usize,
    dw: usize,
}

/// The output length of one axis, when the window fits at least once.
fn out_len(len: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let span = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = len.checked_add(2 * p)?;
    Some(padded.checked_sub(span)? / s + 1)
}

impl Geometry {
    /// From the input's, the weight's and the output's (or cotangent's)
    /// shapes; `None` when they do not describe one convolution.
    fn new(x: &[usize], wt: &[usize], y: &[usize], a: &ConvAttrs) -> Option<Geometry> {
        let (s, p, d, groups) = (
            usize::try_from(a.stride).ok()?,
            usize::try_from(a.padding).ok()?,
            usize::try_from(a.dilation).ok()?,
            usize::try_from(a.groups).ok()?,
        );
        if s == 0 || d == 0 || groups == 0 {
            return None;
        }
        let (h, w, kh, kw, oh, ow, sh, ph, dh) = match (a.spatial, x, wt, y) {
            (1, [_, _, w], [_, _, kw], [_, _, ow]) => (1, *w, 1, *kw, 1, *ow, 1, 0, 1),
            (2, [_, _, h, w], [_, _, kh, kw], [_, _, oh, ow]) => {
                (*h, *w, *kh, *kw, *oh, *ow, s, p, d)
            }
            _ => return None,
        };
        let g = Geometry {
            batch: x[0],
            groups,
            ci: x[1],
            co: wt[0],
            h,
            w,
            kh,
            kw,
            oh,
            ow,
            sh,
            sw: s,
            ph,
            pw: p,
            dh,
            dw: d,
        };
        let consistent = g.ci.is_multiple_of(groups)
            && g.co.is_multiple_of(groups)
            && wt[1] == g.ci / groups
            && y[0] == g.batch
            && y[1] == g.co
            && out_len(h, kh, sh, ph, dh) == Some(oh)
            && out_len(w, kw, s, p, d) == Some(ow)
            && g.batch > 0
            && g.ck() > 0
            && g.o() > 0;
        consistent.then_some(g)
    }

    fn ci_g(&self) -> usize {
        self.ci / self.groups
    }
    fn co_g(&self) -> usize {
        self.co / self.groups
    }
    /// Rows of one group's patch matrix.
    fn ck(&self) -> usize {
        self.ci_g() * self.kh * self.kw
    }
    /// Output pixels (columns of the patch matrix).
    fn o(&self) -> usize {
        self.oh * self.ow
    }
    fn x_sample(&self) -> usize {
        self.ci * self.h * self.w
    }
    fn y_sample(&self) -> usize {
        self.co * self.o()
    }

    /// The output columns `oj` whose input column `oj * sw + kj * dw - pw`
    /// lies inside `0..w`, as a range.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        valid_range(self.ow, self.w, self.sw, kj * self.dw, self.pw)
    }

    fn valid_rows(&self, ki: usize) -> (usize, usize) {
        valid_range(self.oh, self.h, self.sh, ki * self.dh, self.ph)
    }

    /// Unfold group `gi` of one sample `x` (`[ci, h, w]`) into `cols`
    /// (`[ck, o]`), zeros where the window reads padding.
    fn im2col<T: WithDType>(&self, x: &[T], gi: usize, cols: &mut [T]) {
        let (o, zero) = (self.o(), T::from_f64(0.0));
        for cl in 0..self.ci_g() {
            let xc = &x[(gi * self.ci_g() + cl) * self.h * self.w..][..self.h * self.w];
            for ki in 0..self.kh {
                let (r0, r1) = self.valid_rows(ki);
                for kj in 0..self.kw {
                    let row = (cl * self.kh + ki) * self.kw + kj;
                    let dst = &mut cols[row * o..(row + 1) * o];
                    let (c0, c1) = self.valid_cols(kj);
                    dst[..r0 * self.ow].fill(zero);
                    dst[r1 * self.ow..].fill(zero);
                    for oi in r0..r1 {
                        let ii = oi * self.sh + ki * self.dh - self.ph;
                        let xrow = &xc[ii * self.w..(ii + 1) * self.w];
                        let drow = &mut dst[oi * self.ow..(oi + 1) * self.ow];
                        drow[..c0].fill(zero);
                        drow[c1..].fill(zero);
                        if c0 == c1 {
                            continue;
                        }
                        let j0 = c0 * self.sw + kj * self.dw - self.pw;
                        if self.sw == 1 {
                            drow[c0..c1].copy_from_slice(&xrow[j0..j0 + (c1 - c0)]);
                        } else {
                            for (k, v) in drow[c0..c1].iter_mut().enumerate() {
                                *v = xrow[j0 + k * self.sw];
                            }
                        }
                    }
                }
            }
        }
    }

    /// Fold `cols` (`[ck, o]`) back into group `gi` of one sample's input
    /// gradient `dx` (`[ci, h, w]`), adding where windows overlap.
    fn col2im<T: WithDType>(&self, cols: &[T], gi: usize, dx: &mut [T]) {
        let o = self.o();
        for cl in 0..self.ci_g() {
            let dc = &mut dx[(gi * self.ci_g() + cl) * self.h * self.w..][..self.h * self.w];
            for ki in 0..self.kh {
                let (r0, r1) = self.valid_rows(ki);
                for kj in 0..self.kw {
                    let row = (cl * self.kh + ki) * self.kw + kj;
                    let src = &cols[row * o..(row + 1) * o];
                    let (c0, c1) = self.valid_cols(kj);
                    if c0 == c1 {
                        continue;
                    }
                    for oi in r0..r1 {
                        let ii = oi * self.sh + ki * self.dh - self.ph;
                        let drow = &mut dc[ii * self.w..(ii + 1) * self.w];
                        let srow = &src[oi * self.ow..(oi + 1) * self.ow];
                        let j0 = c0 * self.sw + kj * self.dw - self.pw;
                        let src = &srow[c0..c1];
                        // The same additions in the same order either way;
                        // a unit stride as slices, which vectorize.
                        if self.sw == 1 {
                            for (d, v) in drow[j0..j0 + src.len()].iter_mut().zip(src) {
                                *d += *v;
                            }
                        } else {
                            for (d, v) in drow[j0..].iter_mut().step_by(self.sw).zip(src) {
                                *d += *v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The outputs `i` in `0..n_out` with `i * stride + offset - pad` in
/// `0..len`, as `(first, end)`.
fn valid_range(
    n_out: usize,
    len: usize,
    stride: usize,
    offset: usize,
    pad: usize,
) -> (usize, usize) {
    // First i with i * stride + offset >= pad.
    let first = pad.saturating_sub(offset).div_ceil(stride).min(n_out);
    // End: i * stride + offset - pad < len, i.e. i * stride < len + pad - offset.
    let end = match (len + pad).checked_sub(offset) {
        Some(limit) if limit > 0 => (limit - 1) / stride + 1,
        _ => 0,
    };
    (first, end.min(n_out).max(first))
}

/// A matrix operand: its data and the element strides of rows and columns.
struct Mat<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

/// Whether an `rows x cols` matrix with these strides lies inside `len`.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < len
}

/// `dst[m x n] (row stride n) = [dst +] lhs[m x k] @ rhs[k x n]`, single
/// threaded. Out-of-bounds operands are refused, never read.
fn matmul<T: WithDType>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    accumulate: bool,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
) {
    let ok = fits(dst.len(), m, n, n, 1)
        && fits(lhs.data.len(), m, k, lhs.rs, lhs.cs)
        && fits(rhs.data.len(), k, n, rhs.rs, rhs.cs);
    if !ok || m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::from_f64(0.0));
        }
        return;
    }
    let one = T::from_f64(1.0);
    // SAFETY: `fits` checked that every element the three matrices address
    // lies inside its slice; `dst` is borrowed mutably and does not alias
    // the shared operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            one,
            one,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// A contiguous CPU tensor's elements, read in place.
fn with_slice<T: WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    let data = T::cpu_storage_as_slice(cpu).ok()?;
    data.get(start..end).map(f)
}

/// Whether the fast path takes these tensors (CPU, f32/f64, same dtype).
fn eligible(ts: &[&Tensor]) -> Option<DType> {
    let dt = ts.first()?.dtype();
    let ok = ts
        .iter()
        .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == dt)
        && matches!(dt, DType::F32 | DType::F64);
    ok.then_some(dt)
}

/// Run `body(scratch, b, out_b)` for every sample `b` of `out` (`batch`
/// chunks of `len`), in parallel over fixed blocks of samples (one per
/// thread), each block with one scratch buffer of `scratch` elements: the
/// allocations do not depend on how rayon splits the work.
fn per_sample<T: WithDType>(
    out: &mut [T],
    len: usize,
    batch: usize,
    scratch: usize,
    body: impl Fn(&mut [T], usize, &mut [T]) + Sync,
) {
    let per_block = batch.div_ceil(crate::threads::available().max(1)).max(1);
    out.par_chunks_mut(per_block * len)
        .enumerate()
        .for_each(|(blk, chunk)| {
            let mut buf = vec![T::from_f64(0.0); scratch];
            for (k, out_b) in chunk.chunks_mut(len).enumerate() {
                body(&mut buf, blk * per_block + k, out_b);
            }
        });
}

fn conv_typed<T: WithDType>(g: &Geometry, x: &[T], wt: &[T]) -> Vec<T> {
    let (ck, o, co_g) = (g.ck(), g.o(), g.co_g());
    let mut y = vec![T::from_f64(0.0); g.batch * g.y_sample()];
    per_sample(&mut y, g.y_sample(), g.batch, ck * o, |cols, b, yb| {
        let xb = &x[b * g.x_sample()..(b + 1) * g.x_sample()];
        for gi in 0..g.groups {
            g.im2col(xb, gi, cols);
            let lhs = Mat {
                data: &wt[gi * co_g * ck..(gi + 1) * co_g * ck],
                rs: ck,
                cs: 1,
            };
            let rhs = Mat {
                data: cols,
                rs: o,
                cs: 1,
            };
            let dst = &mut yb[gi * co_g * o..(gi + 1) * co_g * o];
            matmul((co_g, o, ck), dst, false, lhs, rhs);
        }
    });
    y
}

fn input_grad_typed<T: WithDType>(g: &Geometry, dy: &[T], wt: &[T]) -> Vec<T> {
    let (ck, o, co_g) = (g.ck(), g.o(), g.co_g());
    let mut dx = vec![T::from_f64(0.0); g.batch * g.x_sample()];
    per_sample(&mut dx, g.x_sample(), g.batch, ck * o, |cols, b, dxb| {
        let dyb = &dy[b * g.y_sample()..(b + 1) * g.y_sample()];
        for gi in 0..g.groups {
            // cols = W_g^T dy_g: row r, column c of W_g^T is W_g[c, r].
            let lhs = Mat {
                data: &wt[gi * co_g * ck..(gi + 1) * co_g * ck],
                rs: 1,
                cs: ck,
            };
            let rhs = Mat {
                data: &dyb[gi * co_g * o..(gi + 1) * co_g * o],
                rs: o,
                cs: 1,
            };
            matmul((ck, o, co_g), cols, false, lhs, rhs);
            g.col2im(cols, gi, dxb);
        }
    });
    dx
}

fn weight_grad_typed<T: WithDType>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let (ck, o, co_g) = (g.ck(), g.o(), g.co_g());
    let blocks: Vec<usize> = (0..g.batch.div_ceil(WEIGHT_GRAD_BLOCK)).collect();
    let partials: Vec<Vec<T>> = blocks
        .par_iter()
        .map(|&blk| {
            let mut dw = vec![T::from_f64(0.0); g.co * ck];
            let mut cols = vec![T::from_f64(0.0); ck * o];
            let samples = blk * WEIGHT_GRAD_BLOCK..((blk + 1) * WEIGHT_GRAD_BLOCK).min(g.batch);
            for (n, b) in samples.enumerate() {
                let xb = &x[b * g.x_sample()..(b + 1) * g.x_sample()];
                let dyb = &dy[b * g.y_sample()..(b + 1) * g.y_sample()];
                for gi in 0..g.groups {
                    g.im2col(xb, gi, &mut cols);
                    // dW_g += dy_g [co_g, o] @ cols^T [o, ck].
                    let lhs = Mat {
                        data: &dyb[gi * co_g * o..(gi + 1) * co_g * o],
                        rs: o,
                        cs: 1,
                    };
                    let rhs = Mat {
                        data: &cols,
                        rs: 1,
                        cs: o,
                    };
                    let dst = &mut dw[gi * co_g * ck..(gi + 1) * co_g * ck];
                    matmul((co_g, ck, o), dst, n > 0, lhs, rhs);
                }
            }
            dw
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut total = parts
        .next()
        .unwrap_or_else(|| vec![T::from_f64(0.0); g.co * ck]);
    for p in parts {
        for (t, v) in total.iter_mut().zip(&p) {
            *t += *v;
        }
    }
    total
}

/// Run `f` on the two operands' slices in their dtype and wrap the result
/// as a tensor of `shape`; `None` when an operand is not readable in place.
fn run2(
    dt: DType,
    a: &Tensor,
    b: &Tensor,
    shape: &[usize],
    f32_fn: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    f64_fn: impl FnOnce(&[f64], &[f64]) -> Vec<f64>,
) -> candle_core::Result<Option<Tensor>> {
    let storage = match dt {
        DType::F32 => with_slice::<f32, _>(a, |sa| with_slice::<f32, _>(b, |sb| f32_fn(sa, sb)))
            .flatten()
            .map(CpuStorage::F32),
        DType::F64 => with_slice::<f64, _>(a, |sa| with_slice::<f64, _>(b, |sb| f64_fn(sa, sb)))
            .flatten()
            .map(CpuStorage::F64),
        _ => None,
    };
    match storage {
        Some(CpuStorage::F32(v)) => Tensor::from_vec(v, shape, &Device::Cpu).map(Some),
        Some(CpuStorage::F64(v)) => Tensor::from_vec(v, shape, &Device::Cpu).map(Some),
        _ => Ok(None),
    }
}

/// `conv(x, w)`; `None` when the fast path does not apply.
pub(super) fn conv(x: &Tensor, w: &Tensor, a: &ConvAttrs) -> candle_core::Result<Option<Tensor>> {
    let Some(dt) = eligible(&[x, w]) else {
        return Ok(None);
    };
    let mut y_shape = x.dims().to_vec();
    if y_shape.len() < 2 || w.dims().len() != y_shape.len() {
        return Ok(None);
    }
    y_shape[1] = w.dims()[0];
    let spatial = y_shape.len() - 2;
    for k in 0..spatial {
        let p = usize::try_from(a.padding).unwrap_or(usize::MAX / 4);
        let (s, d) = (a.stride.max(1) as usize, a.dilation.max(1) as usize);
        match out_len(x.dims()[2 + k], w.dims()[2 + k], s, p, d) {
            Some(n) => y_shape[2 + k] = n,
            None => return Ok(None),
        }
    }
    let Some(g) = Geometry::new(x.dims(), w.dims(), &y_shape, a) else {
        return Ok(None);
    };
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    run2(
        dt,
        &x,
        &w,
        &y_shape,
        |x, w| conv_typed(&g, x, w),
        |x, w| conv_typed(&g, x, w),
    )
}

/// The input gradient of `conv` (shape `x_shape`) from the cotangent `dy`.
pub(super) fn conv_input_grad(
    dy: &Tensor,
    w: &Tensor,
    a: &ConvAttrs,
    x_shape: &[usize],
) -> candle_core::Result<Option<Tensor>> {
    let Some(dt) = eligible(&[dy, w]) else {
        return Ok(None);
    };
    let Some(g) = Geometry::new(x_shape, w.dims(), dy.dims(), a) else {
        return Ok(None);
    };
    let (dy, w) = (dy.contiguous()?, w.contiguous()?);
    run2(
        dt,
        &dy,
        &w,
        x_shape,
        |dy, w| input_grad_typed(&g, dy, w),
        |dy, w| input_grad_typed(&g, dy, w),
    )
}

/// The weight gradient of `conv` (shape `w_shape`) from the input `x` and
/// the cotangent `dy`.
pub(super) fn conv_weight_grad(
    x: &Tensor,
    dy: &Tensor,
    a: &ConvAttrs,
    w_shape: &[usize],
) -> candle_core::Result<Option<Tensor>> {
    let Some(dt) = eligible(&[x, dy]) else {
        return Ok(None);
    };
    let Some(g) = Geometry::new(x.dims(), w_shape, dy.dims(), a) else {
        return Ok(None);
    };
    let (x, dy) = (x.contiguous()?, dy.contiguous()?);
    run2(
        dt,
        &x,
        &dy,
        w_shape,
        |x, dy| weight_grad_typed(&g, x, dy),
        |x, dy| weight_grad_typed(&g, x, dy),
    )
}

#[cfg(test)]
#[path = "im2col_tests.rs"]
mod tests;
