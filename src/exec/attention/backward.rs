//! The backward step of fused attention: from the mixed values' gradient
//! `dO` and the kept weights `P`, the gradients of the values, queries and
//! (transposed) keys, batch entry by batch entry, in cache.
//!
//! Per entry: `dP = dO vᵀ` eight rows at a time into one block that
//! never leaves the cache, `dS = scale'(where(mask, P (dP - sum(dP P)), 0))`
//! in place, then `dV = Pᵀ dO`, `dQ = dS k` and `dK = dSᵀ q`, each written
//! where its users want it. With a causal mask, a row whose masked weights
//! are exactly 0 (the forward step skipped them) sums only its unmasked
//! part, and the products skip the masked half (their terms are 0).
//! Operands whose rows hold whole register blocks are read in place, the
//! others copied; the values are gathered transposed.
//! Guarantees: the unfused steps' values up to rounding (the summation
//! order of the products and of the row sums, the scale's derivative as a
//! product with `1 / c`; tested in f64 and f32, and by finite differences).

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::ir::{Graph, NodeId};
use crate::jit::KType;
use crate::passes::attention::{Attention, Scale};
use crate::passes::attention_backward::AttentionBackward;

use super::super::kernels::matmul::{Operand, OutLayout, SendPtr};
use super::super::DimEnv;
use super::lanes::{block, blocks, Lane, Out, LANES, ROWS};
use super::{view, THREADED_MACS};

/// An attention's backward pass bound to one set of dims.
#[derive(Debug)]
pub struct BoundBackward {
    pub plan: AttentionBackward,
    pub forward: Attention,
    ty: KType,
    batch: Vec<usize>,
    t: usize,
    dh: usize,
    dv: usize,
}

impl BoundBackward {
    /// Bind `b` (of forward attention `a`) to `dims`; `Err` (the steps then
    /// run unfused) when a shape is not bound or does not fit.
    pub fn new(
        g: &Graph,
        b: &AttentionBackward,
        a: &Attention,
        dims: &DimEnv,
        ty: KType,
    ) -> Result<Self, String> {
        let shape = |n: NodeId| dims.shape(&g.ty(n).shape, None).map_err(|e| e.to_string());
        let (q, kt, v, d_mixed) = (shape(a.q)?, shape(a.kt)?, shape(a.v)?, shape(b.d_mixed)?);
        let r = q.len();
        let batch = q[..r - 2].to_vec();
        let (t, dh, dv) = (q[r - 2], q[r - 1], v[r - 1]);
        let fits = kt[..r - 2] == batch[..]
            && v[..r - 2] == batch[..]
            && kt[r - 2..] == [dh, t]
            && v[r - 2] == t
            && d_mixed[..] == v[..];
        if !fits {
            return Err("the attention's backward operands do not fit".into());
        }
        if [b.d_mixed, b.d_values, b.d_queries, b.d_keys_t]
            .iter()
            .any(|n| g.ty(*n).dtype != g.ty(a.weights).dtype)
        {
            return Err("mixed types".into());
        }
        Ok(BoundBackward {
            plan: b.clone(),
            forward: a.clone(),
            ty,
            batch,
            t,
            dh,
            dv,
        })
    }

    /// A bound step made directly (for the kernels' unit tests).
    #[cfg(test)]
    pub(super) fn for_test(
        plan: AttentionBackward,
        forward: Attention,
        ty: KType,
        (batch, t, dh, dv): (Vec<usize>, usize, usize, usize),
    ) -> Self {
        BoundBackward {
            plan,
            forward,
            ty,
            batch,
            t,
            dh,
            dv,
        }
    }

    /// For `deqc bench --ops`.
    pub fn describe(&self) -> String {
        let mut s = self.batch.clone();
        s.extend([self.t, self.t, self.dh]);
        let causal = if self.forward.mask.is_some() {
            " causal"
        } else {
            ""
        };
        format!("attention backward{causal} {s:?}")
    }

    /// Run the step: the values', queries' and transposed keys' gradients,
    /// each stored in the order given for it.
    pub fn run(
        &self,
        lookup: &dyn Fn(NodeId) -> Option<Tensor>,
        orders: [Option<&[usize]>; 3],
    ) -> Result<Vec<(NodeId, Tensor)>, String> {
        let get = |n: NodeId| lookup(n).ok_or_else(|| format!("operand {n} is not live"));
        let a = &self.forward;
        let ins = [
            get(self.plan.d_mixed)?,
            get(a.q)?,
            get(a.kt)?,
            get(a.v)?,
            get(a.weights)?,
        ];
        match self.ty {
            KType::F32 => self.typed::<f32>(&ins, orders),
            KType::F64 => self.typed::<f64>(&ins, orders),
        }
        .map_err(|e| e.to_string())
    }

    fn typed<T: Lane>(
        &self,
        ins: &[Tensor; 5],
        orders: [Option<&[usize]>; 3],
    ) -> candle_core::Result<Vec<(NodeId, Tensor)>> {
        let guards: Vec<_> = ins.iter().map(|t| t.storage_and_layout()).collect();
        let b = &self.batch;
        let views: Vec<Operand<T>> = guards
            .iter()
            .map(|(s, l)| view::<T>(s, l, b))
            .collect::<candle_core::Result<_>>()?;
        let entries: usize = b.iter().product();
        let (t, dh, dv) = (self.t, self.dh, self.dv);
        // Output shapes: dV [.., t, dv], dQ [.., t, dh], dKt [.., dh, t].
        let shapes: [Vec<usize>; 3] = [[t, dv], [t, dh], [dh, t]].map(|m| {
            let mut s = b.clone();
            s.extend(m);
            s
        });
        let layouts: Vec<Option<OutLayout>> = shapes
            .iter()
            .zip(orders)
            .map(|(s, o)| o.and_then(|o| OutLayout::permuted(s, o)))
            .collect();
        let places: Vec<(Vec<usize>, usize, usize)> = shapes
            .iter()
            .zip(&layouts)
            .map(|(s, l)| match l {
                Some(l) => l.entries(b),
                None => {
                    let (m, n) = (s[s.len() - 2], s[s.len() - 1]);
                    ((0..entries).map(|e| e * m * n).collect(), n, 1)
                }
            })
            .collect();
        let lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        let mut outs: Vec<Vec<T>> = lens.iter().map(|n| Vec::with_capacity(*n)).collect();
        let ptrs: Vec<SendPtr<T>> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
        let shape = Shape {
            t,
            dh,
            dv,
            scale: self.forward.scale,
            causal: self.forward.mask.is_some(),
        };
        let run_block = |lo: usize, hi: usize| {
            let mut scratch = Scratch::<T>::new(&shape);
            for e in lo..hi {
                let out: [Out<T>; 3] = std::array::from_fn(|k| Out {
                    // SAFETY: each entry's start lies inside its output.
                    ptr: unsafe { ptrs[k].0.add(places[k].0[e]) },
                    rs: places[k].1,
                    cs: places[k].2,
                });
                let at = |k: usize| {
                    let v = &views[k];
                    (v.data, v.offsets[e], v.rs, v.cs)
                };
                let ops = [at(0), at(1), at(2), at(3), at(4)];
                // SAFETY: `operand` checked every element the views address;
                // the outputs address this entry's own elements.
                unsafe { entry(&shape, &mut scratch, &ops, &out) };
            }
        };
        let threads = crate::threads::available().max(1);
        let macs = entries * t * t * (2 * dv + 2 * dh);
        if threads > 1 && entries >= threads && macs >= THREADED_MACS {
            let per = entries.div_ceil(threads);
            (0..entries.div_ceil(per))
                .into_par_iter()
                .for_each(|k| run_block(k * per, ((k + 1) * per).min(entries)));
        } else {
            run_block(0, entries);
        }
        drop(guards);
        let nodes = [self.plan.d_values, self.plan.d_queries, self.plan.d_keys_t];
        let mut result = Vec::with_capacity(3);
        for (k, mut v) in outs.into_iter().enumerate() {
            // SAFETY: every entry wrote all of its elements of each output.
            unsafe { v.set_len(lens[k]) };
            let tensor = match &layouts[k] {
                Some(l) => {
                    let stored: Vec<usize> = l.order.iter().map(|a| shapes[k][*a]).collect();
                    Tensor::from_vec(v, stored, &Device::Cpu)?.permute(l.inverse.clone())?
                }
                None => Tensor::from_vec(v, shapes[k].clone(), &Device::Cpu)?,
            };
            result.push((nodes[k], tensor));
        }
        Ok(result)
    }
}

/// Sizes, scale and mask of one backward pass.
struct Shape {
    t: usize,
    dh: usize,
    dv: usize,
    scale: Option<Scale>,
    causal: bool,
}

impl Shape {
    fn rows(&self) -> usize {
        self.t.div_ceil(ROWS) * ROWS
    }
    fn keys(&self) -> usize {
        self.t.div_ceil(LANES) * LANES
    }
    fn pad(n: usize) -> usize {
        n.div_ceil(LANES) * LANES
    }
}

/// One block of entries' working copies; the padding stays zero.
struct Scratch<T> {
    /// `dO`, `rows × pad(dv)`.
    d_out: Vec<T>,
    /// `vᵀ`, `dv × keys`.
    vt: Vec<T>,
    /// The weights, `rows × keys`.
    p: Vec<T>,
    /// `dP`, then `dS`, `rows × keys`.
    ds: Vec<T>,
    /// Keys and queries as rows, `rows × pad(dh)`.
    k: Vec<T>,
    q: Vec<T>,
    /// Each row's weights that may be nonzero.
    len: Vec<usize>,
}

impl<T: Lane> Scratch<T> {
    fn new(s: &Shape) -> Self {
        let z = T::from_f64(0.0);
        let (rows, keys) = (s.rows(), s.keys());
        Scratch {
            d_out: vec![z; rows * Shape::pad(s.dv)],
            vt: vec![z; s.dv * keys],
            p: vec![z; rows * keys],
            ds: vec![z; rows * keys],
            k: vec![z; rows * Shape::pad(s.dh)],
            q: vec![z; rows * Shape::pad(s.dh)],
            len: vec![0; rows],
        }
    }
}

/// An operand: data, first element, row and column strides.
type View<'a, T> = (&'a [T], usize, usize, usize);

/// `dst[r * ld + c] = m[r, c]` for the `rows × cols` matrix `m` of `view`,
/// read with its strides swapped when `transpose`.
///
/// # Safety
/// Every addressed element of the view exists.
unsafe fn copy<T: Lane>(
    dst: &mut [T],
    ld: usize,
    (d, o, rs, cs): View<T>,
    (rows, cols): (usize, usize),
    transpose: bool,
) {
    let (rs, cs) = if transpose { (cs, rs) } else { (rs, cs) };
    for r in 0..rows {
        let row = &mut dst[r * ld..r * ld + cols];
        if cs == 1 {
            row.copy_from_slice(d.get_unchecked(o + r * rs..o + r * rs + cols));
        } else {
            for (c, x) in row.iter_mut().enumerate() {
                *x = *d.get_unchecked(o + r * rs + c * cs);
            }
        }
    }
}

/// One entry.
///
/// # Safety
/// Every element the operands address lies inside their data; each output
/// addresses its `m × n` writable elements.
unsafe fn entry<T: Lane>(
    s: &Shape,
    scratch: &mut Scratch<T>,
    ops: &[View<T>; 5],
    out: &[Out<T>; 3],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && !super::portable_only() {
        return entry_avx512(s, scratch, ops, out);
    }
    entry_with::<T, false>(s, scratch, ops, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn entry_avx512<T: Lane>(
    s: &Shape,
    scratch: &mut Scratch<T>,
    ops: &[View<T>; 5],
    out: &[Out<T>; 3],
) {
    entry_with::<T, true>(s, scratch, ops, out)
}

/// A matrix read in place or from a copy: data, first element, row stride
/// (elements consecutive).
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    d: &'a [T],
    at: usize,
    ld: usize,
}

impl<'a, T> Mat<'a, T> {
    /// The elements from row `r`, column `c` on.
    fn from(&self, r: usize, c: usize) -> &'a [T] {
        &self.d[self.at + r * self.ld + c..]
    }
}

/// `view` in place when its rows are consecutive and `fits`, else copied
/// into `buf` (rows `ld` apart, transposed when `transpose`).
///
/// # Safety
/// As for [`copy`].
unsafe fn in_place_or_copy<'a, T: Lane>(
    view: View<'a, T>,
    fits: bool,
    buf: &'a mut [T],
    ld: usize,
    dims: (usize, usize),
    transpose: bool,
) -> Mat<'a, T> {
    let (d, o, rs, cs) = view;
    let (rs, cs) = if transpose { (cs, rs) } else { (rs, cs) };
    if fits && cs == 1 {
        return Mat { d, at: o, ld: rs };
    }
    copy(buf, ld, view, dims, transpose);
    Mat { d: buf, at: 0, ld }
}

#[inline(always)]
unsafe fn entry_with<T: Lane, const WIDE: bool>(
    s: &Shape,
    sc: &mut Scratch<T>,
    ops: &[View<T>; 5],
    out: &[Out<T>; 3],
) {
    let [d_mixed, q, kt, v, p] = *ops;
    let (t, keys) = (s.t, s.keys());
    let (cols, heads) = (Shape::pad(s.dv), Shape::pad(s.dh));
    let Scratch {
        d_out,
        vt,
        p: p_buf,
        ds,
        k: k_buf,
        q: q_buf,
        len,
    } = sc;
    // Operands read in place where whole register blocks fit their rows
    // (`dO` and `P` are also read eight rows at a time), else copied.
    let whole_rows = t.is_multiple_of(ROWS);
    let dv_fits = s.dv.is_multiple_of(LANES);
    let dh_fits = s.dh.is_multiple_of(LANES);
    let d_out = in_place_or_copy(
        d_mixed,
        whole_rows && dv_fits,
        d_out,
        cols,
        (t, s.dv),
        false,
    );
    let p = in_place_or_copy(p, whole_rows, p_buf, keys, (t, t), false);
    let k = in_place_or_copy(kt, dh_fits, k_buf, heads, (t, s.dh), true);
    let q = in_place_or_copy(q, dh_fits, q_buf, heads, (t, s.dh), false);
    #[cfg(target_arch = "x86_64")]
    let gathered = WIDE && T::gather_rows_avx512(v.0, v.1, v.3, v.2, s.dv, t, vt, keys);
    #[cfg(not(target_arch = "x86_64"))]
    let gathered = false;
    if !gathered {
        copy(vt, keys, v, (s.dv, t), true);
    }
    // A causal row sums only up to its diagonal when its masked weights are
    // exactly 0 (the last position is masked for every row but the last).
    let mut all_short = s.causal;
    for (i, n) in len.iter_mut().enumerate().take(t) {
        let short = s.causal && (i + 1 == t || p.from(i, t - 1)[0] == T::from_f64(0.0));
        *n = if short { i + 1 } else { t };
        all_short &= short;
    }
    // dP, eight rows at a time, up to the block's longest row.
    for i0 in (0..t).step_by(ROWS) {
        let rows = (t - i0).min(ROWS);
        let end = len[i0..i0 + rows].iter().copied().max().unwrap_or(0);
        for c in 0..end.div_ceil(LANES) {
            let acc = block::<T, WIDE>(
                d_out.from(i0, 0),
                (d_out.ld, 1),
                &vt[c * LANES..],
                keys,
                s.dv,
            );
            for (r, a) in acc.iter().enumerate() {
                let at = (i0 + r) * keys + c * LANES;
                ds[at..at + LANES].copy_from_slice(a);
            }
        }
    }
    // dS = scale'(where(mask, P (dP - sum(dP P)), 0)), in place.
    let zero = T::from_f64(0.0);
    // The scale's derivative as one factor (1 / c for a division: the same up
    // to rounding, and no division per element).
    let factor = match s.scale {
        Some(Scale::Div(c)) => Some(T::from_f64(1.0 / c)),
        Some(Scale::Mul(c)) => Some(T::from_f64(c)),
        None => None,
    };
    for i in 0..t {
        let n = len[i];
        let (pr, dr) = (&p.from(i, 0)[..n], &mut ds[i * keys..(i + 1) * keys]);
        // The row sum in sixteen partial sums, so that it vectorizes.
        let mut partial = [zero; LANES];
        let whole = n / LANES * LANES;
        for c in (0..whole).step_by(LANES) {
            let xs: &[T; LANES] = dr[c..c + LANES].try_into().expect("a lane block");
            let ys: &[T; LANES] = pr[c..c + LANES].try_into().expect("a lane block");
            for l in 0..LANES {
                partial[l] += xs[l] * ys[l];
            }
        }
        for (l, (x, y)) in dr[whole..n].iter().zip(&pr[whole..]).enumerate() {
            partial[l] += *x * *y;
        }
        let sum = partial.iter().fold(zero, |a, b| a + *b);
        for (x, y) in dr.iter_mut().zip(pr) {
            *x = *y * (*x - sum);
        }
        if s.causal {
            dr[(i + 1).min(n)..n].fill(zero);
        }
        if let Some(f) = factor {
            dr[..n].iter_mut().for_each(|x| *x *= f);
        }
        dr[n..].fill(zero);
    }
    let ds: &[T] = ds;
    // dQ = dS k: row i sums over its row's positions.
    for i0 in (0..t).step_by(ROWS) {
        let rows = (t - i0).min(ROWS);
        let end = len[i0..i0 + rows].iter().copied().max().unwrap_or(0);
        let (a, b) = (&ds[i0 * keys..], k.from(0, 0));
        blocks::<T, WIDE>(a, (keys, 1), b, k.ld, end, heads / LANES, |c, acc| {
            out[1].store(acc, i0, rows, c * LANES, (s.dh - c * LANES).min(LANES));
        });
    }
    // dV = Pᵀ dO and dK = dSᵀ q: column j sums over the rows that weigh it
    // (from j on when causal).
    let dk = out[2].transposed();
    for j0 in (0..t).step_by(ROWS) {
        let rows = (t - j0).min(ROWS);
        let from_v = if all_short { j0 } else { 0 };
        let (a, b) = (p.from(from_v, j0), d_out.from(from_v, 0));
        blocks::<T, WIDE>(
            a,
            (1, p.ld),
            b,
            d_out.ld,
            t - from_v,
            cols / LANES,
            |c, acc| {
                out[0].store(acc, j0, rows, c * LANES, (s.dv - c * LANES).min(LANES));
            },
        );
        let from_k = if s.causal { j0 } else { 0 };
        let (a, b) = (&ds[from_k * keys + j0..], q.from(from_k, 0));
        blocks::<T, WIDE>(
            a,
            (1, keys),
            b,
            q.ld,
            t - from_k,
            heads / LANES,
            |c, acc| {
                dk.store(acc, j0, rows, c * LANES, (s.dh - c * LANES).min(LANES));
            },
        );
    }
}
