//! Kernels built from several candle calls: slicing and its adjoint,
//! convolution and its two gradients, pooling adjoints, embeddings.
//!
//! Guarantees: only device-generic candle ops (narrow, index_select,
//! index_add, conv, conv_transpose, cat), except that convolutions of f32 and
//! f64 CPU tensors go through [`im2col`] (the same numbers, faster); shapes
//! are those of the IR's shape rules; bounds are checked before indexing.

mod im2col;

use candle_core::{Tensor, D};

use crate::ir::ConvAttrs;
use crate::types::SliceAxis;

use super::{KErr, KResult, KernelCtx};

fn idx(values: impl Iterator<Item = usize>, t: &Tensor) -> candle_core::Result<Tensor> {
    let v: Vec<u32> = values.map(|x| x as u32).collect();
    let n = v.len();
    Tensor::from_vec(v, n, t.device())
}

/// A resolved slice axis: `(start, len, step)`, or an index.
enum Axis {
    Full,
    Range(usize, usize, usize),
    Index(usize),
}

fn resolve_axes(axes: &[SliceAxis], shape: &[usize], ctx: &KernelCtx) -> KResult<Vec<Axis>> {
    if axes.len() != shape.len() {
        return Err(KErr::Msg(format!(
            "{} slice axes for shape {shape:?}",
            axes.len()
        )));
    }
    let eval = |d: &crate::types::dim::Dim| -> KResult<i64> {
        ctx.dims
            .eval(d)
            .ok_or_else(|| KErr::Msg(format!("unbound dim {d}")))
    };
    axes.iter()
        .zip(shape)
        .map(|(a, &n)| match a {
            SliceAxis::Full => Ok(Axis::Full),
            SliceAxis::Index(i) => {
                let i = eval(i)?;
                if i < 0 || i as usize >= n {
                    return Err(KErr::Msg(format!("index {i} out of range for size {n}")));
                }
                Ok(Axis::Index(i as usize))
            }
            SliceAxis::Range { start, end, step } => {
                let (s, e) = (eval(start)?, eval(end)?);
                if s < 0 || e < s || e as usize > n || *step < 1 {
                    return Err(KErr::Msg(format!(
                        "slice {s}:{e}:{step} out of range for size {n}"
                    )));
                }
                let len = ((e - s) as usize).div_ceil(*step as usize);
                Ok(Axis::Range(s as usize, len, *step as usize))
            }
        })
        .collect()
}

pub(super) fn slice(x: &Tensor, axes: &[SliceAxis], ctx: &KernelCtx) -> KResult<Tensor> {
    let resolved = resolve_axes(axes, x.dims(), ctx)?;
    let mut r = x.clone();
    for (k, a) in resolved.iter().enumerate() {
        r = match a {
            Axis::Full => r,
            Axis::Index(i) => r.narrow(k, *i, 1)?,
            Axis::Range(s, len, 1) => r.narrow(k, *s, *len)?,
            Axis::Range(s, len, step) => {
                let ids = idx((0..*len).map(|j| s + j * step), &r)?;
                r.contiguous()?.index_select(&ids, k)?
            }
        };
    }
    Ok(r.reshape(ctx.out_shape)?)
}

/// Place `g` (a slice's cotangent) into zeros of the sliced tensor's shape.
pub(super) fn slice_backward(g: &Tensor, axes: &[SliceAxis], ctx: &KernelCtx) -> KResult<Tensor> {
    let full = ctx.out_shape;
    let resolved = resolve_axes(axes, full, ctx)?;
    // The cotangent with indexed axes restored as size 1.
    let kept: Vec<usize> = resolved
        .iter()
        .zip(full)
        .map(|(a, &n)| match a {
            Axis::Full => n,
            Axis::Index(_) => 1,
            Axis::Range(_, len, _) => *len,
        })
        .collect();
    let mut r = g.reshape(kept)?;
    for (k, a) in resolved.iter().enumerate() {
        let n = full[k];
        r = match a {
            Axis::Full => r,
            Axis::Index(i) => r.pad_with_zeros(k, *i, n - i - 1)?,
            Axis::Range(s, len, 1) => r.pad_with_zeros(k, *s, n - s - len)?,
            Axis::Range(s, len, step) => {
                let mut shape = r.dims().to_vec();
                shape[k] = n;
                let ids = idx((0..*len).map(|j| s + j * step), &r)?;
                Tensor::zeros(shape, r.dtype(), r.device())?.index_add(&ids, &r.contiguous()?, k)?
            }
        };
    }
    Ok(r)
}

pub(super) fn conv(x: &Tensor, w: &Tensor, a: &ConvAttrs) -> KResult<Tensor> {
    match im2col::conv(x, w, a)? {
        Some(y) => Ok(y),
        None => conv_generic(x, w, a),
    }
}

/// `conv` with candle's own (device-generic) kernels.
fn conv_generic(x: &Tensor, w: &Tensor, a: &ConvAttrs) -> KResult<Tensor> {
    let (p, s, d, g) = a.sizes();
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    Ok(match a.spatial {
        1 => x.conv1d(&w, p, s, d, g)?,
        2 => x.conv2d(&w, p, s, d, g)?,
        n => return Err(KErr::Msg(format!("conv over {n} spatial axes"))),
    })
}

/// The input gradient of a convolution (shape `out`) from the cotangent `g`.
pub(super) fn conv_input_grad(
    g: &Tensor,
    w: &Tensor,
    a: &ConvAttrs,
    out: &[usize],
) -> KResult<Tensor> {
    match im2col::conv_input_grad(g, w, a, out)? {
        Some(dx) => Ok(dx),
        None => conv_input_grad_generic(g, w, a, out),
    }
}

/// The input gradient with candle's kernels: a transposed convolution of
/// the cotangent `g` with the weight, cut to the input's shape `out`.
fn conv_input_grad_generic(
    g: &Tensor,
    w: &Tensor,
    a: &ConvAttrs,
    out: &[usize],
) -> KResult<Tensor> {
    let (p, s, d, groups) = a.sizes();
    let (g, w) = (g.contiguous()?, w.contiguous()?);
    let spatial = a.spatial;
    // output_padding per axis: what the floor in the forward size dropped.
    let mut out_pad = 0usize;
    for k in 0..spatial {
        let (len_in, len_out, kern) = (out[2 + k], g.dims()[2 + k], w.dims()[2 + k]);
        let covered = (len_out - 1) * s + d * (kern - 1) + 1;
        let base = covered
            .checked_sub(2 * p)
            .ok_or_else(|| KErr::Msg("padding larger than the convolved length".into()))?;
        out_pad = out_pad.max(len_in.saturating_sub(base));
    }
    let r = match spatial {
        // candle 0.11's CPU col2im path of conv_transpose1d (taken for
        // dilation 1, no padding, no output padding) is wrong for batches
        // larger than one; run such batches one sample at a time.
        1 if d == 1 && p == 0 && out_pad == 0 && g.dims()[0] > 1 => {
            let parts = (0..g.dims()[0])
                .map(|bi| {
                    g.narrow(0, bi, 1)?
                        .contiguous()?
                        .conv_transpose1d(&w, p, out_pad, s, d, groups)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)?
        }
        1 => g.conv_transpose1d(&w, p, out_pad, s, d, groups)?,
        2 => {
            let co_g = w.dims()[0] / groups;
            let parts = (0..groups)
                .map(|gi| {
                    let gg = g.narrow(1, gi * co_g, co_g)?.contiguous()?;
                    let wg = w.narrow(0, gi * co_g, co_g)?.contiguous()?;
                    gg.conv_transpose2d(&wg, p, out_pad, s, d)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&parts, 1)?
        }
        n => return Err(KErr::Msg(format!("conv over {n} spatial axes"))),
    };
    let mut r = r;
    for k in 0..spatial {
        if r.dims()[2 + k] > out[2 + k] {
            r = r.narrow(2 + k, 0, out[2 + k])?;
        }
    }
    Ok(r)
}

/// The weight gradient of a convolution (shape `out`) from the input `x`
/// and the cotangent `g`.
pub(super) fn conv_weight_grad(
    x: &Tensor,
    g: &Tensor,
    a: &ConvAttrs,
    out: &[usize],
) -> KResult<Tensor> {
    match im2col::conv_weight_grad(x, g, a, out)? {
        Some(dw) => Ok(dw),
        None => conv_weight_grad_generic(x, g, a, out),
    }
}

/// The weight gradient with candle's kernels: per group, a convolution of
/// the input (batch and channels swapped) with the cotangent as the kernel,
/// with stride and dilation exchanged; cut to the weight's shape `out`.
fn conv_weight_grad_generic(
    x: &Tensor,
    g: &Tensor,
    a: &ConvAttrs,
    out: &[usize],
) -> KResult<Tensor> {
    let (p, s, d, groups) = a.sizes();
    let ci_g = x.dims()[1] / groups;
    let co_g = g.dims()[1] / groups;
    let parts = (0..groups)
        .map(|gi| {
            let xg = x
                .narrow(1, gi * ci_g, ci_g)?
                .transpose(0, 1)?
                .contiguous()?;
            let gg = g
                .narrow(1, gi * co_g, co_g)?
                .transpose(0, 1)?
                .contiguous()?;
            let mut r = match a.spatial {
                1 => xg.conv1d(&gg, p, d, s, 1)?,
                _ => xg.conv2d(&gg, p, d, s, 1)?,
            };
            for k in 0..a.spatial {
                r = r.narrow(2 + k, 0, out[2 + k])?;
            }
            r.transpose(0, 1)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// Window offsets along one axis for kernel offset `k`.
fn window_ids(k: usize, stride: usize, n_out: usize, t: &Tensor) -> candle_core::Result<Tensor> {
    idx((0..n_out).map(|i| k + stride * i), t)
}

pub(super) fn avg_pool_backward(
    g: &Tensor,
    kernel: usize,
    stride: usize,
    out: &[usize],
) -> KResult<Tensor> {
    let (b, c, ho, wo) = g.dims4()?;
    let (h, w) = (out[2], out[3]);
    let gk = g
        .affine(1.0 / (kernel * kernel) as f64, 0.0)?
        .contiguous()?;
    // Separable: spread along W, then along H.
    let mut along_w = Tensor::zeros((b, c, ho, w), g.dtype(), g.device())?;
    for kj in 0..kernel {
        along_w = along_w.index_add(&window_ids(kj, stride, wo, g)?, &gk, 3)?;
    }
    let mut r = Tensor::zeros((b, c, h, w), g.dtype(), g.device())?;
    for ki in 0..kernel {
        r = r.index_add(&window_ids(ki, stride, ho, g)?, &along_w, 2)?;
    }
    Ok(r)
}

/// For each window offset `(ki, kj)`, a 0/1 mask over the pooled grid that
/// is 1 where that offset holds the window's first maximum.
fn first_max_masks(
    x: &Tensor,
    kernel: usize,
    stride: usize,
) -> candle_core::Result<Vec<(usize, usize, Tensor)>> {
    let y = x.max_pool2d_with_stride((kernel, kernel), (stride, stride))?;
    let (_, _, ho, wo) = y.dims4()?;
    let x = x.contiguous()?;
    let mut taken = y.zeros_like()?;
    let mut out = Vec::with_capacity(kernel * kernel);
    for ki in 0..kernel {
        let rows = x.index_select(&window_ids(ki, stride, ho, &x)?, 2)?;
        for kj in 0..kernel {
            let e = rows.index_select(&window_ids(kj, stride, wo, &x)?, 3)?;
            let hit = e.eq(&y)?.to_dtype(x.dtype())?;
            let sel = hit.mul(&taken.affine(-1.0, 1.0)?)?;
            taken = taken.add(&sel)?;
            out.push((ki, kj, sel));
        }
    }
    Ok(out)
}

pub(super) fn max_pool_backward(
    x: &Tensor,
    g: &Tensor,
    kernel: usize,
    stride: usize,
) -> KResult<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (_, _, ho, wo) = g.dims4()?;
    let mut r = Tensor::zeros((b, c, h, w), g.dtype(), g.device())?;
    for (ki, kj, sel) in first_max_masks(x, kernel, stride)? {
        let part = g.mul(&sel)?.contiguous()?;
        let wide = Tensor::zeros((b, c, ho, w), g.dtype(), g.device())?.index_add(
            &window_ids(kj, stride, wo, g)?,
            &part,
            3,
        )?;
        r = r.index_add(&window_ids(ki, stride, ho, g)?, &wide, 2)?;
    }
    Ok(r)
}

pub(super) fn max_pool_select(
    x: &Tensor,
    h: &Tensor,
    kernel: usize,
    stride: usize,
) -> KResult<Tensor> {
    let masks = first_max_masks(x, kernel, stride)?;
    let h = h.contiguous()?;
    let mut r: Option<Tensor> = None;
    for (ki, kj, sel) in masks {
        let (_, _, ho, wo) = sel.dims4()?;
        let picked = h
            .index_select(&window_ids(ki, stride, ho, &h)?, 2)?
            .index_select(&window_ids(kj, stride, wo, &h)?, 3)?
            .mul(&sel)?;
        r = Some(match r {
            Some(acc) => acc.add(&picked)?,
            None => picked,
        });
    }
    r.ok_or_else(|| KErr::Msg("empty pooling window".into()))
}

fn check_ids(ids: &Tensor, rows: usize) -> KResult<Tensor> {
    let flat = ids.flatten_all()?;
    if flat.elem_count() > 0 {
        let lo = flat.min(0)?.to_scalar::<i64>()?;
        let hi = flat.max(0)?.to_scalar::<i64>()?;
        if lo < 0 || hi as usize >= rows {
            return Err(KErr::Msg(format!(
                "token ids must lie in 0..{rows}, found {}",
                if lo < 0 { lo } else { hi }
            )));
        }
    }
    Ok(flat)
}

pub(super) fn embedding(ids: &Tensor, table: &Tensor, out: &[usize]) -> KResult<Tensor> {
    let flat = check_ids(ids, table.dims()[0])?;
    Ok(table.contiguous()?.index_select(&flat, 0)?.reshape(out)?)
}

pub(super) fn embedding_backward(ids: &Tensor, g: &Tensor, out: &[usize]) -> KResult<Tensor> {
    let flat = check_ids(ids, out[0])?;
    let d = g.dim(D::Minus1)?;
    let rows = g.reshape((flat.elem_count(), d))?.contiguous()?;
    Ok(Tensor::zeros(out, g.dtype(), g.device())?.index_add(&flat, &rows, 0)?)
}
